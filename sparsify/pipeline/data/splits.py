"""What the pipeline does to a factory's splits: a validation split, augmentation, subsets.

Shared by every format reader: :func:`normalised_images` turns uint8 images into the
normalised float tensors the in-memory datasets hold, :func:`crop_flip` is the standard
augmentation of natural images (random crop after zero padding, horizontal flip) and
:class:`RandomShift` that of centred digits and glyphs (a small translation, background fill).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from sparsify.errors import SparsifyError
from sparsify.pipeline.data.registry import DataRequest, DatasetSplits


def take_subset(array: np.ndarray, n: int | None, key: str) -> np.ndarray:
    """The first ``n`` entries of ``array`` (None: all), refusing ``n`` outside [1, len]."""
    if n is not None and not 1 <= n <= len(array):
        raise SparsifyError(f"data.{key} must be in [1, {len(array)}]; got {n}.")
    return array[:n]


def normalised_images(
    train: np.ndarray, test: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, list[float], list[float]]:
    """uint8 (N, C, H, W) -> float32 ``(pixel/255 - mean_c) / std_c``, statistics per channel
    over the training images; the test images get the same numbers.

    Returns ``(train, test, mean, std)`` with ``mean``/``std`` one float per channel.
    """
    tr = torch.from_numpy(np.ascontiguousarray(train)).float().div_(255.0)
    te = torch.from_numpy(np.ascontiguousarray(test)).float().div_(255.0)
    mean = tr.mean(dim=(0, 2, 3))
    std = tr.std(dim=(0, 2, 3)).clamp_min(1e-8)  # a constant channel must not divide by 0
    tr.sub_(mean[:, None, None]).div_(std[:, None, None])
    te.sub_(mean[:, None, None]).div_(std[:, None, None])
    return tr, te, mean.tolist(), std.tolist()


def in_memory_image_splits(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    request: DataRequest,
    num_classes: int,
    augmentation: Callable[[torch.Tensor], torch.Tensor] | None,
    folder: object,
) -> DatasetSplits:
    """Subsets (``request.train_subset``/``test_subset``), per-channel normalisation with the
    training subset's statistics, and the ``DatasetSplits`` of uint8 (N, C, H, W) images."""
    tr_x = take_subset(train[0], request.train_subset, "train_subset")
    te_x = take_subset(test[0], request.test_subset, "test_subset")
    tr_y, te_y = train[1][: request.train_subset], test[1][: request.test_subset]
    tr, te, mean, std = normalised_images(tr_x, te_x)
    return DatasetSplits(
        train=TensorDataset(tr, torch.from_numpy(tr_y)),
        test=TensorDataset(te, torch.from_numpy(te_y)),
        input_shape=tuple(tr.shape[1:]),
        num_classes=num_classes,
        augmentation=augmentation,
        info={"normalisation": {"mean": mean, "std": std}, "dir": str(folder)},
    )


def crop_flip(size: tuple[int, int], flip: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random ``size`` crop of the image zero-padded by size/8 (4 px at 32x32), then a
    horizontal flip with probability 1/2 when ``flip``. Zero is the mean after normalisation.

    Draws from torch's RNG (the worker's own under ``num_workers > 0``: seeded per epoch from
    the loader's generator, so runs repeat).
    """
    from torchvision.transforms import v2

    steps: list[Callable] = [v2.RandomCrop(size, padding=max(1, size[0] // 8))]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class RandomShift:
    """Translate each (C, H, W) image by (dy, dx), each uniform in [-max_shift, max_shift],
    filling the uncovered border with ``fill`` (the normalised background, one value per
    channel): ``out[c, i, j] = x[c, i - dy, j - dx]`` where that is inside the image, else
    ``fill[c]``. Draws from torch's RNG, as :func:`crop_flip` does, so runs repeat.

    ``batch`` shifts a whole (N, C, H, W) batch in one gather, each image by its own draw: in-
    memory datasets stay on the loader's batched path (per-item fetch and collate would cost
    more than an MNIST MLP's step). A class, not a closure, so DataLoader workers can pickle it.
    """

    def __init__(self, max_shift: int, fill: list[float]) -> None:
        if max_shift < 0:
            raise SparsifyError(f"RandomShift: max_shift must be >= 0; got {max_shift}.")
        self.max_shift, self.fill = int(max_shift), [float(f) for f in fill]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.batch(x[None])[0]

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        m = self.max_shift
        n, c, h, w = x.shape
        d = torch.randint(0, 2 * m + 1, (n, 2)) - m
        padded = torch.empty((n, c, h + 2 * m, w + 2 * m), dtype=x.dtype)
        padded[:] = torch.tensor(self.fill, dtype=x.dtype).view(1, -1, 1, 1)
        padded[:, :, m : m + h, m : m + w] = x
        rows = torch.arange(h)[None, :] - d[:, :1] + m  # (n, h): source row in the padding
        cols = torch.arange(w)[None, :] - d[:, 1:] + m
        flat = (rows[:, :, None] * (w + 2 * m) + cols[:, None, :]).view(n, 1, h * w)
        out = padded.view(n, c, -1).gather(2, flat.expand(n, c, h * w))
        return out.view(n, c, h, w)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, fill={[round(f, 4) for f in self.fill]})"


class Augmented(Dataset):
    """``dataset`` with ``fn`` applied to each image ``x`` of its ``(x, y)`` items.

    ``batched``: the dataset is in memory and ``fn`` has a ``batch`` method, so a tensor of
    indices fetches and augments a whole batch at once (the loader's no-collate path).
    """

    def __init__(self, dataset: Dataset, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset, self.fn = dataset, fn
        self.batched = isinstance(dataset, TensorDataset) and callable(getattr(fn, "batch", None))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset[i]
        if isinstance(i, torch.Tensor) and i.ndim == 1 and self.batched:
            return self.fn.batch(x), y  # type: ignore[attr-defined]
        return self.fn(x), y


def _select(dataset: Dataset, idx: torch.Tensor) -> Dataset:
    if isinstance(dataset, TensorDataset):  # stay an in-memory tensor set (batched indexing)
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return Subset(dataset, idx.tolist())


def carve_validation(splits: DatasetSplits, size: int, seed: int) -> DatasetSplits:
    """Move ``size`` training items (chosen by ``randperm(n, generator seeded with seed)``,
    the first ``size`` positions) into ``splits.val``; the rest stay, in their order.

    ``size`` 0 returns ``splits`` unchanged. Deterministic from ``seed``; the normalisation
    statistics stay those of the full training subset.

    Raises:
        SparsifyError: ``size`` leaves no training item.
    """
    if size == 0:
        return splits
    n = len(splits.train)  # type: ignore[arg-type]
    if not 0 < size < n:
        raise SparsifyError(
            f"a validation split of {size} leaves no training images out of {n}; "
            "lower data.val_size/val_fraction."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, _ = perm[:size].sort()
    train_idx, _ = perm[size:].sort()
    return replace(
        splits, train=_select(splits.train, train_idx), val=_select(splits.train, val_idx)
    )


def validation_size(n_train: int, val_size: int, val_fraction: float) -> int:
    """``val_size`` if given (> 0), else ``round(val_fraction * n_train)``."""
    return val_size if val_size > 0 else int(round(val_fraction * n_train))


def with_augmentation(splits: DatasetSplits) -> DatasetSplits:
    """``splits`` with its training set augmented by ``splits.augmentation`` (if it has one)."""
    if splits.augmentation is None:
        return splits
    return replace(splits, train=Augmented(splits.train, splits.augmentation))
