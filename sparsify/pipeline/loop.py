"""The epoch loop: built objects in (model, optimizer, batches, task), trained model out.

Plain mini-batch training: each step computes the task's loss summed over this rank's share
of the batch, scales it by ``W / B`` (W ranks, B the global batch size), back-propagates and
steps the optimizer; penalties are whatever hooks the caller attached with
:func:`~sparsify.penalties.penalize.penalize_`, exactly as in a user's own loop. Nothing here
reads a recipe: :mod:`sparsify.pipeline.stages` takes the recipe apart and calls these.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sparsify.errors import SparsifyError
from sparsify.pipeline.data.loader import FixedBatches, TrainBatches, batch_loader
from sparsify.pipeline.data.registry import DatasetSplits
from sparsify.pipeline.distill import Distillation
from sparsify.pipeline.distributed import DistContext
from sparsify.pipeline.task import Classification, Task
from sparsify.stats import model_stats


def resolve_device(spec: str) -> torch.device:
    """ "auto" -> cuda when available else cpu; "cuda" without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise SparsifyError(
            "device 'cuda' was asked for but no GPU is visible; set device: cpu or auto."
        )
    return torch.device(spec)


def wrap_ddp(model: nn.Module, dist: DistContext) -> nn.Module:
    """``model`` in DistributedDataParallel under DDP, else ``model`` itself."""
    if not dist.enabled:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    task: Task | None = None,
    batch_size: int = 1000,
    dist: DistContext | None = None,
    num_workers: int = 0,
) -> tuple[float, float]:
    """(error, mean loss) of ``model`` in eval mode on ``dataset``: ``task.error_sum`` and
    ``task.loss_sum`` summed over the items, divided by the item count.

    Classification by default (error = misclassified fraction, loss = mean cross-entropy).
    Under DDP each rank evaluates its shard and the sums are added over ranks.
    """
    dist = dist or DistContext()
    task = task or Classification()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(dataset)  # type: ignore[arg-type]
    wrong, loss = 0.0, 0.0
    loader = batch_loader(dataset, FixedBatches(n, batch_size, dist), num_workers=num_workers)
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        loss += task.loss_sum(out, yb).item()
        wrong += task.error_sum(out, yb)
    model.train(was_training)
    wrong, loss = dist.all_reduce_sum([wrong, loss])
    return wrong / n, loss / n


def check_input_shape(
    model: nn.Module,
    sample: torch.Tensor,
    name: str,
    fix: str = "fix model.in_channels or choose a model for this dataset's images",
) -> torch.Tensor:
    """Run one sample (1, C, H, W) through ``model`` so a shape mismatch fails now, clearly
    (``fix`` ends the one-line error); returns the output. Leaves ``model`` in train mode."""
    try:
        with torch.no_grad():
            return model.eval()(sample)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise SparsifyError(
            f"model {name!r} cannot take input of shape {tuple(sample.shape[1:])} ({first}); {fix}."
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


def run_epochs(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    batches: TrainBatches,
    task: Task,
    *,
    epochs: range,
    dist: DistContext,
    history: list[dict[str, float]],
    desc: str,
    progress: bool,
    after_epoch: Callable[[int], None] | None = None,
    distill: Distillation | None = None,
) -> None:
    """Mini-batch training of ``net`` (``model``, or its DDP wrapper) in place.

    Per step: ``loss = task.loss_sum(net(x), y) * W / B`` over this rank's share x of a
    global batch of B items; DDP's gradient average over W ranks then equals the gradient of
    the mean loss over the global batch. One pass over ``batches`` per epoch; the scheduler
    steps once per optimizer step. Appends ``{epoch, loss, zero_fraction}`` to ``history``
    (loss: mean over the epoch's items) and calls ``after_epoch(epoch)`` (0-based). With
    ``distill``, its loss (:mod:`sparsify.pipeline.distill`) replaces the task's.

    Raises:
        SparsifyError: a step's loss is not finite (one process; with DDP: after the epoch,
            so every rank stops together), before that step updates the weights.
    """
    device = next(model.parameters()).device
    n = batches.n
    bar = tqdm(
        epochs, desc=desc, unit="epoch", disable=not (progress and dist.is_main), leave=False
    )
    fix = "lower optimizer.lr, the lambdas" + (" or distill.weight" if distill else "")
    net.train()
    for epoch in bar:
        total = 0.0
        for step, (xb, yb, global_len) in enumerate(batches, start=1):
            xb, yb = xb.to(device), yb.to(device)
            out = net(xb)
            loss_sum = (
                task.loss_sum(out, yb) if distill is None else distill.loss_sum(out, xb, yb, task)
            )
            value = loss_sum.item()
            if not dist.enabled and not math.isfinite(value):  # DDP: all ranks stop below
                raise SparsifyError(
                    f"training diverged at epoch {epoch + 1} step {step} (loss={value}): {fix}; "
                    "no model was written."
                )
            optimizer.zero_grad(set_to_none=True)
            (loss_sum * (dist.world_size / global_len)).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += value
        (total,) = dist.all_reduce_sum([total])
        if not math.isfinite(total):
            raise SparsifyError(
                f"training diverged at epoch {epoch + 1} (loss={total}): {fix}; no model was "
                "written."
            )
        stats = model_stats(model)
        history.append(
            {"epoch": epoch + 1, "loss": total / n, "zero_fraction": stats["zero_fraction"]}
        )
        bar.set_postfix(loss=f"{total / n:.4f}", zeros=f"{100 * stats['zero_fraction']:.1f}%")
        if after_epoch is not None:
            after_epoch(epoch)


def measure(
    model: nn.Module,
    data: DatasetSplits,
    task: Task | None = None,
    dist: DistContext | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Errors and losses on every split (train, val when carved, test) plus
    :func:`~sparsify.stats.model_stats` of ``model``.

    ``nonzero_weights = weight_numel - weight_zeros`` counts the Linear/Conv weights a
    sparse format stores (biases excluded), the number compression ratios are quoted on.
    """
    splits = {"train": data.train, **({"val": data.val} if data.val is not None else {})}
    splits["test"] = data.test
    out: dict[str, Any] = {}
    for name, ds in splits.items():
        err, loss = evaluate(model, ds, task, dist=dist, num_workers=num_workers)
        out[f"{name}_error"], out[f"{name}_loss"] = err, loss
    stats = model_stats(model)
    return {
        **out,
        **{k: v for k, v in stats.items() if k != "layers"},
        "nonzero_weights": stats["weight_numel"] - stats["weight_zeros"],
        "layers": stats["layers"],
    }
