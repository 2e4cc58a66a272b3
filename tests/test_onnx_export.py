"""ONNX export: compact files are smaller, pass full_check and run in stock onnxruntime.

Every fidelity check runs a real onnxruntime CPU session and compares with the torch
model within 1e-5. Exports are slow (resnet18 ~15 s), so each architecture is exported
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
