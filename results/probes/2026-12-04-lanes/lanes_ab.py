"""A/B of sparse_conv2d's two paths on the same packed weight, input and thread: one image at a
time over "wide" positions (lanes=False) against VW images in the vector lanes (lanes=True,
tile of 8 vectors, as conv_plan picks). Medians of 15 interleaved calls; GFLOP/s on the
nonzeros (2 * nnz * Ho * Wo * N / t). Checks both against torch first.

    .venv/bin/python results/probes/2026-12-04-lanes/lanes_ab.py 16 64
"""

import subprocess
import sys
import time

import numpy as np
import torch

from sparsify import kernels as K
from sparsify.kernels import layouts

torch.set_num_threads(1)
rng = np.random.default_rng(0)
# name, out, in, kernel, plane, density, padding, stride
CASES = [
    ("lenet5.conv1", 20, 1, 5, 28, 0.8, 0, 1),
    ("lenet5.conv2", 50, 20, 5, 12, 0.25, 0, 1),
    ("convnet.conv1", 32, 1, 5, 28, 0.72, 0, 1),
    ("convnet.conv2", 64, 32, 5, 12, 0.02, 0, 1),
    ("r18 64x64 3x3 56", 64, 64, 3, 56, 0.1, 1, 1),
    ("r18 128x128 3x3 28", 128, 128, 3, 28, 0.1, 1, 1),
    ("r18 256x256 3x3 14", 256, 256, 3, 14, 0.1, 1, 1),
    ("r18 512x512 3x3 7", 512, 512, 3, 7, 0.1, 1, 1),
    ("r18 128x64 3x3 s2 56", 128, 64, 3, 56, 0.1, 1, 2),
    ("r18 256x128 3x3 s2 28", 256, 128, 3, 28, 0.1, 1, 2),
    ("r18 512x256 3x3 s2 14", 512, 256, 3, 14, 0.1, 1, 2),
    ("r18 1x1 s2 512x256 14", 512, 256, 1, 14, 0.1, 0, 2),
    ("mbv2 1x1 144x24 56", 144, 24, 1, 56, 0.1, 0, 1),
    ("mbv2 1x1 576x96 14", 576, 96, 1, 14, 0.1, 0, 1),
    ("mbv2 1x1 960x160 7", 960, 160, 1, 7, 0.1, 0, 1),
    ("stranger 5x5 pad2 32", 48, 32, 5, 32, 0.2, 2, 1),
]
lib = K._lib()
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
print(
    f"# {' '.join(sys.argv)}  (commit {rev.stdout.strip()}, {time.strftime('%H:%M UTC', time.gmtime())})"
)
print(f"# 1 thread, torch {torch.__version__}, kernels {lib.isa}, VW {lib.vector_width}")
for n in [int(a) for a in sys.argv[1:]] or [16, 64]:
    for name, oc, ic, k, hw, dens, pad, st in CASES:
        if hw >= 28 and n > 16:
            continue
        w = rng.standard_normal((oc, ic, k, k)).astype(np.float32)
        w *= rng.random(w.shape) < dens
        sw = layouts.pack(w)
        x = rng.standard_normal((n, ic, hw, hw)).astype(np.float32)
        ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, st, pad)
        ref = ref.numpy()
        geo = K._conv_geometry(sw, x.shape, st, pad, 1)
        runs = {}
        for lanes in (False, True):
            plan = K.conv_plan(sw, x.shape, geo, lib, lanes=lanes)
            y = np.full(ref.shape, np.nan, np.float32)
            K.sparse_conv2d_into(plan, x.ctypes.data, y.ctypes.data, None, 1)
            assert abs(y - ref).max() < 1e-3, (name, lanes)
            runs[lanes] = (plan, y)
        ts = {False: [], True: []}
        for _ in range(15):
            for lanes in (False, True):
                plan, y = runs[lanes]
                t = time.perf_counter()
                K.sparse_conv2d_into(plan, x.ctypes.data, y.ctypes.data, None, 1)
                ts[lanes].append(time.perf_counter() - t)
        a, b = np.median(ts[False]), np.median(ts[True])
        ratio = np.median(np.array(ts[False]) / np.array(ts[True]))
        fl = 2 * int((w != 0).sum()) * ref.shape[2] * ref.shape[3] * n
        picks = K.lanes_pay(n, lib.vector_width, (k, k), (st, st), geo[6], geo[4])
        print(
            f"N={n:3d} {name:22s} per-image {a * 1e3:8.3f} ms ({fl / a / 1e9:5.1f} GF/s)  "
            f"lanes {b * 1e3:8.3f} ms ({fl / b / 1e9:5.1f} GF/s)  "
            f"per-image/lanes {ratio:5.2f}x  lanes_pay: {picks}",
            flush=True,
        )
