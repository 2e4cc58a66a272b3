"""In one process: torchvision's mobilenet_v2 (90% zeros) converted by a base tree's package
(``sparsify_base``: commit 07aca9f's ``sparsify/`` with its imports renamed, see README) and
by this tree's, the same settings, forwards timed interleaved; medians and the per-round ratio.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-overhead/ab_inproc.py BASEPKG \
        [fixed|calibrate] [batch ...]
"""

import sys
import time

import numpy as np
import torch
import torchvision

sys.path.insert(0, sys.argv[1])
import sparsify_base.accel.convert as convert_base  # noqa: E402

import sparsify.accel.convert as convert_new  # noqa: E402
from sparsify.bench.sources import impose_density_  # noqa: E402

torch.set_num_threads(1)
mode = sys.argv[2] if len(sys.argv) > 2 else "fixed"
for batch in [int(b) for b in sys.argv[3:]] or [1, 8]:
    models = {}
    x = torch.randn(batch, 3, 224, 224)
    for name, convert in (("base", convert_base), ("new", convert_new)):
        torch.manual_seed(0)
        m = torchvision.models.mobilenet_v2().eval()
        impose_density_(m, 0.1)
        kw = {"kernels": ("spk", "spk_depthwise")} if mode == "fixed" else {}
        convert.sparsify_inference_(m, x, threads=1, mode=mode, **kw)
        models[name] = m
    ts: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        same = torch.equal(models["base"](x), models["new"](x))
        for _ in range(3):
            for m in models.values():
                m(x)
        for _ in range(41 if batch == 1 else 15):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(x)
                ts[k].append(time.perf_counter() - t0)
    a, b = np.array(ts["base"]), np.array(ts["new"])
    r = a / b
    print(
        f"batch {batch} ({mode}): base {np.median(a) * 1e3:.3f} ms, new {np.median(b) * 1e3:.3f} "
        f"ms, base/new per round median {np.median(r):.3f} (quartiles {np.quantile(r, 0.25):.3f}"
        f"-{np.quantile(r, 0.75):.3f}), outputs equal: {same}"
    )
