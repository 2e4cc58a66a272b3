"""What one converted-conv call costs outside its arithmetic, one process, interleaved:
a 1x1 conv on a 1x1 image (no work), SparseConv2d (packed plan, 8 C arguments) against the
same call passing the 30 arguments one by one (as before the plan), torch's dense conv and
the depthwise stencil layer."""

import numpy as np
import torch
from torch import nn

from sparsify import kernels as K
from sparsify.accel import SparseConv2d
from sparsify.accel.layers import DepthwiseConv2d
from sparsify.timing import time_interleaved

torch.set_num_threads(1)
conv = nn.Conv2d(1, 1, 1).eval()
layer = SparseConv2d(conv, "spk")
x = torch.ones(1, 1, 1, 1)
dw = DepthwiseConv2d.from_conv(nn.Conv2d(2, 2, 3, padding=1, groups=2))
xd = torch.ones(1, 2, 1, 1)
geometry, plan = layer._geometry(tuple(x.shape))
lib = K._lib()
y = torch.empty(1, 1, 1, 1)
scratch = K._buffer("phases", plan.phase_floats, np.float32)
colmap = K._buffer("colmap", plan.colmap_ints, np.int32)
args30 = [int(v) for v in plan.array]


def thirty() -> None:
    p = args30
    lib.lib.spk_conv2d(
        *p[:6], *p[6:9], x.data_ptr(), *p[9:20], y.data_ptr(), None, None,
        K._ptr(scratch), *p[20:23], K._ptr(colmap), p[23], 1,
    )  # fmt: skip


def eight() -> None:
    lib.lib.spk_conv2d_plan(
        plan.addr, x.data_ptr(), y.data_ptr(), None, None, K._ptr(scratch), K._ptr(colmap), 1
    )


with torch.inference_mode():
    fns = {
        "SparseConv2d layer": lambda: layer(x),
        "torch dense conv": lambda: conv(x),
        "DepthwiseConv2d layer": lambda: dw(xd),
        "C call, 30 arguments": thirty,
        "C call, plan (8)": eight,
    }
    t = time_interleaved(fns, reps=15, warmup=2, min_sample_s=5e-3)
print(f"# torch {torch.__version__}, 1 thread; median per call")
for k, v in t.items():
    print(f"{k:<24} {v.median * 1e6:7.2f} us")
