"""A/B of kernels.depthwise_conv2d: 16 planes at a time in the vector lanes, each with its
channel's weights (the default where N*C >= 16 and output rows are under two vectors),
against the per-plane stencil (the library built with -DSPK_NO_STENCIL_LANES), and torch's
depthwise conv; mobilenet_v2's depthwise layers on a 224x224 input (with bias and ReLU6 as
the converter fuses them) and an efficientnet-like 5x5; medians of 15 interleaved calls, each
of the three first in turn; both checked against torch.

    .venv/bin/python results/probes/2026-12-04-lanes/dw_lanes_ab.py 1 8
"""

import functools
import subprocess
import sys
import time

import numpy as np
import torch

from sparsify import kernels as K

torch.set_num_threads(1)
base = K._lib().flags
ab = tuple(f for f in base if f != "-shared") + ("-DSPK_NO_STENCIL_LANES", "-shared")
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
print(
    f"# {' '.join(sys.argv)} (commit {rev.stdout.strip()}, {time.strftime('%H:%M UTC', time.gmtime())})"
)
print(f"# 1 thread, torch {torch.__version__}, kernels {K._lib().isa}")
CASES = [  # channels, plane, kernel, stride (padding kernel // 2)
    (144, 56, 3, 2),
    (192, 28, 3, 1),
    (192, 28, 3, 2),
    (384, 14, 3, 1),
    (576, 14, 3, 1),
    (576, 14, 3, 2),
    (960, 7, 3, 1),
    (240, 14, 5, 1),
    (144, 56, 3, 1),
]
rng = np.random.default_rng(0)
tot = {"lanes": 0.0, "stencil": 0.0, "torch": 0.0}
for n in [int(a) for a in sys.argv[1:]] or [1, 8]:
    for c, hw, k, s in CASES:
        p = k // 2
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
        ref = torch.clamp(torch.nn.functional.conv2d(xt, wt, bt, s, p, groups=c), 0, 6).numpy()
        ya, yb = np.empty_like(ref), np.empty_like(ref)
        calls = [
            ("lanes", functools.partial(
                K.depthwise_conv2d, x, w, b, s, p, clamp=(0, 6), out=ya, threads=1)),
            ("stencil", functools.partial(
                K.depthwise_conv2d, x, w, b, s, p, clamp=(0, 6), out=yb, threads=1, _flags=ab)),
            ("torch", lambda xt=xt, wt=wt, bt=bt, s=s, p=p, c=c: torch.clamp(
                torch.nn.functional.conv2d(xt, wt, bt, s, p, groups=c), 0, 6)),
        ]  # fmt: skip
        for _, f in calls:
            f()
        assert abs(ya - ref).max() < 1e-4 and abs(yb - ref).max() < 1e-4, (c, hw, k, s)
        ts = {key: [] for key, _ in calls}
        for rep in range(15):
            for key, f in calls[rep % 3 :] + calls[: rep % 3]:
                t = time.perf_counter()
                f()
                ts[key].append(time.perf_counter() - t)
        med = {key: float(np.median(v)) for key, v in ts.items()}
        for key in tot:
            tot[key] += med[key]
        ratio = np.median(np.array(ts["stencil"]) / np.array(ts["lanes"]))
        print(
            f"N={n} C={c:4d} {hw:3d}x{hw:<3d} {k}x{k}/{s}  default {med['lanes'] * 1e6:8.1f} us  "
            f"stencil {med['stencil'] * 1e6:8.1f} us  torch {med['torch'] * 1e6:8.1f} us  "
            f"stencil/default {ratio:5.2f}x",
            flush=True,
        )
    print(
        f"N={n} sum: default {tot['lanes'] * 1e3:.2f} ms, stencil {tot['stencil'] * 1e3:.2f} ms,"
        f" torch {tot['torch'] * 1e3:.2f} ms",
        flush=True,
    )
    tot = dict.fromkeys(tot, 0.0)
