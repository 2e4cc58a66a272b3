"""A/B of the fused kernel's stride-2 path: the even/odd columns split in registers straight
into the stencil's two phase rows, against the row buffer + phase copy (-DSPK_NO_EXPAND_SPLIT).

    .venv/bin/python results/probes/2026-12-04-fused/split_s2_ab.py

mobilenet_v2's stride-2 expansion + depthwise pairs at batch 1 and 8, 90% zeros in the 1x1
weight, ReLU6 after both, one thread; 30 interleaved calls, medians of the last 25."""

import time

import numpy as np

from sparsify import kernels as K

BASE = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
VARIANTS = {"split": BASE, "row buffer": (*BASE, "-DSPK_NO_EXPAND_SPLIT")}
PAIRS = [(16, 96, 112), (24, 144, 56), (32, 192, 28)]  # (IC, E, H = W) of features.2/4/7
rng = np.random.default_rng(0)
print(f"kernels: {K.info()['isa']}")
for batch in (1, 8):
    for ic, e, h in PAIRS:
        x = rng.standard_normal((batch, ic, h, h)).astype(np.float32)
        ew = rng.standard_normal((e, ic)).astype(np.float32)
        ew[rng.random(ew.shape) < 0.9] = 0.0
        w = rng.standard_normal((e, 1, 3, 3)).astype(np.float32)
        eb, b = (rng.standard_normal(e).astype(np.float32) for _ in range(2))
        ys = {v: np.empty((batch, e, h // 2, h // 2), np.float32) for v in VARIANTS}
        ts: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(30):
            for v, flags in VARIANTS.items():
                t0 = time.perf_counter()
                K.expand_depthwise_conv2d(
                    x, ew, eb, w, b, 2, 1, expand_clamp=(0, 6), clamp=(0, 6), out=ys[v],
                    threads=1, _flags=flags,
                )  # fmt: skip
                ts[v].append(time.perf_counter() - t0)
        med = {v: float(np.median(t[5:])) for v, t in ts.items()}
        r = np.array(ts["row buffer"][5:]) / np.array(ts["split"][5:])
        print(
            f"batch {batch} {ic}->{e} at {h}x{h}: split {med['split'] * 1e6:7.1f} us, row buffer "
            f"{med['row buffer'] * 1e6:7.1f} us: {np.median(r):.2f}x (quartiles "
            f"{np.quantile(r, 0.25):.2f}-{np.quantile(r, 0.75):.2f}); equal outputs "
            f"{np.array_equal(ys['split'], ys['row buffer'])}"
        )
