"""Strangers' models through the converter at batches where the lanes paths run (17: one full
group of 16 and one image alone; 33), non-square inputs, 90% random zeros, calibrate mode,
1 or 2 threads (argv). Each converted model runs twice on different inputs (the second call
may reuse outputs of the first) and is checked in float64 against the unconverted model;
the converted convs that run with the batch in the lanes (as calibrated) are counted.

    .venv/bin/python results/probes/2026-12-04-lanes/stranger_lanes.py 1
"""

import copy
import sys
import time

import torch
import torchvision

from sparsify import kernels as K
from sparsify.accel.convert import sparsify_inference_
from sparsify.accel.layers import SparseConv2d
from sparsify.bench.sources import impose_density_

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(THREADS)
VW = K.info()["vector_width"]
CASES = [  # (name, input)
    ("vgg11_bn", (17, 3, 32, 40)),
    ("googlenet", (17, 3, 64, 48)),
    ("densenet121", (33, 3, 40, 48)),
    ("squeezenet1_1", (17, 3, 64, 80)),
    ("efficientnet_b0", (17, 3, 48, 64)),
    ("resnet18", (33, 3, 56, 40)),
]
print(f"# torch {torch.__version__}, torchvision {torchvision.__version__}, {THREADS} thread(s)")
for name, shape in CASES:
    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    m = getattr(torchvision.models, name)(**kw).eval()
    impose_density_(m, 0.1)
    twin = copy.deepcopy(m).double()
    xs = [torch.randn(shape), torch.randn(shape)]
    refs = [twin(x.double()).detach() for x in xs]
    inputs: dict[str, tuple[int, ...]] = {}

    def note(name: str, seen: dict[str, tuple[int, ...]] = inputs):
        def hook(mod: torch.nn.Module, args: tuple) -> None:
            seen.setdefault(name, tuple(args[0].shape))

        return hook

    hooks = [
        mod.register_forward_pre_hook(note(n))
        for n, mod in m.named_modules()
        if isinstance(mod, torch.nn.Conv2d) and mod.groups == 1
    ]
    with torch.no_grad():
        m(xs[0])
    for h in hooks:
        h.remove()
    t0 = time.perf_counter()
    with torch.inference_mode():
        rep = sparsify_inference_(m, xs[0], threads=THREADS, reps=3)
        ys = [m(x) for x in xs]
    took = time.perf_counter() - t0
    lanes = sum(
        mod.lanes_at(inputs[n])
        for n, mod in m.named_modules()
        if isinstance(mod, SparseConv2d) and mod.weight_spk is not None and n in inputs
    )
    errs = [float((y.double() - r).abs().max()) for y, r in zip(ys, refs, strict=True)]
    scale = max(float(r.abs().max()) for r in refs)
    same = all(bool((y.argmax(1) == r.argmax(1)).all()) for y, r in zip(ys, refs, strict=True))
    print(
        f"{name:<16} {str(shape):<18} check: {rep.check[:48]}\n{'':<16} max|y - y64| "
        f"{max(errs):.2e} over two calls (max|y64| {scale:.2e}), same argmax {same}; "
        f"{len(rep.converted)} layers converted, {lanes} of them with the batch in the lanes, "
        f"{len(rep.fused)} fused; whole: {rep.whole}; {took:.1f} s",
        flush=True,
    )
