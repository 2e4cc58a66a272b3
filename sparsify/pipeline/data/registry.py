"""Dataset registry: a recipe's ``data.dataset`` names an entry here; users add their own.

Built-in names: mnist, fashion_mnist, kmnist, emnist (``data.split``: balanced by default),
cifar10, cifar100, svhn, image_folder. Users add theirs with
:func:`register_dataset` (``sparsify.register_dataset``) or, for the command line, a Python
entry point in the group ``sparsify.datasets``::

    [project.entry-points."sparsify.datasets"]
    my_data = "my_pkg.data:make_splits"

Recipes only name registered entries (no dotted imports in YAML: a recipe stays plain data).

Factory contract: ``fn(request: DataRequest) -> DatasetSplits``. ``request`` carries the
recipe's ``data`` keys (folder, split, subsets, image size); the factory returns the train
and test sets as ``torch.utils.data.Dataset`` s whose items are ``(x, y)`` with ``x`` a float
tensor of ``input_shape`` (already normalised) and ``y`` an int64 class index (classification)
or a float tensor (regression), plus ``input_shape`` (C, H, W), ``num_classes`` (0 for
regression), the ``task``, the dataset's standard augmentation (a tensor -> tensor callable, or
None) and JSON-safe ``info`` for metrics.json. A ``torch.utils.data.TensorDataset`` is batched
by indexing (fast); any other Dataset through the DataLoader's usual per-item path.

This module imports neither torch nor the built-in readers: the names are known without loading
them, so ``sparsify validate`` stays quick.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsify.errors import SparsifyError

if TYPE_CHECKING:
    from torch import Tensor
    from torch.utils.data import Dataset

ENTRY_POINT_GROUP = "sparsify.datasets"

# name -> "module:function" of the factory, imported on first use
BUILTIN: dict[str, str] = {
    "mnist": "sparsify.pipeline.data.mnist:mnist",
    "fashion_mnist": "sparsify.pipeline.data.mnist:fashion_mnist",
    "kmnist": "sparsify.pipeline.data.mnist:kmnist",
    "emnist": "sparsify.pipeline.data.mnist:emnist",
    "cifar10": "sparsify.pipeline.data.cifar:cifar10",
    "cifar100": "sparsify.pipeline.data.cifar:cifar100",
    "svhn": "sparsify.pipeline.data.svhn:svhn",
    "image_folder": "sparsify.pipeline.data.image_folder:image_folder",
}
TASKS = ("classification", "regression")
_USER: dict[str, Callable[[DataRequest], DatasetSplits]] = {}


@dataclass(frozen=True)
class DataRequest:
    """What a recipe asks of a dataset factory (its ``data`` section, resolved).

    ``root`` None means the default cache folder (:func:`default_root`), where a factory may
    download; a given ``root`` is the user's folder and is never written to.
    """

    name: str
    root: Path | None = None
    split: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: tuple[int, int] | None = None
    download: bool = True


@dataclass(frozen=True)
class DatasetSplits:
    """A factory's result: train/test sets, input shape (C, H, W), classes, task, augmentation.

    ``val`` is filled by :func:`sparsify.pipeline.data.splits.carve_validation`, never by a
    factory. ``augmentation`` is the dataset's standard training augmentation, applied only
    when the recipe says ``data.augment: true``.
    """

    train: Dataset
    test: Dataset
    input_shape: tuple[int, int, int]
    num_classes: int
    task: str = "classification"
    augmentation: Callable[[Tensor], Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    val: Dataset | None = None


def default_root(name: str) -> Path:
    """``$SPARSIFY_DATA_DIR/<name>``, else ``$XDG_CACHE_HOME/sparsify/<name>`` (``~/.cache``)."""
    if env := os.environ.get("SPARSIFY_DATA_DIR"):
        return Path(env) / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparsify" / name


def register_dataset(
    name: str, fn: Callable[[DataRequest], DatasetSplits], *, overwrite: bool = False
) -> None:
    """Make ``name`` usable as ``data.dataset`` in recipes of this process.

    ``fn(request) -> DatasetSplits`` (see the module docstring for the contract).

    Raises:
        SparsifyError: ``name`` is not a plain identifier, ``fn`` is not callable, or the name
            is taken (built-in or registered) and ``overwrite`` is False.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise SparsifyError(
            f"dataset name {name!r} must be a plain identifier (letters, digits, _)."
        )
    if not callable(fn):
        raise SparsifyError(
            f"register_dataset({name!r}, fn): fn must be callable (request -> DatasetSplits)."
        )
    if not overwrite and (name in BUILTIN or name in _USER):
        raise SparsifyError(
            f"dataset {name!r} is already registered; pick another name or pass overwrite=True."
        )
    _USER[name] = fn


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def dataset_names() -> list[str]:
    """Every name a recipe may use: built-in, registered in this process, entry points."""
    return sorted({*BUILTIN, *_USER, *_entry_points()})


def unknown_dataset_message(name: str) -> str:
    """The one-line complaint about an unregistered ``name``."""
    return (
        f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}; "
        "register your own with sparsify.register_dataset"
    )


def get_dataset(name: str) -> Callable[[DataRequest], DatasetSplits]:
    """The factory registered as ``name`` (user registrations win over entry points).

    Raises:
        SparsifyError: ``name`` is not registered, or its entry point fails to load.
    """
    if name in _USER:
        return _USER[name]
    if name in BUILTIN:
        module, func = BUILTIN[name].split(":")
        return getattr(importlib.import_module(module), func)
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as exc:  # a broken plugin: name it, whatever it raised
            raise SparsifyError(
                f"dataset entry point {name!r} ({eps[name].value}) failed to load "
                f"({type(exc).__name__}: {exc}); fix or uninstall that package."
            ) from None
    raise SparsifyError(unknown_dataset_message(name) + ".")


def load_dataset(request: DataRequest) -> DatasetSplits:
    """Call the factory of ``request.name`` and check what it returned.

    Raises:
        SparsifyError: unknown name, or a result that breaks the factory contract.
    """
    result = get_dataset(request.name)(request)
    if not isinstance(result, DatasetSplits):
        raise SparsifyError(
            f"dataset {request.name!r}: the factory returned {type(result).__name__}, "
            "not sparsify.pipeline.data.DatasetSplits; return one."
        )
    shape = tuple(result.input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise SparsifyError(
            f"dataset {request.name!r}: input_shape must be (C, H, W) positive ints; got {shape}."
        )
    if result.task not in TASKS:
        raise SparsifyError(
            f"dataset {request.name!r}: task must be one of {', '.join(TASKS)}; got {result.task!r}."
        )
    if result.task == "classification" and result.num_classes < 2:
        raise SparsifyError(
            f"dataset {request.name!r}: a classification dataset needs num_classes >= 2; "
            f"got {result.num_classes}."
        )
    return result
