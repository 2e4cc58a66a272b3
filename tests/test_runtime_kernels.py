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
from collections.abc import Iterator
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
    (groups=2), a max pool, then a Linear (Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, bias=False)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pool = nn.MaxPool2d(3, 1, 1)  # a MaxPool: the stencil on the spk path
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c3(torch.relu(self.c2(y))))
        return self.fc(self.pool(y).flatten(1))


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


def _spk_and_scipy(path: Path) -> tuple[sparsify.runtime.OnnxModel, sparsify.runtime.OnnxModel]:
    """The same file loaded with the C kernels and with scipy."""
    return sparsify.runtime.load(path, kernels="spk"), sparsify.runtime.load(path, kernels="scipy")


def _batches(name: str, seed: int) -> Iterator[np.ndarray]:
    """Random float32 inputs of CASES[name] at batches 1, 2, 5 and 17 (17: the convs and
    pools with the batch, or the planes, in the vector lanes, a last group part empty)."""
    rng = np.random.default_rng(seed)
    for batch in (1, 2, 5, 17):
        yield rng.standard_normal((batch, *CASES[name][1])).astype(np.float32)


@needs_spk
@pytest.mark.parametrize("name", list(CASES))
def test_spk_runtime_equals_scipy_runtime(
    exported: dict[str, tuple[nn.Module, Path]], name: str
) -> None:
    model, path = exported[name]
    fast, slow = _spk_and_scipy(path)
    assert (fast.kernels, slow.kernels) == ("spk", "scipy")
    assert slow.packs is None
    for x in _batches(name, 3):
        batch = len(x)
        with torch.no_grad():
            ref = model.double()(torch.from_numpy(x).double()).numpy()
            t32 = model.float()(torch.from_numpy(x)).numpy()
        bound = 4 * np.abs(t32 - ref).max() + 1e-6 * np.abs(ref).max()
        y_fast, y_slow = fast(x), slow(x)
        assert y_fast.dtype == np.float32 and y_fast.shape == ref.shape
        assert np.abs(y_fast - ref).max() <= bound, (batch, np.abs(y_fast - ref).max(), bound)
        assert np.abs(y_slow - ref).max() <= bound
        assert np.abs(y_fast - y_slow).max() <= 2 * bound
    # every sparse weight was run by the kernels, and its CSR dropped once packed: the MLP's
    # weights are narrow, so batch 1 (csr) and above (auto) share one packing each; the
    # convnet's groups=1 convs are packed with their kernel size, the grouped one stays CSR
    packed = {k for k, _ in fast.packs.packed}
    assert packed == set(slow.weights) - set(fast.weights)
    if name == "mlp":
        assert not fast.weights and len(packed) == 3
        assert {layout for _, layout in fast.packs.packed} == {"csr"}
    else:
        convs = set(fast.packs.conv_kernels)
        assert len(convs) == 2 and all(fast.packs.conv_kernels[k] == (3, 3) for k in convs)
        assert len(packed) == 3  # c1, c2, fc
        assert len(fast.weights) == 1  # the grouped c3 (scipy)
    assert fast.packs.nbytes > 0


def _held(model: sparsify.runtime.OnnxModel) -> tuple[int, int]:
    """(bytes of values + column indices, bytes of row/segment pointers) of every sparse
    weight array the model references: its CSR matrices and, with the spk kernels, every
    packing and any scipy copy cached on one (counted from the objects, not ``memory``)."""
    mats = list(model.weights.values())
    packs = list(model.packs.packed.values()) if model.packs is not None else []
    mats += [w._cache["csr"] for w in packs if "csr" in w._cache]
    entries = sum(m.data.nbytes + m.indices.nbytes for m in mats)
    entries += sum(w.idx.nbytes + w.val.nbytes for w in packs)
    pointers = sum(m.indptr.nbytes for m in mats) + sum(w.ptr.nbytes for w in packs)
    return entries, pointers


@needs_spk
@pytest.mark.parametrize("name", list(CASES))
def test_spk_runtime_holds_each_weight_once(
    exported: dict[str, tuple[nn.Module, Path]], name: str
) -> None:
    # with the kernels, a weight's packing replaces its CSR: each nonzero's value and index
    # are held once, as scipy holds them (a packing differs only in its segment pointers),
    # memory counts what is held, and the outputs still equal scipy's
    _, path = exported[name]
    fast, slow = _spk_and_scipy(path)
    one_copy, _ = _held(slow)
    assert fast.memory.sparse_bytes == slow.memory.sparse_bytes == sum(_held(slow))
    for x in _batches(name, 5):
        batch = len(x)
        y_fast, y_slow = fast(x), slow(x)
        assert np.abs(y_fast - y_slow).max() <= 1e-5 * max(1.0, np.abs(y_slow).max())
        entries, pointers = _held(fast)
        assert entries == one_copy, (batch, entries, one_copy)
        assert fast.memory.sparse_bytes == entries + pointers
        assert fast.packs.nbytes > 0
    assert fast.memory.total_bytes == fast.memory.sparse_bytes + fast.memory.dense_bytes
    assert slow.memory.sparse_bytes == sum(_held(slow))  # scipy: unchanged by running


@needs_spk
def test_spk_runtime_wide_weight_holds_the_layouts_it_ran(tmp_path: Path) -> None:
    # a weight wide enough that batch 1 (csr) and larger batches (column-blocked) pack it
    # differently: one packing while called at one kind of batch, both once called at both,
    # and memory counts exactly what is held
    torch.manual_seed(2)
    model = _zero_(nn.Sequential(nn.Linear(1024, 32)), 0.95)
    sonnx.export_onnx(model, tmp_path, example_input=torch.randn(2, 1024))
    fast, slow = _spk_and_scipy(tmp_path / sonnx.COMPACT_FILE)
    x = np.random.default_rng(6).standard_normal((8, 1024)).astype(np.float32)
    np.testing.assert_allclose(fast(x), slow(x), rtol=1e-5, atol=1e-5)
    assert [layout for _, layout in fast.packs.packed] == ["auto"] and not fast.weights
    one = fast.packs.nbytes
    entries, _ = _held(fast)
    assert entries == _held(slow)[0] and fast.memory.sparse_bytes == sum(_held(fast)) == one
    np.testing.assert_allclose(fast(x[:1]), slow(x[:1]), rtol=1e-5, atol=1e-5)
    assert sorted(layout for _, layout in fast.packs.packed) == ["auto", "csr"]
    assert _held(fast)[0] == 2 * entries  # two layouts, both run
    assert fast.memory.sparse_bytes == sum(_held(fast)) == fast.packs.nbytes > one


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


class DepthwiseNet(nn.Module):
    """mobilenet's pattern: a dense depthwise conv (stride 2, multiplier 2) between sparse
    pointwise convs, and a rectangular depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(3, 8, 1)
        self.dw1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)
        self.dw2 = nn.Conv2d(16, 16, (3, 5), padding=(1, 2), groups=16, bias=False)
        self.pw2 = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.dw1(torch.relu(self.pw1(x))))
        return self.pw2(torch.relu(self.dw2(y)))


@needs_spk
def test_spk_runtime_runs_dense_depthwise_convs_on_the_stencil_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(2)
    model = DepthwiseNet().eval()
    with torch.no_grad():  # only the pointwise convs are sparse: the depthwise ones stay dense
        for m in (model.pw1, model.pw2):
            m.weight[torch.rand(m.weight.shape) < 0.7] = 0.0
    sonnx.export_onnx(model, tmp_path, example_input=torch.randn(2, 3, 15, 14))
    calls = []
    real = spk.depthwise_conv2d
    monkeypatch.setattr(
        spk, "depthwise_conv2d", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k)
    )
    fast, slow = _spk_and_scipy(tmp_path / sonnx.COMPACT_FILE)
    x = np.random.default_rng(5).standard_normal((3, 3, 15, 14)).astype(np.float32)
    with torch.no_grad():
        ref = model.double()(torch.from_numpy(x).double()).numpy()
        t32 = model.float()(torch.from_numpy(x)).numpy()
    bound = 4 * np.abs(t32 - ref).max() + 1e-6 * np.abs(ref).max()
    y_slow = slow(x)
    assert not calls, "kernels='scipy' runs no C kernel"
    y_fast = fast(x)
    assert sorted(calls) == [(16, 1, 3, 3), (16, 1, 3, 5)], calls
    assert np.abs(y_fast - ref).max() <= bound and np.abs(y_slow - ref).max() <= bound


@needs_spk
def test_dense_depthwise_conv_with_asymmetric_onnx_pads() -> None:
    from sparsify.runtime import sparse_ops

    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 9, 8)).astype(np.float32)
    w = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    kw = {"group": 5, "pads": [1, 0, 0, 2], "strides": [2, 1]}  # [top, left, bottom, right]
    im2col = sparse_ops.conv_dense(x, w, b, **kw)
    stencil = sparse_ops.conv_dense(x, w, b, depthwise_spk=True, **kw)
    ref = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(x), (0, 2, 1, 0)),
        torch.from_numpy(w), torch.from_numpy(b), (2, 1), groups=5,
    ).numpy()  # fmt: skip
    assert stencil.shape == ref.shape == (2, 5, 4, 8)
    np.testing.assert_allclose(stencil, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(im2col, ref, rtol=1e-5, atol=1e-5)
