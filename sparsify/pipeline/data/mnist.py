"""MNIST in memory: find the IDX files, take the first N, normalise with the subset's statistics.

The lecture normalises with the mean and standard deviation of the *training subset*
(x - mean) / std, and applies the same numbers to the test set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsify.errors import SparsifyError
from sparsify.pipeline.data.idx import read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class MnistSplits:
    """Normalised images (N, 1, 28, 28) float32 and int64 labels, plus the statistics used."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float


def default_data_dir() -> Path:
    """``$SPARSIFY_DATA_DIR``, else ``$XDG_CACHE_HOME/sparsify/mnist`` (``~/.cache`` by default)."""
    if env := os.environ.get("SPARSIFY_DATA_DIR"):
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sparsify" / "mnist"


def _find(data_dir: Path, stem: str) -> Path | None:
    # Accept the layout of the shared copy (flat, .gz) and torchvision's (MNIST/raw/, plain).
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _download(data_dir: Path) -> None:
    """Fetch MNIST with torchvision's downloader (needs internet) into ``data_dir``."""
    try:
        from torchvision.datasets import MNIST

        MNIST(root=str(data_dir), train=True, download=True)
        MNIST(root=str(data_dir), train=False, download=True)
    except Exception as exc:  # network errors come in many types; the fix is the same
        raise SparsifyError(
            f"MNIST is not in {data_dir} and downloading it failed ({type(exc).__name__}); "
            "pass --data-dir pointing at a folder with the four IDX files."
        ) from None


def locate_mnist(data_dir: str | os.PathLike[str] | None, download: bool = True) -> dict[str, Path]:
    """Return the paths of the four MNIST files in ``data_dir`` (default cache), downloading if allowed."""
    explicit = data_dir is not None
    root = Path(data_dir) if explicit else default_data_dir()
    if explicit and not root.is_dir():
        raise SparsifyError(
            f"data directory {root} does not exist; pass --data-dir with the MNIST IDX files."
        )
    paths = {key: _find(root, stem) for key, stem in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing and download and not explicit:
        _download(root)
        paths = {key: _find(root, stem) for key, stem in FILES.items()}
        missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise SparsifyError(
            f"MNIST files missing in {root}: {', '.join(missing)} (.gz or raw); "
            "pass --data-dir pointing at a folder that holds them."
        )
    return {k: p for k, p in paths.items() if p is not None}


def _check_pair(images: np.ndarray, labels: np.ndarray, split: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise SparsifyError(
            f"MNIST {split} images must be uint8 (N, 28, 28); got {images.dtype} {images.shape}."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise SparsifyError(
            f"MNIST {split} has {images.shape[0]} images but labels of shape {labels.shape}; files do not match."
        )
    if labels.size and int(labels.max()) > 9:
        raise SparsifyError(f"MNIST {split} labels must be 0..9; found {int(labels.max())}.")


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    download: bool = True,
) -> MnistSplits:
    """Load MNIST, keep the first ``train_subset``/``test_subset`` images (None = all), normalise.

    Normalisation: x = (pixel/255 - mean) / std with mean, std over the kept training images.
    """
    paths = locate_mnist(data_dir, download=download)
    tr_x, tr_y = read_idx(paths["train_images"]), read_idx(paths["train_labels"])
    te_x, te_y = read_idx(paths["test_images"]), read_idx(paths["test_labels"])
    _check_pair(tr_x, tr_y, "train")
    _check_pair(te_x, te_y, "test")
    for name, n, total in (
        ("train_subset", train_subset, len(tr_x)),
        ("test_subset", test_subset, len(te_x)),
    ):
        if n is not None and not 1 <= n <= total:
            raise SparsifyError(f"data.{name} must be in [1, {total}]; got {n}.")
    tr_x, tr_y = tr_x[:train_subset], tr_y[:train_subset]
    te_x, te_y = te_x[:test_subset], te_y[:test_subset]
    train = torch.from_numpy(tr_x).float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    test = torch.from_numpy(te_x).float().div_(255.0).unsqueeze(1)
    mean, std = train.mean().item(), train.std().item()
    train.sub_(mean).div_(std)
    test.sub_(mean).div_(std)
    return MnistSplits(
        train_x=train,
        train_y=torch.from_numpy(tr_y.astype(np.int64)),
        test_x=test,
        test_y=torch.from_numpy(te_y.astype(np.int64)),
        mean=mean,
        std=std,
    )
