"""IDX reader: generated files of every type, corrupted headers, and the real MNIST copy."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from sparsify.errors import SparsifyError
from sparsify.pipeline.data import load_mnist, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path: Path, dtype, suffix: str) -> None:
    a = (np.arange(2 * 3 * 5) % 100).astype(dtype).reshape(2, 3, 5)
    path = write_idx(tmp_path / f"a{suffix}", a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and np.array_equal(a, b)


def _raw(tmp_path: Path, data: bytes, gz: bool = False) -> Path:
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


GOOD = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
CORRUPT = [
    (b"", "bad magic"),
    (b"\x01\x00\x08\x01" + GOOD[4:], "bad magic"),
    (bytes([0, 0, 0x42, 2]) + GOOD[4:], "unknown element type 0x42"),
    (bytes([0, 0, 8, 0]) + GOOD[4:], "declares 0 dimensions"),
    (bytes([0, 0, 8, 9]) + GOOD[4:], "declares 9 dimensions"),
    (GOOD[:10], "truncated inside its header"),
    (GOOD[:-1], "truncated or was edited"),
    (GOOD + b"\x00", "truncated or was edited"),
    (bytes([0, 0, 8, 2]) + (2**31).to_bytes(4, "big") + GOOD[8:], "more than the 4,294,967,296"),
    (bytes([0, 0, 8, 2]) + (2**20).to_bytes(4, "big") + GOOD[8:], "truncated or was edited"),
]


@pytest.mark.parametrize("data,expected", CORRUPT, ids=[e for _, e in CORRUPT])
@pytest.mark.parametrize("gz", [False, True])
def test_corrupted_files_are_refused_naming_the_file(
    tmp_path: Path, data: bytes, expected: str, gz: bool
) -> None:
    path = _raw(tmp_path, data, gz)
    with pytest.raises(SparsifyError, match=expected) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_good_header_reads_and_damaged_gzip_is_refused(tmp_path: Path) -> None:
    assert read_idx(_raw(tmp_path, GOOD)).tolist() == [[0, 1, 2], [3, 4, 5]]
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD)[:-6])
    with pytest.raises(SparsifyError, match="damaged gzip"):
        read_idx(path)
    with pytest.raises(SparsifyError, match="does not exist"):
        read_idx(tmp_path / "missing")


def test_shared_mnist(mnist_dir: Path) -> None:
    labels = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    images = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert images.mean() == pytest.approx(33.318, abs=1e-3)
    test_labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert np.bincount(test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_load_mnist_subset_and_normalisation(mnist_dir: Path) -> None:
    d = load_mnist(mnist_dir, train_subset=1000, test_subset=500)
    assert d.train_x.shape == (1000, 1, 28, 28) and d.test_x.shape == (500, 1, 28, 28)
    assert abs(d.train_x.mean().item()) < 1e-5 and d.train_x.std().item() == pytest.approx(
        1.0, abs=1e-4
    )
    assert d.train_y[:5].tolist() == [5, 0, 4, 1, 9]  # the first five MNIST labels
    with pytest.raises(SparsifyError, match="train_subset must be in"):
        load_mnist(mnist_dir, train_subset=60001)


def test_missing_data_dir_is_clear(tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="does not exist; pass --data-dir"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(SparsifyError, match="MNIST files missing"):
        load_mnist(tmp_path)


def _mnist_like(folder: Path, n_train: int = 20, n_test: int = 10, **overrides: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 255, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 255, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    arrays.update(overrides)
    for name, a in arrays.items():
        write_idx(folder / name, a)
    return folder


SHAPE_CASES = {
    "labels-fewer-than-images": (
        {"train-labels-idx1-ubyte.gz": np.zeros(19, np.uint8)},
        "labels of shape",
    ),
    "images-32x32": (
        {"train-images-idx3-ubyte.gz": np.zeros((20, 32, 32), np.uint8)},
        "must be uint8 (N, 28, 28)",
    ),
    "images-float": (
        {"t10k-images-idx3-ubyte.gz": np.zeros((10, 28, 28), np.float32)},
        "must be uint8",
    ),
    "labels-2d": ({"t10k-labels-idx1-ubyte.gz": np.zeros((10, 1), np.uint8)}, "labels of shape"),
    "label-out-of-range": (
        {"train-labels-idx1-ubyte.gz": np.full(20, 11, np.uint8)},
        "labels must be 0..9",
    ),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_mismatched_mnist_files_are_refused(tmp_path: Path, case: str) -> None:
    overrides, expected = SHAPE_CASES[case]
    folder = _mnist_like(tmp_path, **overrides)
    with pytest.raises(SparsifyError, match=re.escape(expected)):
        load_mnist(folder)


def test_generated_mnist_loads(tmp_path: Path) -> None:
    d = load_mnist(_mnist_like(tmp_path))
    assert d.train_x.shape == (20, 1, 28, 28) and d.test_y.shape == (10,)


def test_idx_suite_size() -> None:
    assert 2 * len(CORRUPT) + len(SHAPE_CASES) + 2 >= 20


LABEL_CASES = {
    # float labels would be truncated (2.7 -> class 2) if accepted
    "float32-labels": (np.full(20, 2.7, np.float32), "must be integers"),
    "float64-labels": (np.full(20, 3.0, np.float64), "must be integers"),
    # -100 is cross-entropy's ignore_index: half the images would silently not train
    "int32-minus-100": (np.where(np.arange(20) % 2 == 0, -100, 3).astype(np.int32), "found -100"),
    "int16-minus-1": (np.full(20, -1, np.int16), "found -1"),
    "int32-10": (np.full(20, 10, np.int32), "found 10"),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_labels_must_be_integers_in_range_and_the_file_is_named(tmp_path: Path, case: str) -> None:
    labels, expected = LABEL_CASES[case]
    folder = _mnist_like(tmp_path, **{"train-labels-idx1-ubyte.gz": labels})
    with pytest.raises(SparsifyError, match=re.escape(expected)) as info:
        load_mnist(folder)
    assert str(folder / "train-labels-idx1-ubyte.gz") in str(info.value)
    assert "\n" not in str(info.value)


def test_integer_labels_of_every_idx_type_load(tmp_path: Path) -> None:
    for dtype in (np.int8, np.int16, np.int32):
        folder = _mnist_like(
            tmp_path / np.dtype(dtype).name,
            **{"t10k-labels-idx1-ubyte.gz": (np.arange(10) % 10).astype(dtype)},
        )
        assert load_mnist(folder).test_y.tolist() == list(range(10))


def test_gzip_bomb_is_refused_without_decompressing_it(tmp_path: Path) -> None:
    import tracemalloc

    # the header declares 10 bytes; the stream inflates to 64 MiB (about 64 KB on disk)
    header = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big")
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header)
        chunk = bytes(1 << 20)
        for _ in range(64):
            fh.write(chunk)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(SparsifyError, match="holds more than its header") as info:
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 4 << 20, f"read {peak:,} bytes to refuse a 10-byte IDX file"


def test_header_sizes_are_multiplied_without_wrap_around(tmp_path: Path) -> None:
    # 2**31 * 2**31 * 4 = 2**64: an int64 product wraps to 0 and an empty body "fits"
    wraps = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**31, 2**31, 4))
    huge = bytes([0, 0, 0x0E, 8]) + (2**32 - 1).to_bytes(4, "big") * 8
    for name, data in (("wraps", wraps), ("huge", huge)):
        for gz in (False, True):
            path = tmp_path / (f"{name}.gz" if gz else name)
            path.write_bytes(gzip.compress(data) if gz else data)
            with pytest.raises(SparsifyError, match="more than the 4,294,967,296 bytes") as info:
                read_idx(path)
            assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, -100, 3], "class label -100 is outside 0..9"),  # cross-entropy's ignore_index
        ([0, -1, 3], "class label -1 is outside 0..9"),
        ([0, 10, 3], "class label 10 is outside 0..9"),
        ([0.0, 2.7, 3.0], "class labels must be integers"),
    ],
)
def test_classification_refuses_labels_outside_its_classes(labels: list, expected: str) -> None:
    """Any dataset (registered plugins too) is checked per batch, not only IDX files."""
    import torch

    from sparsify.pipeline.task import make_task

    task = make_task("classification")
    logits = torch.zeros(3, 10)
    with pytest.raises(SparsifyError, match=re.escape(expected)):
        task.loss_sum(logits, torch.tensor(labels))
    assert task.loss_sum(logits, torch.tensor([0, 9, 3])).item() > 0
