"""Does the packed weight's placement matter? Six packings of one 90%-zeros 4096² weight in
one process (allocations shifted between them), batch 64, one thread, rounds interleaved."""

import time

import numpy as np

from sparsify import kernels as K

rng = np.random.default_rng(0)
w = rng.standard_normal((4096, 4096), dtype=np.float32)
w[rng.random(w.shape) < 0.9] = 0
x = rng.standard_normal((64, 4096), dtype=np.float32)
sws, pads = [], []
for _ in range(6):
    sws.append(K.pack(w))
    pads.append(np.empty(rng.integers(1, 50000), np.uint8))  # shift later allocations
S: list[list[float]] = [[] for _ in sws]
for r in range(12):
    for i, sw in enumerate(sws):
        t = time.perf_counter()
        for _ in range(3):
            K.spmm(sw, x, threads=1)
        if r:
            S[i].append((time.perf_counter() - t) / 3)
for sw, s in zip(sws, S):
    a = [sw.val.ctypes.data % 64, sw.idx.ctypes.data % 64, sw.ptr.ctypes.data % 64]
    print(
        f"val%64={a[0]:2d} idx%64={a[1]:2d} ptr%64={a[2]:2d} "
        f"val%4096={sw.val.ctypes.data % 4096:4d} {np.median(s) * 1e3:.3f} ms"
    )
