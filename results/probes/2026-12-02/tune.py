import time, numpy as np, os
from sparsify import kernels as spk
from sparsify.kernels.layouts import pack
rng = np.random.default_rng(0)
d = float(os.environ.get("D", "0.1")); B = int(os.environ.get("B", "64"))
w = rng.standard_normal((4096, 4096)).astype(np.float32); w[rng.random(w.shape) > d] = 0
x = rng.standard_normal((B, 4096)).astype(np.float32)
out = np.empty((B, 4096), np.float32)
cfgs = []
for kb in [int(v) for v in os.environ.get('KB','128 256 512 1024').split()]:
    for P in [int(v) for v in os.environ.get('P','64 128 256').split()]:
        for nv in [int(v) for v in os.environ.get('NV','8').split()]:
            cfgs.append((kb, P, nv, pack(w, "blocked", kblock=kb, panel=P)))
ts = {c[:3]: [] for c in cfgs}
for r in range(int(os.environ.get('R','15'))):
    for kb, P, nv, sw in cfgs:
        spk.spmm(sw, x, out=out, threads=1, tile_vectors=nv)
        t = time.perf_counter()
        for _ in range(3): spk.spmm(sw, x, out=out, threads=1, tile_vectors=nv)
        ts[(kb, P, nv)].append((time.perf_counter() - t) / 3)
fl = 2 * (w != 0).sum() * B
for k, v in sorted(ts.items(), key=lambda kv: np.min(kv[1])):
    print(k, f"min {np.min(v)*1e3:.2f} ms  {fl/np.min(v)/1e9:.1f} GFLOP/s   median {np.median(v)*1e3:.2f}")
