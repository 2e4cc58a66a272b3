"""A/B of the register-transposed activation packing and result write-back in spk.spmm.

Old = sparsify/kernels/spk.c at 583e5b4 (scalar transposes), compiled with the same flags
into its own cache entry; new = the working tree's. Linear 4096x4096, one thread, every
variant interleaved in each of R repetitions (3 calls timed per sample); medians. spmm_t
(no transposes at all) is the floor both approach.

    git show 583e5b4:sparsify/kernels/spk.c > /tmp/spk_583e5b4.c
    OLD=/tmp/spk_583e5b4.c python results/probes/2026-12-03-pm/transpose_ab.py
"""

import os
import time
from functools import partial
from pathlib import Path

import numpy as np

from sparsify import kernels as K
from sparsify.kernels import build

R = int(os.environ.get("R", "15"))
FLAGS = build.FLAG_SETS[0]
OLD_FLAGS = (*FLAGS[:-2], "-DSPK_AB_OLD", *FLAGS[-2:])  # a distinct cache key and load slot

new_source = build.SOURCE
build.SOURCE = Path(os.environ["OLD"])
assert (
    K.spmm(K.pack(np.eye(4, dtype=np.float32)), np.ones((2, 4), np.float32), _flags=OLD_FLAGS).sum()
    == 8
)
build.SOURCE = new_source

rng = np.random.default_rng(0)
print(f"# {K.info()['isa']}, load average at start {os.getloadavg()[0]:.2f}, R={R}")
for d in (0.1, 0.05):
    w = rng.standard_normal((4096, 4096)).astype(np.float32)
    w[rng.random(w.shape) > d] = 0
    sw = K.pack(w)
    for batch in (16, 64, 256):
        x = rng.standard_normal((batch, 4096)).astype(np.float32)
        xt = np.ascontiguousarray(x.T)
        y, yt = np.empty((batch, 4096), np.float32), np.empty((4096, batch), np.float32)
        ref = K.spmm(sw, x, threads=1, _flags=OLD_FLAGS)
        assert np.array_equal(K.spmm(sw, x, threads=1), ref)  # same sums in the same order
        runs = {
            "old spmm": partial(K.spmm, sw, x, out=y, threads=1, _flags=OLD_FLAGS),
            "new spmm": partial(K.spmm, sw, x, out=y, threads=1),
            "spmm_t": partial(K.spmm_t, sw, xt, out=yt, threads=1),
        }
        ts = {k: [] for k in runs}
        for _ in range(R):
            for k, f in runs.items():
                f()
                t = time.perf_counter()
                for _ in range(3):
                    f()
                ts[k].append((time.perf_counter() - t) / 3)
        med = {k: float(np.median(v)) * 1e3 for k, v in ts.items()}
        gf = 2 * sw.nnz * batch / (med["new spmm"] * 1e-3) / 1e9
        print(
            f"density {d} batch {batch}: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
            + f"; old/new {med['old spmm'] / med['new spmm']:.3f}x, new spmm"
            f" {gf:.1f} GFLOP/s on the nonzeros, {med['new spmm'] / med['spmm_t'] - 1:+.1%} over spmm_t"
        )
print(f"# load average at end {os.getloadavg()[0]:.2f}")
