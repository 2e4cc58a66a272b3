"""The training loop behind ``sparsify train``: recipe + data in, trained model + metrics out.

Plain mini-batch training on tensors held in memory (MNIST fits), cross-entropy loss,
penalties attached with :func:`~sparsify.penalties.penalize.penalize_` exactly as a user would
attach them to their own loop. :func:`train` is a recipe's train stage and :func:`debias`
its debias stage (same epoch loop, :func:`run_epochs`); :mod:`sparsify.pipeline.stages` chains them
with the shrink stage.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sparsify.errors import SparsifyError
from sparsify.penalties.base import penalty_from_dict
from sparsify.penalties.freeze import freeze_support_
from sparsify.penalties.penalize import PenaltyHandle, penalize_
from sparsify.pipeline.data.mnist import MnistSplits
from sparsify.pipeline.distributed import DistContext
from sparsify.pipeline.recipe import DebiasStage, OptimizerSpec, Recipe
from sparsify.pipeline.state import load_train_state, save_train_state
from sparsify.pipeline.zoo import build_model
from sparsify.stats import model_stats


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
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    dist: DistContext | None = None,
) -> tuple[float, float]:
    """(error rate, mean cross-entropy) of ``model`` in eval mode on ``x``, ``y``.

    Under DDP each rank evaluates its shard and the counts are summed over ranks.
    """
    dist = dist or DistContext()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    idx = dist.shard(torch.arange(len(x)))
    wrong, loss = 0.0, 0.0
    for i in range(0, len(idx), batch_size):
        sel = idx[i : i + batch_size]
        xb, yb = x[sel].to(device), y[sel].to(device)
        out = model(xb)
        loss += F.cross_entropy(out, yb, reduction="sum").item()
        wrong += (out.argmax(1) != yb).sum().item()
    model.train(was_training)
    wrong, loss = dist.all_reduce_sum([wrong, loss])
    return wrong / len(x), loss / len(x)


def check_input_shape(model: nn.Module, sample: torch.Tensor, name: str) -> None:
    """Run one sample through ``model`` so a shape mismatch fails now, with a clear message."""
    try:
        with torch.no_grad():
            model.eval()(sample)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise SparsifyError(
            f"model {name!r} cannot take input of shape {tuple(sample.shape[1:])} ({first}); "
            "fix model.in_channels or choose a model for 28x28 images."
        ) from None
    finally:
        model.train()


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
    dist: DistContext | None = None,
    state_dir: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
) -> TrainResult:
    """Train ``recipe.model`` on ``data`` for ``recipe.epochs`` and measure it.

    Args:
        dist: DDP context from :func:`sparsify.pipeline.distributed.distributed` (None: one process).
        state_dir: where to save the resume state every ``checkpoint_every`` epochs (None: never).
        resume: continue from the state in ``state_dir`` if there is one.

    Returns metrics with at least ``train_error``, ``test_error``, ``zero_fraction`` and
    per-tensor ``numel``/``zeros`` under ``layers``.
    """
    if recipe.sweep() is not None:
        raise SparsifyError("this recipe is a sweep (a lambda list); run it with 'sparsify sweep'.")
    dist = dist or DistContext()
    log = log or (lambda _msg: None)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    device = dist.device if dist.enabled else resolve_device(recipe.device)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.name, recipe.model.num_classes, recipe.model.in_channels).to(
        device
    )
    check_input_shape(model, data.train_x[:1].to(device), recipe.model.name)
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = build_optimizer(recipe.optimizer, model.parameters())
    scheduler = build_lr_scheduler(recipe.optimizer, optimizer, total_steps)
    handles = attach_penalties(recipe, model, optimizer, steps_per_epoch)
    for h in handles:
        log(h.summary())
    net: nn.Module = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    gen = torch.Generator().manual_seed(recipe.seed)
    history: list[dict[str, float]] = []
    first_epoch, elapsed = 0, 0.0
    saved = load_train_state(state_dir) if (resume and state_dir is not None) else None
    if saved is not None:
        if saved["recipe"] != recipe.to_dict():
            raise SparsifyError(
                f"{state_dir}: the resume state was made by a different recipe; resume with the same recipe "
                "or delete resume.pt to start over."
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        for h, hs in zip(handles, saved["penalties"]):
            h.load_state_dict(hs)
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        first_epoch, history, elapsed = saved["epoch"], saved["history"], saved["seconds"]
        log(f"resumed from {state_dir} after epoch {first_epoch}")

    start = time.perf_counter() - elapsed

    def save_state(epoch: int) -> None:
        if (
            state_dir is not None
            and dist.is_main
            and (epoch + 1) % checkpoint_every == 0
            and epoch + 1 < recipe.epochs
        ):
            save_train_state(
                state_dir,
                {
                    "recipe": recipe.to_dict(),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "penalties": [{"step": h.step} for h in handles],
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "seconds": time.perf_counter() - start,
                },
            )

    run_epochs(
        net,
        model,
        optimizer,
        scheduler,
        data,
        batch_size=recipe.batch_size,
        epochs=range(first_epoch, recipe.epochs),
        gen=gen,
        dist=dist,
        history=history,
        desc=recipe.name,
        progress=progress,
        after_epoch=save_state,
    )
    seconds = time.perf_counter() - start
    for h in handles:
        h.remove()

    measured = measure(model, data, dist)
    metrics = {
        "name": recipe.name,
        **{k: measured[k] for k in ("train_error", "test_error", "train_loss", "test_loss")},
        **{k: measured[k] for k in ("zero_fraction", "weight_zero_fraction", "numel", "zeros")},
        "layers": measured["layers"],
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
        "world_size": dist.world_size,
        "versions": versions(),
    }
    return TrainResult(model=model, metrics=metrics, history=history)


def run_epochs(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    data: MnistSplits,
    *,
    batch_size: int,
    epochs: range,
    gen: torch.Generator,
    dist: DistContext,
    history: list[dict[str, float]],
    desc: str,
    progress: bool,
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """Mini-batch cross-entropy training of ``net`` (``model``, or its DDP wrapper) in place.

    One shuffled pass over ``data.train_x`` per epoch (order from ``gen``); the scheduler
    steps once per optimizer step. Appends ``{epoch, loss, zero_fraction}`` to ``history``
    and calls ``after_epoch(epoch)`` after each epoch (0-based ``epoch``).

    Raises:
        SparsifyError: the loss is not finite after an epoch.
    """
    device = next(model.parameters()).device
    x, y = data.train_x.to(device), data.train_y.to(device)
    n = len(x)
    bar = tqdm(
        epochs, desc=desc, unit="epoch", disable=not (progress and dist.is_main), leave=False
    )
    net.train()
    for epoch in bar:
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            batch = perm[i : i + batch_size]
            mine = dist.shard(batch).to(device)
            # sum over this shard scaled by W/B: DDP's gradient average then equals the
            # gradient of the mean loss over the whole global batch (see distributed.py)
            loss_sum = F.cross_entropy(net(x[mine]), y[mine], reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss_sum * (dist.world_size / len(batch))).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss_sum.item()
        (total,) = dist.all_reduce_sum([total])
        if not math.isfinite(total):
            raise SparsifyError(
                f"training diverged at epoch {epoch + 1} (loss is {total}); lower optimizer.lr or the lambdas."
            )
        stats = model_stats(model)
        history.append(
            {"epoch": epoch + 1, "loss": total / n, "zero_fraction": stats["zero_fraction"]}
        )
        bar.set_postfix(loss=f"{total / n:.4f}", zeros=f"{100 * stats['zero_fraction']:.1f}%")
        if after_epoch is not None:
            after_epoch(epoch)


def measure(model: nn.Module, data: MnistSplits, dist: DistContext | None = None) -> dict[str, Any]:
    """Errors and losses on both splits plus :func:`~sparsify.stats.model_stats` of ``model``.

    ``nonzero_weights = weight_numel - weight_zeros`` counts the Linear/Conv weights a
    sparse format stores (biases excluded), the number compression ratios are quoted on.
    """
    train_error, train_loss = evaluate(model, data.train_x, data.train_y, dist=dist)
    test_error, test_loss = evaluate(model, data.test_x, data.test_y, dist=dist)
    stats = model_stats(model)
    return {
        "train_error": train_error,
        "test_error": test_error,
        "train_loss": train_loss,
        "test_loss": test_loss,
        **{k: v for k, v in stats.items() if k != "layers"},
        "nonzero_weights": stats["weight_numel"] - stats["weight_zeros"],
        "layers": stats["layers"],
    }


def debias(
    model: nn.Module,
    recipe: Recipe,
    stage: DebiasStage,
    data: MnistSplits,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """The debias stage: fine-tune ``model`` in place with its zeros frozen, no penalty.

    A fresh optimizer (``stage.optimizer``, else the recipe's) trains for ``stage.epochs``
    epochs of ``recipe.batch_size``; :func:`~sparsify.penalties.freeze.freeze_support_` keeps
    every selected weight that is 0 now at exactly 0 (gradient, optimizer state and weight
    masked). Penalty hooks must already be removed (``train`` removes its own).

    Returns:
        ``{epochs, steps, seconds, frozen (summary line), support_density, history}``.
    """
    dist = dist or DistContext()
    log = log or (lambda _msg: None)
    spec = stage.optimizer or recipe.optimizer
    steps_per_epoch = math.ceil(len(data.train_x) / recipe.batch_size)
    optimizer = build_optimizer(spec, model.parameters())
    scheduler = build_lr_scheduler(spec, optimizer, steps_per_epoch * stage.epochs)
    frozen = freeze_support_(
        model, optimizer, scope=stage.scope, include=stage.include, exclude=stage.exclude
    )
    log(frozen.summary())
    net: nn.Module = model
    if dist.enabled:
        device = next(model.parameters()).device
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # its own stream of batch orders: the train stage's is not needed to reproduce this one
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    run_epochs(
        net,
        model,
        optimizer,
        scheduler,
        data,
        batch_size=recipe.batch_size,
        epochs=range(stage.epochs),
        gen=gen,
        dist=dist,
        history=history,
        desc=f"{recipe.name} {stage.name}",
        progress=progress,
    )
    seconds = time.perf_counter() - start
    frozen.remove()
    return {
        "epochs": stage.epochs,
        "steps": steps_per_epoch * stage.epochs,
        "seconds": seconds,
        "frozen": frozen.summary(),
        "support_density": frozen.density(),
        "history": history,
    }
