"""The tile loop's ceiling: long segments whose activation slice stays in L1 (cols 128, nkb 1)
against the 4096^2 layer at 90% zeros; batch 64, one thread; GFLOP/s counted on nonzeros."""
import os, time
import numpy as np
from sparsify import kernels as K
from sparsify.kernels.layouts import pack
rng = np.random.default_rng(0)
lib = K._lib().lib
lib.spk_fma_peak_probe(10**6)
pk = []
for _ in range(5):
    t = time.perf_counter(); lib.spk_fma_peak_probe(10**7); pk.append(time.perf_counter() - t)
peak = 2 * K.info()["vector_width"] * 12 * 10**7 / min(pk) / 1e9
print(f"# load {os.getloadavg()[0]:.2f}, FMA peak probe {peak:.1f} GFLOP/s")
cases = [(4096, 128, 1.0, 128), (4096, 128, 0.5, 128), (4096, 128, 0.1, 128),
         (4096, 4096, 0.1, 128), (4096, 4096, 0.1, 4096), (4096, 1024, 1.0, 1024)]
B = 64
for rows, cols, d, kb in cases:
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[rng.random(w.shape) > d] = 0
    sw = pack(w, "blocked", kblock=kb, panel=128)
    x = rng.standard_normal((B, cols)).astype(np.float32)
    out = np.empty((B, rows), np.float32)
    ts = []
    for _ in range(15):
        t = time.perf_counter()
        for _ in range(3):
            K.spmm(sw, x, out=out, threads=1)
        ts.append((time.perf_counter() - t) / 3)
    fl = 2 * (w != 0).sum() * B
    segs = rows * sw.nkb
    print(f"rows {rows} cols {cols} density {d} kb {kb}: {fl/np.median(ts)/1e9:.1f} GF/s "
          f"({(w != 0).sum() / segs:.1f} nnz per segment)")
