"""Staged recipes: train (with penalties) -> debias (zeros frozen) -> shrink (dead units removed).

This is where a recipe is taken apart: :func:`build_data` turns its ``data`` section into
datasets (registry, validation split), :func:`train` and :func:`debias` build the model,
optimizer, schedule, penalties, batches and task and hand them to the plain epoch loop of
:mod:`sparsify.pipeline.loop`, which never sees a recipe.

A recipe's ``stages:`` list names the stages to run, in that order, each at most once:

    train   the recipe's top-level ``epochs``, ``optimizer`` and ``penalties`` (:func:`train`);
            the penalty hooks are removed when it ends
    debias  ``epochs`` more epochs without penalty, every selected zero frozen
            (:func:`debias`, built on ``freeze_support_``)
    shrink  ``shrink_`` on ``example_batch`` random inputs of the data's input shape: dead
            output neurons/channels are removed, same outputs within 1e-5

After every stage the model is measured (errors on every split, exact zeros per tensor) and
the stage's row goes to ``metrics["stages"]``. A recipe without ``stages`` runs the train
stage alone and its metrics are exactly what :func:`train` returns (no ``stages`` key).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from sparsify.errors import SparsifyError, one_line
from sparsify.penalties.base import penalty_from_dict
from sparsify.penalties.freeze import freeze_support_
from sparsify.penalties.penalize import PenaltyHandle, penalize_
from sparsify.pipeline.checkpoint import SHRUNK, load_checkpoint
from sparsify.pipeline.data.loader import TrainBatches
from sparsify.pipeline.data.mnist import MnistSplits
from sparsify.pipeline.data.registry import DataRequest, DatasetSplits, load_dataset
from sparsify.pipeline.data.splits import Augmented, carve_validation, validation_size
from sparsify.pipeline.distill import Distillation
from sparsify.pipeline.distributed import DistContext
from sparsify.pipeline.loop import (
    check_input_shape,
    evaluate,
    measure,
    resolve_device,
    run_epochs,
    versions,
    wrap_ddp,
)
from sparsify.pipeline.recipe import DebiasStage, OptimizerSpec, Recipe, ShrinkStage
from sparsify.pipeline.state import (
    STATE_FILE,
    check_train_state,
    load_train_state,
    save_train_state,
)
from sparsify.pipeline.targets import SparsityTarget, record_reached
from sparsify.pipeline.task import make_task
from sparsify.pipeline.zoo import build_model
from sparsify.structure.shrink import layer_widths, shrink_

# per-stage fields copied from measure(); per-tensor detail is kept for the final model only
ROW_KEYS = (
    "train_error",
    "test_error",
    "train_loss",
    "test_loss",
    "zero_fraction",
    "weight_zero_fraction",
    "numel",
    "weight_numel",
    "nonzero_weights",
)


@dataclass
class StagedResult:
    """The final model, its metrics (``stages`` rows included when staged), the train history,
    and the header entries its checkpoint needs (``shrunk`` after a shrink stage)."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    extra_metadata: dict[str, str] = field(default_factory=dict)


def _row(name: str, kind: str, measured: dict[str, Any], **extra: Any) -> dict[str, Any]:
    layers = {
        t: {k: e[k] for k in ("numel", "zeros", "zero_fraction")}
        for t, e in measured["layers"].items()
    }
    return {
        "name": name,
        "kind": kind,
        **{k: measured[k] for k in ROW_KEYS},
        **{k: measured[k] for k in ("val_error", "val_loss") if k in measured},
        "layers": layers,
        **extra,
    }


def _shrink_stage(
    model: nn.Module, stage: ShrinkStage, data: DatasetSplits, seed: int, log: Callable[[str], None]
) -> dict[str, Any]:
    device = next(model.parameters()).device
    # random inputs reach every unit; a seeded generator makes every DDP rank shrink alike
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn((stage.example_batch, *data.input_shape), generator=gen)
    start = time.perf_counter()
    report = shrink_(model, example.to(device), exclude=stage.exclude)
    seconds = time.perf_counter() - start
    log(report.table())
    return {"seconds": seconds, "shrink": report.to_dict()}


def run_recipe(
    recipe: Recipe,
    data: DatasetSplits | MnistSplits,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    dist: DistContext | None = None,
    state_dir: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
) -> StagedResult:
    """Run every stage of ``recipe`` (an expanded, non-sweep recipe) on ``data``.

    ``state_dir``/``resume``/``checkpoint_every`` apply to the train stage only (see
    :func:`train`): a resumed run continues the train stage from its last saved epoch and
    then runs the later stages from the start.

    Returns:
        A :class:`StagedResult`. Metrics at the top level describe the final model; with
        ``stages`` given, ``metrics["stages"]`` holds one row per stage (``name``, ``kind``,
        errors, ``zero_fraction``, ``nonzero_weights``, ``seconds``, ...) and
        ``metrics["seconds"]`` is the sum over stages.
    """
    log = log or (lambda _msg: None)
    data = as_splits(data)
    result = train(
        recipe,
        data,
        progress=progress,
        log=log,
        dist=dist,
        state_dir=state_dir,
        resume=resume,
        checkpoint_every=checkpoint_every,
    )
    if not recipe.stages:
        return StagedResult(result.model, result.metrics, result.history)
    model, metrics = result.model, result.metrics
    first = recipe.stages[0]
    rows = [
        _row(
            first.name,
            "train",
            {**metrics, **_weight_counts(metrics)},
            epochs=recipe.epochs,
            seconds=metrics["seconds"],
            penalties=metrics["penalties"],
        )
    ]
    extra_metadata: dict[str, str] = {}
    measured: dict[str, Any] = {}
    for stage in recipe.stages[1:]:
        if isinstance(stage, DebiasStage):
            info = debias(
                model,
                recipe,
                stage,
                data,
                progress=progress,
                log=log,
                dist=dist,
                support=result.support,
                distill=result.distill,
            )
            if recipe.sparsity is not None:  # debias froze the zeros: the count must hold
                record_reached(metrics["sparsity"], recipe.sparsity, model)
        else:
            info = _shrink_stage(model, stage, data, recipe.seed, log)
            extra_metadata[SHRUNK] = json.dumps(layer_widths(model))
        measured = measure(model, data, make_task(data.task), dist, recipe.data.num_workers)
        rows.append(_row(stage.name, stage.kind, measured, **info))
        log(
            f"{stage.name}: test error {measured['test_error']:.4f}, "
            f"{measured['nonzero_weights']:,} nonzero weights ({info['seconds']:.1f} s)"
        )
    if measured:  # the final model's numbers replace the train stage's at the top level
        for key in ("train_error", "test_error", "train_loss", "test_loss", "zero_fraction"):
            metrics[key] = measured[key]
        for key in ("val_error", "val_loss"):
            if key in measured:
                metrics[key] = measured[key]
        metrics["weight_zero_fraction"] = measured["weight_zero_fraction"]
        metrics["numel"], metrics["zeros"] = measured["numel"], measured["zeros"]
        metrics["layers"] = measured["layers"]
    metrics["seconds"] = sum(r["seconds"] for r in rows)
    metrics["stages"] = rows
    return StagedResult(model, metrics, result.history, extra_metadata)


def _weight_counts(metrics: dict[str, Any]) -> dict[str, Any]:
    """The weight counts of a train-stage ``metrics`` dict, from its per-tensor ``layers``."""
    weights = {n: e for n, e in metrics["layers"].items() if "units" in e}  # rank >= 2
    numel = sum(e["numel"] for e in weights.values())
    zeros = sum(e["zeros"] for e in weights.values())
    return {"weight_numel": numel, "nonzero_weights": numel - zeros}


# ----------------------------------------------------------------------------- building


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


def data_request(recipe: Recipe) -> DataRequest:
    """The dataset factory's request for ``recipe.data``."""
    d = recipe.data
    return DataRequest(
        name=d.dataset,
        root=Path(d.dir) if d.dir else None,
        split=d.split,
        train_subset=d.train_subset,
        test_subset=d.test_subset,
        image_size=tuple(d.image_size) if d.image_size else None,  # type: ignore[arg-type]
    )


def build_data(recipe: Recipe) -> DatasetSplits:
    """The datasets ``recipe.data`` names, with its validation split carved out.

    ``val_size`` (or ``val_fraction`` of the training subset) items move from the training set
    to ``val``, chosen by the recipe's seed (:func:`~sparsify.pipeline.data.splits.carve_validation`).
    """
    splits = load_dataset(data_request(recipe))
    n = len(splits.train)  # type: ignore[arg-type]
    size = validation_size(n, recipe.data.val_size, recipe.data.val_fraction)
    return carve_validation(splits, size, recipe.seed)


def as_splits(data: DatasetSplits | MnistSplits) -> DatasetSplits:
    """``data`` as :class:`DatasetSplits` (in-memory ``MnistSplits`` are wrapped as they are)."""
    if isinstance(data, DatasetSplits):
        return data
    return DatasetSplits(
        train=TensorDataset(data.train_x, data.train_y),
        test=TensorDataset(data.test_x, data.test_y),
        input_shape=tuple(data.train_x.shape[1:]),  # type: ignore[arg-type]
        num_classes=10,
        info={"normalisation": {"mean": data.mean, "std": data.std}},
    )


def training_set(recipe: Recipe, data: DatasetSplits) -> Dataset:
    """The set the train loop draws from: ``data.train``, augmented when the recipe asks."""
    if recipe.data.augment and data.augmentation is not None:
        return Augmented(data.train, data.augmentation)
    return data.train


def _check_not_empty(recipe: Recipe, data: DatasetSplits) -> None:
    """Refuse, before building anything, a dataset with no training or no test items."""
    where = data.info.get("dir", recipe.data.dir)
    for split, items in (("training", data.train), ("test", data.test)):
        if len(items) == 0:  # type: ignore[arg-type]
            raise SparsifyError(
                f"dataset {recipe.data.dataset!r}{f' in {where}' if where else ''} has no "
                f"{split} images; check --data-dir (or data.val_size/val_fraction)."
            )


def _check_model_fits(recipe: Recipe, data: DatasetSplits) -> None:
    if data.task == "classification" and recipe.model.num_classes != data.num_classes:
        raise SparsifyError(
            f"dataset {recipe.data.dataset!r} has {data.num_classes} classes but "
            f"model.num_classes is {recipe.model.num_classes}; set model.num_classes: {data.num_classes}."
        )
    if recipe.model.in_channels != data.input_shape[0]:
        raise SparsifyError(
            f"dataset {recipe.data.dataset!r} has {data.input_shape[0]}-channel images but "
            f"model.in_channels is {recipe.model.in_channels}; set model.in_channels: {data.input_shape[0]}."
        )


def data_record(recipe: Recipe, data: DatasetSplits) -> dict[str, Any]:
    """What metrics.json says about the data: dataset, split, folder, augmentation, sizes."""
    d = recipe.data
    return {
        "dataset": d.dataset,
        **({"split": d.split} if d.split is not None else {}),
        "dir": data.info.get("dir", d.dir),
        "augment": bool(d.augment and data.augmentation is not None),
        "augmentation": " ".join(repr(data.augmentation).split())
        if d.augment and data.augmentation
        else None,
        "val_images": len(data.val) if data.val is not None else 0,  # type: ignore[arg-type]
        "num_workers": d.num_workers,
        **({"classes": data.info["classes"]} if "classes" in data.info else {}),
    }


def with_seed(path: str, seed: int) -> str:
    """``path`` with every ``{seed}`` replaced by ``seed`` (nothing else is interpolated)."""
    return path.replace("{seed}", str(seed))


def load_teacher(path: str, data: DatasetSplits, device: torch.device) -> nn.Module:
    """The checkpoint at ``path`` rebuilt as a teacher for ``data``'s images and classes.

    Raises:
        SparsifyError: an unreadable checkpoint, or a model whose output does not have one
            logit per class of the data (one line, with the fix).
    """
    try:
        with torch.random.fork_rng(devices=[]):  # its throwaway init must not move the run's RNG
            teacher = load_checkpoint(path).build_model().to(device)
    except SparsifyError as exc:
        raise SparsifyError(f"distill.teacher: {exc}") from None
    sample = torch.zeros((1, *data.input_shape), device=device)
    fix = "give distill.teacher a model trained on this dataset's images"
    out = check_input_shape(teacher, sample, path, fix)
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise SparsifyError(
            f"distill.teacher {path} gives outputs of shape {tuple(out.shape[1:])} for one "
            f"image; the data has {data.num_classes} classes. Give a teacher trained on them."
        )
    return teacher


def _measure_teacher(
    distill: Distillation,
    data: DatasetSplits,
    task: Any,
    dist: DistContext,
    log: Callable[[str], None],
    source: str,
) -> None:
    """Record (and log) the teacher's error on the train and validation splits."""
    assert distill.teacher is not None
    distill.measured = {
        f"teacher_{split}_error": evaluate(distill.teacher, ds, task, dist=dist)[0]
        for split, ds in (("train", data.train), ("val", data.val))
        if ds is not None
    }
    log(f"distill: teacher {source} ({distill.measured})")


@dataclass
class TrainResult:
    """The trained model, its metrics (what ``metrics.json`` holds) and per-epoch history."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    # the sparsity target's keep-masks by weight name (None without a target): a debias
    # stage trains within them, so weights the projection regrew come back
    support: dict[str, torch.Tensor] | None = None
    # the distillation loss and its teacher (None without a distill section): debias uses it too
    distill: Distillation | None = None


def train(
    recipe: Recipe,
    data: DatasetSplits | MnistSplits,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    dist: DistContext | None = None,
    state_dir: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
) -> TrainResult:
    """The train stage: train ``recipe.model`` on ``data`` for ``recipe.epochs`` and measure it.

    Batch order: ``randperm(n)`` per epoch from a generator seeded with ``recipe.seed``
    (:class:`~sparsify.pipeline.data.loader.ShuffledBatches`); DataLoader workers are seeded
    from a second generator (seed + 2**32 stream), so torch's global RNG is left to the model.

    Args:
        dist: DDP context from :func:`sparsify.pipeline.distributed.distributed` (None: one process).
        state_dir: where to save the resume state every ``checkpoint_every`` epochs (None: never).
        resume: continue from the state in ``state_dir`` if there is one.

    Returns metrics with at least ``train_error``, ``test_error`` (``val_error`` with a
    validation split), ``zero_fraction``, per-tensor ``numel``/``zeros`` under ``layers``,
    ``input_shape``, ``task`` and ``data`` (what was used).
    """
    if recipe.sweep() is not None:
        raise SparsifyError("this recipe is a sweep (a lambda list); run it with 'sparsify sweep'.")
    data = as_splits(data)
    dist = dist or DistContext()
    log = log or (lambda _msg: None)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    else:  # allowed (a GPU run need not care), but CPU results then vary with the machine
        log(
            f"threads is not set: torch uses {torch.get_num_threads()} here and CPU results can "
            "differ on another machine; set threads: 1 in the recipe to pin it."
        )
    device = dist.device if dist.enabled else resolve_device(recipe.device)
    _check_not_empty(recipe, data)
    _check_model_fits(recipe, data)
    task = make_task(data.task)
    if recipe.distill is not None and data.task != "classification":
        raise SparsifyError(
            f"distill needs a classification task (it matches class probabilities); this "
            f"dataset's task is {data.task}. Remove the distill section."
        )
    torch.manual_seed(recipe.seed)

    def fresh_model() -> nn.Module:
        m = recipe.model
        return build_model(m.name, m.num_classes, m.in_channels)

    model = fresh_model().to(device)
    if recipe.model.init is not None:  # train-then-compress: start from trained weights
        init = with_seed(recipe.model.init, recipe.seed)
        try:
            load_checkpoint(init, model=model).train()
        except SparsifyError as exc:
            raise SparsifyError(f"model.init: {exc}") from None
        log(f"model: weights from {init}")
    check_input_shape(model, torch.zeros((1, *data.input_shape), device=device), recipe.model.name)
    gen = torch.Generator().manual_seed(recipe.seed)
    worker_gen = torch.Generator().manual_seed(recipe.seed + 2**32)
    batches = TrainBatches(
        training_set(recipe, data),
        recipe.batch_size,
        gen,
        dist,
        num_workers=recipe.data.num_workers,
        worker_generator=worker_gen,
    )
    n = batches.n
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = build_optimizer(recipe.optimizer, model.parameters())
    # before the scheduler: a penalty may add a param group (variational dropout's variances)
    handles = attach_penalties(recipe, model, optimizer, steps_per_epoch)
    scheduler = build_lr_scheduler(recipe.optimizer, optimizer, total_steps)
    for h in handles:
        log(h.summary())
    target = None
    if recipe.sparsity is not None:
        target = SparsityTarget(
            recipe.sparsity, model, optimizer, handles, recipe.epochs, steps_per_epoch
        )
        log(target.summary())
    distill = None
    if recipe.distill is not None:
        spec = recipe.distill
        teacher = None
        if spec.teacher is not None:
            teacher = load_teacher(with_seed(spec.teacher, recipe.seed), data, device)
        distill = Distillation(
            teacher,
            build=fresh_model,
            from_epoch=spec.from_epoch,
            weight=spec.weight,
            temperature=spec.temperature,
        )
        if teacher is not None:
            _measure_teacher(distill, data, task, dist, log, spec.teacher)
    net = wrap_ddp(model, dist)

    history: list[dict[str, float]] = []
    first_epoch, elapsed = 0, 0.0
    saved = load_train_state(state_dir) if (resume and state_dir is not None) else None
    if saved is not None:
        path = state_dir / STATE_FILE  # type: ignore[operator]
        if saved.get("recipe") != recipe.to_dict():
            raise SparsifyError(
                f"{state_dir}: the resume state was made by a different recipe; resume with the same recipe "
                "or delete resume.pt to start over."
            )
        check_train_state(path, saved, recipe.epochs, model.state_dict(), len(handles))
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            for h, hs in zip(handles, saved["penalties"]):
                h.load_state_dict(hs)
            if target is not None:
                target.load_state_dict(saved["sparsity"])
            if distill is not None and saved.get("teacher") is not None:
                distill.load_state_dict(saved["teacher"], device)
            gen.set_state(saved["generator"])
            if "worker_generator" in saved:  # states written before DataLoaders lack it
                worker_gen.set_state(saved["worker_generator"])
            torch.set_rng_state(saved["torch_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            # torch's own checks (optimizer groups, generator states) caught what ours did not
            first = one_line((str(exc).strip().splitlines() or [""])[0])[:160]
            raise SparsifyError(
                f"{path}: the resume state does not fit this run ({type(exc).__name__}: "
                f"{first}); delete it to start over."
            ) from None
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
                    "penalties": [{"step": h.step, "lam_scale": h.lam_scale} for h in handles],
                    **({"sparsity": target.state_dict()} if target is not None else {}),
                    **({"teacher": distill.state_dict()} if distill is not None else {}),
                    "generator": gen.get_state(),
                    "worker_generator": worker_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "seconds": time.perf_counter() - start,
                },
            )

    def after_epoch(epoch: int) -> None:
        if target is not None:  # record (and control) before the state is saved
            target.after_epoch(epoch)
        if distill is not None and epoch + 1 == distill.from_epoch:
            distill.snapshot(model)
            _measure_teacher(distill, data, task, dist, log, f"taken after epoch {epoch + 1}")
        save_state(epoch)

    run_epochs(
        net,
        model,
        optimizer,
        scheduler,
        batches,
        task,
        epochs=range(first_epoch, recipe.epochs),
        dist=dist,
        history=history,
        desc=recipe.name,
        progress=progress,
        after_epoch=after_epoch,
        distill=distill,
    )
    for h in handles:
        h.remove()
    sparsity = target.finish() if target is not None else None  # the projection to the target
    seconds = time.perf_counter() - start
    if sparsity is not None:
        log(
            f"sparsity target {sparsity['target']:g}: {100 * sparsity['before_projection']:.2f}% "
            f"zeros before the projection, {100 * sparsity['after_projection']:.4f}% after "
            f"({sparsity['zeros']:,} of {sparsity['selected']:,} weights"
            + (
                f"; {sparsity['regrown']:,} zeros kept in the masks for debias to regrow)"
                if sparsity["regrown"]
                else ")"
            )
        )

    measured = measure(model, data, task, dist, recipe.data.num_workers)
    errors = [k for k in measured if k.endswith(("_error", "_loss"))]
    metrics = {
        "name": recipe.name,
        **{k: measured[k] for k in errors},
        **{k: measured[k] for k in ("zero_fraction", "weight_zero_fraction", "numel", "zeros")},
        "layers": measured["layers"],
        "penalties": [h.summary() for h in handles],
        "epochs": recipe.epochs,
        "steps": total_steps,
        "seconds": seconds,
        "seconds_per_epoch": seconds / recipe.epochs,
        "train_images": n,
        "test_images": len(data.test),  # type: ignore[arg-type]
        **({"val_images": len(data.val)} if data.val is not None else {}),  # type: ignore[arg-type]
        "normalisation": data.info.get("normalisation"),
        "task": task.name,
        "error_metric": task.error_name,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "data": data_record(recipe, data),
        **({"sparsity": sparsity} if sparsity is not None else {}),
        **({"distill": distill.record()} if distill is not None else {}),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "world_size": dist.world_size,
        "versions": versions(),
    }
    return TrainResult(
        model=model,
        metrics=metrics,
        history=history,
        support=target.support() if target is not None else None,
        distill=distill,
    )


def debias(
    model: nn.Module,
    recipe: Recipe,
    stage: DebiasStage,
    data: DatasetSplits | MnistSplits,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    dist: DistContext | None = None,
    support: dict[str, torch.Tensor] | None = None,
    distill: Distillation | None = None,
) -> dict[str, Any]:
    """The debias stage: fine-tune ``model`` in place with its zeros frozen, no penalty.

    A fresh optimizer (``stage.optimizer``, else the recipe's) trains for ``stage.epochs``
    epochs of ``recipe.batch_size``; :func:`~sparsify.penalties.freeze.freeze_support_` keeps
    every selected weight that is 0 now at exactly 0 (gradient, optimizer state and weight
    masked). Penalty hooks must already be removed (``train`` removes its own). ``support``:
    keep-masks by weight name that replace ``w != 0`` (a sparsity target's, see
    :mod:`sparsify.pipeline.targets`). ``distill``: the train stage's teacher keeps teaching.

    Returns:
        ``{epochs, steps, seconds, frozen (summary line), support_density, history}``.
    """
    data = as_splits(data)
    dist = dist or DistContext()
    log = log or (lambda _msg: None)
    spec = stage.optimizer or recipe.optimizer
    # its own stream of batch orders: the train stage's is not needed to reproduce this one
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    batches = TrainBatches(
        training_set(recipe, data),
        recipe.batch_size,
        gen,
        dist,
        num_workers=recipe.data.num_workers,
        worker_generator=torch.Generator().manual_seed(recipe.seed + 1 + 2**32),
    )
    steps_per_epoch = math.ceil(batches.n / recipe.batch_size)
    optimizer = build_optimizer(spec, model.parameters())
    scheduler = build_lr_scheduler(spec, optimizer, steps_per_epoch * stage.epochs)
    frozen = freeze_support_(
        model,
        optimizer,
        scope=stage.scope,
        include=stage.include,
        exclude=stage.exclude,
        support=support,
    )
    log(frozen.summary())
    net = wrap_ddp(model, dist)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    run_epochs(
        net,
        model,
        optimizer,
        scheduler,
        batches,
        make_task(data.task),
        epochs=range(stage.epochs),
        dist=dist,
        history=history,
        desc=f"{recipe.name} {stage.name}",
        progress=progress,
        distill=distill,
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
