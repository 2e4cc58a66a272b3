"""The MNIST family in memory (mnist, fashion_mnist, kmnist, emnist): IDX files -> tensors.

All four ship as the same four IDX files of uint8 28x28 images and uint8 labels (EMNIST
prefixes the names with its split and stores images transposed). The lecture normalises with
the mean and standard deviation of the *training subset*, ``(x - mean) / std``, and applies the
same numbers to the test set; every member of the family does the same. Their augmentation
(``augment: true``) is a random translation by up to 2 pixels each way, the border filled with
the background (pixel 0, normalised); never a flip, which makes another glyph (Simard et al.
2003 use small distortions like these on MNIST).

Files are found flat in the folder (the shared copy, .gz or raw) or in torchvision's layout
``<folder>/<Class>/raw/``. Without a folder, the default cache is used and filled by
torchvision's downloader when online.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from sparsify.errors import SparsifyError
from sparsify.pipeline.data.idx import is_integer_type, read_idx
from sparsify.pipeline.data.registry import DataRequest, DatasetSplits, default_root
from sparsify.pipeline.data.splits import RandomShift

# pixels a training digit may move each way under augment: true
MAX_SHIFT = 2

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class IdxFamily:
    """One IDX dataset: its file names, torchvision class (download layout), classes.

    ``labels_md5``: md5 of the published ``train-labels-idx1-ubyte.gz`` (torchvision's
    table), used to refuse a folder that holds another member of the family.
    """

    name: str
    title: str
    tv_class: str
    num_classes: int
    files: dict[str, str]
    labels_md5: str | None = None
    label_offset: int = 0  # EMNIST letters count from 1
    transpose: bool = False  # EMNIST stores images column-major


MNIST = IdxFamily("mnist", "MNIST", "MNIST", 10, FILES, "d53e105ee54ea40749a09fcbcd1e9432")
FASHION_MNIST = IdxFamily(
    "fashion_mnist", "Fashion-MNIST", "FashionMNIST", 10, FILES, "25c81989df183df01b3e8a0aad5dffbe"
)
KMNIST = IdxFamily("kmnist", "KMNIST", "KMNIST", 10, FILES, "e144d726b3acfaa3e44228e80efcd344")
SAME_FILES = (MNIST, FASHION_MNIST, KMNIST)
EMNIST_CLASSES = {
    "balanced": 47,
    "byclass": 62,
    "bymerge": 47,
    "digits": 10,
    "letters": 26,
    "mnist": 10,
}


def emnist_family(split: str) -> IdxFamily:
    """EMNIST ``split`` (balanced, byclass, bymerge, digits, letters, mnist); letters -> 0..25."""
    if split not in EMNIST_CLASSES:
        raise SparsifyError(
            f"emnist has no split {split!r}; set data.split to one of {', '.join(EMNIST_CLASSES)}."
        )
    files = {k: f"emnist-{split}-{v.replace('t10k', 'test')}" for k, v in FILES.items()}
    return IdxFamily(
        "emnist",
        f"EMNIST {split}",
        "EMNIST",
        EMNIST_CLASSES[split],
        files,
        label_offset=1 if split == "letters" else 0,
        transpose=True,
    )


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
    """``$SPARSIFY_DATA_DIR``, else ``$XDG_CACHE_HOME/sparsify/mnist`` (``~/.cache`` by default).

    MNIST's own default (older than the registry): the variable names the MNIST folder itself.
    """
    if env := os.environ.get("SPARSIFY_DATA_DIR"):
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sparsify" / "mnist"


def _find(data_dir: Path, stem: str, tv_class: str) -> Path | None:
    # Accept the layout of the shared copy (flat, .gz) and torchvision's (<Class>/raw/, plain).
    for folder in (data_dir, data_dir / tv_class / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _download(family: IdxFamily, data_dir: Path, split: str | None) -> None:
    """Fetch ``family`` with torchvision's downloader (needs internet) into ``data_dir``."""
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, family.tv_class)
        kwargs = {"split": split} if family.name == "emnist" else {}
        cls(root=str(data_dir), train=True, download=True, **kwargs)
        cls(root=str(data_dir), train=False, download=True, **kwargs)
    except Exception as exc:  # network errors come in many types; the fix is the same
        raise SparsifyError(
            f"{family.title} is not in {data_dir} and downloading it failed ({type(exc).__name__}); "
            "pass --data-dir pointing at a folder with the four IDX files."
        ) from None


def locate_idx(
    family: IdxFamily,
    data_dir: str | os.PathLike[str] | None,
    download: bool = True,
    split: str | None = None,
) -> dict[str, Path]:
    """The paths of ``family``'s four files in ``data_dir`` (default cache), downloading if allowed."""
    explicit = data_dir is not None
    if explicit:
        root = Path(data_dir)  # type: ignore[arg-type]
    else:
        root = default_data_dir() if family.name == "mnist" else default_root(family.name)
    if explicit and not root.is_dir():
        raise SparsifyError(
            f"data directory {root} does not exist; pass --data-dir with the {family.title} IDX files."
        )
    paths = {key: _find(root, stem, family.tv_class) for key, stem in family.files.items()}
    if any(p is None for p in paths.values()) and download and not explicit:
        _download(family, root, split)
        paths = {key: _find(root, stem, family.tv_class) for key, stem in family.files.items()}
    missing = [family.files[k] for k, p in paths.items() if p is None]
    if missing:
        raise SparsifyError(
            f"{family.title} files missing in {root}: {', '.join(missing)} (.gz or raw); "
            "pass --data-dir pointing at a folder that holds them."
        )
    _check_not_other(family, paths["train_labels"])  # type: ignore[arg-type]
    return {k: p for k, p in paths.items() if p is not None}


def _check_not_other(family: IdxFamily, labels: Path) -> None:
    """Refuse a folder whose published labels file belongs to another same-named dataset."""
    if labels.suffix != ".gz" or family.files is not FILES:
        return
    digest = hashlib.md5(labels.read_bytes()).hexdigest()  # noqa: S324 - a file fingerprint
    for other in SAME_FILES:
        if other is not family and digest == other.labels_md5:
            raise SparsifyError(
                f"{labels} is the published {other.title} labels file but the recipe says "
                f"data.dataset: {family.name}; set data.dataset: {other.name} or fix --data-dir."
            )


def locate_mnist(data_dir: str | os.PathLike[str] | None, download: bool = True) -> dict[str, Path]:
    """Return the paths of the four MNIST files in ``data_dir`` (default cache), downloading if allowed."""
    return locate_idx(MNIST, data_dir, download)


def _check_pair(
    family: IdxFamily,
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    image_path: Path,
    label_path: Path,
) -> None:
    """Images uint8 (N, 28, 28); labels 1-D integers (uint8/int8/int16/int32 IDX types,
    never float: 2.7 must not become class 2), one per image, each a class of ``family``."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise SparsifyError(
            f"{family.title} {split} images must be uint8 (N, 28, 28); got {images.dtype} "
            f"{images.shape} in {image_path}."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise SparsifyError(
            f"{family.title} {split} has {images.shape[0]} images but labels of shape {labels.shape}; "
            f"files do not match ({label_path})."
        )
    if not is_integer_type(labels):
        raise SparsifyError(
            f"IDX file {label_path}: {family.title} labels must be integers (IDX type uint8, "
            f"int8, int16 or int32); got {labels.dtype}. Use the published labels file."
        )
    low, high = family.label_offset, family.num_classes - 1 + family.label_offset
    if labels.size and (int(labels.min()) < low or int(labels.max()) > high):
        bad = int(labels.max()) if int(labels.max()) > high else int(labels.min())
        raise SparsifyError(
            f"IDX file {label_path}: {family.title} {split} labels must be {low}..{high}; "
            f"found {bad}. Use the published labels file."
        )


def load_idx_family(
    family: IdxFamily,
    data_dir: str | os.PathLike[str] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    download: bool = True,
    split: str | None = None,
) -> MnistSplits:
    """Load ``family``, keep the first ``train_subset``/``test_subset`` images (None = all), normalise.

    Normalisation: x = (pixel/255 - mean) / std with mean, std over the kept training images.
    """
    paths = locate_idx(family, data_dir, download, split)
    tr_x, tr_y = read_idx(paths["train_images"]), read_idx(paths["train_labels"])
    te_x, te_y = read_idx(paths["test_images"]), read_idx(paths["test_labels"])
    _check_pair(family, tr_x, tr_y, "train", paths["train_images"], paths["train_labels"])
    _check_pair(family, te_x, te_y, "test", paths["test_images"], paths["test_labels"])
    for key, images in (("train_images", tr_x), ("test_images", te_x)):
        if len(images) == 0:  # normalisation and training need at least one image
            raise SparsifyError(
                f"IDX file {paths[key]} holds no images, so {family.title} has no "
                f"{'training' if key == 'train_images' else 'test'} images; check --data-dir."
            )
    for name, n, total in (
        ("train_subset", train_subset, len(tr_x)),
        ("test_subset", test_subset, len(te_x)),
    ):
        if n is not None and not 1 <= n <= total:
            raise SparsifyError(f"data.{name} must be in [1, {total}]; got {n}.")
    tr_x, tr_y = tr_x[:train_subset], tr_y[:train_subset]
    te_x, te_y = te_x[:test_subset], te_y[:test_subset]
    if family.transpose:
        tr_x, te_x = tr_x.transpose(0, 2, 1).copy(), te_x.transpose(0, 2, 1).copy()
    train = torch.from_numpy(tr_x).float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    test = torch.from_numpy(te_x).float().div_(255.0).unsqueeze(1)
    mean, std = train.mean().item(), train.std().item()
    train.sub_(mean).div_(std)
    test.sub_(mean).div_(std)
    return MnistSplits(
        train_x=train,
        train_y=torch.from_numpy(tr_y.astype(np.int64) - family.label_offset),
        test_x=test,
        test_y=torch.from_numpy(te_y.astype(np.int64) - family.label_offset),
        mean=mean,
        std=std,
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    download: bool = True,
) -> MnistSplits:
    """Load MNIST, keep the first ``train_subset``/``test_subset`` images (None = all), normalise.

    Normalisation: x = (pixel/255 - mean) / std with mean, std over the kept training images.
    """
    return load_idx_family(MNIST, data_dir, train_subset, test_subset, download)


def _splits(family: IdxFamily, request: DataRequest) -> DatasetSplits:
    if request.image_size is not None and tuple(request.image_size) != (28, 28):
        raise SparsifyError(
            f"{family.name} images are 28x28; remove data.image_size {list(request.image_size)}."
        )
    d = load_idx_family(
        family,
        request.root,
        request.train_subset,
        request.test_subset,
        request.download,
        request.split,
    )
    return DatasetSplits(
        train=TensorDataset(d.train_x, d.train_y),
        test=TensorDataset(d.test_x, d.test_y),
        input_shape=(1, 28, 28),
        num_classes=family.num_classes,
        info={"normalisation": {"mean": d.mean, "std": d.std}},
        augmentation=RandomShift(MAX_SHIFT, [-d.mean / d.std]),
    )


def _no_split(family: IdxFamily, request: DataRequest) -> IdxFamily:
    if request.split is not None:
        raise SparsifyError(f"{family.name} has no splits; remove data.split ({request.split!r}).")
    return family


def mnist(request: DataRequest) -> DatasetSplits:
    """MNIST digits, 10 classes, 1x28x28 (registry factory)."""
    return _splits(_no_split(MNIST, request), request)


def fashion_mnist(request: DataRequest) -> DatasetSplits:
    """Fashion-MNIST (Zalando clothing images), 10 classes, 1x28x28 (registry factory)."""
    return _splits(_no_split(FASHION_MNIST, request), request)


def kmnist(request: DataRequest) -> DatasetSplits:
    """Kuzushiji-MNIST (cursive Japanese), 10 classes, 1x28x28 (registry factory)."""
    return _splits(_no_split(KMNIST, request), request)


def emnist(request: DataRequest) -> DatasetSplits:
    """EMNIST, ``data.split`` (default balanced: 47 classes), 1x28x28 (registry factory)."""
    split = request.split or "balanced"
    return _splits(emnist_family(split), DataRequest(**{**request.__dict__, "split": split}))
