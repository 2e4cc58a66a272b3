"""Pieces shared by the train and sweep commands: options, data loading, one run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import save_checkpoint
from sparsify.pipeline.data.registry import DatasetSplits
from sparsify.pipeline.distributed import DistContext
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.stages import build_data, run_recipe
from sparsify.pipeline.state import clear_train_state


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options common to ``train`` and ``sweep``."""
    p.add_argument("recipe", help="path to a YAML recipe (see recipes/)")
    p.add_argument("--out", help="output directory (default: the recipe's output.dir)")
    p.add_argument(
        "--data-dir",
        help="the dataset's folder (IDX files, CIFAR .bin, SVHN .mat, or an image folder's "
        "root); overrides the recipe's data.dir (default: data.dir, then the cache)",
    )
    p.add_argument(
        "--dataset",
        help="override the recipe's data.dataset (a registered name, e.g. fashion_mnist); "
        "the saved recipe records it",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the recipe's device")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (quick checks)")
    p.add_argument(
        "--threads", type=int, help="override the recipe's threads (CPU threads of torch)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log lines")


def apply_overrides(recipe: Recipe, args: argparse.Namespace) -> Recipe:
    """The recipe as it will be applied: command-line overrides folded in, re-validated."""
    data = recipe.to_dict()
    if args.data_dir:
        data["data"]["dir"] = args.data_dir
    if getattr(args, "dataset", None):
        data["data"]["dataset"] = args.dataset
    if args.device:
        data["device"] = args.device
    if args.epochs is not None:
        data["epochs"] = args.epochs
    if getattr(args, "threads", None) is not None:
        data["threads"] = args.threads
    return Recipe.from_dict(data, source="command line")


def check_out_dir(out: Path) -> Path:
    """Refuse, before any training, an ``--out`` that exists and is not a folder."""
    if out.exists() and not out.is_dir():
        raise SparsifyError(f"--out {out} is a file; choose a folder (it is created if missing).")
    return out


def load_data(recipe: Recipe) -> DatasetSplits:
    """The datasets the recipe asks for (registry entry, subsets, validation split)."""
    return build_data(recipe)


def run_one(
    recipe: Recipe,
    data: DatasetSplits,
    out: Path,
    quiet: bool,
    dist: DistContext | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
) -> dict[str, Any]:
    """Run one (non-sweep) recipe, every stage; the main process writes checkpoint, recipe and
    metrics to ``out`` (the final model: shrunk if the recipe ends with a shrink stage).

    A resume state is kept in ``out`` every ``checkpoint_every`` epochs (0: never) during
    the train stage, and removed once the final artifacts are written. ``metrics.json``
    records the input shape (``input_shape``, C H W) of the data the model was trained on.
    """
    dist = dist or DistContext()
    log = (lambda _m: None) if (quiet or not dist.is_main) else (lambda m: print(m, flush=True))
    result = run_recipe(
        recipe,
        data,
        progress=not quiet,
        log=log,
        dist=dist,
        state_dir=out if checkpoint_every > 0 else None,
        resume=resume,
        checkpoint_every=max(checkpoint_every, 1),
    )
    if dist.is_main:
        save_checkpoint(
            out,
            result.model,
            recipe,
            {**result.metrics, "history": result.history},
            extra_metadata=result.extra_metadata,
            input_shape=tuple(data.input_shape),
        )
        clear_train_state(out)
    return result.metrics
