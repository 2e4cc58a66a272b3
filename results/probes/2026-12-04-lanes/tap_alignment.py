"""How much the per-image conv path loses to split loads: the same 64x64 3x3 weight (90%
zeros), batch 8, one image at a time (lanes=False), with taps 0, 1, 2 floats apart (most
vector loads cross a cache line) and, by a column dilation of 16, 0, 16, 32 floats apart
(every load aligned: rows of 64 and 96 floats are whole vectors). The aligned case computes
96 wide positions per row for 64 outputs, the shifted one 64 for 62: GFLOP/s per computed
position is the fair column. Medians of 31 interleaved calls.

    .venv/bin/python results/probes/2026-12-04-lanes/tap_alignment.py
"""

import functools
import subprocess
import time

import numpy as np

from sparsify import kernels as K
from sparsify.kernels import layouts

rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
print(
    f"# tap_alignment.py (commit {rev.stdout.strip()}, {time.strftime('%H:%M UTC', time.gmtime())})"
)
rng = np.random.default_rng(0)
w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
w *= rng.random(w.shape) < 0.1
sw = layouts.pack(w)
nnz = int((w != 0).sum())
cases = {}
for name, (h, wd, dil) in {
    "taps 0, 1, 2 floats apart": (58, 64, (1, 1)),
    "taps 0, 16, 32 floats apart": (58, 96, (1, 16)),
}.items():
    x = rng.standard_normal((8, 64, h, wd)).astype(np.float32)
    geo = K._conv_geometry(sw, x.shape, 1, 0, dil)
    plan = K.conv_plan(sw, x.shape, geo, K._lib(), lanes=False)
    y = np.empty((8, 64, geo[3], geo[4]), np.float32)
    run = functools.partial(K.sparse_conv2d_into, plan, x.ctypes.data, y.ctypes.data, None, 1)
    cases[name] = (run, geo, x, y)
ts = {k: [] for k in cases}
for r in range(31):
    for k in list(cases) if r % 2 else list(cases)[::-1]:
        t = time.perf_counter()
        cases[k][0]()
        ts[k].append(time.perf_counter() - t)
for k, (_, geo, _, _) in cases.items():
    t = float(np.median(ts[k]))
    ho, wo, wq = geo[3], geo[4], geo[6]
    out = 2 * nnz * ho * wo * 8 / t / 1e9
    computed = 2 * nnz * ho * wq * 8 / t / 1e9
    print(
        f"{k:28s} Wq {wq:3d}, Wo {wo}: {t * 1e3:6.2f} ms, {out:5.1f} GFLOP/s on the outputs, "
        f"{computed:5.1f} per computed position"
    )
