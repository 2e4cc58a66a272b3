"""A model and data outside the zoo, converted, then moved, copied and fed the wrong dtype.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-move/stranger.py > results/probes/2026-12-04-move/stranger.txt

A user's own net (grouped stem conv, batch norm, a depthwise + 1x1 residual block, average
pool, a 7-class head) on odd-sized 2-channel "spectrograms" (2 x 40 x 33), 90% zeros, converted
in calibrate mode at 1 and 2 threads. Then, per thread count: the output against the float64
dense reference; .double() (a float32 input must raise, as nn.Linear does; a float64 input must
match); .float() back (bit-identical to before: its own kernels again); copy.deepcopy,
torch.save/load round trip and share_memory(); .half() then a float32 input (must raise).
"""

import copy
import io

import torch
from torch import nn

from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU6()
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(self.act(self.bn(self.dw(x))))


class Stranger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 32, 5, stride=2, padding=2, groups=2)
        self.bn = nn.BatchNorm2d(32)
        self.block = Block(32)
        self.head = nn.Linear(32, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        return self.head(self.block(x).mean((2, 3)))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def raises(fn) -> str:
    try:
        fn()
    except RuntimeError as exc:
        return f"raises RuntimeError: {str(exc).splitlines()[0][:90]}"
    return "DID NOT RAISE"


for threads in (1, 2):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Stranger().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    impose_density_(model, 0.1)
    x = torch.randn(4, 2, 40, 33)
    with torch.inference_mode():
        ref64 = copy.deepcopy(model).double()(x.double())
        rep = sparsify_inference_(model, x, threads=threads, reps=5)
        kinds = sorted({type(m).__name__ for m in model.modules()} - {"Identity", "Stranger"})
        y = model(x)
        print(f"threads {threads}: {kinds}; check: {rep.check[:60]}")
        print(f"  converted vs float64 dense: rel {rel(y, ref64):.1e}")
        model.double()
        print(f"  .double(), float32 input: {raises(lambda: model(x))}")
        print(f"  .double(), float64 input: rel {rel(model(x.double()), ref64):.1e}")
        back = model.float()(x)
        print(f"  .float() back: bit-identical to before: {torch.equal(back, y)}")
        twin = copy.deepcopy(model)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)  # our own bytes, in memory
        print(f"  deepcopy equal: {torch.equal(twin(x), y)}; save/load equal: {torch.equal(loaded(x), y)}")
        model.share_memory()
        print(f"  share_memory() equal: {torch.equal(model(x), y)}")
        model.half()
        print(f"  .half(), float32 input: {raises(lambda: model(x))}")
