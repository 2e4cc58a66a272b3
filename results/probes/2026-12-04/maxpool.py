"""torch's CPU max_pool2d against sparsify's stencil (kernels.max_pool2d) on resnet's stem
pool (3x3, stride 2, padding 1 on 64 channels at 112x112) and LeNet-5's 2x2 pools, one
thread, interleaved rounds (sparsify.timing.time_interleaved), outputs compared bit for bit.
torch's channels-last pool is listed for reference (its copy to channels-last included)."""

import torch

from sparsify import kernels as K
from sparsify.timing import cpu_snapshot, others_busy_cores, paired_ratio, time_interleaved

torch.set_num_threads(1)
CASES = [((1, 64, 112, 112), 3, 2, 1), ((8, 64, 112, 112), 3, 2, 1), ((64, 6, 28, 28), 2, 2, 0)]
print(f"# torch {torch.__version__}, kernels {K.info()['isa']}, 1 thread")
print(
    f"{'input':<20} {'pool':<10} {'torch ms':>9} {'stencil ms':>10} {'torch/stencil':>13} {'torch CL ms':>11}"
)
snap = cpu_snapshot()
for shape, k, s, p in CASES:
    x = torch.randn(shape)
    xn = x.numpy()
    with torch.inference_mode():
        ref = torch.nn.functional.max_pool2d(x, k, s, p)
        assert torch.equal(torch.from_numpy(K.max_pool2d(xn, k, s, p, threads=1)), ref)
        fns = {
            "torch": lambda x=x, a=(k, s, p): torch.nn.functional.max_pool2d(x, *a),
            "stencil": lambda xn=xn, a=(k, s, p): K.max_pool2d(xn, *a, threads=1),
            "torch_cl": lambda x=x, a=(k, s, p): torch.nn.functional.max_pool2d(
                x.contiguous(memory_format=torch.channels_last), *a
            ),
        }
        t = time_interleaved(fns, reps=15, warmup=2)
    r = paired_ratio(t["torch"].samples, t["stencil"].samples)
    print(
        f"{'x'.join(map(str, shape)):<20} {f'{k}/{s}/{p}':<10} {t['torch'].median * 1e3:9.3f} "
        f"{t['stencil'].median * 1e3:10.3f} {r.median:13.1f} {t['torch_cl'].median * 1e3:11.3f}"
    )
print(f"# other cores busy: {others_busy_cores(snap, cpu_snapshot()):.2f}")
