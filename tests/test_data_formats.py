"""Each dataset reader on small files generated in its published format, plus one malformed
file each refused with one line. No network: every factory gets an explicit folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from sparsify.errors import SparsifyError
from sparsify.pipeline.data import mnist as mnist_mod
from sparsify.pipeline.data.idx import write_idx
from sparsify.pipeline.data.registry import DataRequest, load_dataset
from sparsify.pipeline.data.splits import RandomShift

RNG = np.random.default_rng(0)


def idx_folder(
    folder: Path,
    n_train: int = 30,
    n_test: int = 10,
    classes: int = 10,
    prefix: str = "",
    offset: int = 0,
) -> Path:
    """The four IDX .gz files of an MNIST-family dataset (``prefix``: EMNIST's ``emnist-<split>-``)."""
    folder.mkdir(parents=True, exist_ok=True)
    test = "test" if prefix else "t10k"
    arrays = {
        f"{prefix}train-images-idx3-ubyte.gz": RNG.integers(
            0, 255, (n_train, 28, 28), dtype=np.uint8
        ),
        f"{prefix}train-labels-idx1-ubyte.gz": (np.arange(n_train) % classes + offset).astype(
            np.uint8
        ),
        f"{prefix}{test}-images-idx3-ubyte.gz": RNG.integers(
            0, 255, (n_test, 28, 28), dtype=np.uint8
        ),
        f"{prefix}{test}-labels-idx1-ubyte.gz": (np.arange(n_test) % classes + offset).astype(
            np.uint8
        ),
    }
    for name, a in arrays.items():
        write_idx(folder / name, a)
    return folder


def cifar_folder(root: Path, name: str, n_train: int = 12, n_test: int = 6) -> Path:
    """CIFAR binary files: per record the label byte(s) then 3072 CHW image bytes."""
    if name == "cifar10":
        folder, files, label_bytes, classes = (
            root / "cifar-10-batches-bin",
            [f"data_batch_{i}.bin" for i in range(1, 6)],
            1,
            10,
        )
    else:
        folder, files, label_bytes, classes = root / "cifar-100-binary", ["train.bin"], 2, 100
    folder.mkdir(parents=True, exist_ok=True)

    def records(n: int, start: int) -> bytes:
        labels = (np.arange(start, start + n) % classes).astype(np.uint8)
        images = RNG.integers(0, 255, (n, 3072), dtype=np.uint8)
        head = np.stack([labels // 5, labels], 1)[:, -label_bytes:]  # coarse, fine
        return np.concatenate([head.astype(np.uint8), images], 1).tobytes()

    per = n_train // len(files)
    for i, f in enumerate(files):
        (folder / f).write_bytes(records(per, i * per))
    (folder / ("test_batch.bin" if name == "cifar10" else "test.bin")).write_bytes(
        records(n_test, 0)
    )
    return root


def svhn_folder(root: Path, n_train: int = 12, n_test: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = RNG.integers(0, 255, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)  # 1..10, 10 = digit 0
        scipy.io.savemat(str(root / name), {"X": x, "y": y})
    return root


def png_folder(
    root: Path, per_class: dict[str, int], test_per_class: int = 2, size: int = 32
) -> Path:
    """ROOT/{train,test}/<class>/*.png with a class-dependent colour, so a model can learn it."""
    for split, counts in (("train", per_class), ("test", dict.fromkeys(per_class, test_per_class))):
        for c, (cls, n) in enumerate(counts.items()):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = RNG.integers(0, 60, (size, size, 3), dtype=np.uint8)
                a[..., c % 3] += 150
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def _load(name: str, root: Path, **kw) -> object:
    return load_dataset(DataRequest(name=name, root=root, download=False, **kw))


# ----------------------------------------------------------------------------- MNIST family


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_idx_family_loads(tmp_path: Path, name: str) -> None:
    d = _load(name, idx_folder(tmp_path), train_subset=20)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10 and len(d.train) == 20
    x, y = d.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and int(y) == 0
    assert isinstance(d.augmentation, RandomShift)  # a small translation, never a flip


def test_digit_augmentation_translates_by_at_most_two_pixels_over_the_background(
    tmp_path: Path,
) -> None:
    d = _load("mnist", idx_folder(tmp_path), train_subset=20)
    background = d.train.tensors[0].min().item()  # pixel 0 after normalisation
    digit = torch.full((1, 28, 28), background)
    digit[0, 10:18, 12:15] = 3.0  # a stroke well inside the 2-pixel margin
    torch.manual_seed(0)
    # one image at a time (the per-item path) and a whole batch (the in-memory loader's path:
    # each image in the batch draws its own shift)
    outs = [d.augmentation(digit) for _ in range(100)]
    outs += list(d.augmentation.batch(digit.expand(100, 1, 28, 28).contiguous()))
    seen = set()
    for out in outs:
        assert out.shape == digit.shape
        ys, xs = torch.nonzero(out[0] == 3.0, as_tuple=True)
        dy, dx = int(ys.min()) - 10, int(xs.min()) - 12
        assert abs(dy) <= 2 and abs(dx) <= 2, (dy, dx)
        # the stroke moves whole and everything else is the background: no wrap-around
        assert torch.equal(out, torch.roll(digit, (dy, dx), dims=(1, 2)))
        seen.add((dy, dx))
    assert len(seen) == 25, "every shift in [-2, 2]^2 is drawn"
    assert torch.equal(digit[0, 10:18, 12:15], torch.full((8, 3), 3.0)), "the input is not mutated"


def test_emnist_split_transposed_and_letters_shifted(tmp_path: Path) -> None:
    folder = idx_folder(tmp_path, classes=26, prefix="emnist-letters-", offset=1)
    d = _load("emnist", folder, split="letters")
    assert d.num_classes == 26 and d.train.tensors[1].min() == 0 and d.train.tensors[1].max() == 25
    balanced = idx_folder(tmp_path / "b", classes=47, prefix="emnist-balanced-")
    assert _load("emnist", balanced).num_classes == 47  # default split: balanced
    # stored column-major: the loader transposes back
    raw = mnist_mod.read_idx(balanced / "emnist-balanced-train-images-idx3-ubyte.gz")[0]
    x = _load("emnist", balanced).train.tensors[0][0, 0]
    assert np.corrcoef(x.numpy().ravel(), raw.T.astype(np.float32).ravel())[0, 1] > 0.999
    with pytest.raises(SparsifyError, match="emnist has no split 'nope'"):
        _load("emnist", balanced, split="nope")


def test_idx_family_malformed_labels(tmp_path: Path) -> None:
    folder = idx_folder(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(30, 10, np.uint8))
    with pytest.raises(
        SparsifyError, match=re.escape("Fashion-MNIST train labels must be 0..9; found 10.")
    ):
        _load("fashion_mnist", folder)


def test_published_labels_of_another_dataset_are_refused(tmp_path: Path, monkeypatch) -> None:
    """A folder holding Fashion-MNIST's published files is not silently read as MNIST."""
    import hashlib

    folder = idx_folder(tmp_path)
    digest = hashlib.md5((folder / "train-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    fake = mnist_mod.IdxFamily(**{**mnist_mod.FASHION_MNIST.__dict__, "labels_md5": digest})
    monkeypatch.setattr(mnist_mod, "SAME_FILES", (mnist_mod.MNIST, fake, mnist_mod.KMNIST))
    with pytest.raises(
        SparsifyError,
        match="published Fashion-MNIST labels file but the recipe says data.dataset: mnist",
    ):
        _load("mnist", folder)
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST", fake)
    assert _load("fashion_mnist", folder).num_classes == 10  # named right: accepted


# ----------------------------------------------------------------------------- CIFAR binary


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_binary_loads(tmp_path: Path, name: str, classes: int) -> None:
    root = cifar_folder(tmp_path, name, n_train=10 if name == "cifar10" else 12)
    d = _load(name, root)
    assert d.input_shape == (3, 32, 32) and d.num_classes == classes
    x, y = d.train.tensors
    assert x.shape[1:] == (3, 32, 32) and y.tolist() == [i % classes for i in range(len(y))]
    # per-channel normalisation with the training statistics
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert d.info["normalisation"]["mean"] != d.info["normalisation"]["std"]
    # the first record's red channel is the first 1024 image bytes, row-major 32x32
    rec = np.fromfile(next((root).rglob("*1.bin" if name == "cifar10" else "train.bin")), np.uint8)
    lb = 1 if name == "cifar10" else 2
    red = torch.from_numpy(rec[lb : lb + 1024].reshape(32, 32).astype(np.float32)) / 255
    m, s = d.info["normalisation"]["mean"][0], d.info["normalisation"]["std"][0]
    torch.testing.assert_close(x[0, 0], (red - m) / s)
    assert d.augmentation is not None and d.augmentation(x[0]).shape == (3, 32, 32)


def test_cifar_truncated_file_is_refused(tmp_path: Path) -> None:
    root = cifar_folder(tmp_path, "cifar10", n_train=10)
    f = root / "cifar-10-batches-bin" / "test_batch.bin"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(SparsifyError, match="not a whole number of 3073-byte records"):
        _load("cifar10", root)


def test_cifar100_files_read_as_cifar10_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cifar_folder(tmp_path / "x", "cifar100")
    (root / "cifar-10-batches-bin").mkdir(parents=True)
    for i in range(1, 6):  # 3074-byte records cut as 3073: labels go out of range or sizes fail
        (root / "cifar-10-batches-bin" / f"data_batch_{i}.bin").write_bytes(
            bytes([99]) + bytes(3072)
        )
    (root / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(bytes([3]) + bytes(3072))
    with pytest.raises(SparsifyError, match="has label 99 but the dataset has 10 classes"):
        _load("cifar10", root)


def test_missing_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="binary files missing"):
        _load("cifar10", tmp_path)
    with pytest.raises(SparsifyError, match="does not exist"):
        _load("svhn", tmp_path / "nope")


# ----------------------------------------------------------------------------- SVHN .mat


def test_svhn_mat_loads(tmp_path: Path) -> None:
    d = _load("svhn", svhn_folder(tmp_path))
    x, y = d.train.tensors
    assert x.shape == (12, 3, 32, 32) and d.num_classes == 10
    assert y.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 is the digit 0
    flipped = torch.stack([d.augmentation(x[0]) for _ in range(20)])
    assert flipped.shape == (20, 3, 32, 32)


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"this is not a mat file" * 10, "not a readable MATLAB .mat file"),
        (
            {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))},
            "'X' must be uint8 (32, 32, 3, N)",
        ),
    ],
    ids=["garbage", "wrong-shape"],
)
def test_svhn_malformed(tmp_path: Path, content, expected: str) -> None:
    root = svhn_folder(tmp_path)
    if isinstance(content, bytes):
        (root / "test_32x32.mat").write_bytes(content)
    else:
        scipy.io.savemat(str(root / "test_32x32.mat"), content)
    with pytest.raises(SparsifyError, match=re.escape(expected)) as err:
        _load("svhn", root)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- image folder


def test_image_folder_loads(tmp_path: Path) -> None:
    root = png_folder(tmp_path, {"cat": 4, "dog": 3}, size=20)
    d = _load("image_folder", root, image_size=(16, 24))
    assert (
        d.input_shape == (3, 16, 24) and d.num_classes == 2 and d.info["classes"] == ["cat", "dog"]
    )
    x, y = d.train[5]
    assert x.shape == (3, 16, 24) and y == 1
    assert _load("image_folder", root).input_shape == (3, 20, 20)  # default: first image's size


def test_image_folder_corrupt_png_is_one_line(tmp_path: Path) -> None:
    root = png_folder(tmp_path, {"a": 2, "b": 2})
    (root / "train" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    d = _load("image_folder", root)
    with pytest.raises(SparsifyError, match=r"image .*1\.png cannot be read") as err:
        d.train[3]
    assert "\n" not in str(err.value)


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="image_folder needs a folder"):
        load_dataset(DataRequest(name="image_folder"))
    root = png_folder(tmp_path, {"a": 2, "b": 2})
    (root / "test" / "b").rename(root / "test" / "c")
    with pytest.raises(SparsifyError, match="give both the same class sub-folders"):
        _load("image_folder", root)
    with pytest.raises(SparsifyError, match="must hold train/ and test/"):
        _load("image_folder", root / "train")
