"""A stranger's model through the converter and Replay, as a user would run it.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-replay/stranger.py

Own architecture (grouped stem, a depthwise + 1x1 residual block with ReLU6, a max pool, 7
classes) on 2 x 40 x 33 inputs, 90% zeros, calibrated at batch 3; then, at 1 and 2 threads:
Replay against the model and a float64 dense reference, new inputs, a new batch size, copies,
a pickle, moves; and the hostile calls (wrong input, non-module, NaN input).
"""

import copy
import pickle

import torch
from torch import nn

from sparsify.accel import Replay, sparsify_inference_


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(torch.nn.functional.relu6(self.bn(self.dw(x))))


class Stranger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 24, 3, stride=2, groups=2)
        self.block = Block(24)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(24 * 9 * 8, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.block(torch.relu(self.stem(x)))).flatten(1))


torch.manual_seed(0)
model = Stranger().eval()
with torch.no_grad():
    for p in model.parameters():
        if p.dim() >= 2:
            p.mul_((torch.rand(p.shape) < 0.1).float() / 0.1**0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
ref64 = copy.deepcopy(model).double()
x = torch.randn(3, 2, 40, 33)
report = sparsify_inference_(model, x, threads=1)
print("converted:", sorted({type(m).__name__ for m in model.modules()} - {"Identity"}))
fast = Replay(model)
for threads in (1, 2):
    torch.set_num_threads(threads)
    with torch.inference_mode():
        for b in (3, 5):
            v = torch.randn(b, 2, 40, 33)
            y, y2, want = fast(v), fast(v), model(v)
            exact = ref64(v.double())
            err = float((y.double() - exact).abs().max() / exact.abs().max())
            print(f"threads {threads} batch {b}: replay == model bitwise {torch.equal(y, want) and torch.equal(y2, want)}, "
                  f"max rel diff to float64 dense {err:.1e}, why {fast.why}, {fast.summary()}")
torch.set_num_threads(1)
with torch.inference_mode():
    v = torch.randn(3, 2, 40, 33)
    want = model(v)
    twin, again = copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))
    print("deepcopy == model:", torch.equal(twin(v), want), "pickle == model:", torch.equal(again(v), want))
    d = copy.deepcopy(fast).double()
    print("after .double(): float64 input max abs diff", float((d(v.double()) - want.double()).abs().max()))
    nan = v.clone()
    nan[0, 0, 5, 5] = float("nan")
    a, b_ = fast(nan), model(nan)
    print("NaN input: same NaN pattern", torch.equal(a.isnan(), b_.isnan()))
for label, call in (
    ("wrong channels", lambda: fast(torch.randn(1, 3, 40, 33))),
    ("int input", lambda: fast(torch.zeros(1, 2, 40, 33, dtype=torch.int64))),
    ("not a module", lambda: Replay(print)),
):
    try:
        with torch.inference_mode():
            call()
        print(f"{label}: no error")
    except Exception as e:  # what a user would see
        print(f"{label}: {type(e).__name__}: {str(e).splitlines()[0][:150]}")
