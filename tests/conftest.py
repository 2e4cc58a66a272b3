"""Shared fixtures: the real MNIST copy, small trained checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path | None:
    for cand in (os.environ.get("SPARSIFY_TEST_DATA"), ROOT.parent / "shared" / "data" / "mnist"):
        if cand and (Path(cand) / "train-images-idx3-ubyte.gz").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the real MNIST IDX files (``$SPARSIFY_TEST_DATA`` or ../shared/data/mnist)."""
    d = _mnist_dir()
    if d is None:
        pytest.fail(
            "real MNIST not found: set SPARSIFY_TEST_DATA to a folder with the four IDX .gz files"
        )
    return d


def train_args(recipe: Path, out: Path, data_dir: Path, *extra: str) -> list[str]:
    """``sparsify train`` arguments (without the program name) for a quiet run."""
    return ["train", str(recipe), "--out", str(out), "--data-dir", str(data_dir), "-q", *extra]
