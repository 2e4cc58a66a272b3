"""The depthwise + 1x1 fusion on a whole converted mobilenet_v2 (90% zeros), in one process.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-dwproject/whole_ab.py --batch 1 8

Converts torchvision's mobilenet_v2 once per batch (calibrate mode, one thread; 3x224x224
input), then times it against a copy with every fused depthwise + 1x1 pair split back into
its two converted layers (same layers and kernels; only that fusion differs), interleaved
(timing.time_interleaved), one thread; medians and the median of the per-round ratios."""

import copy

import numpy as np
import torch
from common import mobilenet, setup  # this folder's shared setup

from sparsify.accel.convert import sparsify_inference_
from sparsify.accel.dw_project import DepthwiseProject
from sparsify.timing import time_interleaved

args = setup()
for batch in args.batch:
    fused, x = mobilenet(batch)
    rep = sparsify_inference_(fused, x, threads=1)
    apart = copy.deepcopy(fused)
    # names: a pair "d + c" (depthwise, 1x1) sits at d, or at the expansion a of "a + d"
    project_of = dict(line.split(":")[0].split(" + ") for line in rep.projections)
    dw_of = dict(line.split(":")[0].split(" + ") for line in rep.blocks)
    split = 0
    for name, m in list(apart.named_modules()):
        if isinstance(m, DepthwiseProject):
            apart.set_submodule(name, m.source)
            apart.set_submodule(project_of[dw_of.get(name, name)], m.project)
            split += 1
    with torch.inference_mode():
        same = float((fused(x) - apart(x)).abs().max())
        t = time_interleaved(
            {"fused": lambda m=fused, x=x: m(x), "apart": lambda m=apart, x=x: m(x)},
            reps=args.rounds,
        )
    f, a_ = np.array(t["fused"].samples), np.array(t["apart"].samples)
    r = a_ / f
    print(
        f"batch {batch}: {split} depthwise + 1x1 pairs fused (of {len(rep.projections)} offered); "
        f"fused {np.median(f) * 1e3:.2f} ms, apart {np.median(a_) * 1e3:.2f} ms, apart/fused "
        f"per round {np.median(r):.3f} (quartiles {np.quantile(r, 0.25):.3f}-"
        f"{np.quantile(r, 0.75):.3f}); max |fused - apart| {same:.1e}"
    )
