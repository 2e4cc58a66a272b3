"""A/B of the stride-2 row split: even and odd columns split in registers straight into the
stencil's two phase rows, against pad_row's copy per phase (and, in the fused kernel, its row
buffer): `-DSPK_NO_SPLIT_S2` builds the latter.

    .venv/bin/python results/probes/2026-12-04-fused/split_s2_ab.py

mobilenet_v2's stride-2 expansion + depthwise pairs (90% zeros in the 1x1 weight, ReLU6 after
both), its stride-2 depthwise convs alone, and resnet's 3x3/2 stem max pool, at batch 1 and 8,
one thread; 30 interleaved calls, medians of the last 25, ratio = pad_row / split."""

import time

import numpy as np

from sparsify import kernels as K

BASE = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
VARIANTS = {"split": BASE, "pad_row": (*BASE, "-DSPK_NO_SPLIT_S2")}
PAIRS = [(16, 96, 112), (24, 144, 56), (32, 192, 28)]  # (IC, E, H = W) of features.2/4/7
rng = np.random.default_rng(0)


def ab(label, call, out_shape):
    ys = {v: np.empty(out_shape, np.float32) for v in VARIANTS}
    ts: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(30):
        for v, flags in VARIANTS.items():
            t0 = time.perf_counter()
            call(ys[v], flags)
            ts[v].append(time.perf_counter() - t0)
    med = {v: float(np.median(t[5:])) for v, t in ts.items()}
    r = np.array(ts["pad_row"][5:]) / np.array(ts["split"][5:])
    print(
        f"{label}: split {med['split'] * 1e6:7.1f} us, pad_row {med['pad_row'] * 1e6:7.1f} us: "
        f"{np.median(r):.2f}x (quartiles {np.quantile(r, 0.25):.2f}-{np.quantile(r, 0.75):.2f}); "
        f"equal outputs {np.array_equal(ys['split'], ys['pad_row'])}"
    )


print(f"kernels: {K.info()['isa']}")
for n in (1, 8):
    for ic, e, h in PAIRS:
        x = rng.standard_normal((n, ic, h, h)).astype(np.float32)
        ew = rng.standard_normal((e, ic)).astype(np.float32)
        ew[rng.random(ew.shape) < 0.9] = 0.0
        w = rng.standard_normal((e, 1, 3, 3)).astype(np.float32)
        eb, b = (rng.standard_normal(e).astype(np.float32) for _ in range(2))
        ab(
            f"batch {n} fused {ic}->{e} at {h}x{h}",
            lambda y, f, x=x, ew=ew, eb=eb, w=w, b=b: K.expand_depthwise_conv2d(
                x, ew, eb, w, b, 2, 1, expand_clamp=(0, 6), clamp=(0, 6), out=y, threads=1,
                _flags=f,
            ),
            (n, e, h // 2, h // 2),
        )  # fmt: skip
        xe = rng.standard_normal((n, e, h, h)).astype(np.float32)
        ab(
            f"batch {n} depthwise {e} at {h}x{h}",
            lambda y, f, xe=xe, w=w, b=b: K.depthwise_conv2d(
                xe, w, b, 2, 1, clamp=(0, 6), out=y, threads=1, _flags=f
            ),
            (n, e, h // 2, h // 2),
        )
    xp = rng.standard_normal((n, 64, 112, 112)).astype(np.float32)
    ab(
        f"batch {n} max pool 64 at 112x112",
        lambda y, f, xp=xp: K.max_pool2d(xp, 3, 2, 1, out=y, threads=1, _flags=f),
        (n, 64, 56, 56),
    )
