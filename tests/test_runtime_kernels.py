"""The torch-free ONNX runtime on sparsify's C kernels (``kernels="spk"``) computes what it
computes on scipy's products (``kernels="scipy"``) within fp32 rounding, on a small exported
MLP and convnet, at several batches; ``auto`` picks spk where the kernels are compiled and
scipy where not; the spk runtime stays torch-free.

Tolerance: both are held to ``max|y - ref64| <= 4 * max|torch32 - ref64| + 1e-6 * max|ref64|``
(tests/test_runtime_onnx.py), and to each other within twice that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sparsify.runtime
from sparsify import kernels as spk
from sparsify.errors import SparsifyError
from sparsify.export import onnx as sonnx
from sparsify.runtime import load_onnx_model

ROOT = Path(__file__).resolve().parents[1]
needs_spk = pytest.mark.skipif(not spk.available(), reason="sparsify.kernels not compiled here")


class ConvNet(nn.Module):
    """Convs the spk path takes (groups=1, strided, unpadded) and one it leaves to scipy
    (groups=2), then a Linear (Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, bias=False)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c3(torch.relu(self.c2(y))))
        return self.fc(y.flatten(1))


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 10)
    )


CASES = {"mlp": (_mlp, (64,)), "convnet": (ConvNet, (3, 12, 12))}


def _zero_(model: nn.Module, fraction: float = 0.8) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight[torch.rand(m.weight.shape, generator=g) < fraction] = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path]]:
    out = {}
    for name, (build, shape) in CASES.items():
        torch.manual_seed(1)
        model = _zero_(build())
        folder = tmp_path_factory.mktemp(name)
        sonnx.export_onnx(model, folder, example_input=torch.randn(2, *shape))
        out[name] = (model, folder / sonnx.COMPACT_FILE)
    return out


@needs_spk
@pytest.mark.parametrize("name", list(CASES))
def test_spk_runtime_equals_scipy_runtime(
    exported: dict[str, tuple[nn.Module, Path]], name: str
) -> None:
    model, path = exported[name]
    fast = sparsify.runtime.load(path, kernels="spk")
    slow = sparsify.runtime.load(path, kernels="scipy")
    assert (fast.kernels, slow.kernels) == ("spk", "scipy")
    assert slow.packs is None
    rng = np.random.default_rng(3)
    for batch in (1, 2, 5):
        x = rng.standard_normal((batch, *CASES[name][1])).astype(np.float32)
        with torch.no_grad():
            ref = model.double()(torch.from_numpy(x).double()).numpy()
            t32 = model.float()(torch.from_numpy(x)).numpy()
        bound = 4 * np.abs(t32 - ref).max() + 1e-6 * np.abs(ref).max()
        y_fast, y_slow = fast(x), slow(x)
        assert y_fast.dtype == np.float32 and y_fast.shape == ref.shape
        assert np.abs(y_fast - ref).max() <= bound, (batch, np.abs(y_fast - ref).max(), bound)
        assert np.abs(y_slow - ref).max() <= bound
        assert np.abs(y_fast - y_slow).max() <= 2 * bound
    # every sparse weight was run by the kernels: the MLP at batch 1 (csr) and above (auto);
    # the convnet's groups=1 convs packed with their kernel size, the grouped one not
    layouts = {layout for _, layout in fast.packs.packed}
    if name == "mlp":
        assert {k for k, _ in fast.packs.packed} == set(fast.weights)
        assert layouts == {"csr", "auto"}
    else:
        convs = set(fast.packs.conv_kernels)
        assert len(convs) == 2 and all(fast.packs.conv_kernels[k] == (3, 3) for k in convs)
        assert len(fast.weights) == 4  # c1, c2, the grouped c3 (scipy), fc
    assert fast.packs.nbytes > 0


def test_kernel_choice_auto_and_refusals(
    exported: dict[str, tuple[nn.Module, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = exported["mlp"]
    auto = load_onnx_model(path)
    assert auto.kernels == ("spk" if spk.available() else "scipy"), auto.kernels_reason
    with pytest.raises(SparsifyError, match="'kernels' parameter of load"):
        sparsify.runtime.load(path, kernels="mkl")
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")  # as on a machine without a C compiler
    fallback = sparsify.runtime.load(path)
    assert fallback.kernels == "scipy" and "SPARSIFY_KERNELS=off" in fallback.kernels_reason
    with pytest.raises(SparsifyError, match="kernels='spk' needs sparsify's compiled kernels"):
        sparsify.runtime.load(path, kernels="spk")


@needs_spk
def test_spk_runtime_stays_torch_free(
    exported: dict[str, tuple[nn.Module, Path]], tmp_path: Path
) -> None:
    model, path = exported["convnet"]
    x = np.random.default_rng(4).standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    code = (
        "import sys, numpy as np\n"
        "import sparsify.runtime\n"
        f"m = sparsify.runtime.load({str(path)!r}, kernels='spk')\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "assert m.packs.packed, 'the spk kernels did not run'\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    want = sparsify.runtime.load(path, kernels="scipy")(x)
    with torch.no_grad():
        ref = model.double()(torch.from_numpy(x).double()).numpy()
        t32 = model.float()(torch.from_numpy(x)).numpy()
    bound = 4 * np.abs(t32 - ref).max() + 1e-6 * np.abs(ref).max()
    assert np.abs(np.load(tmp_path / "y.npy") - want).max() <= 2 * bound
