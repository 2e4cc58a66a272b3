"""SVHN (Street View House Numbers, cropped digits) from its MATLAB ``.mat`` files.

``train_32x32.mat`` / ``test_32x32.mat`` hold ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1)
with labels 1..10, where 10 stands for the digit 0 (mapped to 0 here, as torchvision does).
Read with ``scipy.io.loadmat`` (MATLAB v5 format; no pickle). Standard augmentation: a random
32x32 crop of the image padded by 4, *no* flip (a mirrored digit is not that digit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsify.errors import SparsifyError
from sparsify.pipeline.data.registry import DataRequest, DatasetSplits, default_root
from sparsify.pipeline.data.splits import crop_flip, in_memory_image_splits

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3, 32, 32), labels int64 0..9)`` of one SVHN ``.mat`` file.

    Raises:
        SparsifyError: not a readable .mat file, or ``X``/``y`` of the wrong shape or range.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a damaged or foreign file
        raise SparsifyError(
            f"SVHN file {path} is not a readable MATLAB .mat file ({type(exc).__name__}); "
            "re-download it."
        ) from None
    x, y = mat.get("X"), mat.get("y")
    if (
        not isinstance(x, np.ndarray)
        or x.dtype != np.uint8
        or x.ndim != 4
        or x.shape[:3] != (32, 32, 3)
    ):
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else "nothing"
        raise SparsifyError(f"SVHN file {path}: 'X' must be uint8 (32, 32, 3, N); got {got}.")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise SparsifyError(
            f"SVHN file {path}: 'y' must hold {x.shape[3]} labels, one per image; the file is damaged."
        )
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise SparsifyError(
            f"SVHN file {path}: labels must be 1..10; found {labels.min()}..{labels.max()}."
        )
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels % 10


def svhn(request: DataRequest) -> DatasetSplits:
    """SVHN cropped digits, 10 classes, 3x32x32 (registry factory; ``extra`` is not used)."""
    if request.split is not None:
        raise SparsifyError(f"svhn has no splits; remove data.split ({request.split!r}).")
    if request.image_size is not None and tuple(request.image_size) != (32, 32):
        raise SparsifyError("svhn images are 32x32; remove data.image_size.")
    explicit = request.root is not None
    root = Path(request.root) if explicit else default_root("svhn")  # type: ignore[arg-type]
    if explicit and not root.is_dir():
        raise SparsifyError(
            f"data directory {root} does not exist; pass --data-dir with the SVHN .mat files."
        )
    missing = [f for f in FILES.values() if not (root / f).is_file()]
    if missing and request.download and not explicit:
        try:
            from torchvision.datasets import SVHN
            from torchvision.datasets.utils import download_url

            for split in FILES:
                url, filename, md5 = SVHN.split_list[split]
                download_url(url, str(root), filename, md5)
        except Exception as exc:  # network errors come in many types; the fix is the same
            raise SparsifyError(
                f"svhn is not in {root} and downloading it failed ({type(exc).__name__}); "
                "pass --data-dir pointing at a folder with train_32x32.mat and test_32x32.mat."
            ) from None
        missing = [f for f in FILES.values() if not (root / f).is_file()]
    if missing:
        raise SparsifyError(
            f"SVHN files missing in {root}: {', '.join(missing)}; pass --data-dir pointing at "
            "a folder that holds them."
        )
    tr_x, tr_y = read_svhn_mat(root / FILES["train"])
    te_x, te_y = read_svhn_mat(root / FILES["test"])
    # no flip: a mirrored digit is not that digit
    return in_memory_image_splits(
        (tr_x, tr_y), (te_x, te_y), request, 10, crop_flip((32, 32), flip=False), root
    )
