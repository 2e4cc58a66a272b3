"""The torch-free runtime: matches torch within 1e-5, refuses unsupported ops at export time,
and runs where torch cannot be imported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_runtime_without_torch
from torch import nn

import sparsify.runtime
from sparsify.errors import SparsifyError
from sparsify.export.scipy_bundle import export_scipy_bundle
from sparsify.pipeline.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5


def zero_(model: nn.Module, fraction: float, seed: int = 0) -> nn.Module:
    """Zero ``fraction`` of each rank >= 2 weight at random; give BatchNorms non-trivial stats
    so that folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p[torch.rand(p.shape, generator=g) < fraction] = 0.0
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
    return model.eval()


def _check(model: nn.Module, bundle: Path, x: np.ndarray) -> float:
    export_scipy_bundle(model, bundle)
    ours = sparsify.runtime.load(bundle)(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=ATOL)
    return float(np.abs(ours - ref).max())


@pytest.fixture(scope="module")
def mnist_batch(mnist_dir: Path) -> np.ndarray:
    from sparsify.pipeline.data.idx import read_idx

    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:16]
    x = (images.astype(np.float32) / 255.0 - 0.1307) / 0.3081  # typical MNIST normalisation
    return x[:, None]  # (16, 1, 28, 28)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("name", ["lecture_convnet", "lenet5", "torchvision:resnet18"])
def test_runtime_matches_torch(
    name: str, fraction: float, mnist_batch: np.ndarray, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = zero_(build_model(name), fraction)
    rng = np.random.default_rng(0)
    x = np.concatenate([mnist_batch[:4], rng.standard_normal((4, 1, 28, 28)).astype(np.float32)])
    _check(model, tmp_path / "b", x)


class Odd(nn.Module):
    """Every other supported op: padding, dilation, avg pools, view(size(0), -1), standalone
    and fused BatchNorm1d/2d, Dropout, torch.relu, F.relu, .relu(), Identity, residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, stride=2, padding=2, dilation=2, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.pool2 = nn.AvgPool2d(2)
        self.mp = nn.MaxPool2d(3, stride=1, padding=1)
        self.bn_alone = nn.BatchNorm2d(6)
        self.adapt = nn.AdaptiveAvgPool2d((3, 2))
        self.fc = nn.Linear(36, 20)
        self.bn1d = nn.BatchNorm1d(20)
        self.drop = nn.Dropout(0.5)
        self.id = nn.Identity()
        self.out = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28)
        y = torch.relu(self.bn(self.conv(x)))  # (B, 6, 13, 13)
        y = self.pool(y)  # (B, 6, 7, 7)
        y = y + self.mp(y)
        y = self.bn_alone(F.relu(y))  # not after a conv: stays a standalone op
        y = self.adapt(self.pool2(y)).relu()  # (B, 6, 3, 2)
        y = y.view(y.size(0), -1)  # (B, 36)
        y = self.drop(self.bn1d(self.fc(y)))
        return self.out(self.id(y))


def test_runtime_covers_every_supported_op(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = zero_(Odd(), 0.5)
    x = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    _check(model, tmp_path / "b", x)
    import json

    ops = json.loads((tmp_path / "b" / "manifest.json").read_text())["graph"]["ops"]
    kinds = [o["op"] for o in ops]
    assert "batchnorm" in kinds  # the standalone one
    fused = [o["name"] for o in ops if o["op"] in ("conv2d", "linear") and o["bn"]]
    assert fused == ["conv", "fc"]  # conv+bn and linear+bn1d, folded


class WithGelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class WithSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "model,name",
    [(WithGelu(), "GELU"), (WithSigmoid(), "sigmoid"), (Grouped(), "groups=2")],
)
def test_unsupported_ops_are_refused_at_export_with_their_name(
    model: nn.Module, name: str, tmp_path: Path
) -> None:
    with pytest.raises(SparsifyError, match=name):
        export_scipy_bundle(model, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    export_scipy_bundle(model, tmp_path / "b", graph=False)  # the weights alone still export
    with pytest.raises(SparsifyError, match="no graph"):
        sparsify.runtime.load(tmp_path / "b")


def test_runtime_runs_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = zero_(build_model("lenet5"), 0.9)
    export_scipy_bundle(model, tmp_path / "b")
    x = np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32)
    y = run_runtime_without_torch(tmp_path / "b", x, tmp_path)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)
