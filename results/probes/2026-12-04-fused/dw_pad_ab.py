"""Depthwise stencil timings under compile-flag variants (A/B of `kernels.depthwise_conv2d`).

    .venv/bin/python results/probes/2026-12-04-fused/dw_pad_ab.py "" "-DSKIPPAD=1"

Each argument is a set of extra C flags ("" = the default build); every variant runs each
of mobilenet_v2's depthwise shapes (3x3, padding 1, ReLU6 fused, batch 1, one thread) 40
times interleaved with the others; medians of the last 35. '=' marks outputs equal to the
first variant's, '!' different (skip_pad.patch computes on a stale buffer on purpose)."""

import sys
import time

import numpy as np

from sparsify import kernels as K

BASE = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
SHAPES = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (384, 14, 1),
          (576, 14, 2), (960, 7, 1)]  # fmt: skip
variants = {v: BASE + tuple(v.split()) for v in sys.argv[1:]}
total = dict.fromkeys(variants, 0.0)
rng = np.random.default_rng(0)
for c, h, s in SHAPES:
    x = rng.standard_normal((1, c, h, h)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    ho = (h + 2 - 3) // s + 1
    ys = {v: np.empty((1, c, ho, ho), np.float32) for v in variants}
    ts: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(40):
        for v, flags in variants.items():
            t0 = time.perf_counter()
            K.depthwise_conv2d(x, w, b, s, 1, clamp=(0, 6), out=ys[v], threads=1, _flags=flags)
            ts[v].append(time.perf_counter() - t0)
    ref = ys[next(iter(variants))]
    line = f"{c}x{h}x{h} s{s}:"
    for v in variants:
        m = float(np.median(ts[v][5:]))
        total[v] += m
        line += f" | {v or 'base'} {m * 1e6:6.1f} us {'=' if np.array_equal(ys[v], ref) else '!'}"
    print(line)
print("total", {v: round(t * 1e3, 3) for v, t in total.items()})
