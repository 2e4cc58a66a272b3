"""CIFAR-10 and CIFAR-100 from their *binary* version (never the python pickle version).

Binary layout (https://www.cs.toronto.edu/~kriz/cifar.html): fixed-size records, no header.
CIFAR-10 ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``: per record 1
label byte (0..9) then 3072 image bytes (1024 red, 1024 green, 1024 blue; rows of 32).
CIFAR-100 ``cifar-100-binary/train.bin`` and ``test.bin``: a coarse label byte (0..19), a fine
label byte (0..99, the label used here), then the same 3072 bytes.

Images are normalised per channel with the training subset's statistics; the standard
augmentation (``augment: true``) is a random 32x32 crop of the image padded by 4, then a
horizontal flip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsify.errors import SparsifyError
from sparsify.pipeline.data.registry import DataRequest, DatasetSplits, default_root
from sparsify.pipeline.data.splits import crop_flip, in_memory_image_splits

IMAGE_BYTES = 3 * 32 * 32
# name -> (folder in the archive, train files, test files, label bytes, classes, url, md5)
LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-bin",
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        ["test_batch.bin"],
        1,
        10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
    ),
    "cifar100": (
        "cifar-100-binary",
        ["train.bin"],
        ["test.bin"],
        2,
        100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "03b5dce01913d631647c71ecec9e9cb8",
    ),
}


def read_cifar_bin(path: Path, label_bytes: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` of one CIFAR binary file; the
    label is the last label byte (CIFAR-100: the fine label).

    Raises:
        SparsifyError: the size is not a whole number of records, or a label is out of range.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + IMAGE_BYTES
    if raw.size == 0 or raw.size % record:
        raise SparsifyError(
            f"CIFAR file {path} holds {raw.size} bytes, not a whole number of {record}-byte "
            "records; it is truncated or not the binary version (re-download the *binary* archive)."
        )
    rows = raw.reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)
    if int(labels.max()) >= num_classes:
        raise SparsifyError(
            f"CIFAR file {path} has label {int(labels.max())} but the dataset has "
            f"{num_classes} classes; wrong dataset (cifar10 vs cifar100) or a damaged file."
        )
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _folder(root: Path, inner: str) -> Path:
    # accept the folder that holds the .bin files, or its parent (where the archive unpacks)
    return root / inner if (root / inner).is_dir() else root


def load_cifar(name: str, request: DataRequest) -> DatasetSplits:
    """CIFAR ``name`` (cifar10/cifar100) as normalised in-memory tensors (factory body)."""
    inner, train_files, test_files, label_bytes, classes, url, md5 = LAYOUTS[name]
    if request.split is not None:
        raise SparsifyError(f"{name} has no splits; remove data.split ({request.split!r}).")
    if request.image_size is not None and tuple(request.image_size) != (32, 32):
        raise SparsifyError(f"{name} images are 32x32; remove data.image_size.")
    explicit = request.root is not None
    root = Path(request.root) if explicit else default_root(name)  # type: ignore[arg-type]
    if explicit and not root.is_dir():
        raise SparsifyError(
            f"data directory {root} does not exist; pass --data-dir with the {name} .bin files."
        )
    folder = _folder(root, inner)
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing and request.download and not explicit:
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(url, str(root), md5=md5)
        except Exception as exc:  # network errors come in many types; the fix is the same
            raise SparsifyError(
                f"{name} is not in {root} and downloading it failed ({type(exc).__name__}); "
                f"pass --data-dir pointing at the unpacked {inner} folder."
            ) from None
        folder = _folder(root, inner)
        missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise SparsifyError(
            f"{name} binary files missing in {folder}: {', '.join(missing)}; pass --data-dir "
            f"pointing at the unpacked {inner} folder (the binary version, not the python one)."
        )
    parts = [read_cifar_bin(folder / f, label_bytes, classes) for f in train_files]
    tr_x = np.concatenate([p[0] for p in parts])
    tr_y = np.concatenate([p[1] for p in parts])
    te_x, te_y = read_cifar_bin(folder / test_files[0], label_bytes, classes)
    return in_memory_image_splits(
        (tr_x, tr_y), (te_x, te_y), request, classes, crop_flip((32, 32)), folder
    )


def cifar10(request: DataRequest) -> DatasetSplits:
    """CIFAR-10, 10 classes, 3x32x32, from the binary version (registry factory)."""
    return load_cifar("cifar10", request)


def cifar100(request: DataRequest) -> DatasetSplits:
    """CIFAR-100 (fine labels), 100 classes, 3x32x32, from the binary version (registry factory)."""
    return load_cifar("cifar100", request)
