"""Models outside the zoo through the converter with the depthwise + 1x1 projection kernel
offered (calibrate mode: the only one that offers it).

    .venv/bin/python results/probes/2026-12-04-dwproject/strangers.py [threads]

torchvision models with depthwise convs (ReLU6, ReLU, Hardswish, SiLU, squeeze-excitation
between the depthwise conv and the projection), 90% zeros on every groups=1 conv and Linear,
batch 2 and 1 at odd input sizes, one thread (or the number given). Prints how many
depthwise + 1x1 pairs were offered and fused (and 1x1 + depthwise pairs), the converted
model's largest difference from the dense float64 model, whether the argmax agrees, and the
converter's own output check."""

import sys

import torch
import torchvision

from sparsify.accel.convert import sparsify_inference_
from sparsify.accel.dw_project import DepthwiseProject
from sparsify.accel.expand_dw import ExpandDepthwise
from sparsify.bench.sources import impose_density_

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(THREADS)
MODELS = ["mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf"]
for name in MODELS:
    for size in ((2, 3, 97, 131), (1, 3, 64, 200)):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(num_classes=10).eval()
        impose_density_(model, 0.1)
        x = torch.randn(size)
        with torch.no_grad():
            ref = model.double()(x.double())
        model.float()
        rep = sparsify_inference_(model, x, threads=THREADS, reps=3)
        with torch.inference_mode():
            y = model(x)
        projected = sum(isinstance(m, DepthwiseProject) for m in model.modules())
        expanded = sum(isinstance(m, ExpandDepthwise) for m in model.modules())
        err = float((y.double() - ref).abs().max())
        same = bool((y.argmax(1) == ref.argmax(1)).all())
        print(
            f"{name:18s} {tuple(size)}: depthwise + 1x1 {len(rep.projections)} offered, "
            f"{projected} fused; 1x1 + depthwise {len(rep.blocks)} offered, {expanded} fused; "
            f"max|y - dense64| {err:.2e}, same argmax {same}; "
            f"check: {rep.check[:60]}"
        )
