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


def sparse_layer_case(kind: str, seed: int = 0, density: float = 0.2):
    """``(layer, x)``: a Linear (``kind="linear"``) or 3x3 Conv2d with ``density`` of its
    weights kept (random), and an input batch for it."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if kind == "linear":
        layer, x = nn.Linear(96, 40), torch.randn(5, 96)
    else:
        layer, x = nn.Conv2d(6, 12, 3, padding=1), torch.randn(2, 6, 11, 9)
    with torch.no_grad():
        layer.weight.mul_((torch.rand_like(layer.weight) < density).float())
    return layer.eval(), x


def sparse_lecture_convnet(zeros: float = 0.9, seed: int = 0):
    """The lecture convnet (eval mode) with ``zeros`` of each Linear/Conv weight set to 0."""
    import torch

    from sparsify.pipeline.zoo import build_model

    torch.manual_seed(seed)
    model = build_model("lecture_convnet").eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p[torch.rand(p.shape, generator=g) < zeros] = 0.0
    return model


def run_runtime_without_torch(artifact: Path, x, tmp_path: Path):
    """``sparsify.runtime.load(artifact)(x)`` in a fresh Python where ``import torch`` fails;
    asserts torch stayed out of ``sys.modules`` and returns the output array."""
    import os
    import subprocess
    import sys

    import numpy as np

    np.save(tmp_path / "x.npy", x)
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    code = (
        "import sys, numpy as np\n"
        "try:\n    import torch\nexcept ImportError:\n    pass\nelse:\n    sys.exit('torch imported')\n"
        "import sparsify.runtime\n"
        f"m = sparsify.runtime.load({str(artifact)!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(root)])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return np.load(tmp_path / "y.npy")
