import time, torch, torchvision, collections, sys
from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_
torch.set_num_threads(1)
torch.manual_seed(0)
m = torchvision.models.mobilenet_v2().eval()
impose_density_(m, 0.1)
x = torch.randn(int(sys.argv[1]) if len(sys.argv)>1 else 1, 3, 224, 224)
with torch.no_grad():
    rep = sparsify_inference_(m, x, threads=1)
print(collections.Counter(d.kernel for d in rep.decisions) if hasattr(rep,'decisions') else rep)
# per-module timing via hooks
times = collections.defaultdict(float)
starts = {}
def pre(mod, inp): starts[mod] = time.perf_counter()
def post(mod, inp, out): times[mod] += time.perf_counter() - starts[mod]
leaves = [(n, mm) for n, mm in m.named_modules() if len(list(mm.children())) == 0]
for n, mm in leaves:
    mm.register_forward_pre_hook(pre); mm.register_forward_hook(post)
with torch.no_grad():
    for _ in range(3): m(x)
    for k in list(times): times[k] = 0
    R = 10
    t0 = time.perf_counter()
    for _ in range(R): m(x)
    tot = (time.perf_counter() - t0) / R
by_type = collections.defaultdict(float)
rows = []
for n, mm in leaves:
    key = type(mm).__name__
    if isinstance(mm, torch.nn.Conv2d):
        key += f" k{mm.kernel_size[0]} g{'dw' if mm.groups>1 else 1}"
    by_type[key] += times[mm] / R
    rows.append((times[mm] / R * 1e3, n, type(mm).__name__, getattr(mm, 'weight', torch.zeros(0)).shape))
print(f"total {tot*1e3:.2f} ms")
for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]): print(f"{k:40s} {v*1e3:7.2f} ms")
for r in sorted(rows, reverse=True)[:25]: print(f"{r[0]:7.3f} {r[1]:30s} {r[2]:20s} {tuple(r[3])}")
