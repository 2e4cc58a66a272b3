"""Models outside the zoo through the converter with the fused 1x1 + depthwise kernel offered.

    .venv/bin/python results/probes/2026-12-04-fused/strangers.py [threads]

torchvision models with inverted-residual blocks (ReLU6, ReLU, Hardswish, SiLU, squeeze-
excitation), 90% zeros on every groups=1 conv and Linear, batch 2 at odd input sizes, one
thread (or the number given); calibrate mode (all kernels) and fixed mode (kernels spk and spk_depthwise, so
that every groups=1 conv is on spk and every pair is offered). Prints the output check, how many pairs were offered
and fused, and the fused model's largest difference from the dense float64 model next to
the converter's own bound, plus whether the argmax agrees."""

import sys

import torch
import torchvision

from sparsify.accel.convert import sparsify_inference_
from sparsify.accel.expand_dw import ExpandDepthwise
from sparsify.bench.sources import impose_density_

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1  # e.g. 2: the same on two threads
torch.set_num_threads(THREADS)
MODELS = ["mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf"]
for name in MODELS:
    for mode, size in (("calibrate", (2, 3, 97, 131)), ("fixed", (2, 3, 64, 200))):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(num_classes=10).eval()
        impose_density_(model, 0.1)
        x = torch.randn(size)
        with torch.no_grad():
            ref = model.double()(x.double())
        model.float()
        kernels = {"kernels": ("spk", "spk_depthwise")} if mode == "fixed" else {}
        rep = sparsify_inference_(model, x, mode=mode, threads=THREADS, reps=3, **kernels)
        with torch.inference_mode():
            y = model(x)
        fused = sum(isinstance(m, ExpandDepthwise) for m in model.modules())
        err = float((y.double() - ref).abs().max())
        same = bool((y.argmax(1) == ref.argmax(1)).all())
        print(
            f"{name:20s} {mode:9s} {tuple(size)}: {len(rep.blocks)} pair(s) offered, {fused} "
            f"fused; max|y - dense64| {err:.2e}, same argmax {same}; check: {rep.check[:90]}"
        )
