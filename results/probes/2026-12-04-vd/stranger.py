"""A stranger's model and data through sparse variational dropout, then export and onnxruntime.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-vd/stranger.py > results/probes/2026-12-04-vd/stranger.txt

Not in the zoo: a 3-channel 20x17 input (classes: a random linear rule on its 4x4
average-pooled view, 2,500 training images), a stem conv with padding_mode "reflect", a
depthwise 3x3 conv (groups = channels), BatchNorm, a residual 1x1, 5 classes; the user's own
loop (AdamW, grad clipping, a cosine scheduler made after the penalty), one line of sparsify.
Three runs from the same start: dense, VD at full strength from step 0, VD with the KL ramped
in over the first 20 of 40 epochs. Then remove(), export to ONNX, run it in onnxruntime.
"""

import copy
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

import sparsify
from sparsify import Schedule, VariationalDropout, penalize_

EPOCHS, STEPS = 40, 25


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(F.relu(self.bn(self.dw(x))))


torch.manual_seed(0)
start = nn.Sequential(
    nn.Conv2d(3, 12, 3, padding=1, padding_mode="reflect"), nn.ReLU(), Block(12), nn.ReLU(),
    nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(), nn.Linear(12 * 16, 64), nn.ReLU(), nn.Linear(64, 5),
)  # fmt: skip
g = torch.Generator().manual_seed(1)
x = torch.randn(3000, 3, 20, 17, generator=g)
rule = torch.randn(3 * 4 * 4, 5, generator=g)
y = (F.adaptive_avg_pool2d(x, (4, 4)).flatten(1) @ rule).argmax(1)
xtr, ytr, xte, yte = x[:2500], y[:2500], x[2500:], y[2500:]


def run(label: str, config: VariationalDropout | None) -> nn.Module:
    model = copy.deepcopy(start)
    torch.manual_seed(2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    handle = penalize_(model, opt, config, steps_per_epoch=STEPS) if config else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS * STEPS)
    gen = torch.Generator().manual_seed(3)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(xtr), generator=gen).split(len(xtr) // STEPS):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        before = model(xte)
    print(f"== {label}")
    if handle is not None:
        print(f"dropped (log alpha >= 3): {handle.dropped():.3f}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            handle.remove()
        for w in caught:
            print("warning:", w.message)
        with torch.no_grad():
            print("eval output identical after remove():", torch.equal(before, model(xte)))
        print("no log-variance left in state_dict:", not any("log_sigma2" in k for k in model.state_dict()))
    print(f"test error: {float((before.argmax(1) != yte).float().mean()):.3f}")
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            print(f"  {name:8s} {tuple(m.weight.shape)} zeros {float((m.weight == 0).float().mean()):.3f}")
    return model


run("dense (no penalty)", None)
run("VD, lam = 1/N from step 0", VariationalDropout(lam=1 / len(xtr)))
ramp = Schedule("linear_warmup", length=EPOCHS // 2, unit="epochs")
model = run("VD, lam = 1/N ramped in over 20 epochs", VariationalDropout(lam=1 / len(xtr), schedule=ramp))
with torch.no_grad():
    ref = model(xte[:50])
with tempfile.TemporaryDirectory() as d:
    sparsify.export_onnx(model, d, xte[:1])
    files = sorted(Path(d).iterdir())
    onnx_path = next(p for p in files if p.name.endswith("compact.onnx"))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = np.concatenate([sess.run(None, {name: xte[i : i + 1].numpy()})[0] for i in range(50)])
    print("onnxruntime (compact file) max |diff| vs torch, 50 images:", float(np.abs(got - ref.numpy()).max()))
    print("onnx files (bytes):", [(p.name, p.stat().st_size) for p in files])
