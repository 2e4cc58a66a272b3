"""A/B of the fused 1x1 + depthwise kernel on torchvision's mobilenet_v2 (90% zeros).

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-fused/fused_ab.py --batch 1 8

Converts the model once per batch (calibrate mode, one thread), then times it against a
copy with every fused pair split back into its two converted layers: same layers, same
kernels, only the fusion differs. Medians of interleaved rounds, one thread."""

import argparse
import copy
import platform
import time

import numpy as np
import torch
import torchvision

from sparsify import kernels as K
from sparsify.accel.convert import sparsify_inference_
from sparsify.accel.expand_dw import ExpandDepthwise
from sparsify.bench.sources import impose_density_

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
ap.add_argument("--rounds", type=int, default=15)
args = ap.parse_args()
torch.set_num_threads(1)
print(f"torch {torch.__version__}, kernels {K.info()['isa']}, {platform.processor() or 'cpu'}")
for batch in args.batch:
    torch.manual_seed(0)
    fused = torchvision.models.mobilenet_v2().eval()
    impose_density_(fused, 0.1)
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        ref = fused(x)
    rep = sparsify_inference_(fused, x, threads=1)
    print(f"batch {batch}: {rep.check}; {rep.whole}")
    for line in rep.blocks:
        print("   ", line)
    apart = copy.deepcopy(fused)
    n_split = 0
    for line in rep.blocks:
        if "kept apart" in line or "undone" in line:
            continue
        a, b = line.split(":")[0].split(" + ")
        m = apart.get_submodule(a)
        assert isinstance(m, ExpandDepthwise)
        apart.set_submodule(a, m.expand)
        apart.set_submodule(b, m.depthwise)
        n_split += 1
    ts = {"fused": [], "apart": []}
    with torch.inference_mode():
        ya, yb = fused(x), apart(x)
        err = float((ya - ref).abs().max())
        for _ in range(2):
            fused(x), apart(x)
        for _ in range(args.rounds):
            for k, m in (("fused", fused), ("apart", apart)):
                t0 = time.perf_counter()
                m(x)
                ts[k].append(time.perf_counter() - t0)
    f, s = np.median(ts["fused"]), np.median(ts["apart"])
    ratios = np.array(ts["apart"]) / np.array(ts["fused"])
    print(
        f"batch {batch}: {n_split} pairs fused; whole model fused {f * 1e3:.2f} ms, apart "
        f"{s * 1e3:.2f} ms: {np.median(ratios):.3f}x (quartiles {np.quantile(ratios, 0.25):.3f}-"
        f"{np.quantile(ratios, 0.75):.3f}); max |y - dense| {err:.2e}, fused vs apart "
        f"{float((ya - yb).abs().max()):.2e}"
    )
