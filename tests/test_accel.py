"""Sparse inference layers and the converter: same outputs as dense, honest decisions."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsify.accel import SparseConv2d, SparseLinear, sparsify_inference_
from sparsify.accel.layers import panel_width
from sparsify.bench.sources import impose_density_
from sparsify.errors import SparsifyError
from sparsify.pipeline.zoo import build_model


def _sparse(module: nn.Module, density: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    impose_density_(module, density)
    return module.eval()


@pytest.mark.parametrize("kernel", ["torch_csr", "scipy_csr", "dense_compact"])
@pytest.mark.parametrize("shape", [(1, 300), (64, 300), (4, 7, 300)])
def test_sparse_linear_matches_dense(kernel: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    lin = _sparse(nn.Linear(300, 120), 0.1)
    x = torch.randn(shape)
    with torch.inference_mode():
        torch.testing.assert_close(SparseLinear(lin, kernel)(x), lin(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["torch_csr", "scipy_csr", "dense_compact"])
@pytest.mark.parametrize(
    "conv_kw",
    [
        dict(kernel_size=5),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, dilation=2, bias=False),
    ],
)
def test_sparse_conv_matches_dense(kernel: str, conv_kw: dict) -> None:
    torch.manual_seed(2)
    conv = _sparse(nn.Conv2d(6, 16, **conv_kw), 0.2)
    x = torch.randn(3, 6, 17, 15)
    with torch.inference_mode():
        torch.testing.assert_close(SparseConv2d(conv, kernel)(x), conv(x), rtol=1e-5, atol=1e-5)


def test_panel_width_fits_the_cache_budget() -> None:
    # w * rhs_cols * 4 bytes <= 128 KiB, a power of two, at least 256, at most in_features
    assert panel_width(4096, 64) == 512
    assert panel_width(4096, 1) == 4096
    assert panel_width(4096, 256) == 256  # 128 would fit; narrower panels cost more than they save
    assert panel_width(300, 10_000) == 256
    assert panel_width(200, 10_000) == 200


@pytest.mark.parametrize("shape", [(1, 1000), (64, 1000), (4, 7, 1000)])
def test_panel_linear_matches_dense(shape: tuple[int, ...]) -> None:
    torch.manual_seed(4)
    lin = _sparse(nn.Linear(1000, 120), 0.1)
    s = SparseLinear(lin, "torch_csr_panels", rhs_cols=512)  # 256-column panels: 4 of them
    assert [p.shape[1] for p in s.panels] == [256, 256, 256, 232]
    x = torch.randn(shape)
    with torch.inference_mode():
        torch.testing.assert_close(s(x), lin(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.dense_weight(), lin.weight.detach())
    csr = SparseLinear(lin, "torch_csr")
    # the panels hold the same entries; only the per-panel row pointers are extra
    assert s.weight_nbytes() == csr.weight_nbytes() + 3 * (120 + 1) * 4


def test_panel_conv_matches_dense() -> None:
    torch.manual_seed(5)
    conv = _sparse(nn.Conv2d(40, 8, 3, padding=1), 0.2)  # 360 columns: panels of 256 + 104
    x = torch.randn(2, 40, 12, 12)
    s = SparseConv2d(conv, "torch_csr_panels", rhs_cols=2 * 144)
    assert len(s.panels) == 2
    with torch.inference_mode():
        torch.testing.assert_close(s(x), conv(x), rtol=1e-5, atol=1e-5)


def test_panels_need_rhs_cols() -> None:
    with pytest.raises(SparsifyError, match="rhs_cols"):
        SparseLinear(_sparse(nn.Linear(300, 10), 0.1), "torch_csr_panels")


@pytest.mark.parametrize(("batch", "want"), [(1, "torch_csr"), (64, "torch_csr_panels")])
def test_cost_model_uses_panels_only_when_they_split(batch: int, want: str) -> None:
    model = nn.Sequential(_sparse(nn.Linear(1024, 64), 0.02))
    ref = copy.deepcopy(model)
    x = torch.randn(batch, 1024)
    report = sparsify_inference_(model, x, mode="cost_model")
    assert report.layers[0].chosen == want
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_compact_drops_dead_units_exactly(bias: bool) -> None:
    torch.manual_seed(3)
    lin = nn.Linear(50, 40, bias=bias).eval()
    conv = nn.Conv2d(4, 12, 3, padding=1, bias=bias).eval()
    with torch.no_grad():
        lin.weight[::3] = 0  # dead output units
        lin.weight[:, 5:20] = 0  # inputs nobody reads
        conv.weight[1::2] = 0  # dead filters
    s_lin, s_conv = SparseLinear(lin, "dense_compact"), SparseConv2d(conv, "dense_compact")
    assert s_lin.weight_compact.shape == (26, 35) and s_conv.weight_compact.shape[0] == 6
    x, xc = torch.randn(8, 50), torch.randn(2, 4, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(s_lin(x), lin(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s_conv(xc), conv(xc), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_lin.dense_weight(), lin.weight.detach())
    torch.testing.assert_close(s_conv.dense_weight(), conv.weight.detach().reshape(12, -1))


def test_sparse_layer_holds_no_dense_weight() -> None:
    lin = _sparse(nn.Linear(256, 256), 0.05)
    s = SparseLinear(lin, "torch_csr")
    assert "weight" not in dict(s.named_parameters())
    assert s.weight_nbytes() < lin.weight.numel() * 4 * 0.2
    assert s.weight_csr.col_indices().dtype == torch.int32
    torch.testing.assert_close(s.dense_weight(), lin.weight.detach())


@pytest.mark.parametrize("name", ["lenet300_100", "lecture_convnet"])
def test_converter_same_outputs_under_inference_mode(name: str) -> None:
    model = _sparse(build_model(name), 0.03)
    ref = copy.deepcopy(model)
    x = torch.randn(32, 1, 28, 28)
    # margin -1 is refused; margin 0 with max_density 1 lets calibration decide every layer
    report = sparsify_inference_(model, x, threads=1, reps=3, max_density=1.0, margin=0.0)
    assert [d.name for d in report.layers] == [
        n for n, m in ref.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(model(x).argmax(1), ref(x).argmax(1))
    for d in report.layers:
        assert "dense" in d.times_s and d.reason
        kind = type(model.get_submodule(d.name)).__name__
        assert kind.startswith("Sparse") == (d.chosen != "dense")


def test_low_sparsity_stays_dense_by_calibration() -> None:
    # 10% zeros: CSR does ~2x the memory traffic of dense and no vectorised FMA; calibration
    # must see that and keep the layer dense.
    model = nn.Sequential(_sparse(nn.Linear(512, 512), 0.9))
    report = sparsify_inference_(model, torch.randn(64, 512), threads=1, reps=5, max_density=1.0)
    d = report.layers[0]
    assert d.chosen == "dense", report.summary()
    assert d.reason.startswith("kept dense: best sparse")
    assert d.times_s["dense"] < min(v for k, v in d.times_s.items() if k != "dense")
    assert isinstance(model[0], nn.Linear)


def test_dense_layers_skipped_untimed_with_reason() -> None:
    model = nn.Sequential(_sparse(nn.Linear(64, 64), 0.8))
    report = sparsify_inference_(model, torch.randn(8, 64))
    assert report.layers[0].chosen == "dense"
    assert "max_density" in report.layers[0].reason
    assert report.layers[0].times_s == {}


def test_cost_model_mode() -> None:
    model = nn.Sequential(
        _sparse(nn.Linear(128, 128), 0.02), nn.ReLU(), _sparse(nn.Linear(128, 10), 0.45)
    )
    ref = copy.deepcopy(model)
    report = sparsify_inference_(model, torch.randn(16, 128), mode="cost_model")
    assert [d.chosen for d in report.layers] == ["torch_csr", "dense"]
    assert all(d.times_s == {} for d in report.layers)
    x = torch.randn(16, 128)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_conv_without_example_input_stays_dense() -> None:
    model = _sparse(build_model("lecture_convnet"), 0.02)
    report = sparsify_inference_(model, mode="cost_model", batch_size=4)
    convs = [d for d in report.layers if d.kind == "Conv2d"]
    assert convs and all(d.chosen == "dense" and "unknown" in d.reason for d in convs)
    assert "layers sparse" in report.summary()
    assert report.to_dict()["layers"][0]["name"] == "conv1"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mode="fast"),
        dict(kernels=("cusparse",)),
        dict(margin=1.0),
        dict(max_density=2.0),
        dict(reps=0),
        dict(threads=0),
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(SparsifyError):
        sparsify_inference_(nn.Sequential(nn.Linear(4, 4)), **kwargs)
