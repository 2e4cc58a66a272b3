"""A/B of kernels.max_pool2d: planes in the vector lanes (the default where it applies) against
the per-plane stencil (the library built with -DSPK_NO_STENCIL_LANES), same process, medians of
15 interleaved calls (each of the three first in turn); torch's own max pooling for scale; both checked equal to torch's.

    .venv/bin/python results/probes/2026-12-04-lanes/pool_lanes_ab.py
"""

import functools
import subprocess
import time

import numpy as np
import torch

from sparsify import kernels as K

torch.set_num_threads(1)
base = K._lib().flags
ab = tuple(f for f in base if f != "-shared") + ("-DSPK_NO_STENCIL_LANES", "-shared")
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
print(
    f"# pool_lanes_ab.py (commit {rev.stdout.strip()}, {time.strftime('%H:%M UTC', time.gmtime())})"
)
print(f"# 1 thread, torch {torch.__version__}, kernels {K._lib().isa}")
# name, (N, C, H, W), kernel, stride, padding
CASES = [
    ("LeNet-5 pool after conv1", (1, 20, 24, 24), 2, 2, 0),
    ("LeNet-5 pool after conv1", (16, 20, 24, 24), 2, 2, 0),
    ("LeNet-5 pool after conv1", (64, 20, 24, 24), 2, 2, 0),
    ("LeNet-5 pool after conv2", (64, 50, 8, 8), 2, 2, 0),
    ("convnet pool1 (3x3/3)", (1, 32, 24, 24), 3, 3, 0),
    ("convnet pool1 (3x3/3)", (64, 32, 24, 24), 3, 3, 0),
    ("convnet pool2", (64, 64, 8, 8), 2, 2, 0),
    ("3x3/2 pad 1 on 28x28", (16, 64, 28, 28), 3, 2, 1),
    ("resnet18 stem pool", (1, 64, 112, 112), 3, 2, 1),
]
rng = np.random.default_rng(0)
for name, shape, k, s, p in CASES:
    x = rng.standard_normal(shape).astype(np.float32)
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p).numpy()
    a = K.max_pool2d(x, k, s, p, threads=1)
    b = K.max_pool2d(x, k, s, p, threads=1, _flags=ab)
    assert np.array_equal(a, ref) and np.array_equal(b, ref), name
    ts = {"lanes": [], "stencil": [], "torch": []}
    xt = torch.from_numpy(x)
    calls = [
        ("lanes", functools.partial(K.max_pool2d, x, k, s, p, out=a, threads=1)),
        ("stencil", functools.partial(K.max_pool2d, x, k, s, p, out=b, threads=1, _flags=ab)),
        ("torch", functools.partial(torch.nn.functional.max_pool2d, xt, k, s, p)),
    ]
    for rep in range(15):
        for key, f in calls[rep % 3 :] + calls[: rep % 3]:  # each goes first in turn
            t = time.perf_counter()
            f()
            ts[key].append(time.perf_counter() - t)
    med = {key: np.median(v) * 1e6 for key, v in ts.items()}
    ratio = np.median(np.array(ts["stencil"]) / np.array(ts["lanes"]))
    print(
        f"{name:26s} {str(shape):18s} default {med['lanes']:8.1f} us  stencil "
        f"{med['stencil']:8.1f} us  torch {med['torch']:8.1f} us  stencil/default {ratio:5.2f}x",
        flush=True,
    )
