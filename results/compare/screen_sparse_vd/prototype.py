"""Screen: sparse variational dropout (Molchanov et al. 2017) against GMP at exactly 98% zeros.

    PYTHONPATH=. .venv/bin/python results/compare/screen_sparse_vd/prototype.py --seed 0 --kl 1.0 --out OUT

A prototype, not a sparsify method: LeNet-300-100 on the same data and validation split as
``recipes/compare/lenet300_gmp_t98.yaml`` (50,000 train / 10,000 validation carved by the
seed, the pipeline's normalisation), the same 90 train + 30 debias epochs and debias optimizer.

Train stage: every Linear weight w has a variance sigma^2 (log_sigma2 learned, alpha =
sigma^2 / w^2); the forward samples pre-activations by the local reparameterisation
``y = x W^T + b + sqrt(x^2 sigma^2T) * eps``; the loss is ``CE + kl * beta(t) * KL / N`` with
Molchanov's approximation ``-KL = k1 sigmoid(k2 + k3 log alpha) - 0.5 log1p(1/alpha) - k1``
and beta ramping 0 -> 1 over the first 30 epochs; Adam lr 1e-3, cosine to 0.
Projection: keep the round(0.02 * N) weights of lowest log alpha (all layers together), zero
the rest. Debias: 30 epochs of plain Linear layers, SGD lr 0.01 momentum 0.9 weight decay
1e-3 cosine, zeros frozen (as the GMP recipe). Writes ``metrics.json`` (val/test/train error,
zeros before and after the projection) atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparsify.fileio import atomic_write_text
from sparsify.pipeline.data.registry import DataRequest, load_dataset
from sparsify.pipeline.data.splits import carve_validation

K1, K2, K3 = 0.63576, 1.87320, 1.48695


class LinearSVD(nn.Module):
    """A Linear layer with a learned per-weight variance (sparse variational dropout)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        ref = nn.Linear(n_in, n_out)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())
        self.log_sigma2 = nn.Parameter(torch.full((n_out, n_in), -10.0))

    def log_alpha(self) -> torch.Tensor:
        """log(sigma^2 / w^2), clamped to [-10, 10] as in the paper's code."""
        return (self.log_sigma2 - torch.log(self.weight**2 + 1e-8)).clamp(-10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = F.linear(x, self.weight, self.bias)
        if not self.training:
            return F.linear(x, self.weight * (self.log_alpha() < 3), self.bias)
        var = F.linear(x * x, self.log_sigma2.exp())
        return mu + var.add(1e-8).sqrt() * torch.randn_like(mu)

    def kl(self) -> torch.Tensor:
        """Molchanov's approximation of KL(q(w) || log-uniform prior), summed over weights."""
        la = self.log_alpha()
        return -(K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * F.softplus(-la) - K1).sum()


def lenet300(layer: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), layer(784, 300), nn.ReLU(), layer(300, 100), nn.ReLU(), layer(100, 10)
    )


def error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        wrong = sum(
            int((model(x[i : i + 1000]).argmax(1) != y[i : i + 1000]).sum())
            for i in range(0, len(x), 1000)
        )
    return wrong / len(x)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kl", type=float, default=1.0, help="multiplier of the KL term")
    p.add_argument("--target", type=float, default=0.98)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--debias-epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    t0 = time.time()
    splits = carve_validation(
        load_dataset(DataRequest("mnist", root=Path(a.data_dir), download=False)), 10000, a.seed
    )

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        return torch.stack(xs), torch.as_tensor(ys)

    (xtr, ytr), (xva, yva), (xte, yte) = map(tensors, (splits.train, splits.val, splits.test))
    n = len(xtr)
    gen = torch.Generator().manual_seed(a.seed)
    model = lenet300(LinearSVD)
    svd = [m for m in model if isinstance(m, LinearSVD)]
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = a.epochs * math.ceil(n / 100)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    history = []
    for epoch in range(a.epochs):
        model.train()
        beta = a.kl * min(1.0, epoch / 30)
        for idx in torch.randperm(n, generator=gen).split(100):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx]) + beta * sum(m.kl() for m in svd) / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        la = torch.cat([m.log_alpha().flatten() for m in svd])
        history.append(
            {
                "epoch": epoch + 1,
                "zeros_at_log_alpha_3": float((la >= 3).float().mean()),
                "val_error": error(model, xva, yva),
            }
        )
        print(json.dumps(history[-1]), flush=True)
    la = torch.cat([m.log_alpha().detach().flatten() for m in svd])
    zeros_before = float((la >= 3).float().mean())
    keep = round((1 - a.target) * la.numel())
    cut = la.kthvalue(keep).values  # keep the `keep` lowest log alpha
    plain = lenet300(nn.Linear)
    masks = []
    with torch.no_grad():
        for m, q in zip(svd, (q for q in plain if isinstance(q, nn.Linear))):
            mask = m.log_alpha() <= cut
            q.weight.copy_(m.weight * mask)
            q.bias.copy_(m.bias)
            masks.append((q.weight, mask))
    val_before_debias = error(plain, xva, yva)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    steps = a.debias_epochs * math.ceil(n / 100)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    for _ in range(a.debias_epochs):
        plain.train()
        for idx in torch.randperm(n, generator=gen).split(100):
            loss = F.cross_entropy(plain(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for w, mask in masks:
                    w.mul_(mask)
    nz = sum(int((w != 0).sum()) for w, _ in masks)
    total = sum(w.numel() for w, _ in masks)
    metrics = {
        "seed": a.seed, "kl": a.kl, "target": a.target, "epochs": a.epochs,
        "debias_epochs": a.debias_epochs, "lr": a.lr,
        "zeros_before_projection": zeros_before, "zeros": 1 - nz / total, "nonzero": nz,
        "val_error_after_projection": val_before_debias,
        "train_error": error(plain, xtr, ytr), "val_error": error(plain, xva, yva),
        "test_error": error(plain, xte, yte), "seconds": time.time() - t0,
        "torch": torch.__version__, "threads": 1, "history": history,
    }  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    print({k: v for k, v in metrics.items() if k != "history"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
