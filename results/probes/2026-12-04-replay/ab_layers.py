"""Per-layer A/B: mobilenet_v2 (90% zeros) converted by sparsify_base and by sparsify (fixed
mode), each leaf timed on its recorded input, base and new interleaved; then whole forwards."""
import sys, time, statistics
import numpy as np, torch, torchvision
sys.path.insert(0, sys.argv[1])
import sparsify_base.accel.convert as cb
import sparsify.accel.convert as cn
from sparsify.bench.sources import impose_density_
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
B = int(sys.argv[2]) if len(sys.argv) > 2 else 1
FUSED = ("ExpandDepthwise", "DepthwiseProject")
x = torch.randn(B, 3, 224, 224)
models = {}
for name, conv in (("base", cb), ("new", cn)):
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v2().eval()
    impose_density_(m, 0.1)
    conv.sparsify_inference_(m, x, threads=torch.get_num_threads(), mode="fixed", kernels=("spk", "spk_depthwise"))
    models[name] = m

def leaves(model):
    out = []
    for n, m in model.named_modules():
        if any(n.startswith(f + ".") for f, mm in out if type(mm).__name__ in FUSED):
            continue
        if type(m).__name__ in FUSED or (not list(m.children()) and type(m).__name__ not in ("Identity", "Dropout")):
            out.append((n, m))
    return out

rec = {}
for name, model in models.items():
    lv = leaves(model); rec[name] = {}
    hs = [m.register_forward_hook(lambda mod, i, o, n=n, name=name: rec[name].__setitem__(n, (mod, i[0]))) for n, m in lv]
    with torch.inference_mode():
        yb = model(x)
    for h in hs: h.remove()
with torch.inference_mode():
    same = torch.equal(models["base"](x), models["new"](x))
print(f"batch {B}, threads {torch.get_num_threads()}, outputs bitwise equal: {same}")
tot = {"base": 0.0, "new": 0.0}
with torch.inference_mode():
    for n in rec["new"]:
        mb, xb = rec["base"][n]; mn, xn = rec["new"][n]
        for _ in range(3): mb(xb); mn(xn)
        ts = {"base": [], "new": []}
        for _ in range(25):
            for k, (m, xi) in (("base", (mb, xb)), ("new", (mn, xn))):
                t0 = time.perf_counter(); m(xi); ts[k].append(time.perf_counter() - t0)
        a, b = np.median(ts["base"]), np.median(ts["new"])
        tot["base"] += a; tot["new"] += b
        r = np.median(np.array(ts["base"]) / np.array(ts["new"]))
        print(f"{n:26s} {type(mn).__name__:16s} {tuple(xn.shape)!s:20s} base {a*1e6:8.1f} us new {b*1e6:8.1f} us  base/new {r:5.2f}")
print(f"sum of layers: base {tot['base']*1e3:.3f} ms, new {tot['new']*1e3:.3f} ms")
ts = {"base": [], "new": []}
with torch.inference_mode():
    for _ in range(3):
        for m in models.values(): m(x)
    for _ in range(31 if B == 1 else 11):
        for k, m in models.items():
            t0 = time.perf_counter(); m(x); ts[k].append(time.perf_counter() - t0)
a, b = np.array(ts["base"]), np.array(ts["new"]); r = a / b
print(f"whole forward: base {np.median(a)*1e3:.3f} ms, new {np.median(b)*1e3:.3f} ms, base/new per round {np.median(r):.3f} (quartiles {np.quantile(r,.25):.3f}-{np.quantile(r,.75):.3f})")
