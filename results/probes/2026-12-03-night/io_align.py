"""Does the caller's input/output alignment matter? spmm on Linear 4096², batch 64, one
thread, with x and y each at +0 or +16 bytes past a cache line (rounds interleaved)."""

import time

import numpy as np

from sparsify import kernels as K


def at(n: int, offset: int) -> np.ndarray:
    raw = np.empty(n * 4 + 128, np.uint8)
    s = -raw.ctypes.data % 64 + offset
    return raw[s : s + n * 4].view(np.float32)


rng = np.random.default_rng(0)
for z in (0.9, 0.95):
    w = rng.standard_normal((4096, 4096), dtype=np.float32)
    w[rng.random(w.shape) < z] = 0
    sw = K.pack(w)
    b = 64
    x = rng.standard_normal((b, 4096), dtype=np.float32)
    xs = {o: at(4096 * b, o).reshape(b, 4096) for o in (0, 16)}
    for o in xs:
        xs[o][...] = x
    ys = {o: at(4096 * b, o).reshape(b, 4096) for o in (0, 16)}
    S: dict[tuple[int, int], list[float]] = {(a, c): [] for a in (0, 16) for c in (0, 16)}
    for r in range(16):
        for k in S:
            t = time.perf_counter()
            for _ in range(3):
                K.spmm(sw, xs[k[0]], out=ys[k[1]], threads=1)
            if r:
                S[k].append((time.perf_counter() - t) / 3)
    print(z, b, {f"x+{k[0]} y+{k[1]}": round(float(np.median(v)) * 1e3, 3) for k, v in S.items()})
