"""spk.spmm ((batch, in) -> (batch, out): transposes in and out) against spk.spmm_t
((in, batch) -> (out, batch): none), Linear 4096x4096 at 90% zeros, one thread, interleaved."""

import time

import numpy as np

from sparsify import kernels as spk

rng = np.random.default_rng(0)
w = rng.standard_normal((4096, 4096)).astype(np.float32)
w[rng.random(w.shape) > 0.1] = 0
sw = spk.pack(w, "auto")
for B in (16, 64, 256):
    x = rng.standard_normal((B, 4096)).astype(np.float32)
    xt = np.ascontiguousarray(x.T)
    out, out_t = np.empty((B, 4096), np.float32), np.empty((4096, B), np.float32)
    ts = {"spmm": [], "spmm_t": []}
    for _ in range(21):
        for name, fn in (
            ("spmm", lambda x=x, out=out: spk.spmm(sw, x, out=out, threads=1)),
            ("spmm_t", lambda xt=xt, out_t=out_t: spk.spmm_t(sw, xt, out=out_t, threads=1)),
        ):
            fn()
            t = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t)
    assert np.allclose(out.T, out_t, atol=1e-4)
    a, b = np.median(ts["spmm"]), np.median(ts["spmm_t"])
    print(
        f"batch {B}: spmm {a * 1e3:.2f} ms, spmm_t {b * 1e3:.2f} ms, transposes {100 * (a - b) / a:.0f}% of spmm"
    )
