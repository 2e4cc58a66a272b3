"""Where a converted mobilenet_v2's batch-1 time goes: the C kernels or the Python around them.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-overhead/overhead.py [--batch 1]

Converts torchvision's mobilenet_v2 (90% zeros, calibrate mode, one thread), records every
call into the C library during one forward (name and arguments, with every module's inputs
and outputs kept alive so the recorded addresses stay valid), then times, interleaved: the
whole forward, and the recorded C calls replayed back to back from Python (the kernels' own
time plus ctypes' argument conversion). The difference is what the Python layers cost:
module calls, checks, allocation, the residual adds and the layers left to torch.
"""

import argparse
import collections
import platform
import time

import numpy as np
import torch
import torchvision

from sparsify import kernels as K
from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--rounds", type=int, default=41)
args = ap.parse_args()
torch.set_num_threads(1)
print(f"torch {torch.__version__}, kernels {K.info()['isa']}, {platform.processor() or 'cpu'}")
torch.manual_seed(0)
model = torchvision.models.mobilenet_v2().eval()
impose_density_(model, 0.1)
x = torch.randn(args.batch, 3, 224, 224)
rep = sparsify_inference_(model, x, threads=1)
print(f"batch {args.batch}: {rep.whole}")

lib = K._lib().lib
names = [n for n in dir(lib) if n.startswith("spk_")] or []
calls: list[tuple[str, tuple]] = []
real = {}


def wrap(name):
    fn = getattr(lib, name)
    real[name] = fn

    def rec(*a):
        calls.append((name, a))
        return fn(*a)

    return rec


keep: list = []


def replan():
    """Converted layers keep the library's function in their per-shape packed call: drop
    those, so the next call looks the (now wrapped or unwrapped) function up again (the old
    ones are kept: the recorded calls point into their packed arguments)."""
    for m in model.modules():
        keep.append(m.__dict__.pop("_per_shape", None))


for name in (
    "spk_conv2d_plan",
    "spk_stencil_plan",
    "spk_dwconv2d",
    "spk_expand_dw",
    "spk_maxpool2d",
    "spk_spmm",
    "spk_spmm_t",
    "spk_conv2d",
):
    if hasattr(lib, name):
        setattr(lib, name, wrap(name))
replan()
hooks = []
for m in model.modules():
    hooks.append(m.register_forward_pre_hook(lambda m, i: keep.append(i)))
    hooks.append(m.register_forward_hook(lambda m, i, o: keep.append(o)))
with torch.inference_mode():
    model(x)
for h in hooks:
    h.remove()
for name, fn in real.items():
    setattr(lib, name, fn)
replan()
mods = collections.Counter(type(m).__name__ for m in model.modules())
print(f"C calls per forward: {collections.Counter(n for n, _ in calls)}")
print(f"modules: {sum(mods.values())} ({dict(mods)})")


def replay():
    for name, a in calls:
        real[name](*a)


ts = {"forward": [], "C calls replayed": []}
with torch.inference_mode():
    for _ in range(3):
        model(x), replay()
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        model(x)
        t1 = time.perf_counter()
        replay()
        t2 = time.perf_counter()
        ts["forward"].append(t1 - t0)
        ts["C calls replayed"].append(t2 - t1)
fwd, cc = (float(np.median(v)) for v in ts.values())
print(
    f"forward {fwd * 1e3:.3f} ms, C calls replayed {cc * 1e3:.3f} ms, "
    f"around them {(fwd - cc) * 1e3:.3f} ms ({(fwd - cc) / fwd:.0%}) over {len(calls)} calls "
    f"({(fwd - cc) / len(calls) * 1e6:.1f} us a call); medians of {args.rounds} interleaved rounds"
)

# Per leaf module (a converted layer counts as one, with what it holds): its call's time (pre-hook to hook) and the time inside its C calls (timed
# around the real function), medians over rounds; the hooks' own cost lands in "between".
CONVERTED = ("SparseConv2d", "SparseLinear", "DepthwiseConv2d", "ExpandDepthwise")
inside = {n + "." for n, m in model.named_modules() if type(m).__name__ in CONVERTED}
leaf = [
    (n, m)
    for n, m in model.named_modules()
    if (type(m).__name__ in CONVERTED or not list(m.children()))
    and not any(n.startswith(p) for p in inside)
]
t_in: dict[str, list[float]] = collections.defaultdict(list)
t_c: dict[str, list[float]] = collections.defaultdict(list)
cur = {"name": None, "t0": 0.0, "c": 0.0}


def timed(fn):
    def call(*a):
        t0 = time.perf_counter()
        r = fn(*a)
        cur["c"] += time.perf_counter() - t0
        return r

    return call


def pre(name):
    def hook(m, i):
        cur["name"], cur["c"], cur["t0"] = name, 0.0, time.perf_counter()

    return hook


def post(name):
    def hook(m, i, o):
        t_in[name].append(time.perf_counter() - cur["t0"])
        t_c[name].append(cur["c"])

    return hook


for name, fn in real.items():
    setattr(lib, name, timed(fn))
replan()
hooks = [
    h
    for n, m in leaf
    for h in (m.register_forward_pre_hook(pre(n)), m.register_forward_hook(post(n)))
]
tot = []
with torch.inference_mode():
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        model(x)
        tot.append(time.perf_counter() - t0)
for h in hooks:
    h.remove()
for name, fn in real.items():
    setattr(lib, name, fn)
replan()
by_type: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
for n, m in leaf:
    if n not in t_in:
        continue
    k = by_type[type(m).__name__ + (f" ({m.kernel})" if hasattr(m, "kernel") else "")]
    k[0] += 1
    k[1] += float(np.median(t_in[n]))
    k[2] += float(np.median(t_c[n]))
print(
    f"\nwith hooks: forward {np.median(tot) * 1e3:.3f} ms; per leaf type: count, time in its "
    "calls, of which inside C, outside C per call"
)
s_in = 0.0
for k, (cnt, a, c) in sorted(by_type.items(), key=lambda kv: -kv[1][1]):
    s_in += a
    print(
        f"  {k:40s} {cnt:3d}  {a * 1e3:7.3f} ms  C {c * 1e3:7.3f} ms  "
        f"outside C {(a - c) / cnt * 1e6:6.1f} us a call"
    )
print(
    f"  between leaves (containers, residual adds, hooks): {(np.median(tot) - s_in) * 1e3:.3f} ms"
)
