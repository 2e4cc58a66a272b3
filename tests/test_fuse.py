"""Fusing the activation after a converted layer into it (sparsify.accel.fuse)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsify import kernels as spk
from sparsify.accel import SparseConv2d, SparseLinear, sparsify_inference_
from sparsify.accel.fuse import activation_clamp
from sparsify.accel.layers import DepthwiseConv2d

pytestmark = pytest.mark.skipif(not spk.available(), reason="sparsify.kernels not compiled here")


def _zero_(model: nn.Module, fraction: float = 0.9, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight[torch.rand(m.weight.shape, generator=g) < fraction] = 0.0
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


def _convert(model: nn.Module, x: torch.Tensor, **kw):
    kw.setdefault("mode", "fixed")
    kw.setdefault("kernels", ("spk", "spk_depthwise"))
    return sparsify_inference_(model, x, **kw)


def test_mobilenet_fuses_every_relu6_and_returns_the_same_floats() -> None:
    import torchvision

    torch.manual_seed(0)
    model = _zero_(torchvision.models.mobilenet_v2(num_classes=10))
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        ref = model(x)
    unfused = copy.deepcopy(model)
    report = _convert(model, x)
    _convert(unfused, x, fuse_activations=False)
    n_relu6 = sum(type(m) is nn.ReLU6 for m in unfused.modules())
    assert n_relu6 == 35 and len(report.fused) == n_relu6, report.summary()
    assert not any(type(m) is nn.ReLU6 for m in model.modules())
    assert report.check.startswith("ok") and "activation(s) fused" in report.summary()
    assert report.to_dict()["fused"] == report.fused
    clamps = {type(m).__name__: m.clamp for m in model.modules() if getattr(m, "clamp", None)}
    assert clamps == {"SparseConv2d": (0.0, 6.0), "DepthwiseConv2d": (0.0, 6.0)}
    with torch.inference_mode():
        y, y_unfused = model(x), unfused(x)
    assert torch.equal(y, y_unfused), "the clamp sees the very sum the ReLU6 would"
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


class _Shared(nn.Module):
    """LeNet's wiring: one ReLU module called after each layer (fused into both)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.c2(self.relu(self.c1(x))))


class _Residual(nn.Module):
    """ResNet's wiring: the same ReLU also after a sum (so it stays, for both calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.c2(self.relu(self.c1(x))) + x)


class _Reread(nn.Module):
    """The conv's output is read by the ReLU and by the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        return self.relu(y) + y


class _Wired(nn.Module):
    """conv -> batch norm -> Hardtanh in a forward (found by tracing, through the folded BN)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.act = nn.Hardtanh(-0.5, 0.5)
        self.head = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.bn(self.conv(x))).flatten(1))


class _MyReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2  # a subclass may compute something else


@pytest.mark.parametrize(
    "make, want",
    [
        (lambda: _Shared(), ["c1 <- relu", "c2 <- relu"]),
        (lambda: _Residual(), []),
        (lambda: _Reread(), []),
        (lambda: _Wired(), ["conv <- act"]),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU()), []),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), _MyReLU()), []),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ReLU6()), ["0 <- 1"]),
        (
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(108, 20), nn.Identity(), nn.ReLU()),
            ["1 <- 3"],
        ),
    ],
)
def test_only_an_activation_that_reads_nothing_but_the_layer_is_fused(make, want) -> None:
    torch.manual_seed(1)
    model = _zero_(make(), 0.7)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        ref = model(x)
    report = _convert(model, x)
    assert report.fused == want, report.summary()
    assert report.check.startswith("ok"), report.check
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_a_layer_kept_dense_keeps_its_activation_and_fusion_can_be_turned_off() -> None:
    torch.manual_seed(2)
    dense = nn.Sequential(nn.Linear(30, 20), nn.ReLU()).eval()  # no zeros: stays dense
    report = sparsify_inference_(dense, torch.randn(4, 30), mode="cost_model")
    assert report.fused == [] and type(dense[1]) is nn.ReLU
    shared = _zero_(_Shared(), 0.7)  # its ReLU also follows c2, which stays dense: it stays
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        ref = shared(x)
    report = _convert(shared, x, filter_fn=lambda m, name: name != "c2")
    assert report.fused == [] and type(shared.relu) is nn.ReLU and shared.c1.clamp is None
    with torch.inference_mode():
        torch.testing.assert_close(shared(x), ref, rtol=1e-5, atol=1e-5)
    # the same, c2 offered but left dense by the converter's own decision (no zeros)
    shared = _Shared().eval()
    with torch.no_grad():
        shared.c1.weight[torch.rand(shared.c1.weight.shape) < 0.9] = 0.0
        ref = shared(x)
    report = sparsify_inference_(shared, x, mode="cost_model", overhead_flops=0)
    chosen = {d.name: d.chosen for d in report.layers}
    assert chosen["c1"] != "dense" and chosen["c2"] == "dense", chosen
    assert report.fused == [] and type(shared.relu) is nn.ReLU and shared.c1.clamp is None
    with torch.inference_mode():
        torch.testing.assert_close(shared(x), ref, rtol=1e-5, atol=1e-5)
    off = _zero_(nn.Sequential(nn.Linear(30, 20), nn.ReLU()))
    report = _convert(off, torch.randn(4, 30), fuse_activations=False)
    assert report.fused == [] and type(off[1]) is nn.ReLU and isinstance(off[0], SparseLinear)


def test_a_fused_layer_clamps_on_its_torch_paths_too_and_passes_gradients() -> None:
    torch.manual_seed(3)
    conv = _zero_(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1)), 0.6)[0]
    lin = _zero_(nn.Sequential(nn.Linear(20, 7)), 0.6)[0]
    dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    for dense, layer, shape in (
        (conv, SparseConv2d(conv, "spk"), (2, 4, 5, 5)),
        (lin, SparseLinear(lin, "spk"), (3, 20)),
        (dw, DepthwiseConv2d.from_conv(dw), (2, 4, 5, 5)),
    ):
        layer.fuse_clamp_(activation_clamp(nn.ReLU6()))
        assert "clamp=(0.0, 6.0)" in repr(layer)
        x = (torch.randn(shape) * 4).requires_grad_()
        y = layer(x)  # an input that needs a gradient: the torch path, clamped there
        ref = torch.nn.functional.relu6(dense(x))
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        (g,) = torch.autograd.grad(y.square().sum(), x)
        (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
        with torch.inference_mode():  # the kernel path: the same clamp
            torch.testing.assert_close(layer(x.detach()), ref.detach(), rtol=1e-5, atol=1e-5)
        layer.fuse_clamp_(None)
        with torch.inference_mode():  # unfused again: negative outputs come back
            plain = layer(x.detach())
        assert plain.min() < 0
        torch.testing.assert_close(plain, dense(x).detach(), rtol=1e-5, atol=1e-5)
