"""In one process: torchvision's mobilenet_v2 or resnet18 (90% zeros) converted by a base tree's
package (``sparsify_base``, see README) and by this tree's, the same settings; timed
interleaved: base (its module forward), new (module forward), new through ``Replay``.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-replay/ab.py BASEPKG \
        [fixed|calibrate] MODEL batch [batch ...]
"""

import sys
import time

import numpy as np
import torch
import torchvision

sys.path.insert(0, sys.argv[1])
import sparsify_base.accel.convert as convert_base  # noqa: E402

import sparsify.accel.convert as convert_new  # noqa: E402
from sparsify.accel.replay import Replay  # noqa: E402
from sparsify.bench.sources import impose_density_  # noqa: E402

torch.set_num_threads(1)
mode, name = sys.argv[2], sys.argv[3]
print(f"torch {torch.__version__}, {name}, {mode}, one thread; load {open('/proc/loadavg').read().split()[:3]}")
for batch in [int(b) for b in sys.argv[4:]]:
    x = torch.randn(batch, 3, 224, 224)
    runs = {}
    for tag, convert in (("base", convert_base), ("new", convert_new)):
        torch.manual_seed(0)
        m = getattr(torchvision.models, name)().eval()
        impose_density_(m, 0.1)
        kw = {"kernels": ("spk", "spk_depthwise")} if mode == "fixed" else {}
        convert.sparsify_inference_(m, x, threads=1, mode=mode, **kw)
        runs[tag] = m
    runs["new+replay"] = Replay(runs["new"])
    ts: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        outs = {k: m(x) for k, m in runs.items()}
        same = {k: torch.equal(outs["base"], o) for k, o in outs.items()}
        for _ in range(3):
            for m in runs.values():
                m(x)
        for _ in range(41 if batch == 1 else 11):
            for k, m in runs.items():
                t0 = time.perf_counter()
                m(x)
                ts[k].append(time.perf_counter() - t0)
    base = np.array(ts["base"])
    line = [f"batch {batch}: base {np.median(base) * 1e3:.3f} ms"]
    for k in ("new", "new+replay"):
        r = base / np.array(ts[k])
        line.append(
            f"{k} {np.median(ts[k]) * 1e3:.3f} ms (base/{k} per round {np.median(r):.3f}, "
            f"quartiles {np.quantile(r, 0.25):.3f}-{np.quantile(r, 0.75):.3f})"
        )
    print("; ".join(line) + f"; outputs equal to base: {same}")
