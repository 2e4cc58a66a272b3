"""Probe, not a feature: reweighted (adaptive) L1 prox on LeNet-300-100, full MNIST.

    .venv/bin/python results/records/reweighted_probe/run.py LAM MODE EPS [SEED] >> results/records/reweighted_probe/runs.jsonl

MODE ``l1``: the record recipe's first version (45 epochs, lambda warm-up over 30, per-layer
scales fc1 1 / fc2 0.05 / fc3 0.0125, t = lr * lam, then 10 debias epochs), written out
by hand; at lam 0.04 it keeps the same 18,165 weights as sparsify's run (test error
1.64% against 1.56%: close, not bit-identical).
MODE ``rw``: each weight's threshold is t_i = lr * lam * scale * r_i with
r_i = mean_l(|w| + eps) / (|w_i| + eps), recomputed every epoch (Candes et al. 2008).
One JSON line per run. The committed lines were made by running these six argument sets:
0.04 l1 0; 0.01 rw 0.01; 0.005 rw 0.01; 0.01 rw 0.03; 0.02 rw 0.03; 0.005 rw 0.003.
Result: at most a 0.1-point gain near 20x (21.7x at 1.78% vs 21.5x at 1.86%).
"""

import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from sparsify.pipeline.data.mnist import load_mnist
from sparsify.pipeline.zoo import build_model

torch.set_num_threads(1)
lam = float(sys.argv[1])
mode = sys.argv[2]
eps = float(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
E = 45
WU = 30
DE = 10
torch.manual_seed(seed)
d = load_mnist(os.environ.get("SPARSIFY_DATA_DIR", "../shared/data/mnist"))
m = build_model("lenet300_100")
scales = {"fc1.weight": 1.0, "fc2.weight": 0.05, "fc3.weight": 0.0125}
W = {n: p for n, p in m.named_parameters() if n in scales}
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
steps = E * 600
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
g = torch.Generator().manual_seed(seed)
R = {n: torch.ones_like(p) for n, p in W.items()}


def err(x, y):
    m.eval()
    with torch.no_grad():
        e = (m(x).argmax(1) != y).float().mean().item()
    m.train()
    return e


step = 0
t0 = time.time()
for ep in range(E):
    if mode == "rw" and ep >= 1:
        for n, p in W.items():
            a = p.detach().abs()
            mean = (a + eps).mean()
            R[n] = mean / (a + eps)
            R[n].clamp_(max=1e3)
    perm = torch.randperm(60000, generator=g)
    for i in range(0, 60000, 100):
        idx = perm[i : i + 100]
        loss = F.cross_entropy(m(d.train_x[idx]), d.train_y[idx])
        opt.zero_grad()
        loss.backward()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        step += 1
        ramp = min(1.0, step / (WU * 600))
        with torch.no_grad():
            for n, p in W.items():
                t = lr * lam * scales[n] * ramp * R[n]
                p.copy_(torch.sign(p) * torch.clamp(p.abs() - t, min=0))
nz = sum(int((p != 0).sum()) for p in W.values())
tot = sum(p.numel() for p in W.values())
e1 = err(d.test_x, d.test_y)
# debias
masks = {n: (p != 0) for n, p in W.items()}
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, DE * 600)
for _ep in range(DE):
    perm = torch.randperm(60000, generator=g)
    for i in range(0, 60000, 100):
        idx = perm[i : i + 100]
        loss = F.cross_entropy(m(d.train_x[idx]), d.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for n, p in W.items():
                p.mul_(masks[n])
e2 = err(d.test_x, d.test_y)
dens = {n: round(float((p != 0).float().mean()), 4) for n, p in W.items()}
print(
    json.dumps(
        dict(
            lam=lam,
            mode=mode,
            eps=eps,
            seed=seed,
            kept=nz,
            comp=round(tot / nz, 1),
            err_train_stage=e1,
            err_debias=e2,
            dens=dens,
            s=round(time.time() - t0),
        )
    ),
    flush=True,
)
