"""The torch-free ONNX runtime: runs the compact ONNX of zoo, torchvision and transformer models
like onnxruntime does (within fp32 noise of a float64 torch reference), holds the sparse weights
as CSR, refuses hostile files with one line, and runs where torch cannot be imported.

Tolerance: fp32 arithmetic in any order is within a few ulps of the float64 result, so both
runtimes are held to ``max|y - ref64| <= 4 * max|torch32 - ref64| + 1e-6 * max|ref64|``, i.e.
at most 4x torch's own float32 error; the relative floor covers outputs where torch32 happens
to be nearly exact (randomly initialised nets can have tiny logits, so it is not absolute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import run_runtime_without_torch
from torch import nn

import sparsify.runtime
from sparsify.errors import SparsifyError
from sparsify.export import onnx as sonnx
from sparsify.export.onnx.integrity import load_onnx as load_onnx_torch_free
from sparsify.pipeline.zoo import build_model
from sparsify.runtime import OnnxModel, load_onnx_model, sparse_ops

ROOT = Path(__file__).resolve().parents[1]


def zero_(model: nn.Module, fraction: float = 0.9, seed: int = 0) -> nn.Module:
    """Zero ``fraction`` of every Conv/Linear (and attention in_proj) weight; real BatchNorm
    running statistics from two train-mode passes would need data, so draw them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            weights = []
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                weights.append(m.weight)
            if isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
                weights.append(m.in_proj_weight)
            for w in weights:
                if not w.any():  # zero-initialised (ViT's head): the output would be constant
                    w.normal_(0.0, 0.1, generator=g)
                w[torch.rand(w.shape, generator=g) < fraction] = 0.0
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
    return model.eval()


class Encoder(nn.Module):
    """nn.TransformerEncoder (2 layers, d_model 32, batch_first) + mean pool + Linear head."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 32) -> (B, 5)
        return self.head(self.encoder(x).mean(dim=1))


def _tiny_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )  # fmt: skip


CASES = {
    "lecture_convnet": (lambda: build_model("lecture_convnet"), (1, 28, 28)),
    "lenet5": (lambda: build_model("lenet5"), (1, 28, 28)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32)),
    "mobilenet_v3_small": (
        lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
        (3, 64, 64),
    ),
    "tiny_vit": (_tiny_vit, (3, 32, 32)),
    "transformer_encoder": (Encoder, (7, 32)),
}


def _errors(model: nn.Module, x: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """max |y - ref64| for each output and for torch's own float32 forward ("noise")."""
    with torch.no_grad():
        ref = model.double()(torch.from_numpy(x).double()).numpy()
        model.float()
        t32 = model(torch.from_numpy(x)).numpy()
    out = {"noise": float(np.abs(t32 - ref).max()), "scale": float(np.abs(ref).max())}
    # a dead net (every input gives the same output) would make the comparison vacuous
    out["input_dependent"] = float(len(ref) < 2 or not np.array_equal(ref[0], ref[1]))
    for name, y in outputs.items():
        assert y.shape == ref.shape and y.dtype == np.float32, name
        out[name] = float(np.abs(y.astype(np.float64) - ref).max())
    return out


def _bound(err: dict[str, float]) -> float:
    return 4 * err["noise"] + 1e-6 * err["scale"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path]]:
    """Every case exported once, from a batch-2 example."""
    out = {}
    for name, (build, shape) in CASES.items():
        torch.manual_seed(0)
        model = zero_(build())
        folder = tmp_path_factory.mktemp(name)
        sonnx.export_onnx(model, folder, example_input=torch.randn(2, *shape))
        out[name] = (model, folder)
    return out


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_runtime_matches_onnxruntime_within_fp32_noise(
    exported: dict[str, tuple[nn.Module, Path]], name: str, batch: int
) -> None:
    model, folder = exported[name]
    x = np.random.default_rng(batch).standard_normal((batch, *CASES[name][1])).astype(np.float32)
    ours = sparsify.runtime.load(folder / sonnx.COMPACT_FILE)
    assert isinstance(ours, OnnxModel)
    session = sonnx.ort_session(folder / sonnx.COMPACT_FILE)
    outputs = {"runtime": ours(x), "onnxruntime": session.run(None, {"input": x})[0]}
    err = _errors(model, x, outputs)
    assert err["input_dependent"], err
    bound = _bound(err)
    assert err["runtime"] <= bound, err
    assert err["onnxruntime"] <= bound, err
    # the same numbers within fp32 noise, not merely both close to the reference
    np.testing.assert_allclose(outputs["runtime"], outputs["onnxruntime"], rtol=0, atol=bound * 2)


@pytest.mark.parametrize("name", list(CASES))
def test_runtime_holds_sparse_weights_as_csr(
    exported: dict[str, tuple[nn.Module, Path]], name: str
) -> None:
    model, folder = exported[name]
    ours = load_onnx_model(folder / sonnx.COMPACT_FILE)
    mem = ours.memory
    dense_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert mem.sparse_weights > 0 and not mem.densified
    assert all(w.format == "csr" for w in ours.weights.values())
    # 90% zeros: CSR holds ~0.8 bytes per dense entry (4 value + 4 index bytes at 10%)
    assert mem.sparse_bytes < 0.35 * mem.sparse_dense_bytes
    assert mem.total_bytes < 0.5 * dense_bytes, (mem, dense_bytes)
    # the dense export of the same model runs with the same sparse kernels
    plain = load_onnx_model(folder / sonnx.DENSE_FILE)
    assert plain.memory.sparse_weights == mem.sparse_weights
    assert plain.memory.total_bytes < 0.5 * dense_bytes


class GroupedNet(nn.Module):
    """Plain, grouped and depthwise convs, a ceil-mode MaxPool, an AveragePool and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=2)
        self.c3 = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 16, 16)
        y = torch.relu(self.c1(x))
        y = self.avg(torch.relu(self.c3(torch.relu(self.c2(y)))))  # (B, 16, 8, 8)
        return self.fc(self.pool(y).flatten(1))  # pool: (B, 16, 4, 4) with ceil_mode


@pytest.mark.parametrize(
    "scheme", ["gaps_u8", "gaps_u16", "bitmask", "rows_cols+gaps_u8", "rows_cols+bitmask"]
)
def test_every_compact_scheme_decodes_sparse(tmp_path: Path, scheme: str) -> None:
    torch.manual_seed(3)
    model = zero_(GroupedNet(), 0.8)
    with torch.no_grad():  # dead output units and inputs for the rows_cols schemes
        model.fc.weight[:3] = 0.0
        model.fc.weight[:, :40] = 0.0
        model.c1.weight[5] = 0.0
    x = torch.randn(2, 3, 16, 16)
    dense = sonnx.export_dense_model(model, x)
    small, choices = sonnx.compact_model(dense, schemes=(scheme,))
    assert any(c.scheme == scheme for c in choices)
    path = sonnx.save_onnx(small, tmp_path / "m.onnx")
    ours = load_onnx_model(path)
    assert ours.memory.sparse_weights == 4 and not ours.memory.densified
    xs = x.numpy()
    err = _errors(model, xs, {"runtime": ours(xs)})
    assert err["runtime"] <= _bound(err), err
    ref = sonnx.ort_session(path).run(None, {"input": xs})[0]
    np.testing.assert_allclose(ours(xs), ref, rtol=0, atol=2 * _bound(err))


def test_all_zero_weight_and_dense_weight(tmp_path: Path) -> None:
    """A weight that is all zeros (one ConstantOfShape) and one kept dense both run."""
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.normal_()
    sonnx.export_onnx(model, tmp_path, example_input=torch.randn(2, 8))
    ours = load_onnx_model(tmp_path / sonnx.COMPACT_FILE)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), ref, rtol=0, atol=1e-6)
    assert ours.memory.sparse_weights == 1  # the all-zero one; the dense one stays dense


def test_wrong_input_shape_is_one_line(exported: dict[str, tuple[nn.Module, Path]]) -> None:
    _, folder = exported["resnet18"]
    ours = load_onnx_model(folder / sonnx.COMPACT_FILE)
    with pytest.raises(SparsifyError, match=r"exported for \(batch, 3, 32, 32\)") as info:
        ours(np.zeros((1, 3, 40, 40), np.float32))
    assert "\n" not in str(info.value)


def test_directory_dispatch(exported: dict[str, tuple[nn.Module, Path]], tmp_path: Path) -> None:
    """A folder with model.compact.onnx and no bundle loads the ONNX file."""
    _, folder = exported["lenet5"]
    assert isinstance(sparsify.runtime.load(folder), OnnxModel)
    with pytest.raises(SparsifyError):
        sparsify.runtime.load(tmp_path)  # empty folder: the bundle loader's error


def _hostile(folder: Path, tmp_path: Path) -> dict[str, Path]:
    data = (folder / sonnx.COMPACT_FILE).read_bytes()
    files = {}
    files["truncated"] = tmp_path / "truncated.onnx"
    files["truncated"].write_bytes(data[: len(data) // 2])
    model = onnx.load_from_string(data)
    for p in model.metadata_props:
        if p.key == "sparsify.sha256":
            p.value = "0" * 64
    files["wrong_sha"] = tmp_path / "wrong_sha.onnx"
    files["wrong_sha"].write_bytes(model.SerializeToString())
    files["pickle"] = tmp_path / "pickle.onnx"
    files["pickle"].write_bytes(b"\x80\x04K\x01.")
    model = onnx.load_from_string(data)
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.external_data.add(key="location", value="../../etc/passwd")
    files["escape"] = tmp_path / "escape.onnx"
    files["escape"].write_bytes(sonnx.stamp_metadata(model).SerializeToString())
    return files


def test_hostile_files_are_refused_with_one_line(
    exported: dict[str, tuple[nn.Module, Path]], tmp_path: Path
) -> None:
    _, folder = exported["lenet5"]
    expected = {
        "truncated": "truncated",
        "wrong_sha": "sha256 does not match",
        "pickle": "pickle",
        "escape": "refusing external data location",
    }
    for kind, path in _hostile(folder, tmp_path).items():
        with pytest.raises(SparsifyError) as info:
            sparsify.runtime.load(path)
        message = str(info.value)
        assert "\n" not in message and expected[kind] in message, (kind, message)
        # the torch-free loader says exactly what sparsify.export.onnx.load_onnx says
        with pytest.raises(SparsifyError) as theirs:
            sonnx.load_onnx(path)
        assert str(theirs.value) == message
        with pytest.raises(SparsifyError):
            load_onnx_torch_free(path)


def test_onnx_runtime_runs_where_torch_cannot_be_imported(
    exported: dict[str, tuple[nn.Module, Path]], tmp_path: Path
) -> None:
    model, folder = exported["transformer_encoder"]
    x = np.random.default_rng(5).standard_normal((3, 7, 32)).astype(np.float32)
    y = run_runtime_without_torch(folder / sonnx.COMPACT_FILE, x, tmp_path)
    err = _errors(model, x, {"runtime": y})
    assert err["runtime"] <= _bound(err), err


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "ceil", "include_pad"),
    [
        (3, 2, 1, True, True),
        (3, 2, 0, True, False),
        (2, 2, 0, False, True),
        (3, 1, 1, False, False),
    ],
)
def test_pooling_matches_torch(
    kernel: int, stride: int, padding: int, ceil: bool, include_pad: bool
) -> None:
    x = torch.randn(2, 3, 9, 10)
    pads = [padding] * 4
    got = sparse_ops.pool(
        x.numpy(), "avg", [kernel] * 2, ceil_mode=int(ceil), count_include_pad=int(include_pad),
        pads=pads, strides=[stride] * 2,
    )  # fmt: skip
    ref = F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil, count_include_pad=include_pad)
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-6)
    got = sparse_ops.pool(
        x.numpy(), "max", [kernel] * 2, ceil_mode=int(ceil), pads=pads, strides=[stride] * 2
    )
    ref = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
    np.testing.assert_array_equal(got, ref.numpy())
    got = sparse_ops.pool(  # on the kernels' stencil (ceil_mode: the numpy path again)
        x.numpy(), "max", [kernel] * 2, ceil_mode=int(ceil), pads=pads, strides=[stride] * 2,
        max_spk=True,
    )  # fmt: skip
    np.testing.assert_array_equal(got, ref.numpy())


@pytest.mark.parametrize(
    "kw",
    [
        dict(pads=[1, 0, 2, 1], strides=[2, 1]),  # unequal sides: padded first, as -inf
        dict(pads=[2, 2, 2, 2]),  # more than half the 3x3 kernel: padded first
        dict(auto_pad="SAME_UPPER", strides=[2, 2]),
        dict(dilations=[2, 1], pads=[1, 1, 1, 1]),
    ],
)
def test_max_pool_on_the_stencil_is_the_numpy_pool_bit_for_bit(kw: dict) -> None:
    x = torch.randn(2, 3, 9, 10).numpy()
    x[0, 1, 2, 3] = np.nan
    want = sparse_ops.pool(x, "max", [3, 3], **kw)
    np.testing.assert_array_equal(sparse_ops.pool(x, "max", [3, 3], max_spk=True, **kw), want)


@pytest.mark.parametrize(("groups", "stride", "dilation"), [(1, 1, 1), (2, 2, 1), (6, 1, 2)])
def test_conv_kernels_match_torch(groups: int, stride: int, dilation: int) -> None:
    """Dense and block-diagonal CSR Conv against torch (grouped, depthwise, strided, dilated)."""
    torch.manual_seed(groups)
    x, w, b = torch.randn(2, 6, 11, 9), torch.randn(12, 6 // groups, 3, 3), torch.randn(12)
    w[torch.rand(w.shape) < 0.7] = 0.0
    ref = F.conv2d(x, w, b, stride, 1, dilation, groups).numpy()
    geometry = {"pads": [1] * 4, "strides": [stride] * 2, "dilations": [dilation] * 2}
    dense = sparse_ops.conv_dense(x.numpy(), w.numpy(), b.numpy(), group=groups, **geometry)
    np.testing.assert_allclose(dense, ref, rtol=0, atol=1e-5)
    flat = w.numpy().reshape(12, -1)
    rows, cols = np.nonzero(flat)
    csr = sparse_ops.block_diagonal_csr(
        sparse_ops.to_csr(rows, cols, flat[rows, cols], flat.shape), groups
    )
    assert csr.nnz == np.count_nonzero(flat)
    got = sparse_ops.conv_sparse(x.numpy(), csr, [3, 3], b.numpy(), **geometry)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
