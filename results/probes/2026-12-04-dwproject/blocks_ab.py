"""Per block of torchvision's mobilenet_v2 (90% zeros): the depthwise conv (or the fused
expansion + depthwise conv) and the 1x1 projection after it, apart against fused.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-dwproject/blocks_ab.py --batch 1 8

Converts the model once per batch (deterministic: mode="fixed", every conv on the C
kernels, the untimed 1x1 + depthwise rule, which fuses block 3's expansion), records each
layer's input during one forward, then for every block builds a DepthwiseProject from its
converted depthwise source and projection and times the two ways on that input, interleaved
(timing.time_interleaved), one thread: medians of 21 rounds and the median of the per-round ratios."""

import numpy as np
import torch
from common import mobilenet, setup  # this folder's shared setup

from sparsify.accel.convert import sparsify_inference_
from sparsify.accel.dw_project import DepthwiseProject, fusable
from sparsify.accel.expand_dw import ExpandDepthwise
from sparsify.accel.layers import DepthwiseConv2d, SparseConv2d
from sparsify.timing import time_interleaved

args = setup()
for batch in args.batch:
    model, x = mobilenet(batch)
    sparsify_inference_(model, x, threads=1, mode="fixed", kernels=("spk", "spk_depthwise"))
    inputs: dict[str, torch.Tensor] = {}

    def keep(name: str, store: dict = inputs):
        def hook(module, args):
            store.setdefault(name, args[0])

        return hook

    hooks = [
        m.register_forward_pre_hook(keep(n))
        for n, m in model.named_modules()
        if type(m) in (DepthwiseConv2d, ExpandDepthwise)
    ]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    print(f"batch {batch}")
    for i, block in enumerate(model.features):
        conv = getattr(block, "conv", None)
        if conv is None:
            continue
        leaves = [m for m in conv.modules() if type(m) in (DepthwiseConv2d, ExpandDepthwise)]
        name = next(n for n, m in model.named_modules() if leaves and m is leaves[0])
        source = leaves[0]
        project = [m for m in conv.children() if isinstance(m, SparseConv2d)][-1]
        if not fusable(source, project):
            print(f"  block {i}: not fusable")
            continue
        fused = DepthwiseProject(source, project)
        xi = inputs[name]
        with torch.inference_mode():
            apart_y, fused_y = project(source(xi)), fused(xi)
            err = float((apart_y - fused_y).abs().max() / (apart_y.abs().max() + 1))
            t = time_interleaved(
                {
                    "apart": lambda p=project, s=source, x=xi: p(s(x)),
                    "fused": lambda f=fused, x=xi: f(x),
                },
                reps=args.rounds,
            )
        a, f = np.array(t["apart"].samples), np.array(t["fused"].samples)
        print(
            f"  block {i:2d} {type(source).__name__:15s} in {tuple(xi.shape)}: apart "
            f"{np.median(a) * 1e3:.3f} ms, fused {np.median(f) * 1e3:.3f} ms, "
            f"{np.median(a / f):.2f}x; max rel. difference {err:.1e}"
        )
