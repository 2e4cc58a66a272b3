"""One against two threads on the lanes paths (sparse_conv2d with the batch in the lanes,
max_pool2d with the planes in the lanes), same process, rounds interleaved, medians of 15;
the cores other processes kept busy meanwhile (two-thread figures mean little above ~0.1).

    .venv/bin/python results/probes/2026-12-04-lanes/threads_ab.py
"""

import functools
import subprocess
import time

import numpy as np

from sparsify import kernels as K
from sparsify.kernels import layouts
from sparsify.timing import cpu_snapshot, others_busy_cores

rng = np.random.default_rng(0)
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
print(f"# threads_ab.py (commit {rev.stdout.strip()}, {time.strftime('%H:%M UTC', time.gmtime())})")
CONVS = [  # name, out, in, kernel, plane, density, padding, batch
    ("lenet5.conv2", 50, 20, 5, 12, 0.25, 0, 64),
    ("lenet5.conv1", 20, 1, 5, 28, 0.8, 0, 64),
    ("r18 256x256 3x3 14", 256, 256, 3, 14, 0.1, 1, 16),
    ("r18 512x512 3x3 7", 512, 512, 3, 7, 0.1, 1, 64),
]
calls = []
for name, oc, ic, k, hw, dens, pad, n in CONVS:
    w = rng.standard_normal((oc, ic, k, k)).astype(np.float32)
    w *= rng.random(w.shape) < dens
    sw = layouts.pack(w)
    x = rng.standard_normal((n, ic, hw, hw)).astype(np.float32)
    y = K.sparse_conv2d(sw, x, 1, pad, lanes=True, threads=1)
    assert np.array_equal(y, K.sparse_conv2d(sw, x, 1, pad, lanes=True, threads=2))
    calls.append((f"conv {name} batch {n}", sw, x, pad, y))
for name, shape, k in (
    ("pool convnet 3x3/3", (64, 32, 24, 24), 3),
    ("pool 8x8 2x2", (64, 50, 8, 8), 2),
):
    x = rng.standard_normal(shape).astype(np.float32)
    calls.append((name, None, x, k, K.max_pool2d(x, k)))
start = cpu_snapshot()
if True:
    for name, sw, x, arg, y in calls:
        if sw is None:
            run = {t: functools.partial(K.max_pool2d, x, arg, out=y, threads=t) for t in (1, 2)}
        else:
            run = {
                t: functools.partial(K.sparse_conv2d, sw, x, 1, arg, out=y, lanes=True, threads=t)
                for t in (1, 2)
            }
        ts = {1: [], 2: []}
        for rep in range(15):
            for t in (1, 2) if rep % 2 else (2, 1):
                t0 = time.perf_counter()
                run[t]()
                ts[t].append(time.perf_counter() - t0)
        ratio = np.median(np.array(ts[1]) / np.array(ts[2]))
        print(
            f"{name:34s} 1 thread {np.median(ts[1]) * 1e3:7.3f} ms, 2 threads "
            f"{np.median(ts[2]) * 1e3:7.3f} ms: {ratio:4.2f}x",
            flush=True,
        )
busy = others_busy_cores(start, cpu_snapshot())
print(f"# other cores busy during the run: {busy if busy is None else round(busy, 2)}")
