"""Pieces shared by the train and sweep commands: options, data loading, one run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sparsify.cli.paths import check_out_dir
from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import WEIGHTS, is_checkpoint_file, save_checkpoint
from sparsify.pipeline.data.registry import DatasetSplits
from sparsify.pipeline.distributed import DistContext
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.stages import build_data, run_recipe
from sparsify.pipeline.state import STATE_FILE, clear_train_state


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options common to ``train`` and ``sweep``."""
    p.add_argument("recipe", help="path to a YAML recipe (see recipes/)")
    p.add_argument(
        "--out",
        help="output directory (default: the recipe's output.dir, which must lie under the "
        "current folder)",
    )
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


def output_dir(out: str | None, recipe: Recipe) -> Path:
    """Where ``train``/``sweep`` write: ``--out`` as given (the user's choice), else the
    recipe's ``output.dir`` confined to the current folder, checked by :func:`check_out_dir`.

    A recipe is untrusted input (SECURITY.md), so its ``output.dir`` may not choose a place
    outside the folder the user runs in: it must be relative, without ``..``, and still
    under the current folder once symlinks are resolved.

    Raises:
        SparsifyError: a recipe ``output.dir`` outside the current folder (the fix: --out).
    """
    if out:
        return check_out_dir(Path(out))
    raw = recipe.output.dir
    path = Path(raw)
    here = Path.cwd().resolve()
    inside = not path.is_absolute() and ".." not in path.parts and bool(path.parts)
    if inside:  # symlinks of existing parts are followed: a link out of the folder is refused
        inside = (here / path).resolve().is_relative_to(here)
    if not inside:
        raise SparsifyError(
            f"the recipe's output.dir {raw!r} is outside the current folder; pass --out DIR "
            "to choose where to write (a recipe may only name a folder under the current one)."
        )
    return check_out_dir(path)


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
    Returns the metrics with the train stage's per-epoch ``history``, as ``metrics.json``.

    A resume state is kept in ``out`` every ``checkpoint_every`` epochs (0: never) during
    the train stage, and removed once the final artifacts are written. ``metrics.json``
    records the input shape (``input_shape``, C H W) of the data the model was trained on.
    """
    dist = dist or DistContext()
    check_own_outputs(out, resume, checkpoint_every)
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
        if checkpoint_every > 0:  # the state there is this run's (or the one it resumed)
            clear_train_state(out)
    return {**result.metrics, "history": result.history}


def check_own_outputs(out: Path, resume: bool, checkpoint_every: int) -> None:
    """Refuse, before training, to overwrite or delete files in ``out`` sparsify did not write.

    A ``model.safetensors`` there must be a sparsify checkpoint (its header is read, nothing
    else), and a ``resume.pt`` left by an interrupted run is continued (``--resume``) or
    removed by the user, never overwritten or deleted silently.

    Raises:
        SparsifyError: a foreign ``model.safetensors``, or a ``resume.pt`` without ``--resume``.
    """
    weights = out / WEIGHTS
    if weights.exists() and not is_checkpoint_file(weights):
        raise SparsifyError(
            f"{weights} exists and is not a sparsify checkpoint; choose another --out "
            "(sparsify does not overwrite files it did not write)."
        )
    if checkpoint_every > 0 and not resume and (out / STATE_FILE).exists():
        raise SparsifyError(
            f"{out / STATE_FILE} is left by an interrupted run; pass --resume to continue it, "
            "or delete it (or choose another --out) to start over."
        )
