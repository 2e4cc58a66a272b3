"""In one process: torchvision mobilenet_v2 (90% zeros) converted by the base tree's package
(sparsify_base, commit 07aca9f) and by the working tree's, same settings, forward timed
interleaved; medians and the paired ratio."""
import sys, time, numpy as np, torch, torchvision
sys.path.insert(0, sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1].startswith("/") else "/work/scratch/s28/basepkg")
import sparsify_base.accel.convert as CB
import sparsify.accel.convert as CN
from sparsify.bench.sources import impose_density_
torch.set_num_threads(1)
mode = sys.argv[1] if len(sys.argv) > 1 else "fixed"
for batch in [int(b) for b in sys.argv[2:]] or [1, 8]:
    models = {}
    for name, conv in (("base", CB), ("new", CN)):
        torch.manual_seed(0)
        m = torchvision.models.mobilenet_v2().eval()
        impose_density_(m, 0.1)
        x = torch.randn(batch, 3, 224, 224)
        kw = dict(kernels=("spk", "spk_depthwise")) if mode == "fixed" else {}
        rep = conv.sparsify_inference_(m, x, threads=1, mode=mode, **kw)
        models[name] = m
    ts = {k: [] for k in models}
    with torch.inference_mode():
        ya, yb = models["base"](x), models["new"](x)
        same = torch.equal(ya, yb)
        for _ in range(3):
            for m in models.values(): m(x)
        for _ in range(41 if batch == 1 else 15):
            for k, m in models.items():
                t0 = time.perf_counter(); m(x); ts[k].append(time.perf_counter() - t0)
    a, b = np.array(ts["base"]), np.array(ts["new"])
    r = a / b
    print(f"batch {batch} ({mode}): base {np.median(a)*1e3:.3f} ms, new {np.median(b)*1e3:.3f} ms, "
          f"base/new per round median {np.median(r):.3f} (quartiles {np.quantile(r, .25):.3f}-{np.quantile(r, .75):.3f}), outputs equal: {same}")
