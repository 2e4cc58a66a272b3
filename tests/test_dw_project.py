"""The depthwise conv + 1x1 projection kernel (with or without an expansion in front) against
torch in float64, and the converter's use of it (sparsify.accel.dw_project)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_expand_dw import _sparse  # 90% zeros on the groups=1 convs, batch-norm statistics
from torch import nn

from sparsify import kernels as K
from sparsify.accel import sparsify_inference_
from sparsify.accel.dw_project import DepthwiseProject
from sparsify.accel.expand_dw import ExpandDepthwise
from sparsify.errors import SparsifyError

needs_kernels = pytest.mark.skipif(not K.available(), reason="needs the C kernels")
VW = K.info()["vector_width"] if K.available() else 8

CASES = [
    # (N, IC or None for no expansion, E, CO, H, W, k, stride, pad, dilation)
    (1, None, 8, 6, 9, 20, 3, 1, 1, 1),
    (2, 4, 16, 5, 17, VW + 3, 3, 2, 1, 1),
    (1, None, 24, 7, 7, 7, 3, 1, 1, 1),  # 7x7 planes (planes in the lanes from 16 channels)
    (3, 5, 12, 4, 30, 2 * VW + 1, 3, 2, 1, 1),  # odd width, stride 2 split in registers
    (1, 6, 40, 9, 56, 56, 3, 1, 1, 1),  # mobilenet-like
    (2, None, 300, 9, 14, 14, 5, 1, 2, 1),  # several bands per image
    (1, 4, 8, 3, 11, VW, 3, 1, 2, 2),  # dilation, padding 2
    (1, None, 5, 3, 2, 3, 3, 1, 1, 1),  # the whole output under one vector
    (2, None, 6, 1, 5, 40, 3, 2, 0, 1),  # one output channel, no padding
    # many small planes: the depthwise conv with the planes in the vector lanes
    (2, None, 2 * VW + 3, 6, 3, 3, 3, 1, 1, 1),  # an image's band under one vector
    (1, None, VW + 1, 5, 8, 8, 3, 2, 1, 1),
]


def _case(rng, n, ic, e, co, h, w, k):
    x = rng.standard_normal((n, ic or e, h, w)).astype(np.float32)
    dw = rng.standard_normal((e, 1, k, k)).astype(np.float32)
    pw = rng.standard_normal((co, e)).astype(np.float32) * (rng.random((co, e)) < 0.3)
    pw[0] = 0.0  # an empty row: its channel is the bias alone
    ew = None
    if ic:
        ew = rng.standard_normal((e, ic)).astype(np.float32) * (rng.random((e, ic)) < 0.4)
    return x, dw, pw, ew


def _reference(x, dw, db, ew, eb, pw, pb, s, p, d, clamps):
    """The layers in float64 torch."""
    t = torch.from_numpy
    h = t(x).double()
    if ew is not None:
        h = F.conv2d(h, t(ew).double()[:, :, None, None], t(eb).double()).clamp(*clamps[0])
    h = F.conv2d(h, t(dw).double(), t(db).double(), s, p, d, groups=dw.shape[0])
    h = h.clamp(*clamps[1])
    y = F.conv2d(h, t(pw).double()[:, :, None, None], t(pb).double())
    return y.clamp(*clamps[2]).numpy()


def _run(x, dw, db, ew, eb, pw, pb, s, p, d, clamps, threads):
    return K.depthwise_project_conv2d(
        x, dw, db, pw, pb, s, p, d, clamp=clamps[1], project_clamp=clamps[2],
        expand_weight=ew, expand_bias=eb, expand_clamp=clamps[0], threads=threads,
    )  # fmt: skip


@needs_kernels
@pytest.mark.parametrize("case", CASES)
def test_fused_kernel_matches_the_layers(case):
    n, ic, e, co, h, w, k, s, p, d = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    x, dw, pw, ew = _case(rng, n, ic, e, co, h, w, k)
    db, eb, pb = (rng.standard_normal(m).astype(np.float32) for m in (e, e, co))
    clamps = ((0.0, 6.0), (0.0, 6.0), (-1.0, 1.0))
    ref = _reference(x, dw, db, ew, eb, pw, pb, s, p, d, clamps)
    y1 = _run(x, dw, db, ew, eb, pw, pb, s, p, d, clamps, 1)
    scale = np.abs(ref).max() + 1.0
    np.testing.assert_allclose(y1, ref, rtol=0, atol=2e-5 * scale)
    y2 = _run(x, dw, db, ew, eb, pw, pb, s, p, d, clamps, 2)
    np.testing.assert_array_equal(y2, y1)  # no result depends on the thread count
    y0 = _run(x, dw, db, ew, eb, pw, pb, s, p, d, clamps, None)  # the default: all cores
    np.testing.assert_array_equal(y0, y1)


@pytest.mark.parametrize("ic", [3, None])
def test_without_the_kernels_numpy_computes_the_same(monkeypatch, ic):
    rng = np.random.default_rng(4)
    x, dw, pw, ew = _case(rng, 2, ic, 8, 5, 6, 10, 3)
    db, eb, pb = (rng.standard_normal(m).astype(np.float32) for m in (8, 8, 5))
    clamps = ((0.0, 6.0), (0.0, 6.0), (-1.0, 1.0))
    ref = _reference(x, dw, db, ew, eb, pw, pb, 2, 1, 1, clamps)
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    y = _run(x, dw, db, ew, eb, pw, pb, 2, 1, 1, clamps, 1)
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * (np.abs(ref).max() + 1.0))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"project_weight": np.zeros((4, 7), np.float32)}, "project_weight"),
        ({"x": np.zeros((1, 5, 6, 6), np.float32)}, "channels"),
        ({"expand_weight": np.zeros((8, 2), np.float32)}, "expand_weight"),
        ({"weight": np.zeros((8, 2, 3, 3), np.float32)}, "weight"),
    ],
)
def test_bad_shapes_are_refused_in_one_line(kw, match):
    args = {
        "x": np.zeros((1, 8, 6, 6), np.float32),
        "weight": np.zeros((8, 1, 3, 3), np.float32),
        "bias": None,
        "project_weight": np.zeros((4, 8), np.float32),
    }
    args.update(kw)
    with pytest.raises(SparsifyError, match=match) as err:
        K.depthwise_project_conv2d(**args)
    assert "\n" not in str(err.value)


@needs_kernels
def test_an_all_zero_projection_gives_its_bias_and_nan_stays():
    rng = np.random.default_rng(5)
    x, dw, pw, _ = _case(rng, 1, None, 8, 4, 6, VW + 1, 3)
    pw[:] = 0.0
    db, pb = rng.standard_normal(8).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    wide = ((-np.inf, np.inf),) * 3
    y = _run(x, dw, db, None, None, pw, pb, 1, 1, 1, wide, 1)
    np.testing.assert_array_equal(y, np.broadcast_to(pb[None, :, None, None], y.shape))
    x[0, 3, 2, 4] = np.nan  # read by channel 3's outputs around it, then by every projection
    pw[1, 3] = 1.0
    y = _run(x, dw, db, None, None, pw, pb, 1, 1, 1, wide, 1)
    assert np.isnan(y[0, 1, 1:4, 3:6]).all() and not np.isnan(y[0, 1, 5]).any()


class _Block(nn.Module):
    """A stranger's inverted-residual block (not torchvision's), with a residual."""

    def __init__(self, c: int = 8, e: int = 48, stride: int = 1, expand: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1), nn.BatchNorm2d(e), nn.ReLU6())
        if not expand:
            self.expand = nn.Sequential(nn.Conv2d(c, e, 3, padding=1), nn.ReLU())  # not 1x1
        self.dw = nn.Conv2d(e, e, 3, stride, 1, groups=e, bias=False)
        self.bn, self.act = nn.BatchNorm2d(e), nn.ReLU6()
        self.project = nn.Conv2d(e, c, 1)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        y = self.project(self.act(self.bn(self.dw(self.expand(h)))))
        return (y + h if self.stride == 1 else y).mean((2, 3))


@needs_kernels
@pytest.mark.parametrize("expand", [True, False])
def test_converter_times_the_fusion_says_so_and_keeps_the_output(expand):
    torch.manual_seed(0)
    model = _sparse(_Block(expand=expand))
    x = torch.randn(2, 3, 20, 3 * VW)
    with torch.no_grad():
        ref = model(x)
    report = sparsify_inference_(model, x, kernels=("spk", "spk_depthwise"), reps=3, threads=1)
    assert report.check.startswith("ok"), report.summary()
    assert report.to_dict()["projections"] == report.projections
    if report.projections:  # timed: fused where faster, kept apart otherwise, either way said
        (line,) = report.projections
        assert line.startswith("dw + project: ") and "x (lower quartile" in line, line
        fused = any(isinstance(m, DepthwiseProject) for m in model.modules())
        assert fused == ("kept apart" not in line), report.summary()
        assert f"depthwise + 1x1 {line}" in report.summary()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_untimed_modes_do_not_fuse():
    model = _sparse(_Block())
    x = torch.randn(1, 3, 20, 3 * VW)
    report = sparsify_inference_(model, x, mode="fixed", kernels=("spk", "spk_depthwise"))
    assert report.check.startswith("ok") and report.projections == [], report.summary()
    assert not any(isinstance(m, DepthwiseProject) for m in model.modules())


@needs_kernels
@pytest.mark.parametrize("expand", [True, False])
def test_the_layer_falls_back_and_survives_copies(expand):
    torch.manual_seed(2)
    model = _sparse(_Block(expand=expand))
    x = torch.randn(2, 3, 12, 2 * VW + 3)
    with torch.no_grad():
        ref = model(x)
    sparsify_inference_(model, x, mode="fixed", kernels=("spk", "spk_depthwise"))
    # with the 1x1 expansion, the untimed rule fused it with the depthwise conv (stride 1)
    source, name = (model.expand[0], "expand.0") if expand else (model.dw, "dw")
    assert isinstance(source, ExpandDepthwise) == expand
    fused = DepthwiseProject(source, model.project)
    model.set_submodule(name, fused)
    model.project = nn.Identity()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)
        twin, thawed = copy.deepcopy(model), pickle.loads(pickle.dumps(model))
        del model
        for m in (twin, thawed):
            torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-4)
    # an input that needs a gradient, or (with an expansion) is narrower than a vector, takes
    # the layers apart: the same answer
    h = torch.randn(1, 8 if expand else 48, 7, VW - 1 if expand else VW + 2, requires_grad=True)
    with torch.no_grad():
        want = fused.project(fused.source(h))
    torch.testing.assert_close(fused(h), want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(fused(h), want, rtol=1e-5, atol=1e-5)
