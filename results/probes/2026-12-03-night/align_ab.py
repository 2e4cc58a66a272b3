"""Where the packed-activation scratch starts, and what it costs: sparsify.kernels.spmm on
Linear 4096 x 4096 with the scratch placed 0, 16, 32 and 48 bytes past a cache line, rounds
interleaved in one process (one thread). numpy's np.empty promises 16 bytes; before the fix
the scratch's offset was whatever malloc returned (16 for a fresh mmap).

    .venv/bin/python results/probes/2026-12-03-night/align_ab.py   # run it several times
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from sparsify import kernels as K

OFFSETS = (0, 16, 32, 48)  # bytes past a 64-byte boundary


def scratch_at(n: int, offset: int) -> np.ndarray:
    """n float32 whose first byte is ``offset`` bytes past a cache line."""
    raw = np.empty(n * 4 + 128, dtype=np.uint8)
    start = -raw.ctypes.data % 64 + offset
    return raw[start : start + n * 4].view(np.float32)


def main() -> None:
    rng = np.random.default_rng(0)
    print(
        f"load {os.getloadavg()}, {platform.processor() or platform.machine()}, "
        f"kernels {K.info()['isa']}, one thread, median of 15 rounds x 3 calls"
    )
    for zeros in (0.90, 0.95):
        w = rng.standard_normal((4096, 4096), dtype=np.float32)
        w[rng.random(w.shape) < zeros] = 0
        sw = K.pack(w, layout="auto")
        for batch in (64, 256):
            x = rng.standard_normal((batch, 4096), dtype=np.float32)
            bufs = {o: scratch_at(4096 * batch, o) for o in OFFSETS}
            ref = None
            samples: dict[int, list[float]] = {o: [] for o in OFFSETS}
            for r in range(16):
                for o in OFFSETS:
                    K._scratch.bufs = {"xt": bufs[o]}
                    t0 = time.perf_counter()
                    for _ in range(3):
                        y = K.spmm(sw, x, threads=1)
                    dt = (time.perf_counter() - t0) / 3
                    if r:
                        samples[o].append(dt)
                    ref = y if ref is None else ref
                    assert np.array_equal(y, ref), "the offset changed the result"
            med = {o: float(np.median(v)) * 1e3 for o, v in samples.items()}
            gf = 2 * sw.nnz * batch / 1e6
            cells = "  ".join(f"+{o}B {med[o]:6.2f} ms ({gf / med[o]:4.1f} GF/s)" for o in OFFSETS)
            print(
                f"{zeros:.0%} zeros batch {batch:3d}: {cells}  off/aligned "
                f"{min(med[o] for o in OFFSETS[1:]) / med[0]:.2f}-{max(med[o] for o in OFFSETS[1:]) / med[0]:.2f}x"
            )


if __name__ == "__main__":
    main()
