import time, numpy as np
from sparsify import kernels as K
base = tuple(K.info()["flags"].split())
variants = {"now": base, "w16": base + ("-DSPK_STENCIL_LANES_WIDE=16",), "w32": base + ("-DSPK_STENCIL_LANES_WIDE=32",), "w64": base + ("-DSPK_STENCIL_LANES_WIDE=64",)}
rng = np.random.default_rng(0)
shapes = [(32,112,1),(96,112,2),(144,56,1),(144,56,2),(192,28,1),(192,28,2),(384,14,1),(576,14,1),(576,14,2),(960,7,1)]
for C, H, s in shapes:
    x = rng.standard_normal((1, C, H, H), dtype=np.float32); w = rng.standard_normal((C, 1, 3, 3), dtype=np.float32)
    outs = {k: K.depthwise_conv2d(x, w, None, s, 1, threads=1, _flags=f) for k, f in variants.items()}
    ok = all(np.array_equal(outs["now"], o) or np.allclose(outs["now"], o, atol=1e-5) for o in outs.values())
    ts = {k: [] for k in variants}
    y = {k: np.empty_like(outs["now"]) for k in variants}
    for _ in range(30):
        for k, f in variants.items():
            t0 = time.perf_counter(); K.depthwise_conv2d(x, w, None, s, 1, out=y[k], threads=1, _flags=f); ts[k].append(time.perf_counter() - t0)
    print(f"C{C} {H}x{H} s{s}: " + "  ".join(f"{k} {np.median(v)*1e6:7.1f}" for k, v in ts.items()) + f"  ok={ok}")
