"""An image folder: one sub-folder per class, read with PIL through torchvision's ImageFolder.

Layout (``data.dir``, or ``--data-dir``, names ``ROOT``)::

    ROOT/train/<class>/*.png|jpg|...     training images
    ROOT/test/<class>/*.png|jpg|...      test images (``val/`` is accepted when there is no test/)

Classes are the sub-folder names of ``train/`` in sorted order; ``test/`` must have the same
ones. Images are converted to RGB, resized to ``data.image_size: [H, W]`` (default: the size of
the first training image) and normalised with the ImageNet channel statistics (the ones
torchvision's pretrained weights expect). Images are read from disk per batch, so the folder
may be larger than memory. Standard augmentation: random crop of the image padded by H/8, then
a horizontal flip.
"""

from __future__ import annotations

from pathlib import Path

from sparsify.errors import SparsifyError
from sparsify.pipeline.data.registry import DataRequest, DatasetSplits
from sparsify.pipeline.data.splits import crop_flip

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def load_rgb(path: str):  # -> PIL.Image.Image
    """The image at ``path`` as RGB; an unreadable file is a one-line SparsifyError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise SparsifyError(
            f"image {path} cannot be read ({first}); remove or replace it."
        ) from None


def _folder(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def image_folder(request: DataRequest) -> DatasetSplits:
    """Class-per-sub-folder images under ``request.root`` (registry factory; see module doc).

    Raises:
        SparsifyError: no folder given, no train/ or test/ inside, no images, class folders
            that differ between train/ and test/, or an unreadable first image.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    if request.root is None:
        raise SparsifyError(
            "image_folder needs a folder: set data.dir in the recipe or pass --data-dir ROOT "
            "(ROOT/train/<class>/*.png and ROOT/test/<class>/*.png)."
        )
    if request.split is not None:
        raise SparsifyError(f"image_folder has no splits; remove data.split ({request.split!r}).")
    root = Path(request.root)
    train_dir, test_dir = _folder(root, ("train",)), _folder(root, ("test", "val"))
    if train_dir is None or test_dir is None:
        raise SparsifyError(
            f"{root} must hold train/ and test/ (or val/), each with one sub-folder per class; "
            "fix --data-dir."
        )
    try:
        train = ImageFolder(str(train_dir), loader=load_rgb)
        test = ImageFolder(str(test_dir), loader=load_rgb)
    except FileNotFoundError as exc:  # torchvision: no class folders or no image files
        raise SparsifyError(
            f"image folder {root}: {str(exc).splitlines()[0]}; add images."
        ) from None
    if test.classes != train.classes:
        raise SparsifyError(
            f"{test_dir} has classes {test.classes} but {train_dir} has {train.classes}; "
            "give both the same class sub-folders."
        )
    if len(train.classes) < 2:
        raise SparsifyError(f"{train_dir} holds one class folder; classification needs >= 2.")
    if request.image_size is not None:
        size = (int(request.image_size[0]), int(request.image_size[1]))
    else:
        w, h = load_rgb(train.samples[0][0]).size
        size = (h, w)
    import torch

    transform = v2.Compose(
        [
            v2.Resize(size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    train.transform = test.transform = transform
    for ds, n, key in (
        (train, request.train_subset, "train_subset"),
        (test, request.test_subset, "test_subset"),
    ):
        if n is not None and not 1 <= n <= len(ds):
            raise SparsifyError(f"data.{key} must be in [1, {len(ds)}]; got {n}.")
    from torch.utils.data import Subset

    train_ds = train if request.train_subset is None else Subset(train, range(request.train_subset))
    test_ds = test if request.test_subset is None else Subset(test, range(request.test_subset))
    return DatasetSplits(
        train=train_ds,
        test=test_ds,
        input_shape=(3, *size),
        num_classes=len(train.classes),
        augmentation=crop_flip(size),
        info={
            "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "dir": str(root),
            "classes": train.classes,
        },
    )
