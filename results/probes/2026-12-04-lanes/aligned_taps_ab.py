"""A/B of the per-image conv path (lanes=False) with aligned taps (stride 1, kw > 1, output
rows within 15% of whole vectors: kw shifted copies of the padded input rows, every load
aligned) against the one-copy layout (the library built with -DSPK_NO_ALIGNED_TAPS), same
packed weight and input, 90% zeros (LeNet-5's conv1: its trained 20%), medians of 15
interleaved calls, each side first in turn; both checked against torch.

    .venv/bin/python results/probes/2026-12-04-lanes/aligned_taps_ab.py 1 8
"""

import functools
import subprocess
import sys
import time

import numpy as np
import torch

from sparsify import kernels as K
from sparsify.kernels import layouts

torch.set_num_threads(1)
base = K._lib().flags
ab = tuple(f for f in base if f != "-shared") + ("-DSPK_NO_ALIGNED_TAPS", "-shared")
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
print(
    f"# {' '.join(sys.argv)} (commit {rev.stdout.strip()}, {time.strftime('%H:%M UTC', time.gmtime())})"
)
print(f"# 1 thread, kernels {K._lib().isa}")
CASES = [  # name, out, in, kernel, plane, density, padding
    ("r18 64x64 3x3 56", 64, 64, 3, 56, 0.1, 1),
    ("r18 128x128 3x3 28", 128, 128, 3, 28, 0.1, 1),
    ("r18 256x256 3x3 14", 256, 256, 3, 14, 0.1, 1),
    ("lenet5.conv1 5x5 28", 20, 1, 5, 28, 0.8, 0),
    ("convnet.conv1 5x5 28", 32, 1, 5, 28, 0.72, 0),
    ("vgg-ish 3x3 32", 64, 32, 3, 32, 0.1, 1),
    ("r18 512x512 3x3 7 (not taken)", 512, 512, 3, 7, 0.1, 1),
]
rng = np.random.default_rng(0)
for n in [int(a) for a in sys.argv[1:]] or [1, 8]:
    for name, oc, ic, k, hw, dens, pad in CASES:
        w = rng.standard_normal((oc, ic, k, k)).astype(np.float32)
        w *= rng.random(w.shape) < dens
        sw = layouts.pack(w)
        x = rng.standard_normal((n, ic, hw, hw)).astype(np.float32)
        ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, 1, pad)
        ref = ref.numpy()
        ya, yb = np.empty_like(ref), np.empty_like(ref)
        run = {
            "aligned": functools.partial(
                K.sparse_conv2d, sw, x, 1, pad, out=ya, threads=1, lanes=False
            ),
            "one copy": functools.partial(
                K.sparse_conv2d, sw, x, 1, pad, out=yb, threads=1, lanes=False, _flags=ab
            ),
        }
        for f in run.values():
            f()
        assert abs(ya - ref).max() < 1e-3 and abs(yb - ref).max() < 1e-3, name
        ts = {key: [] for key in run}
        for rep in range(15):
            for key in list(run) if rep % 2 else list(run)[::-1]:
                t = time.perf_counter()
                run[key]()
                ts[key].append(time.perf_counter() - t)
        ratio = np.median(np.array(ts["one copy"]) / np.array(ts["aligned"]))
        print(
            f"N={n} {name:30s} aligned {np.median(ts['aligned']) * 1e3:8.3f} ms  one copy "
            f"{np.median(ts['one copy']) * 1e3:8.3f} ms  one copy/aligned {ratio:5.2f}x",
            flush=True,
        )
