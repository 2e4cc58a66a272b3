"""A/B of the old (583e5b4, scalar transposes) and new spk.spmm on the bench's MLP
1024-4096-4096-1024 (Linear + ReLU, no bias), random zeros, one thread, interleaved; medians.

    git show 583e5b4:sparsify/kernels/spk.c > /tmp/spk_583e5b4.c
    OLD=/tmp/spk_583e5b4.c python results/probes/2026-12-03-pm/mlp_ab.py
"""

import os
import time
from pathlib import Path

import numpy as np

from sparsify import kernels as K
from sparsify.kernels import build

R = int(os.environ.get("R", "15"))
FLAGS = build.FLAG_SETS[0]
OLD_FLAGS = (*FLAGS[:-2], "-DSPK_AB_OLD", *FLAGS[-2:])
new_source = build.SOURCE
build.SOURCE = Path(os.environ["OLD"])
K.spmm(K.pack(np.eye(4, dtype=np.float32)), np.ones((2, 4), np.float32), _flags=OLD_FLAGS)
build.SOURCE = new_source


def mlp(sws, x, flags):
    h = x
    for k, sw in enumerate(sws):
        h = K.spmm(sw, h, threads=1, _flags=flags)
        if k < len(sws) - 1:
            np.maximum(h, 0, out=h)
    return h


rng = np.random.default_rng(0)
print(f"# {K.info()['isa']}, load average at start {os.getloadavg()[0]:.2f}, R={R}")
dims = (1024, 4096, 4096, 1024)
for d in (0.1, 0.05):
    sws = []
    for i, o in zip(dims[:-1], dims[1:]):
        w = rng.standard_normal((o, i)).astype(np.float32)
        w[rng.random(w.shape) > d] = 0
        sws.append(K.pack(w))
    for batch in (16, 64, 256):
        x = rng.standard_normal((batch, dims[0])).astype(np.float32)

        assert np.array_equal(mlp(sws, x, OLD_FLAGS), mlp(sws, x, None))
        ts = {"old": [], "new": []}
        for _ in range(R):
            for k, flags in (("old", OLD_FLAGS), ("new", None)):
                mlp(sws, x, flags)
                t = time.perf_counter()
                for _ in range(3):
                    mlp(sws, x, flags)
                ts[k].append((time.perf_counter() - t) / 3)
        old, new = (float(np.median(ts[k])) * 1e3 for k in ("old", "new"))
        ratio = float(np.median(np.array(ts["old"]) / np.array(ts["new"])))
        print(
            f"density {d} batch {batch}: old {old:.2f} ms, new {new:.2f} ms, "
            f"median paired old/new {ratio:.3f}x"
        )
print(f"# load average at end {os.getloadavg()[0]:.2f}")
