"""Sparse inference layers and the converter: same outputs as dense, honest decisions."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import sparse_layer_case
from torch import nn
from torch.nn import functional as F

from sparsify import kernels as spk
from sparsify.accel import InferenceReport, SparseConv2d, SparseLinear, sparsify_inference_
from sparsify.accel.layers import KERNELS, DepthwiseConv2d, panel_width
from sparsify.bench.sources import impose_density_
from sparsify.errors import SparsifyError
from sparsify.pipeline.zoo import build_model


def _sparse(module: nn.Module, density: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    impose_density_(module, density)
    return module.eval()


needs_spk = pytest.mark.skipif(not spk.available(), reason="sparsify.kernels not compiled here")
SPK = [pytest.param(k, marks=needs_spk) for k in ("spk", "spk_csr")]
# what the cost model picks for a sparse Linear at more than one row per call
COST_CSR = "spk" if spk.available() else "torch_csr"
NO_SPK = ("torch_csr", "torch_csr_panels", "scipy_csr", "dense_compact")


@pytest.mark.parametrize("kernel", ["torch_csr", "scipy_csr", "dense_compact", *SPK])
@pytest.mark.parametrize("shape", [(1, 300), (64, 300), (4, 7, 300)])
def test_sparse_linear_matches_dense(kernel: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    lin = _sparse(nn.Linear(300, 120), 0.1)
    x = torch.randn(shape)
    with torch.inference_mode():
        torch.testing.assert_close(SparseLinear(lin, kernel)(x), lin(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["torch_csr", "scipy_csr", "dense_compact", *SPK])
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


@pytest.mark.parametrize("kernel", [*NO_SPK, *SPK])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_a_sparse_layer_follows_module_to(kernel: str, kind: str) -> None:
    # the stored weight is a plain attribute nn.Module would not convert; .double() raised
    # "expected scalar type Double but found Float" before SparseLinear/SparseConv2d._apply
    dense, x = sparse_layer_case(kind, seed=3)
    layer = (SparseLinear if kind == "linear" else SparseConv2d)(dense, kernel, rhs_cols=48)
    with torch.inference_mode():
        y = layer.double()(x.double())
        assert y.dtype == torch.float64
        torch.testing.assert_close(y, dense.double()(x.double()), rtol=1e-12, atol=1e-12)
        # a float32 input to a float64 layer raises, as nn.Linear does; the spk kernels ran
        # on the moved (float64) bias before the layer knew it was moved: 1e19-sized garbage
        with pytest.raises(RuntimeError):
            layer(x)
        y32 = layer.float()(x)
        assert y32.dtype == torch.float32
        torch.testing.assert_close(y32, dense.float()(x), rtol=1e-5, atol=1e-5)
    if kernel.startswith(("spk", "scipy")):  # back on its own kernel, no torch CSR copy kept
        assert layer.weight_csr is None
    copy.deepcopy(layer.share_memory())  # a torch CSR has no storage to share or copy as is
    if kernel == "dense_compact":  # index tensors follow the device, never the dtype
        layer.type(torch.float64)
        assert layer.rows.dtype == torch.int64


@needs_spk
def test_a_converted_model_moved_to_float64_never_runs_the_c_kernels() -> None:
    # depthwise stencil, fused pairs and spk convs kept their float32 plans after .double()
    torch.manual_seed(0)
    from torchvision.models import mobilenet_v2

    model = _sparse(mobilenet_v2(num_classes=10), 0.1)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        sparsify_inference_(model, x, reps=2)
        before = model(x)
        with pytest.raises(RuntimeError):
            model.double()(x)
        y64 = model(x.double())
        again = model.float()(x)
    assert float((y64 - before.double()).abs().max()) <= 1e-4 * float(before.abs().max())
    torch.testing.assert_close(again, before, rtol=0, atol=0)  # the same kernels again
    copy.deepcopy(model)


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
    # a layer this small goes sparse on the break-even tables alone (no per-call overhead)
    report = sparsify_inference_(model, x, mode="cost_model", kernels=NO_SPK, overhead_flops=0)
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


def test_low_sparsity_stays_dense() -> None:
    # 10% zeros: CSR does ~2x the memory traffic of dense and no vectorised FMA. By default
    # such a layer is not even timed; when it is (max_density=1.0), the choice must follow
    # the converter's own rule on its own samples (a timed unit test of which kernel wins
    # would be a benchmark: under load a disturbed dense sample can flip it).
    x = torch.randn(64, 512)
    model = nn.Sequential(_sparse(nn.Linear(512, 512), 0.9))
    d = sparsify_inference_(model, x, threads=1, reps=5).layers[0]
    assert d.chosen == "dense" and "> max_density 0.5" in d.reason, d.reason
    model = nn.Sequential(_sparse(nn.Linear(512, 512), 0.9))
    d = sparsify_inference_(model, x, threads=1, reps=5, max_density=1.0).layers[0]
    assert "dense" in d.times_s and len(d.times_s) > 1, d.times_s
    if d.chosen == "dense":  # lost the per-layer race, or won it and lost the whole-model one
        assert d.reason.startswith(
            ("kept dense: best sparse", "reverted to dense: the whole converted model ran")
        ), d.reason
    else:
        assert d.reason.startswith("calibrated:"), d.reason
        # the rule reads paired ratios, not the two medians (which a load spike can swap)
        assert d.speedup is not None and d.speedup > 1.0 / (1.0 - 0.05), d.speedup


@needs_spk
def test_a_dense_conv_is_still_timed_on_spk_which_does_no_im2col() -> None:
    # LeNet-5's conv1 at 10% zeros: above max_density, but the spk conv (no im2col) is timed
    # against torch's; the choice follows the converter's rule, and the output is dense's
    torch.manual_seed(3)
    model = nn.Sequential(_sparse(nn.Conv2d(1, 20, 5), 0.9)).eval()
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
    d = sparsify_inference_(model, x, threads=1, reps=5).layers[0]
    assert set(d.times_s) == {"dense", "spk"}, d.times_s
    assert d.reason.startswith("calibrated:" if d.chosen == "spk" else "kept dense: best"), d
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    lin = nn.Sequential(_sparse(nn.Linear(64, 64), 0.9))  # a Linear is not: CSR bytes decide
    assert sparsify_inference_(lin, torch.randn(8, 64)).layers[0].times_s == {}


@needs_spk
def test_calibration_times_spk_convs_with_and_without_the_batch_in_the_lanes() -> None:
    """At a batch of a full vector of images, a 3x3 conv on spk is timed both ways and keeps
    the faster (its reason says which, and the layer runs that way); a 1x1 conv and a batch
    below one vector have no choice (no note)."""
    vw = spk.info()["vector_width"]
    torch.manual_seed(4)
    model = nn.Sequential(
        _sparse(nn.Conv2d(16, 64, 3, padding=1), 0.05),
        nn.ReLU(),
        _sparse(nn.Conv2d(64, 16, 1), 0.1),
    ).eval()
    for batch, noted in ((vw, True), (vw - 1, False)):
        m = copy.deepcopy(model)
        x = torch.randn(batch, 16, 14, 12)
        with torch.no_grad():
            ref = m(x)
        rep = sparsify_inference_(m, x, threads=1, reps=3, kernels=("spk",))
        d3, d1 = rep.layers
        assert d3.chosen == "spk", rep.summary()  # 95% zeros, no im2col: far ahead of dense
        assert ("vector lanes" in d3.reason) is noted, d3.reason
        assert "vector lanes" not in d1.reason
        if noted:
            on = m[0].lanes_at(tuple(x.shape))
            assert d3.reason.endswith("faster than the other way)")
            assert ("with the batch" if on else "without the batch") in d3.reason
        with torch.inference_mode():
            torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


@needs_spk
def test_a_conv_layer_can_be_told_how_to_run_its_batch() -> None:
    vw = spk.info()["vector_width"]
    torch.manual_seed(5)
    conv = _sparse(nn.Conv2d(4, 8, 3, padding=1), 0.2).eval()
    layer = SparseConv2d(conv, "spk")
    x = torch.randn(vw + 1, 4, 9, 9)
    with torch.inference_mode():
        ref = conv(x)
        for lanes in (True, False, None):
            layer.use_lanes_(lanes)  # drops the plan cached for the old choice
            assert layer.lanes_at(tuple(x.shape)) is (lanes is not False)  # None: lanes_pay
            torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(SparsifyError, match="use_lanes_ takes None"):
        layer.use_lanes_("no")  # would read as True


@pytest.mark.parametrize("kernel", ["torch_csr", "torch_csr_panels", "dense_compact"])
def test_layers_built_in_inference_mode_still_train(kernel: str) -> None:
    # the converter builds layers while calibrating under inference_mode; their tensors must
    # still serve a forward that tracks gradients
    torch.manual_seed(0)
    lin, conv = _sparse(nn.Linear(16, 8), 0.2), _sparse(nn.Conv2d(4, 8, 3, groups=2), 0.2)
    with torch.inference_mode():
        slin = SparseLinear(lin, kernel=kernel, rhs_cols=4)
        sconv = (
            SparseConv2d(conv, kernel=kernel, rhs_cols=4 * 36)
            if kernel != "dense_compact"
            else None
        )
    for layer, ref, shape in ((slin, lin, (4, 16)), (sconv, conv, (4, 4, 8, 8))):
        if layer is None:
            continue
        x = torch.randn(shape, requires_grad=True)
        y = layer(x)
        y.sum().backward()
        x2 = x.detach().clone().requires_grad_(True)
        ref(x2).sum().backward()
        torch.testing.assert_close(y, ref(x2), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)


def test_dense_layers_skipped_untimed_with_reason() -> None:
    model = nn.Sequential(_sparse(nn.Linear(64, 64), 0.8))
    report = sparsify_inference_(model, torch.randn(8, 64))
    assert report.layers[0].chosen == "dense"
    assert "max_density" in report.layers[0].reason
    assert report.layers[0].times_s == {}


def test_cost_model_mode() -> None:
    model = nn.Sequential(
        _sparse(nn.Linear(128, 128), 0.02), nn.ReLU(), _sparse(nn.Linear(128, 10), 0.55)
    )
    ref = copy.deepcopy(model)
    # tiny layers: the break-even tables alone (see the overhead tests below); 0.55 is above
    # every break-even at 16 rows (spk's 0.5), let through max_density to be estimated
    report = sparsify_inference_(
        model, torch.randn(16, 128), mode="cost_model", overhead_flops=0, max_density=1.0
    )
    assert [d.chosen for d in report.layers] == [COST_CSR, "dense"]
    assert "> break-even" in report.layers[1].reason, report.layers[1]
    assert all(d.times_s == {} for d in report.layers)
    x = torch.randn(16, 128)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_conv_without_example_input_stays_dense() -> None:
    model = _sparse(build_model("lecture_convnet"), 0.02)
    report = sparsify_inference_(model, mode="cost_model", batch_size=4)
    convs = [d for d in report.layers if d.kind == "Conv2d"]
    assert convs and all(d.chosen == "dense" and "unknown" in d.reason for d in convs)
    assert "layers converted" in report.summary()
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


# --- the converter never breaks a model -----------------------------------------------------


def _zero_(model: nn.Module, fraction: float = 0.9, seed: int = 0) -> nn.Module:
    """Zero ``fraction`` of every Conv/Linear and attention in_proj weight at random (so
    the cost model finds layers to convert) and draw BatchNorm running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            ws = [m.weight] if isinstance(m, (nn.Linear, nn.Conv2d)) else []
            if isinstance(m, nn.MultiheadAttention):
                ws.append(m.in_proj_weight)
            for w in ws:
                w[torch.rand(w.shape, generator=g) < fraction] = 0.0
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


def _weight_layers(model: nn.Module) -> list[str]:
    """Every layer the report must list: Linear, any conv, MultiheadAttention."""
    kinds = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention)
    return [n for n, m in model.named_modules() if isinstance(m, kinds)]


def _assert_same_model(model: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    """Converted output == original within fp32 noise, under every grad mode torch's fast
    paths look at (inference_mode and no_grad take the fused transformer path, grad does not)."""
    with torch.no_grad():
        want = ref(x)
    for ctx in (torch.inference_mode, torch.no_grad, torch.enable_grad):
        with ctx():
            torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def _assert_reported(report: InferenceReport, model_before: nn.Module, model: nn.Module) -> None:
    assert [d.name for d in report.layers] == _weight_layers(model_before)
    for d in report.layers:
        assert d.reason and d.shape and d.zeros >= 0, d
        kind = type(model.get_submodule(d.name)).__name__
        converted = kind.startswith("Sparse") or kind == "DepthwiseConv2d"
        assert converted == (d.chosen != "dense"), (d, kind)
        assert d.name in report.summary()


class Encoder(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 32) or (T, B, 32)
        return self.head(self.encoder(x))


@pytest.mark.parametrize("example", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_survives_conversion(batch_first: bool, example: bool) -> None:
    # eval + no grad: batch_first=True takes torch's fused path, which reads linear1.weight
    # and out_proj.weight itself and never calls those modules; batch_first=False calls them
    torch.manual_seed(0)
    model = _zero_(Encoder(batch_first), 0.95)
    ref = copy.deepcopy(model)
    x = torch.randn(4, 7, 32)
    report = sparsify_inference_(
        model, x if example else None, mode="cost_model", batch_size=28, overhead_flops=0
    )
    _assert_same_model(model, ref, x)
    _assert_reported(report, ref, model)
    by_name = {d.name: d for d in report.layers}
    for i in range(2):
        out_proj = by_name[f"encoder.layers.{i}.self_attn.out_proj"]
        assert out_proj.chosen == "dense" and "MultiheadAttention" in out_proj.reason
        attn = by_name[f"encoder.layers.{i}.self_attn"]
        assert attn.chosen == "dense" and "in_proj_weight" in attn.reason
        linear1 = by_name[f"encoder.layers.{i}.linear1"]
        if batch_first:  # bypassed by the fused path: a sparse layer would never run
            assert linear1.chosen == "dense" and "fast path" in linear1.reason, linear1
        else:
            assert linear1.chosen == COST_CSR, linear1
    assert by_name["head"].chosen == COST_CSR
    if example:
        assert report.check.startswith("ok"), report.check


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 16) -> (B, 3)
        h = self.proj(x)
        y, _ = self.attn(h, h, h, need_weights=False)
        return self.head(y.mean(dim=1))


@pytest.mark.parametrize("example", [True, False])
def test_multihead_attention_survives_conversion(example: bool) -> None:
    torch.manual_seed(1)
    model = _zero_(Attention(), 0.95)
    ref = copy.deepcopy(model)
    x = torch.randn(3, 9, 16)
    report = sparsify_inference_(
        model, x if example else None, mode="cost_model", batch_size=27, overhead_flops=0
    )
    _assert_same_model(model, ref, x)
    _assert_reported(report, ref, model)
    by_name = {d.name: d for d in report.layers}
    assert by_name["attn.out_proj"].chosen == "dense"
    assert "reads out_proj.weight" in by_name["attn.out_proj"].reason
    assert by_name["proj"].chosen == COST_CSR


@pytest.mark.parametrize("kernel", ["torch_csr", "torch_csr_panels", "scipy_csr"])
@pytest.mark.parametrize(("cin", "cout", "groups"), [(16, 16, 16), (12, 18, 3), (8, 24, 8)])
def test_grouped_conv_matches_dense(kernel: str, cin: int, cout: int, groups: int) -> None:
    torch.manual_seed(6)
    conv = _sparse(nn.Conv2d(cin, cout, 3, padding=1, stride=2, groups=groups), 0.3)
    x = torch.randn(2, cin, 11, 9)
    s = SparseConv2d(conv, kernel, rhs_cols=64)  # panels of 256 columns: more than one
    assert s.nnz == int((conv.weight != 0).sum())  # block diagonal: no stored zeros
    with torch.inference_mode():
        torch.testing.assert_close(s(x), conv(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.weight, conv.weight.detach())  # what a parent would read


def test_grouped_conv_refuses_dense_compact() -> None:
    with pytest.raises(SparsifyError, match="grouped"):
        SparseConv2d(nn.Conv2d(4, 4, 3, groups=2), "dense_compact")


def test_mobilenet_depthwise_convs_reported_and_exact() -> None:
    import torchvision

    torch.manual_seed(2)
    model = _zero_(torchvision.models.mobilenet_v3_small(num_classes=10), 0.9)
    ref = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    report = sparsify_inference_(model, x, mode="cost_model")
    _assert_same_model(model, ref, x)
    _assert_reported(report, ref, model)
    grouped = [d for d in report.layers if d.kind == "Conv2d" and d.groups > 1]
    assert grouped and all(d.chosen == "dense" for d in grouped)
    assert all("grouped" in d.reason for d in grouped), grouped[0]
    assert report.converted  # the 1x1 convs and the classifier at 90% zeros
    assert report.check.startswith("ok"), report.check


class GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.c3 = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
        return self.fc(y.mean(dim=(2, 3)))


def test_grouped_conv_calibrated_like_any_conv() -> None:
    # calibration times the grouped kernels and keeps whichever is faster; either way the
    # model's output is unchanged and each grouped layer says what it chose and why
    torch.manual_seed(3)
    model = _zero_(GroupedNet(), 0.97)
    ref = copy.deepcopy(model)
    x = torch.randn(4, 3, 16, 16)
    report = sparsify_inference_(model, x, threads=1, reps=3, max_density=1.0, margin=0.0)
    _assert_same_model(model, ref, x)
    _assert_reported(report, ref, model)
    for name in ("c2", "c3"):
        d = next(d for d in report.layers if d.name == name)
        assert d.groups > 1 and "torch_csr" in d.times_s, d  # offered a sparse kernel, timed


class Bad(nn.Module):
    """A sparse layer that breaks the model: raises, or is off by 1e-3."""

    def __init__(self, inner: nn.Module, how: str) -> None:
        super().__init__()
        self.inner, self.how = inner, how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "raise":
            raise RuntimeError("boom")
        return self.inner(x) + 1e-3


@pytest.mark.parametrize("how", ["raise", "differ"])
def test_layer_that_breaks_the_model_is_reverted(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    import sparsify.accel.convert as convert

    real = convert.make_sparse

    def make_sparse(module: nn.Module, kernel: str, rhs_cols: int | None = None) -> nn.Module:
        sparse = real(module, kernel, rhs_cols)
        return Bad(sparse, how) if module.out_features == 64 else sparse

    monkeypatch.setattr(convert, "make_sparse", make_sparse)
    model = nn.Sequential(
        _sparse(nn.Linear(128, 64), 0.02), nn.ReLU(), _sparse(nn.Linear(64, 10), 0.02)
    )
    ref = copy.deepcopy(model)
    x = torch.randn(16, 128)
    report = sparsify_inference_(model, x, mode="cost_model", overhead_flops=0)
    _assert_same_model(model, ref, x)
    first, second = report.layers
    assert first.chosen == "dense" and first.reason.startswith("reverted to dense"), first
    assert ("boom" if how == "raise" else "fp32 noise") in first.reason
    assert second.chosen == COST_CSR and isinstance(model[2], SparseLinear)


# --- sparsify's own kernels (spk) in the converter -------------------------------------------


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(y.flatten(1))


@needs_spk
@pytest.mark.parametrize("kernel", ["spk", "spk_csr"])
@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_converter_runs_spk_equal_to_dense(name: str, kernel: str) -> None:
    torch.manual_seed(4)
    if name == "mlp":
        # the last layer bias-free: its converted twin holds no bias at all
        model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10, bias=False))
        x = torch.randn(16, 300)
    else:
        model, x = SmallConvNet(), torch.randn(4, 3, 16, 16)
    model = _zero_(model, 0.9)
    ref = copy.deepcopy(model)
    # "fixed" runs the kernel asked for, untimed: calibration on this loaded machine may pick
    # another, which is not what this test is about
    report = sparsify_inference_(model, x, mode="fixed", kernels=(kernel,))
    assert [d.chosen for d in report.layers] == [kernel] * len(report.layers), report.summary()
    assert report.check.startswith("ok"), report.check
    assert f"-> {kernel}:" in report.summary()
    assert report.to_dict()["layers"][0]["chosen"] == kernel
    assert all(getattr(model.get_submodule(d.name), "kernel", "") == kernel for d in report.layers)
    _assert_same_model(model, ref, x)
    for batch in (1, 3):  # other batches than the one converted for
        _assert_same_model(model, ref, x[:batch])


@needs_spk
def test_calibration_times_spk_next_to_dense_and_records_the_choice() -> None:
    model = nn.Sequential(_sparse(nn.Linear(512, 256), 0.05))
    ref = copy.deepcopy(model)
    x = torch.randn(8, 512)
    report = sparsify_inference_(model, x, threads=1, reps=3, max_density=1.0, margin=0.0)
    d = report.layers[0]
    # 512 columns at density 0.05: the auto packing is blocked, so both packings are timed
    assert {"dense", "spk", "spk_csr", "torch_csr"} <= set(d.times_s), d.times_s
    assert d.chosen in d.times_s and d.reason, d
    assert getattr(model[0], "kernel", "dense") == d.chosen
    _assert_same_model(model, ref, x)


@needs_spk
def test_spk_layer_passes_gradients_to_its_input() -> None:
    torch.manual_seed(5)
    lin = _sparse(nn.Linear(300, 40), 0.1)
    conv = _sparse(nn.Conv2d(4, 8, 3, padding=1), 0.2)
    for dense, sparse, shape in (
        (lin, SparseLinear(lin, "spk"), (5, 300)),
        (conv, SparseConv2d(conv, "spk"), (2, 4, 9, 9)),
    ):
        x = torch.randn(shape, requires_grad=True)
        sparse(x).square().sum().backward()
        g = x.grad.clone()
        x.grad = None
        dense(x).square().sum().backward()
        torch.testing.assert_close(g, x.grad, rtol=1e-5, atol=1e-5)
        assert sparse.weight_csr is not None  # the grad path was built on demand


def test_spk_absent_with_reason_without_the_compiled_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")  # as on a machine without a C compiler
    model = nn.Sequential(_sparse(nn.Linear(256, 64), 0.05))
    x = torch.randn(4, 256)
    report = sparsify_inference_(model, x, threads=1, reps=2, margin=0.0, max_density=1.0)
    assert set(report.unavailable) == {"spk", "spk_csr", "spk_depthwise"}
    assert "SPARSIFY_KERNELS=off" in report.unavailable["spk"]
    assert "kernel spk not offered: SPARSIFY_KERNELS=off" in report.summary()
    assert not {"spk", "spk_csr"} & set(report.layers[0].times_s)
    with pytest.raises(SparsifyError, match="compiled kernels"):
        SparseLinear(nn.Linear(4, 4), "spk")
    only = nn.Sequential(_sparse(nn.Linear(256, 64), 0.05))
    report = sparsify_inference_(only, x, mode="fixed", kernels=("spk",))
    assert report.layers[0].chosen == "dense" and isinstance(only[0], nn.Linear)


@needs_spk
def test_grouped_conv_not_offered_to_spk() -> None:
    torch.manual_seed(3)
    model = _zero_(GroupedNet(), 0.9)
    x = torch.randn(2, 3, 16, 16)
    report = sparsify_inference_(model, x, mode="fixed", kernels=("spk", "torch_csr"))
    chosen = {d.name: d.chosen for d in report.layers}
    assert chosen == {"c1": "spk", "c2": "torch_csr", "c3": "torch_csr", "fc": "spk"}, chosen


@pytest.mark.parametrize(
    ("batch", "density", "kernels_on", "want"),
    [
        pytest.param(64, 0.1, True, "spk", marks=needs_spk),
        pytest.param(1, 0.08, True, "spk_csr", marks=needs_spk),
        # between torch_csr's break-even (0.1 at one row) and spk's (0.17): only spk pays
        pytest.param(1, 0.15, True, "spk_csr", marks=needs_spk),
        # between torch_csr's (0.25 at 64 rows) and spk's (0.5): only spk pays
        pytest.param(64, 0.45, True, "spk", marks=needs_spk),
        (64, 0.1, False, "torch_csr_panels"),
        (1, 0.08, False, "torch_csr"),
        (1, 0.15, False, "dense"),
        pytest.param(1, 0.3, True, "dense", marks=needs_spk),  # above every break-even at one row
    ],
)
def test_cost_model_picks_spk_where_the_kernels_run(
    monkeypatch: pytest.MonkeyPatch, batch: int, density: float, kernels_on: bool, want: str
) -> None:
    # density / break-even: the C kernels' is the higher at every batch, so they win where
    # they run; with them off (as without a C compiler) the choice falls back, no error
    if not kernels_on:
        monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    model = nn.Sequential(_sparse(nn.Linear(1024, 64), density))
    ref = copy.deepcopy(model)
    x = torch.randn(batch, 1024)
    # the break-even tables alone: at one row this layer is too small for the call overhead
    report = sparsify_inference_(model, x, mode="cost_model", overhead_flops=0)
    d = report.layers[0]
    assert d.chosen == want, d
    assert d.times_s == {}  # the cost model times nothing
    assert ("spk" in report.unavailable) == (not kernels_on)
    if want != "dense":
        assert f"{want}'s break-even" in d.reason and isinstance(model[0], SparseLinear)
        assert model[0].kernel == want
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


@needs_spk
def test_cost_model_runs_convs_on_spk() -> None:
    model = _sparse(SmallConvNet(), 0.05)
    ref = copy.deepcopy(model)
    x = torch.randn(2, 3, 16, 16)
    report = sparsify_inference_(model, x, mode="cost_model", overhead_flops=0)  # tiny convs
    convs = [d for d in report.layers if d.kind == "Conv2d"]
    assert convs and all(d.chosen == "spk" for d in convs), report.summary()
    assert report.check.startswith("ok"), report.check
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def _tiny_net() -> nn.Module:
    # the two layers the cost model once put on spk: a 24x5x3x3 conv and a 7x24 Linear
    return _sparse(
        nn.Sequential(
            nn.Conv2d(5, 24, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 7)
        ),
        0.05,
    )


def test_cost_model_keeps_tiny_layers_dense_for_the_call_overhead() -> None:
    x = torch.randn(1, 5, 8, 8)
    report = sparsify_inference_(_tiny_net(), x, mode="cost_model")
    conv, fc = report.layers
    for d in (conv, fc):  # 95% zeros, far below every break-even: only the size says dense
        assert d.chosen == "dense", d
        assert "per-call overhead" in d.reason and "FLOP" in d.reason, d.reason
    assert "138,240 FLOP" in conv.reason and "336 FLOP" in fc.reason  # 2 * weights * rows
    # the overhead term is what decides: without it the break-even tables make both sparse
    free = sparsify_inference_(_tiny_net(), x, mode="cost_model", overhead_flops=0)
    assert all(d.chosen != "dense" for d in free.layers), free.summary()


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_overhead_flops_is_checked(value: float) -> None:
    with pytest.raises(SparsifyError, match="overhead_flops"):
        sparsify_inference_(_tiny_net(), mode="cost_model", overhead_flops=value)


@needs_spk
@pytest.mark.parametrize(("batch", "size", "want"), [(64, 1024, "spk"), (1, 2048, "spk_csr")])
def test_cost_model_still_puts_big_sparse_layers_on_spk(batch: int, size: int, want: str) -> None:
    model = nn.Sequential(_sparse(nn.Linear(size, size), 0.05))
    ref = copy.deepcopy(model)
    x = torch.randn(batch, size)
    report = sparsify_inference_(model, x, mode="cost_model")
    d = report.layers[0]
    assert d.chosen == want and "overhead" in d.reason, d
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


@needs_spk
@pytest.mark.parametrize("kernel", ["spk", "spk_csr"])
def test_spk_linear_reads_strided_and_batched_inputs(kernel: str) -> None:
    # the spk path hands the activation's address to C: a view must be copied first
    torch.manual_seed(0)
    lin = nn.Linear(30, 20)
    with torch.no_grad():
        lin.weight.mul_((torch.rand(20, 30) < 0.2).float())
    layer = SparseLinear(lin, kernel)
    views = [
        torch.randn(30, 5).t(),  # transposed
        torch.randn(5, 60)[:, ::2],  # strided columns
        torch.randn(1, 60)[:, ::2],  # one strided row
        torch.randn(2, 3, 30).transpose(0, 1),  # 3-D, permuted
    ]
    with torch.no_grad():
        for x in views:
            assert not x.is_contiguous()
            torch.testing.assert_close(layer(x), lin(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("whole_ratio", [0.8, 1.25])
def test_a_converted_model_slower_as_a_whole_goes_back_to_dense(
    monkeypatch: pytest.MonkeyPatch, whole_ratio: float
) -> None:
    # the per-layer timings are real; the whole-model timing is scripted, since a real
    # slowdown of the whole cannot be produced on demand
    from sparsify.accel import convert
    from sparsify.timing import Timing

    real = convert.time_interleaved
    ran: dict[str, int] = {"dense_model": 0, "sparse_model": 0}

    def scripted(fns, **kw):  # type: ignore[no-untyped-def]
        if set(fns) != set(ran):
            return real(fns, **kw)
        for name, fn in fns.items():  # run both configurations, as the real timing would
            fn()
            ran[name] += 1
        t = 1e-3
        return {
            "dense_model": Timing((t,) * 5, 1),
            "sparse_model": Timing((t / whole_ratio,) * 5, 1),
        }

    monkeypatch.setattr(convert, "time_interleaved", scripted)
    torch.manual_seed(0)
    model = nn.Sequential(_sparse(nn.Linear(512, 512), 0.02), nn.ReLU(), nn.Linear(512, 4))
    ref = copy.deepcopy(model)
    x = torch.randn(64, 512)
    report = sparsify_inference_(model, x, threads=1, reps=3, margin=0.0)
    assert ran == {"dense_model": 1, "sparse_model": 1}
    first = report.layers[0]
    if whole_ratio < 1:
        assert report.converted == [] and isinstance(model[0], nn.Linear)
        assert "whole converted model ran 0.80x dense" in first.reason
        assert "every layer was reverted" in report.whole
        assert report.check.endswith("(0 layer(s) sparse)"), report.check
    else:
        assert first.chosen != "dense" and not isinstance(model[0], nn.Linear)
        assert report.whole.startswith("1.25x dense")
        assert report.check.endswith(f"({len(report.converted)} layer(s) sparse)")
        assert report.converted
    assert "whole model: " in report.summary() and report.to_dict()["whole"] == report.whole
    _assert_same_model(model, ref, x)


class _Separable(nn.Module):
    """mobilenet's block: pointwise, depthwise (stride 2, multiplier 2), rectangular depthwise."""

    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)
        self.dw2 = nn.Conv2d(16, 16, (3, 5), padding=(1, 2), groups=16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw2(torch.relu(self.dw1(torch.relu(self.pw(x)))))


def test_depthwise_convs_are_offered_the_stencil_and_keep_their_output() -> None:
    if not spk.available():
        pytest.skip("sparsify.kernels not compiled here")
    torch.manual_seed(0)
    model = _Separable().eval()
    x = torch.randn(2, 3, 17, 14)
    with torch.no_grad():
        ref = model(x)
    fixed = copy.deepcopy(model)
    report = sparsify_inference_(fixed, x, mode="fixed", kernels=("spk_depthwise",))
    chosen = {d.name: d.chosen for d in report.layers}
    assert chosen == {"pw": "dense", "dw1": "spk_depthwise", "dw2": "spk_depthwise"}
    assert isinstance(fixed.dw1, DepthwiseConv2d) and isinstance(fixed.dw2, DepthwiseConv2d)
    assert torch.equal(fixed.dw1.weight, model.dw1.weight)  # the same weights, not repacked
    assert next(d for d in report.layers if d.name == "pw").reason.startswith("kept dense")
    with torch.inference_mode():
        torch.testing.assert_close(fixed(x), ref, rtol=1e-5, atol=1e-5)
    # calibrate mode times the stencil against torch's conv for each depthwise layer
    timed = copy.deepcopy(model)
    report = sparsify_inference_(timed, x, mode="calibrate", reps=3)
    for d in report.layers:
        assert ("spk_depthwise" in d.times_s) == d.name.startswith("dw"), d
    with torch.inference_mode():
        torch.testing.assert_close(timed(x), ref, rtol=1e-5, atol=1e-5)


def test_the_stencil_layer_falls_back_to_torch_for_gradients_and_is_refused_elsewhere() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    layer = DepthwiseConv2d.from_conv(conv)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    layer(x).sum().backward()  # F.conv2d: gradients reach the input and the shared weight
    assert x.grad is not None and conv.weight.grad is not None
    with pytest.raises(SparsifyError, match="groups = in_channels"):
        DepthwiseConv2d.from_conv(nn.Conv2d(4, 8, 3, groups=2))


def test_without_the_c_kernels_the_stencil_is_not_offered(monkeypatch) -> None:
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    model = _Separable().eval()
    report = sparsify_inference_(model, torch.randn(1, 3, 9, 9), mode="fixed", kernels=KERNELS)
    assert "SPARSIFY_KERNELS=off" in report.unavailable["spk_depthwise"]
    assert not any(isinstance(m, DepthwiseConv2d) for m in model.modules())


def _randomise_bn_(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                    m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return model.eval()


class _Custom(nn.Module):
    """conv1 -> bn1 wired in forward (ResNet's way): only a trace of forward shows the pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))


def test_fold_batchnorm_keeps_the_output_and_the_zeros_and_folds_only_what_it_may() -> None:
    from sparsify.accel.fold import fold_batchnorm_

    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),  # no bias: folding adds one
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=8),  # depthwise, with bias
        nn.BatchNorm2d(8, affine=False),
        nn.BatchNorm2d(8),  # after a batch norm, not a conv: stays
        nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)),  # nested
        _Custom(),
    )
    _randomise_bn_(model)
    with torch.no_grad():
        model[0].weight[torch.rand(model[0].weight.shape) < 0.6] = 0.0
    zeros = model[0].weight == 0
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        ref = model(x)
    folded = fold_batchnorm_(model)
    assert folded == [("0", "1"), ("3", "4"), ("6.0", "6.1"), ("7.conv1", "7.bn1")]
    assert isinstance(model[1], nn.Identity) and isinstance(model[5], nn.BatchNorm2d)
    assert isinstance(model[7].bn1, nn.Identity), "a pair wired in forward is found by tracing"
    assert torch.equal(model[0].weight == 0, zeros) and model[0].bias is not None
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    train_mode = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm_(train_mode) == [], "a training-mode batch norm uses batch statistics"


class _Reads(nn.Module):
    """A conv and a batch norm in one forward, wired as ``how`` says."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.conv, self.bn = how, nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "residual":  # the conv's output is read twice
            y = self.conv(x)
            return self.bn(y) + y
        if self.how == "scaled":  # the batch norm sees something else than the conv's output
            return self.bn(self.conv(x) * 2)
        if self.how == "twice":  # the conv runs twice: folding would change the first call
            return self.bn(self.conv(x)) + self.conv(x)
        if self.how == "data_dependent":  # untraceable: its children are searched instead
            return self.inner(x) if x.sum() > 0 else -self.inner(x)
        return self.bn(self.conv(x))


class _WeightStandardised(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / (
            self.weight.std((1, 2, 3), keepdim=True) + 1e-5
        )
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


@pytest.mark.parametrize(
    "how,folds",
    [("plain", True), ("residual", False), ("scaled", False), ("twice", False),
     ("data_dependent", True), ("hooked", False), ("shared", False), ("standardised", False)],
)  # fmt: skip
def test_fold_batchnorm_outside_sequential_folds_only_where_nothing_else_reads_the_conv(
    how: str, folds: bool
) -> None:
    from sparsify.accel.fold import fold_batchnorm_

    torch.manual_seed(7)
    model = _Reads(how)
    if how == "data_dependent":
        model.inner = _Reads("plain")
    if how == "hooked":
        model.bn.register_forward_hook(lambda m, i, o: o)
    if how == "shared":  # one module object under two names of a Sequential
        model = nn.Sequential(model.conv, model.bn, model.conv)
    if how == "standardised":
        model = nn.Sequential(_WeightStandardised(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    model = _randomise_bn_(model)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        ref = model(x) if how != "shared" else None
    folded = fold_batchnorm_(model)
    assert bool(folded) is folds, folded
    if how == "data_dependent":
        assert folded == [("inner.conv", "inner.bn")] and isinstance(model.bn, nn.BatchNorm2d)
    if ref is not None:
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_folds_every_batch_norm_of_resnet18() -> None:
    from sparsify.accel.fold import fold_batchnorm_

    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(8)
    model = _randomise_bn_(torchvision.models.resnet18(num_classes=10))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    folded = fold_batchnorm_(model)
    assert len(folded) == 20 and ("conv1", "bn1") in folded
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)


def test_the_converter_folds_batchnorm_by_default_and_checks_against_the_unfolded_model() -> None:
    torch.manual_seed(6)
    block = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8),
    )  # fmt: skip
    model = _randomise_bn_(nn.Sequential(block, nn.Flatten(), nn.Linear(8 * 10 * 10, 5)))
    x = torch.randn(2, 3, 10, 10)
    keep = copy.deepcopy(model)
    report = sparsify_inference_(model, x, mode="cost_model")
    assert report.folded == ["0.0 <- 0.1", "0.3 <- 0.4", "0.6 <- 0.7"]
    assert "3 BatchNorm2d folded" in report.summary() and report.to_dict()["folded"]
    assert report.check.startswith("ok"), report.check
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    report = sparsify_inference_(keep, x, mode="cost_model", fold_batchnorm=False)
    assert report.folded == [] and sum(isinstance(m, nn.BatchNorm2d) for m in keep.modules()) == 3


class _CachesOnSelf(nn.Module):
    """A forward that stores what it computed on self (as some attention caches do)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.seen = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.bn(self.conv(x))


def test_fold_batchnorm_traces_a_copy_so_the_users_model_never_sees_a_proxy() -> None:
    from sparsify.accel.fold import fold_batchnorm_

    model = _randomise_bn_(_CachesOnSelf())
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    model.seen = "untouched"
    assert fold_batchnorm_(model) == [("conv", "bn")]
    assert model.seen == "untouched" and model.conv.weight.device.type == "cpu"
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
