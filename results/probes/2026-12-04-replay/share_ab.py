"""Replay with and without buffers shared by lifetime, against the converted model itself.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-replay/share_ab.py [batch ...]

torchvision's mobilenet_v2 (90% zeros, 3x224x224) converted once (calibrate, one thread);
"unshared": Replay with ``_share_buffers`` patched to do nothing while it records, so every
kernel step keeps a buffer of its own (the first version of Replay); timed interleaved.
"""

import sys
import time

import numpy as np
import torch
import torchvision

import sparsify.accel.replay as rp
from sparsify.accel import Replay, sparsify_inference_
from sparsify.bench.sources import impose_density_

torch.set_num_threads(1)
print(f"torch {torch.__version__}, one thread; load {open('/proc/loadavg').read().split()[:3]}")
for batch in [int(b) for b in sys.argv[1:]] or [1, 8]:
    x = torch.randn(batch, 3, 224, 224)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    impose_density_(model, 0.1)
    sparsify_inference_(model, x, threads=1)
    shared, unshared = Replay(model), Replay(model)
    real = rp._share_buffers
    with torch.inference_mode():
        shared(x)
        rp._share_buffers = lambda *a: None
        try:
            unshared(x)
        finally:
            rp._share_buffers = real
        runs = {"model": model, "shared": shared, "unshared": unshared}
        same = {k: torch.equal(f(x), model(x)) for k, f in runs.items()}
        ts: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(41 if batch == 1 else 11):
            for k, f in runs.items():
                t0 = time.perf_counter()
                f(x)
                ts[k].append(time.perf_counter() - t0)
    base = np.array(ts["model"])
    cells = [f"batch {batch}: model {np.median(base) * 1e3:.3f} ms"]
    for k in ("unshared", "shared"):
        r = base / np.array(ts[k])
        cells.append(f"{k} {np.median(ts[k]) * 1e3:.3f} ms (model/{k} per round {np.median(r):.3f}, "
                     f"quartiles {np.quantile(r, 0.25):.3f}-{np.quantile(r, 0.75):.3f})")
    print("; ".join(cells) + f"; equal to the model: {same}")
