"""Data stage: registered datasets (IDX, CIFAR binary, SVHN .mat, image folders) -> Datasets.

See :mod:`sparsify.pipeline.data.registry` for the factory contract and
:func:`register_dataset` for adding one. Names load on first use, so reading a recipe (which
checks ``data.dataset`` against the registry) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "read_idx": "sparsify.pipeline.data.idx",
    "write_idx": "sparsify.pipeline.data.idx",
    "MnistSplits": "sparsify.pipeline.data.mnist",
    "default_data_dir": "sparsify.pipeline.data.mnist",
    "load_mnist": "sparsify.pipeline.data.mnist",
    "DataRequest": "sparsify.pipeline.data.registry",
    "DatasetSplits": "sparsify.pipeline.data.registry",
    "dataset_names": "sparsify.pipeline.data.registry",
    "get_dataset": "sparsify.pipeline.data.registry",
    "load_dataset": "sparsify.pipeline.data.registry",
    "register_dataset": "sparsify.pipeline.data.registry",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparsify.pipeline.data' has no attribute {name!r}")
