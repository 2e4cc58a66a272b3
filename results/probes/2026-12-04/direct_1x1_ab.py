"""A/B in one process: sparse_conv2d on every 1x1 conv of mobilenet_v2 (90% zeros, 224x224),
the kernels as built (1x1 stride-1 convs read x in place) against the same source built with
-DSPK_NO_DIRECT (x copied into the phase buffer first, as before 2026-12-04). One thread;
rounds interleaved A, B, A, B...; median per layer; batch from argv (default 1)."""

import statistics
import sys
import time

import numpy as np
import torch
import torchvision

from sparsify import kernels as K
from sparsify.bench.sources import impose_density_

B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
REPS = 15
torch.manual_seed(0)
m = torchvision.models.mobilenet_v2().eval()
impose_density_(m, 0.1)
shapes = {}


def record(name):
    def hook(mod, inp):
        shapes[name] = tuple(inp[0].shape)  # returns None: the input is left as it is

    return hook


for n, mod in m.named_modules():
    if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (1, 1) and mod.groups == 1:
        mod.register_forward_pre_hook(record(n))
with torch.no_grad():
    m(torch.randn(1, 3, 224, 224))
base = K.info()["flags"].split()
variants = {"direct": None, "copy": tuple(base) + ("-DSPK_NO_DIRECT",)}
rng = np.random.default_rng(0)
tot = {k: 0.0 for k in variants}
print(f"# batch {B}, 1 thread, {K.info()['isa']}, torch {torch.__version__}")
print(f"{'layer':<22} {'shape':<22} {'direct ms':>9} {'copy ms':>8} {'copy/direct':>11}")
for name, (_, c, h, w) in shapes.items():
    conv = m.get_submodule(name)
    sw = K.pack(conv.weight.detach().numpy())
    x = rng.standard_normal((B, c, h, w)).astype(np.float32)
    y = {k: K.sparse_conv2d(sw, x, threads=1, _flags=f) for k, f in variants.items()}
    assert np.array_equal(y["direct"], y["copy"]), name
    samples = {k: [] for k in variants}
    for _ in range(REPS):
        for k, f in variants.items():
            t = time.perf_counter()
            K.sparse_conv2d(sw, x, threads=1, _flags=f)
            samples[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in samples.items()}
    for k in med:
        tot[k] += med[k]
    shape = f"{conv.out_channels}x{c} @ {h}x{w}"
    print(
        f"{name:<22} {shape:<22} {med['direct'] * 1e3:9.3f} {med['copy'] * 1e3:8.3f} "
        f"{med['copy'] / med['direct']:11.2f}"
    )
print(
    f"{'sum':<45} {tot['direct'] * 1e3:9.3f} {tot['copy'] * 1e3:8.3f} {tot['copy'] / tot['direct']:11.2f}"
)
