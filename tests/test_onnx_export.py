"""ONNX export: compact files are smaller, pass full_check and run in stock onnxruntime.

Every fidelity check runs a real onnxruntime CPU session: the small models here are compared
with torch within 1e-5; the dynamic-shape tests state the bound honestly, against a float64
run of the model (``fidelity``: within fp32's own noise), and check compact == dense bit for
bit. Exports are slow (resnet18 ~15 s), so each architecture is exported
once per module; a density case then zeroes the same entries in the torch model and in
the exported initializers (the exporter keeps parameter names; BatchNorm folding scales
a Conv weight per channel, so zeroing the folded weight equals folding the zeroed one).
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.export import onnx as ox
from sparsify.pipeline.checkpoint import load_checkpoint, save_checkpoint
from sparsify.pipeline.data.mnist import load_mnist
from sparsify.pipeline.recipe import load_recipe
from sparsify.pipeline.zoo import build_model
from sparsify.probe import vm_rss

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("lecture_convnet", "lenet5", "torchvision:resnet18")
DENSITIES = (0.5, 0.1, 0.01)  # 50 %, 90 %, 99 % zeros
TOL = {"atol": 1e-5, "rtol": 1e-5}
DECODE_OPS = {"ScatterElements", "Gather", "Where", "CumSum", "BitShift", "ConstantOfShape"}


def _session(model: onnx.ModelProto | Path, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warnings would flood the test log
    options.intra_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    data = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto | Path, x: torch.Tensor) -> np.ndarray:
    return _session(model).run(None, {ox.INPUT_NAME: x.numpy()})[0]


def _zero_masks(model: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    """A random keep-mask with the given density for every weight of rank >= 2."""
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(p.shape, generator=gen) < density
        for name, p in model.named_parameters()
        if p.dim() >= 2
    }


def _apply(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.masked_fill_(~masks[name], 0.0)  # +0.0, as the trainer writes
    return model


def _apply_onnx(dense: onnx.ModelProto, masks: dict[str, torch.Tensor]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(dense)
    by_name = {t.name: t for t in out.graph.initializer}
    assert set(masks) <= set(by_name), "the exporter renamed parameters"
    for name, mask in masks.items():
        array = numpy_helper.to_array(by_name[name])
        by_name[name].CopyFrom(numpy_helper.from_array(np.where(mask.numpy(), array, 0.0), name))
    return out


def _inputs(in_channels: int, mnist: torch.Tensor) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [
        torch.randn(1, in_channels, 28, 28, generator=gen),
        torch.randn(5, in_channels, 28, 28, generator=gen),
        mnist[:1],
        mnist,
    ]


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> torch.Tensor:
    """16 real MNIST test images, normalised as training does: (16, 1, 28, 28)."""
    return load_mnist(mnist_dir, train_subset=1000, test_subset=16, download=False).test_x


@pytest.fixture(scope="module", params=ARCHS)
def exported(request: pytest.FixtureRequest) -> tuple[nn.Module, onnx.ModelProto]:
    """(model, its dense ONNX export), exported once per architecture."""
    torch.manual_seed(0)
    model = build_model(request.param).eval()
    return model, ox.export_dense_model(model, torch.zeros(1, 1, 28, 28))


@pytest.mark.parametrize("density", DENSITIES)
def test_compact_matches_torch_and_is_small(
    exported: tuple[nn.Module, onnx.ModelProto], density: float, mnist: torch.Tensor
) -> None:
    base, dense_unmasked = exported
    masks = _zero_masks(base, density, seed=int(density * 1000))
    model = _apply(copy.deepcopy(base), masks)
    dense = _apply_onnx(dense_unmasked, masks)
    compact, choices = ox.compact_model(dense)
    onnx.checker.check_model(compact, full_check=True)

    session = _session(compact)
    with torch.no_grad():
        for x in _inputs(1, mnist):
            got = session.run(None, {ox.INPUT_NAME: x.numpy()})[0]
            torch.testing.assert_close(torch.from_numpy(got), model(x), **TOL)

    dense_bytes = dense.SerializeToString()
    compact_size = len(compact.SerializeToString())
    assert compact_size < len(dense_bytes)
    if density == 0.1:  # the bar at 90 % zeros (tools/onnx_sizes.py measures 99 %)
        assert compact_size < len(gzip.compress(dense_bytes))
    # every weight with zeros got an encoding; only the dense-valued tensors stayed dense
    by_name = {c.name: c for c in choices}
    for name in masks:
        assert by_name[name].scheme != "dense", name
        assert by_name[name].nnz == int(masks[name].sum())


def test_every_scheme_decodes_bit_exactly_and_is_folded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    masks = _zero_masks(model, 0.1, seed=3)
    masks["fc1.weight"][:100] = False  # dead output units and dead inputs,
    masks["conv2.weight"][:, :5] = False  # so the rows_cols schemes have work to do
    _apply(model, masks)
    dense = ox.export_dense_model(model, torch.zeros(2, 1, 28, 28))
    x = torch.randn(3, 1, 28, 28)
    want = _run(dense, x)
    for scheme in ox.COMPACT_SCHEMES:
        compact, choices = ox.compact_model(dense, schemes=(scheme,))
        onnx.checker.check_model(compact, full_check=True)
        assert {c.scheme for c in choices if c.name in masks} == {scheme}
        optimized = tmp_path / f"{scheme}.onnx"
        got = _session(compact, optimized).run(None, {ox.INPUT_NAME: x.numpy()})[0]
        # the same weights, bit for bit, so the same kernels give the same numbers
        np.testing.assert_array_equal(got, want, err_msg=scheme)
        # onnxruntime folded the decode subgraph at load: nothing is decoded per run
        ops = {n.op_type for n in onnx.load(str(optimized)).graph.node}
        assert not ops & DECODE_OPS, (scheme, ops & DECODE_OPS)


def test_layers_at_zero_and_full_sparsity(mnist: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_model("lecture_convnet").eval()
    with torch.no_grad():
        model.fc2.weight.zero_()  # 100 % zeros
        model.conv2.weight.masked_fill_(torch.rand(model.conv2.weight.shape) < 0.9, 0.0)
        model.conv1.weight.add_(1e-3 * torch.sign(model.conv1.weight) + 1e-3)  # no zeros
    assert int((model.conv1.weight == 0).sum()) == 0
    compact, choices = ox.compact_model(ox.export_dense_model(model, torch.zeros(1, 1, 28, 28)))
    onnx.checker.check_model(compact, full_check=True)
    schemes = {c.name: c.scheme for c in choices}
    assert schemes["fc2.weight"] == "zeros"
    assert schemes["conv1.weight"] == "dense"
    assert schemes["conv2.weight"] != "dense"
    with torch.no_grad():
        for x in _inputs(1, mnist):
            torch.testing.assert_close(torch.from_numpy(_run(compact, x)), model(x), **TOL)


def test_negative_zero_from_batchnorm_folding_is_not_stored() -> None:
    # gamma < 0 turns +0.0 weights into -0.0 when the exporter folds BatchNorm into Conv
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 26 * 26, 10),
    ).eval()
    with torch.no_grad():
        model[0].weight.masked_fill_(torch.rand(model[0].weight.shape) < 0.9, 0.0)
        model[1].weight.fill_(-2.0)
        model[1].running_var.fill_(3.0)
        model[4].weight.masked_fill_(torch.rand(model[4].weight.shape) < 0.99, 0.0)
    dense = ox.export_dense_model(model, torch.zeros(1, 1, 28, 28))
    folded = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}
    conv_name = next(n for n, a in folded.items() if a.ndim == 4)
    assert np.signbit(folded[conv_name][folded[conv_name] == 0]).any(), "no -0.0 to test"
    compact, choices = ox.compact_model(dense)
    onnx.checker.check_model(compact, full_check=True)
    conv = next(c for c in choices if c.name == conv_name)
    assert conv.nnz == int((model[0].weight != 0).sum())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(_run(compact, x)), model(x), **TOL)


def _checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("lecture_convnet")
    _apply(model, _zero_masks(model, 0.1, seed=5))
    out = tmp_path / "ckpt"
    save_checkpoint(out, model, load_recipe(ROOT / "recipes" / "quickstart.yaml"))
    return out


def test_export_onnx_writes_checked_files(tmp_path: Path, mnist: torch.Tensor) -> None:
    ckpt = load_checkpoint(_checkpoint(tmp_path))
    model = ckpt.build_model()
    out = tmp_path / "onnx"
    written = ox.export_onnx(
        model, out, ckpt.example_input(), sparse_initializer=True, provenance=ckpt.provenance()
    )
    assert set(written) == {ox.DENSE_FILE, ox.COMPACT_FILE, ox.SPARSE_INIT_FILE}
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    for name, size in written.items():
        assert (out / name).stat().st_size == size
    assert written[ox.COMPACT_FILE] < written[ox.SPARSE_INIT_FILE] < written[ox.DENSE_FILE]

    for name in written:  # stamped: the verifying loader accepts every file
        props = {p.key: p.value for p in ox.load_onnx(out / name).metadata_props}
        assert props["sparsify.format_version"] == ox.ONNX_FORMAT_VERSION
        source = json.loads(props[ox.SOURCE_KEY])  # provenance, under the sha256
        assert source["checkpoint_sha256"] == ckpt.metadata["sha256"]
        assert source["input_shape"] == [1, 28, 28]
    for name in (ox.DENSE_FILE, ox.COMPACT_FILE):
        loaded = onnx.load(str(out / name))
        assert not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in loaded.graph.initializer
        )
        assert [(o.domain, o.version) for o in loaded.opset_import] == [("", ox.OPSET)]
        onnx.checker.check_model(loaded, full_check=True)
    # the sparse_initializer form: plain check passes, full_check does not (documented)
    sparse = onnx.load(str(out / ox.SPARSE_INIT_FILE))
    assert len(sparse.graph.sparse_initializer) == 4
    onnx.checker.check_model(sparse)
    with pytest.raises(onnx.shape_inference.InferenceError, match="sparse_tensor"):
        onnx.checker.check_model(sparse, full_check=True)
    with torch.no_grad():
        for name in written:
            for x in _inputs(1, mnist):
                got = torch.from_numpy(_run(out / name, x))
                torch.testing.assert_close(got, model(x), **TOL, msg=name)

    # into an existing folder: other files survive, ours are replaced
    (out / "bundle.json").write_text("{}")
    again = ox.export_onnx(model, out, input_shape=(1, 28, 28), compact=False)
    assert set(again) == {ox.DENSE_FILE}
    assert (out / "bundle.json").read_text() == "{}"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left over


def test_resident_memory_is_measured(tmp_path: Path) -> None:
    ckpt = load_checkpoint(_checkpoint(tmp_path))
    written = ox.export_onnx(ckpt.build_model(), tmp_path / "onnx", ckpt.example_input())
    dense = ox.ort_resident_memory(tmp_path / "onnx" / ox.DENSE_FILE)
    compact = ox.ort_resident_memory(tmp_path / "onnx" / ox.COMPACT_FILE)
    for rss in (dense, compact):
        assert rss["rss_after_session"] > rss["rss_before_session"] > 0
        assert rss["peak_rss"] >= rss["rss_after_session"]
    assert written[ox.COMPACT_FILE] < written[ox.DENSE_FILE]
    with pytest.raises(SparsifyError, match="does not exist"):
        ox.ort_resident_memory(tmp_path / "missing.onnx")


@pytest.mark.parametrize(
    "make",
    [nn.Sequential, nn.ReLU, lambda: nn.Linear(0, 0)],
    ids=["empty", "no-parameters", "zero-size"],
)
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_models_without_weights_are_refused(make: Callable[[], nn.Module], tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="no parameters"):
        ox.export_onnx(make(), tmp_path / "out", example_input=torch.zeros(1, 1, 28, 28))
    assert not (tmp_path / "out").exists()


class _Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # (B, 1, 28, 28) @ (784, 10): shapes do not match


def test_failed_export_leaves_no_output(tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="could not export"):
        ox.export_onnx(_Broken(), tmp_path / "out", example_input=torch.zeros(1, 1, 28, 28))
    assert list(tmp_path.iterdir()) == []


def test_resident_memory_is_the_childs_own_peak(tmp_path: Path) -> None:
    """ru_maxrss carries over from the forking parent across exec: a child of a big parent
    reported the parent's size. The child's VmHWM is its own."""
    model = nn.Sequential(nn.Linear(64, 32))
    ox.export_onnx(model, tmp_path / "onnx", compact=False)
    ballast = np.ones(600 * 2**20 // 8)  # 600 MB resident in this (the parent) process
    parent = vm_rss()
    assert parent > 600 * 2**20
    rss = ox.ort_resident_memory(tmp_path / "onnx" / ox.DENSE_FILE)
    assert 0 < rss["peak_rss"] < parent - 400 * 2**20, (rss, parent)
    assert rss["peak_rss"] >= rss["rss_after_session"]
    del ballast


def test_nothing_guesses_an_image_shape(tmp_path: Path) -> None:
    """Only a plain Linear first determines the input, (1, in_features); images (a Flatten
    or a Conv first) could be any size: refused with the fix, and input_shape exports them."""
    guess = lambda m: tuple(ox.default_example_input(m).shape)  # noqa: E731
    assert guess(nn.Sequential(nn.Linear(4096, 4096))) == (1, 4096)
    assert guess(nn.Sequential(nn.Linear(784, 10))) == (1, 784)
    for model in (
        build_model("lenet300_100"),
        build_model("lecture_convnet", in_channels=3),
        nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(4, 2)),
        nn.Sequential(nn.PReLU()),
    ):
        with pytest.raises(SparsifyError, match="pass example_input=.* or input_shape="):
            guess(model)
    convnet = build_model("lecture_convnet", in_channels=3).eval()
    with pytest.raises(SparsifyError, match="--input-shape"):
        ox.export_onnx(convnet, tmp_path / "img")
    ox.export_onnx(convnet, tmp_path / "img", input_shape=(3, 28, 28), compact=False)
    dense = ox.load_onnx(tmp_path / "img" / ox.DENSE_FILE)
    x = torch.randn(2, 3, 28, 28)
    np.testing.assert_allclose(_run(dense, x), convnet(x).detach().numpy(), **TOL)
    model = nn.Sequential(nn.Linear(64, 32)).eval()
    written = ox.export_onnx(model, tmp_path / "out", compact=False)  # used to guess 1x1x28x28
    assert ox.DENSE_FILE in written
    dense = ox.load_onnx(tmp_path / "out" / ox.DENSE_FILE)
    x = torch.randn(3, 64)
    np.testing.assert_allclose(_run(dense, x), model(x).detach().numpy(), **TOL)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="needs an nn.Module"):
        ox.export_onnx(42, tmp_path / "out")
    with pytest.raises(
        SparsifyError, match="needs an nn.Module"
    ):  # a checkpoint is resolved by the caller
        ox.export_onnx(tmp_path / "no-such-checkpoint", tmp_path / "out")
    with pytest.raises(SparsifyError, match="input_shape must be"):
        ox.export_onnx(nn.Linear(2, 2), tmp_path / "out", input_shape=(0, 2))
    dense = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    with pytest.raises(SparsifyError, match="'schemes' parameter"):
        ox.compact_model(dense, schemes=("gzip",))
    onnx.helper.set_model_props(dense, {"sparsify.compact": "{}"})
    with pytest.raises(SparsifyError, match="already compact"):
        ox.compact_model(dense)


# --- shapes declared, never guessed; errors that say why; fidelity against fp64 -----------


class _Encoder(nn.Module):
    """A batch-first nn.TransformerEncoder classifier: (B, S, 32) -> (B, 5)."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, 32)
        return self.head(self.encoder(x).mean(1))


def _pool_convnet() -> nn.Module:
    """Conv-BN-ReLU x2, global average pool, Linear: any H and W >= 3 (BN with real stats)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # running statistics that are not 0 and 1
    return _apply(model.eval(), _zero_masks(model, 0.1, seed=7))


def _input_dims(path: Path) -> list[str | int]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def _check_runs(model: nn.Module, out: Path, shapes: list[tuple[int, ...]]) -> None:
    """At every shape: compact == dense bit for bit in onnxruntime, and both within fp32's
    own noise of a float64 run of the model (the bound README states)."""
    dense, compact = _session(out / ox.DENSE_FILE), _session(out / ox.COMPACT_FILE)
    gen = torch.Generator().manual_seed(2)
    for shape in shapes:
        x = torch.randn(shape, generator=gen)
        got = dense.run(None, {ox.INPUT_NAME: x.numpy()})[0]
        np.testing.assert_array_equal(compact.run(None, {ox.INPUT_NAME: x.numpy()})[0], got)
        fid = ox.fidelity(model, x, got)
        assert fid.ok, (shape, str(fid))


def test_transformer_from_a_batch_1_example_takes_any_batch_and_sequence(tmp_path: Path) -> None:
    """torch.export fixes a dim it traces at size 1: the batch used to be fixed at 1."""
    torch.manual_seed(0)
    model = _Encoder().eval()
    _apply(model, _zero_masks(model, 0.1, seed=4))
    ox.export_onnx(model, tmp_path / "b", torch.zeros(1, 16, 32), compact=True)
    assert _input_dims(tmp_path / "b" / ox.DENSE_FILE) == ["batch", 16, 32]
    _check_runs(model, tmp_path / "b", [(1, 16, 32), (4, 16, 32)])

    ox.export_onnx(model, tmp_path / "s", torch.zeros(1, 16, 32), dynamic="sequence")
    assert _input_dims(tmp_path / "s" / ox.COMPACT_FILE) == ["batch", "sequence", 32]
    _check_runs(model, tmp_path / "s", [(1, 16, 32), (4, 7, 32), (1, 40, 32)])
    from sparsify.runtime import load  # the torch-free runtime: another batch and length too

    x = torch.randn(3, 9, 32)
    got = load(tmp_path / "s" / ox.COMPACT_FILE)(x.numpy())
    assert ox.fidelity(model, x, got).ok


def test_convnet_height_and_width_on_request(tmp_path: Path) -> None:
    model = _pool_convnet()
    ox.export_onnx(model, tmp_path / "fixed", input_shape=(3, 32, 32))
    assert _input_dims(tmp_path / "fixed" / ox.DENSE_FILE) == ["batch", 3, 32, 32]
    ox.export_onnx(model, tmp_path / "hw", input_shape=(3, 32, 32), dynamic=["height", 3])
    assert _input_dims(tmp_path / "hw" / ox.DENSE_FILE) == ["batch", 3, "height", "width"]
    _check_runs(model, tmp_path / "hw", [(1, 3, 32, 32), (4, 3, 48, 40), (2, 3, 17, 64)])
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="index: 2"):
        _run(tmp_path / "fixed" / ox.DENSE_FILE, torch.zeros(1, 3, 48, 32))


class _FixedWidth(nn.Module):
    """Runs at any width, but its code takes a branch on width == 28."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        x = x.mean((1, 2))
        return self.fc(x[:, :4] if x.shape[-1] == 28 else x[:, -4:])


def test_a_dimension_the_model_fixes_is_refused_in_one_line(tmp_path: Path) -> None:
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    cases = [  # (model, input, dynamic, what the one line must say)
        (flat, (1, 1, 28, 28), "height,width", r"dynamic height: at height 56 .*mat1 and mat2"),
        (_FixedWidth(), (2, 1, 8, 28), "width", r"fixes width at 28 \(torch.export"),
        (flat, (1, 1, 28, 28), "sequence", r"unknown dynamic dimension 'sequence'.*height, width"),
        (flat, (1, 1, 28, 28), [7], r"not an axis .* \[1, 1, 28, 28\]"),
    ]
    for model, shape, dynamic, message in cases:
        with pytest.raises(SparsifyError, match=message) as info:
            ox.export_onnx(model, tmp_path / "out", torch.zeros(shape), dynamic=dynamic)
        assert "\n" not in str(info.value)
        if isinstance(dynamic, str) and dynamic != "sequence":  # a real dim: the fix is named
            assert f"keep {dynamic.split(',')[0]} fixed" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert ox.dynamic_axes((2, 3, 8, 8), "2, width") == {0: "batch", 2: "height", 3: "width"}
    assert ox.dynamic_axes((2, 16, 64), (1,)) == {0: "batch", 1: "sequence"}
    assert ox.dynamic_axes((2, 5), None) == {0: "batch"}


class _BatchOfOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(1, -1))  # only batch 1 fits


def test_export_errors_say_why_in_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    import torchvision

    squeezenet = torchvision.models.squeezenet1_0().eval()
    with pytest.raises(SparsifyError) as info:
        ox.export_dense_model(squeezenet, torch.zeros(1, 3, 16, 16))
    text = str(info.value)
    assert "\n" not in text and "\x1b" not in text, text
    assert "Calculated output size: (512x0x0)" in text and "--input-shape" in text, text
    assert info.value.__cause__ is None  # the one line is the whole story
    with pytest.raises(SparsifyError, match=r"dynamic batch: at batch 2 .*x.flatten\(1\)"):
        ox.export_dense_model(_BatchOfOne(), torch.zeros(1, 8))

    class DataDependent(nn.Module):  # runs in torch, cannot be traced: a branch on values
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(SparsifyError, match="torch.export failed: ") as info:
        ox.export_dense_model(DataDependent(), torch.ones(2, 4))
    text = str(info.value)
    assert "\n" not in text and "\x1b" not in text and "data-dependent" in text.lower(), text
    out, err = capfd.readouterr()  # torch's log spam and warnings are silenced
    assert out == "" and err == "", (out[-500:], err[-500:])
    with pytest.raises(SparsifyError) as info:  # unless debugging: torch's error chained
        ox.export_dense_model(squeezenet, torch.zeros(1, 3, 16, 16), debug=True)
    assert isinstance(info.value.__cause__, RuntimeError)

    # the cause is the innermost message that is not an exporter wrapper, ANSI stripped
    try:
        try:
            raise ValueError("\x1b[1mthe real cause\x1b[0m\nmore detail")
        except ValueError as inner:
            raise RuntimeError(
                "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m"
            ) from inner
    except RuntimeError as exc:
        assert ox.export_error_cause(exc) == "the real cause"


def test_fidelity_is_measured_against_float64() -> None:
    """The bound is fp32's own error on the input (a fixed 1e-5 fails good deep nets)."""
    torch.manual_seed(0)
    deep = nn.Sequential(*[m for _ in range(24) for m in (nn.Linear(256, 256), nn.Tanh())])
    x = torch.randn(8, 256)
    with torch.no_grad():
        y32 = deep(x)
    same = ox.fidelity(deep, x, y32)
    assert same.error == same.noise > 0 and same.ok
    off = ox.fidelity(deep, x, y32 + 10 * same.bound)
    assert not off.ok and "TOO LARGE" in str(off)


class _ShuffleToOnePixel(nn.Module):
    """ShuffleNet's channel shuffle after a stride that leaves 1x1 at a 4x4 input: torch.export
    keeps height symbolic but bounds it (the 1 is specialized), so the graph is wrong above."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 4, stride=4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(x.mean((2, 3)))


def test_a_dimension_torch_export_bounds_is_refused_not_baked_in(tmp_path: Path) -> None:
    model = _ShuffleToOnePixel().eval()
    with pytest.raises(SparsifyError, match=r"only allows height in \[\d+, 7\]") as info:
        ox.export_onnx(model, tmp_path / "small", torch.zeros(2, 1, 4, 4), dynamic="height,width")
    assert "\n" not in str(info.value) and not (tmp_path / "small").exists()
    # from an example where no derived size is 1 the dims stay free and the graph is right
    ox.export_onnx(model, tmp_path / "big", torch.zeros(2, 1, 8, 8), dynamic="height,width")
    _check_runs(model, tmp_path / "big", [(1, 1, 8, 8), (3, 1, 16, 12), (2, 1, 4, 4)])


class _ExportsSomethingElse(nn.Module):
    """A forward whose traced graph is not what eager torch runs (here by branching on
    ``torch.compiler.is_exporting()``; SwinV2 gets there by holding a size from the example):
    only running the exported graph at another size shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return 2 * y if torch.compiler.is_exporting() else y


def test_a_dynamic_graph_that_differs_from_torch_at_another_size_is_refused(
    tmp_path: Path,
) -> None:
    model = _ExportsSomethingElse().eval()
    with pytest.raises(
        SparsifyError, match=r"dynamic height, width: at height, width 32x32 "
    ) as info:
        ox.export_onnx(model, tmp_path / "hw", torch.randn(2, 1, 16, 16), dynamic="height,width")
    assert "keep height, width fixed" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "hw").exists()
    # the batch alone is not checked this way (nothing else is dynamic): it exports
    ox.export_onnx(model, tmp_path / "fixed", torch.randn(2, 1, 16, 16))
