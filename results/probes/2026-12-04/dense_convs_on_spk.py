"""Convs with dense or nearly dense weights: the kernels' conv (no im2col, stride phases)
against torch's dense conv, one thread, interleaved (SparseConv2d "spk" vs nn.Conv2d).
Why the converter offers spk to a groups=1 conv above max_density in calibrate mode."""

import torch

from sparsify.accel import SparseConv2d
from sparsify.timing import paired_ratio, time_interleaved

torch.set_num_threads(1)
torch.manual_seed(0)
print(f"# torch {torch.__version__}, 1 thread")
CASES = [  # (in, out, kernel, stride, padding, size, batch, density): what it stands for
    (1, 32, 5, 1, 0, 28, 1, 0.72, "lecture convnet conv1 as trained (72%)"),
    (1, 32, 5, 1, 0, 28, 64, 0.72, "the same, batch 64"),
    (1, 20, 5, 1, 0, 28, 1, 0.9, "LeNet-5 conv1"),
    (1, 20, 5, 1, 0, 28, 64, 0.9, "LeNet-5 conv1, batch 64"),
    (3, 64, 7, 2, 3, 224, 1, 1.0, "resnet stem, dense"),
    (16, 32, 3, 1, 1, 56, 1, 1.0, "16 -> 32 channels 3x3, dense"),
]
for ci, co, k, s, p, h, b, dens, what in CASES:
    conv = torch.nn.Conv2d(ci, co, k, stride=s, padding=p).eval()
    with torch.no_grad():
        conv.weight[torch.rand(conv.weight.shape) > dens] = 0
    sp = SparseConv2d(conv, "spk")
    x = torch.randn(b, ci, h, h)
    with torch.inference_mode():
        torch.testing.assert_close(sp(x), conv(x), rtol=1e-4, atol=1e-4)
        t = time_interleaved(
            {"dense": lambda c=conv, x=x: c(x), "spk": lambda c=sp, x=x: c(x)}, reps=15
        )
    r = paired_ratio(t["dense"].samples, t["spk"].samples)
    print(
        f"{what:<40} batch {b:>3}: torch {t['dense'].median * 1e6:8.0f} us, spk "
        f"{t['spk'].median * 1e6:8.0f} us, torch/spk {r.median:.2f} (IQR {r.q25:.2f}-{r.q75:.2f})"
    )
