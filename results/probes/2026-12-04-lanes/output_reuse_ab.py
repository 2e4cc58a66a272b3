"""A/B of reused outputs (sparsify.accel.layers.reused_empty) on resnet18 (1 input channel,
224x224, 90% random zeros in every conv, the converter with spk fixed), in one process:
forward passes interleaved with reuse on and off (off: layers._FREE_REFS = None, so every
output is a fresh torch.empty), medians of 7; outputs checked against the dense model.

    .venv/bin/python results/probes/2026-12-04-lanes/output_reuse_ab.py 16 32
"""

import subprocess
import sys
import time

import numpy as np
import torch
import torchvision

from sparsify.accel import layers
from sparsify.accel.convert import sparsify_inference_

torch.set_num_threads(1)
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
print(
    f"# {' '.join(sys.argv)}  (commit {rev.stdout.strip()}, {time.strftime('%H:%M UTC', time.gmtime())})"
)
print(f"# 1 thread, torch {torch.__version__}, reuse bound {layers.REUSE_MIN_BYTES >> 20} MiB")
for n in [int(a) for a in sys.argv[1:]] or [16, 32]:
    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.mul_((torch.rand_like(mod.weight) < 0.1).float())
    m.eval()
    x = torch.randn(n, 1, 224, 224)
    with torch.no_grad():
        ref = m(x)
    sparsify_inference_(m, x, mode="fixed", kernels=("spk",), reps=3)
    free = layers._FREE_REFS
    ts: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        for _ in range(7):
            for reuse in (True, False):
                layers._FREE_REFS = free if reuse else None
                t = time.perf_counter()
                y = m(x)
                ts[reuse].append(time.perf_counter() - t)
                assert (y - ref).abs().max() < 1e-4
                del y
    layers._FREE_REFS = free
    on, off = np.median(ts[True]), np.median(ts[False])
    ratio = np.median(np.array(ts[False]) / np.array(ts[True]))
    big = sum(1 for mod in m.modules() if mod.__dict__.get("_last_out") is not None)
    print(
        f"batch {n:3d}: reuse {on * 1e3:7.1f} ms, fresh {off * 1e3:7.1f} ms, "
        f"fresh/reuse {ratio:.2f}x (median of paired ratios); layers holding an output: {big}",
        flush=True,
    )
