"""An inverted-residual block's 1x1 expansion and depthwise conv as one kernel
(sparsify.kernels.expand_depthwise_conv2d, sparsify.accel.expand_dw)."""

from __future__ import annotations

import copy
import gc
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsify import kernels as K
from sparsify.accel import sparsify_inference_
from sparsify.accel.expand_dw import ExpandDepthwise
from sparsify.errors import SparsifyError

pytestmark = pytest.mark.skipif(not K.available(), reason="sparsify.kernels not compiled here")
VW = K.info()["vector_width"] if K.available() else 8

# (N, IC, E, H, W, kernel, stride, padding, dilation): widths at, just above and well above
# one vector, odd heights, 3x3 and 5x5, strides 1-2, a dilation
CASES = [
    (1, 3, 8, 5, VW, 3, 1, 1, 1),
    (2, 16, 24, 9, VW + 3, 3, 2, 1, 1),
    (1, 8, 40, 7, 2 * VW + 5, 3, 1, 1, 1),
    (3, 5, 12, 11, 3 * VW - 1, 5, 2, 2, 1),
    (1, 6, 16, 8, VW + 1, 3, 1, 2, 2),
    (1, 24, 32, 16, 4 * VW, 3, 2, 1, 1),
    (1, 4, 8, 5, VW, 3, 1, VW + 1, 1),  # padding wider than a vector
    (1, 4, 8, 5, VW + 2, 3, 2, VW + 1, 1),
    (2, 7, 9, 6, 2 * VW + 1, 3, 2, 0, 1),  # stride 2 split in registers: odd width, no pad
    (1, 7, 9, 7, 2 * VW + 2, 3, 2, 1, 1),
    (1, 4, 8, 5, 2 * VW + 5, 3, 2, VW + 1, 1),
]


def _reference(x, ew, eb, eclamp, w, b, s, p, d, clamp):
    """The two layers in float64 torch."""
    xt, ewt, wt = (torch.from_numpy(a).double() for a in (x, ew, w))
    ebt = None if eb is None else torch.from_numpy(eb).double()
    bt = None if b is None else torch.from_numpy(b).double()
    h = F.conv2d(xt, ewt.reshape(*ewt.shape[:2], 1, 1), ebt)
    if eclamp is not None:
        h = h.clamp(*eclamp)
    y = F.conv2d(h, wt, bt, s, p, d, groups=w.shape[0])
    return (y if clamp is None else y.clamp(*clamp)).numpy()


def _weights(rng, ic, e, k, zeros=0.8):
    ew = rng.standard_normal((e, ic)).astype(np.float32)
    ew[rng.random(ew.shape) < zeros] = 0.0
    ew[1] = 0.0  # an empty row: its channel is the bias alone
    return ew, rng.standard_normal((e, 1, k, k)).astype(np.float32)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("clamps", [(None, None), ((0.0, 6.0), (0.0, 6.0))])
def test_fused_kernel_matches_the_two_layers(case, clamps):
    n, ic, e, h, w_, k, s, p, d = case
    rng = np.random.default_rng(abs(hash((case, clamps[0] is None))) % 2**32)
    ew, w = _weights(rng, ic, e, k)
    x = rng.standard_normal((n, ic, h, w_)).astype(np.float32)
    eb, b = rng.standard_normal(e).astype(np.float32), rng.standard_normal(e).astype(np.float32)
    ref = _reference(x, ew, eb, clamps[0], w, b, s, p, d, clamps[1])
    y1 = K.expand_depthwise_conv2d(
        x, ew, eb, w, b, s, p, d, expand_clamp=clamps[0], clamp=clamps[1], threads=1
    )
    scale = np.abs(ref).max() + 1.0
    np.testing.assert_allclose(y1, ref, rtol=0, atol=2e-5 * scale)
    y2 = K.expand_depthwise_conv2d(
        x, ew[:, :, None, None], eb, w, b, s, p, d, expand_clamp=clamps[0], clamp=clamps[1],
        threads=2,
    )  # fmt: skip
    np.testing.assert_array_equal(y2, y1)  # no result depends on the thread count
    no_bias = K.expand_depthwise_conv2d(x, ew, None, w, None, s, p, d, threads=1)
    ref0 = _reference(x, ew, None, None, w, None, s, p, d, None)
    np.testing.assert_allclose(no_bias, ref0, rtol=0, atol=2e-5 * (np.abs(ref0).max() + 1.0))


def test_all_zero_expansion_and_narrow_planes_and_no_kernels(monkeypatch):
    rng = np.random.default_rng(3)
    ew = np.zeros((8, 4), np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    eb = rng.standard_normal(8).astype(np.float32)
    for width in (VW, VW - 1, 3):  # the last two: narrower than a vector, two steps
        x = rng.standard_normal((2, 4, 6, width)).astype(np.float32)
        y = K.expand_depthwise_conv2d(x, ew, eb, w, None, 1, 1, expand_clamp=(0.0, 6.0))
        ref = _reference(x, ew, eb, (0.0, 6.0), w, None, 1, 1, 1, None)
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * (np.abs(ref).max() + 1.0))
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    x = rng.standard_normal((1, 4, 5, VW + 2)).astype(np.float32)
    ew2 = rng.standard_normal((8, 4)).astype(np.float32)
    y = K.expand_depthwise_conv2d(x, ew2, eb, w, eb, 2, 1, clamp=(0.0, 1.0))
    ref = _reference(x, ew2, eb, None, w, eb, 2, 1, 1, (0.0, 1.0))
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * (np.abs(ref).max() + 1.0))


@pytest.mark.parametrize(
    ("ew_shape", "w_shape", "match"),
    [
        ((8, 5), (8, 1, 3, 3), "expand_weight"),  # IC 5 against x's 4
        ((8, 4), (6, 1, 3, 3), "same E"),
        ((8, 4, 3, 3), (8, 1, 3, 3), "1, 1"),
    ],
)
def test_bad_shapes_refused_in_one_line(ew_shape, w_shape, match):
    x = np.zeros((1, 4, 8, 20), np.float32)
    with pytest.raises(SparsifyError, match=match) as err:
        K.expand_depthwise_conv2d(x, np.ones(ew_shape, np.float32), None, np.ones(w_shape))
    assert "\n" not in str(err.value)


class _Block(nn.Module):
    """A stranger's inverted-residual block (not torchvision's): 1x1 -> BN -> ReLU6 -> 3x3
    depthwise -> BN -> ReLU6 -> 1x1, plus a head."""

    def __init__(self, c: int = 6, e: int = 36, stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.expand, self.bn1, self.act1 = nn.Conv2d(c, e, 1), nn.BatchNorm2d(e), nn.ReLU6()
        self.dw = nn.Conv2d(e, e, 3, stride, 1, groups=e, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(e), nn.ReLU6()
        self.project = nn.Conv2d(e, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.bn2(self.dw(self.act1(self.bn1(self.expand(self.stem(x)))))))
        return self.project(h).mean((2, 3))


class _Tapped(_Block):
    """The same, but the expanded tensor is also read elsewhere: nothing may fuse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(self.expand(self.stem(x))))
        return self.project(self.act2(self.bn2(self.dw(h)))).mean((2, 3)) + h.mean()


def _sparse(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                m.weight[torch.rand(m.weight.shape, generator=g) < 0.9] = 0.0
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


def test_converter_fuses_a_strangers_block_and_keeps_its_output():
    torch.manual_seed(0)
    model = _sparse(_Block())
    original = copy.deepcopy(model)
    x = torch.randn(2, 3, 12, 2 * VW + 3)
    with torch.no_grad():
        ref = model(x)
    report = sparsify_inference_(model, x, mode="fixed", kernels=("spk", "spk_depthwise"))
    assert report.check.startswith("ok"), report.summary()
    assert report.blocks == ["expand + dw: fused (untimed)"], report.summary()
    assert "1x1 + depthwise expand + dw: fused" in report.summary()
    assert report.to_dict()["blocks"] == report.blocks
    assert isinstance(model.expand, ExpandDepthwise) and type(model.dw) is nn.Identity
    with torch.inference_mode():
        y = model(x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # a narrower input takes the two layers, same answer
        x2 = torch.randn(1, 3, 7, VW - 1)
        torch.testing.assert_close(model(x2), original(x2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("model", "width", "kw"),
    [
        (_Tapped(), 2 * VW, {}),  # the expanded tensor is read elsewhere too
        (_Block(), 2 * VW, {"fuse_activations": False}),  # fusion switched off
        (_Block(stride=2), 4 * VW, {}),  # untimed: stride 2 lost in some A/B, so not offered
        (_Block(), 2 * VW - 1, {}),  # untimed: rows under two vectors
    ],
)
def test_converter_leaves_unfusable_or_unpromising_pairs_alone(model, width, kw):
    torch.manual_seed(0)
    model = _sparse(model)
    x = torch.randn(1, 3, 10, width)
    with torch.no_grad():
        ref = model(x)
    report = sparsify_inference_(model, x, mode="fixed", kernels=("spk", "spk_depthwise"), **kw)
    assert report.check.startswith("ok") and report.blocks == [], report.summary()
    assert not any(isinstance(m, ExpandDepthwise) for m in model.modules())
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)


def test_calibrated_fusion_says_what_it_measured_and_never_changes_the_output():
    torch.manual_seed(1)
    model = _sparse(_Block(c=8, e=48, stride=2))
    x = torch.randn(1, 3, 24, 4 * VW)
    with torch.no_grad():
        ref = model(x)
    report = sparsify_inference_(model, x, kernels=("spk", "spk_depthwise"), reps=3, threads=1)
    assert report.check.startswith("ok"), report.summary()
    if report.blocks:  # timed: fused where faster, kept apart otherwise, either way said
        (line,) = report.blocks
        assert ("fused" in line and "apart" in line) and "x (lower quartile" in line, line
        # where fused, the pair may sit inside a DepthwiseProject with the projection too
        fused = any(isinstance(m, ExpandDepthwise) for m in model.modules())
        assert fused == ("kept apart" not in line), report.summary()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)


class _Pooled(_Block):
    """The block with a max pool before the projection (every kind of converted layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.bn2(self.dw(self.act1(self.bn1(self.expand(self.stem(x)))))))
        return self.project(self.pool(h)).mean((2, 3))


@pytest.mark.skipif(not K.available(), reason="needs the C kernels")
def test_a_copy_or_pickle_of_a_converted_model_runs_on_its_own_arrays():
    # converted layers keep packed kernel calls holding raw addresses of their own arrays; a
    # copy that kept them would compute with the original's weights, and read freed memory
    # once the original is gone
    torch.manual_seed(0)
    model = _sparse(_Pooled())
    x = torch.randn(2, 3, 12, 2 * VW + 3)
    with torch.no_grad():
        ref = model(x)
    report = sparsify_inference_(model, x, mode="fixed", kernels=("spk", "spk_depthwise"))
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"SparseConv2d", "ExpandDepthwise", "StencilMaxPool2d"} <= kinds, report.summary()
    with torch.inference_mode():
        model(x)  # every layer has made its packed call for this shape
    twin, thawed = copy.deepcopy(model), pickle.loads(pickle.dumps(model))
    for m in model.modules():  # scribble on the original's arrays, then let it go
        for arr in (getattr(getattr(m, "weight_spk", None), "val", None),):
            if arr is not None:
                arr.flags.writeable = True
                arr[...] = 1e6
        if isinstance(m, ExpandDepthwise):
            m._csr[2][...] = 1e6
        if getattr(m, "_act", None) is not None:
            m._act[...] = -1e6
    del model
    gc.collect()
    with torch.inference_mode():
        for copied in (twin, thawed):
            torch.testing.assert_close(copied(x), ref, rtol=1e-4, atol=1e-4)
