"""Strangers' models through the converter after the 2026-12-04 changes (1x1 convs in place,
fused activations, max-pool stencil): torchvision models outside the zoo with random weights,
90% random zeros, batch 2, 1 thread (argv: threads), calibrate mode; outputs against the unconverted model
in float64, what was fused and pooled, and how fast the whole model ran."""

import copy
import sys
import time

import torch
import torchvision

from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(THREADS)
CASES = [  # (name, input): inplace ReLUs, ceil_mode pools, F.relu, BN before ReLU, dilation
    ("alexnet", (2, 3, 96, 96)),
    ("vgg11_bn", (2, 3, 64, 64)),
    ("squeezenet1_1", (2, 3, 96, 96)),
    ("googlenet", (2, 3, 96, 96)),
    ("densenet121", (2, 3, 64, 64)),
    ("shufflenet_v2_x0_5", (2, 3, 96, 96)),
    ("mnasnet0_5", (2, 3, 96, 96)),
]
print(f"# torch {torch.__version__}, torchvision {torchvision.__version__}, {THREADS} thread(s)")
for name, shape in CASES:
    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    m = getattr(torchvision.models, name)(**kw).eval()
    impose_density_(m, 0.1)
    x = torch.randn(shape)
    ref64 = copy.deepcopy(m).double()(x.double()).detach()
    t0 = time.perf_counter()
    with torch.inference_mode():
        rep = sparsify_inference_(m, x, threads=THREADS, reps=5)
        y = m(x)
    took = time.perf_counter() - t0
    err = float((y.double() - ref64).abs().max())
    scale = float(ref64.abs().max())
    same = bool((y.argmax(1) == ref64.argmax(1)).all())
    pooled = sum(1 for p in rep.pools if "kept torch" not in p)
    print(
        f"{name:<20} check: {rep.check[:60]}\n{'':<20} max|y - y64| {err:.2e} (max|y64| "
        f"{scale:.2e}), same argmax {same}; {len(rep.converted)} layers converted, "
        f"{len(rep.fused)} activations fused, {pooled}/{len(rep.pools)} max pools on the "
        f"stencil; whole: {rep.whole}; conversion {took:.1f} s"
    )
