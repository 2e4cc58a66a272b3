"""Staged recipes: train (with penalties) -> debias (zeros frozen) -> shrink (dead units removed).

A recipe's ``stages:`` list names the stages to run, in that order, each at most once:

    train   the recipe's top-level ``epochs``, ``optimizer`` and ``penalties`` (:func:`train`);
            the penalty hooks are removed when it ends
    debias  ``epochs`` more epochs without penalty, every selected zero frozen
            (:func:`~sparsify.pipeline.loop.debias`, built on ``freeze_support_``)
    shrink  ``shrink_`` on ``example_batch`` random inputs of the data's image shape: dead
            output neurons/channels are removed, same outputs within 1e-5

After every stage the model is measured (errors on both splits, exact zeros per tensor) and
the stage's row goes to ``metrics["stages"]``. A recipe without ``stages`` runs the train
stage alone and its metrics are exactly what :func:`train` returns (no ``stages`` key).

This module sits after :mod:`sparsify.pipeline.checkpoint` and :mod:`sparsify.structure.shrink` in the data
flow (it uses both); the training code it drives does not import it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsify.pipeline.checkpoint import SHRUNK
from sparsify.pipeline.data.mnist import MnistSplits
from sparsify.pipeline.distributed import DistContext
from sparsify.pipeline.loop import debias, measure, train
from sparsify.pipeline.recipe import DebiasStage, Recipe, ShrinkStage
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
        "layers": layers,
        **extra,
    }


def _shrink_stage(
    model: nn.Module, stage: ShrinkStage, data: MnistSplits, seed: int, log: Callable[[str], None]
) -> dict[str, Any]:
    device = next(model.parameters()).device
    # random inputs reach every unit; a seeded generator makes every DDP rank shrink alike
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn((stage.example_batch, *data.train_x.shape[1:]), generator=gen)
    start = time.perf_counter()
    report = shrink_(model, example.to(device), exclude=stage.exclude)
    seconds = time.perf_counter() - start
    log(report.table())
    return {"seconds": seconds, "shrink": report.to_dict()}


def run_recipe(
    recipe: Recipe,
    data: MnistSplits,
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
            info = debias(model, recipe, stage, data, progress=progress, log=log, dist=dist)
        else:
            info = _shrink_stage(model, stage, data, recipe.seed, log)
            extra_metadata[SHRUNK] = json.dumps(layer_widths(model))
        measured = measure(model, data, dist)
        rows.append(_row(stage.name, stage.kind, measured, **info))
        log(
            f"{stage.name}: test error {measured['test_error']:.4f}, "
            f"{measured['nonzero_weights']:,} nonzero weights ({info['seconds']:.1f} s)"
        )
    if measured:  # the final model's numbers replace the train stage's at the top level
        for key in ("train_error", "test_error", "train_loss", "test_loss", "zero_fraction"):
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
