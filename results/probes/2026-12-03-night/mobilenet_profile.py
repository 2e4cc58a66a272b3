"""Where mobilenet_v2 (90% zeros, 3x224x224, batch given, one thread) spends its time after
sparsify_inference_: forward hooks time every leaf module (the hooks add their own cost)."""

import collections
import sys
import time

import torch
import torchvision

from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_

torch.set_num_threads(1)
torch.manual_seed(0)
m = torchvision.models.mobilenet_v2().eval()
impose_density_(m, 0.1)
B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
x = torch.randn(B, 3, 224, 224)
with torch.inference_mode():
    rep = sparsify_inference_(m, x, threads=1)
print(rep if len(str(rep)) < 3000 else str(rep)[:3000])
times = collections.defaultdict(float)
order = []


def pre(mod, inp):
    mod._t0 = time.perf_counter()


def post(mod, inp, out):
    times[mod._nm] += time.perf_counter() - mod._t0


for n, mod in m.named_modules():
    if len(list(mod.children())) == 0:
        mod._nm = f"{n} {type(mod).__name__}"
        order.append(mod._nm)
        mod.register_forward_pre_hook(pre)
        mod.register_forward_hook(post)
with torch.inference_mode():
    for _ in range(3):
        m(x)
    times.clear()
    R = 10
    t = time.perf_counter()
    for _ in range(R):
        m(x)
    tot = (time.perf_counter() - t) / R
print(f"total {tot * 1e3:.2f} ms")
by = collections.defaultdict(float)
for k, v in times.items():
    by[k.split()[1]] += v / R
print({k: round(v * 1e3, 2) for k, v in sorted(by.items(), key=lambda kv: -kv[1])})
for k in sorted(times, key=lambda k: -times[k])[:25]:
    print(f"{times[k] / R * 1e3:7.3f} {k}")
