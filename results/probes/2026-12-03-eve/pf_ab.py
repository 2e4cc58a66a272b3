"""A/B of software prefetch in spk's tile loop: Linear 4096x4096 random zeros, one thread,
interleaved rounds; variants compiled from a copy of spk.c with -DSPK_PF=distance."""
import os, time
from pathlib import Path
import numpy as np
from sparsify import kernels as K
from sparsify.kernels import build
from sparsify.kernels.layouts import pack

R = int(os.environ.get("R", "11"))
BASE = build.FLAG_SETS[0]
variants = {"shipped": None}
for spec in os.environ.get("PF", "0,1,0,0 0,1,0,1").split():
    d, s, x, bt = spec.split(",")
    variants[f"pf{d}s{s}x{x}bt{bt}"] = (*BASE[:-2], f"-DSPK_PF={d}", f"-DSPK_PFS={s}", f"-DSPK_PFX={x}", f"-DSPK_BT={bt}", *BASE[-2:])
shipped_src = build.SOURCE
build.SOURCE = Path(os.environ["PF_SOURCE"])
for k, f in variants.items():
    if f is not None:
        K.spmm(K.pack(np.eye(4, dtype=np.float32)), np.ones((2, 4), np.float32), _flags=f)
build.SOURCE = shipped_src
rng = np.random.default_rng(0)
print(f"# {K.info()['isa']}, load {os.getloadavg()[0]:.2f}, R={R}")
for d in [float(v) for v in os.environ.get("D", "0.1 0.05").split()]:
    w = rng.standard_normal((4096, 4096)).astype(np.float32)
    w[rng.random(w.shape) > d] = 0
    for kb in [int(v) for v in os.environ.get("KB", "128 512 4096").split()]:
        sw = pack(w, "blocked", kblock=kb, panel=128)
        for B in [int(v) for v in os.environ.get("B", "64").split()]:
            x = rng.standard_normal((B, 4096)).astype(np.float32)
            out = np.empty((B, 4096), np.float32)
            ref = K.spmm(sw, x, threads=1).copy()
            ts = {k: [] for k in variants}
            for _ in range(R):
                for k, f in variants.items():
                    K.spmm(sw, x, out=out, threads=1, _flags=f)
                    t = time.perf_counter()
                    for _ in range(3):
                        K.spmm(sw, x, out=out, threads=1, _flags=f)
                    ts[k].append((time.perf_counter() - t) / 3)
                    assert np.allclose(out, ref, rtol=1e-5, atol=1e-4)
            fl = 2 * (w != 0).sum() * B
            base = np.array(ts["shipped"])
            line = f"d {d} kb {kb} B {B}: shipped {np.median(base)*1e3:.2f} ms {fl/np.median(base)/1e9:.1f} GF/s"
            for k in variants:
                if k != "shipped":
                    v = np.array(ts[k])
                    line += f" | {k} {fl/np.median(v)/1e9:.1f} GF/s x{np.median(base / v):.3f}"
            print(line, flush=True)
print(f"# load at end {os.getloadavg()[0]:.2f}")
