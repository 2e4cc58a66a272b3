"""The training loop behind ``sparsify train``: recipe + data in, trained model + metrics out.

Plain mini-batch training on tensors held in memory (MNIST fits), cross-entropy loss,
penalties attached with :func:`~sparsify.train.penalize.penalize_` exactly as a user would
attach them to their own loop.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sparsify.data.mnist import MnistSplits
from sparsify.errors import SparsifyError
from sparsify.models import build_model
from sparsify.recipe import OptimizerSpec, Recipe
from sparsify.sparsity import model_stats
from sparsify.train.config import penalty_from_dict
from sparsify.train.penalize import PenaltyHandle, penalize_


@dataclass
class TrainResult:
    """The trained model, its metrics (what ``metrics.json`` holds) and per-epoch history."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(spec: str) -> torch.device:
    """ "auto" -> cuda when available else cpu; "cuda" without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise SparsifyError(
            "device 'cuda' was asked for but no GPU is visible; set device: cpu or auto."
        )
    return torch.device(spec)


def build_optimizer(spec: OptimizerSpec, params: Any) -> torch.optim.Optimizer:
    """The torch.optim optimizer named by ``spec``."""
    if spec.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.nesterov,
            weight_decay=spec.weight_decay,
        )
    cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
    return cls(params, lr=spec.lr, betas=tuple(spec.betas), weight_decay=spec.weight_decay)


def build_lr_scheduler(
    spec: OptimizerSpec, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Cosine decay to 0 over ``total_steps`` optimizer steps, or None for a constant LR."""
    if spec.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> tuple[float, float]:
    """(error rate, mean cross-entropy) of ``model`` in eval mode on ``x``, ``y``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wrong, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        out = model(xb)
        loss += F.cross_entropy(out, yb, reduction="sum").item()
        wrong += (out.argmax(1) != yb).sum().item()
    model.train(was_training)
    return wrong / len(x), loss / len(x)


def versions() -> dict[str, str]:
    """Library and machine versions recorded with every result."""
    import sparsify

    return {
        "sparsify": sparsify.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def attach_penalties(
    recipe: Recipe, model: nn.Module, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> list[PenaltyHandle]:
    """``penalize_`` each penalty of the (expanded) recipe."""
    return [
        penalize_(
            model, optimizer, penalty_from_dict(p.to_config_dict()), steps_per_epoch=steps_per_epoch
        )
        for p in recipe.penalties
    ]


def train(
    recipe: Recipe,
    data: MnistSplits,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``recipe.model`` on ``data`` for ``recipe.epochs`` and measure it.

    Returns metrics with at least ``train_error``, ``test_error``, ``zero_fraction`` and
    per-tensor ``numel``/``zeros`` under ``layers``.
    """
    if recipe.sweep() is not None:
        raise SparsifyError("this recipe is a sweep (a lambda list); run it with 'sparsify sweep'.")
    log = log or (lambda _msg: None)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    device = resolve_device(recipe.device)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.name, recipe.model.num_classes, recipe.model.in_channels).to(
        device
    )
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = build_optimizer(recipe.optimizer, model.parameters())
    scheduler = build_lr_scheduler(recipe.optimizer, optimizer, total_steps)
    handles = attach_penalties(recipe, model, optimizer, steps_per_epoch)
    for h in handles:
        log(h.summary())

    x, y = data.train_x.to(device), data.train_y.to(device)
    gen = torch.Generator().manual_seed(recipe.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(
        range(recipe.epochs), desc=recipe.name, unit="epoch", disable=not progress, leave=False
    )
    model.train()
    for epoch in bar:
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(0, n, recipe.batch_size):
            idx = perm[i : i + recipe.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(idx)
        if not math.isfinite(total):
            raise SparsifyError(
                f"training diverged at epoch {epoch + 1} (loss is {total}); lower optimizer.lr or the lambdas."
            )
        stats = model_stats(model)
        history.append(
            {"epoch": epoch + 1, "loss": total / n, "zero_fraction": stats["zero_fraction"]}
        )
        bar.set_postfix(loss=f"{total / n:.4f}", zeros=f"{100 * stats['zero_fraction']:.1f}%")
    seconds = time.perf_counter() - start
    for h in handles:
        h.remove()

    train_error, train_loss = evaluate(model, data.train_x, data.train_y)
    test_error, test_loss = evaluate(model, data.test_x, data.test_y)
    stats = model_stats(model)
    metrics = {
        "name": recipe.name,
        "train_error": train_error,
        "test_error": test_error,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "zero_fraction": stats["zero_fraction"],
        "weight_zero_fraction": stats["weight_zero_fraction"],
        "numel": stats["numel"],
        "zeros": stats["zeros"],
        "layers": stats["layers"],
        "penalties": [h.summary() for h in handles],
        "epochs": recipe.epochs,
        "steps": total_steps,
        "seconds": seconds,
        "seconds_per_epoch": seconds / recipe.epochs,
        "train_images": n,
        "test_images": len(data.test_x),
        "normalisation": {"mean": data.mean, "std": data.std},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    return TrainResult(model=model, metrics=metrics, history=history)
