"""sparsify.kernels against dense float64 references: every kernel, layout, tile width and the
scipy fallback, on odd shapes, all-zero and fully dense layers, empty rows; corrupt layouts
are refused before any C code runs."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sparsify import kernels as K
from sparsify.errors import SparsifyError
from sparsify.kernels import build
from sparsify.kernels.layouts import SparseWeight

PORTABLE = ("-O2", "-shared", "-fPIC")  # no -march, no OpenMP: the 128-bit/scalar variant
AVX2 = ("-O2", "-mavx2", "-mfma", "-shared", "-fPIC")  # 8-float vectors, no OpenMP


def _weight(rng: np.random.Generator, shape: tuple[int, ...], density: float) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32)
    return np.where(rng.random(shape) < density, w, 0).astype(np.float32)


def _assert_fp32_close(y: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> None:
    """|y - ref| <= 1e-5 * (|W| |x|): fp32 accumulation noise, reordered sums included."""
    assert y.shape == ref.shape
    err = np.abs(y.astype(np.float64) - ref)
    bound = 1e-5 * scale + 1e-30
    assert np.all(err <= bound), f"max err {err.max():.3g}, worst ratio {(err / bound).max():.3g}"


def _linear_ref(w: np.ndarray, x: np.ndarray, bias: np.ndarray | None = None):
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    ref = x64 @ w64.T + (0 if bias is None else bias.astype(np.float64))
    scale = np.abs(x64) @ np.abs(w64).T + (0 if bias is None else np.abs(bias))
    return ref, scale


def test_builds_and_reports():
    assert K.available(), K.info()
    info = K.info()
    assert info["isa"] in ("avx512f", "avx2+fma", "avx", "generic-128bit")
    assert info["vector_width"] in (4, 8, 16)
    folder = os.path.dirname(info["library"])
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


SHAPES = [(1, 1), (1, 37), (37, 1), (17, 33), (64, 300), (130, 513)]
DENSITIES = [0.0, 0.01, 0.1, 0.5, 1.0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", DENSITIES)
def test_spmm_matches_dense(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    w = _weight(rng, shape, density)
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    packs = [
        K.pack(w, "csr"),
        K.pack(w, "blocked", panel=8, kblock=32),
        K.pack(w, "blocked", panel=5, kblock=7),
    ]
    for batch in (1, 3, 16, 64, 100):
        x = rng.standard_normal((batch, shape[1])).astype(np.float32)
        ref, scale = _linear_ref(w, x)
        refb, scaleb = _linear_ref(w, x, bias)
        for tv in (1, 2, 4, 8):  # every tile kernel, with remainder tiles
            _assert_fp32_close(K.spmm(packs[1], x, threads=1, tile_vectors=tv), ref, scale)
        for sw in packs:
            _assert_fp32_close(K.spmm(sw, x, bias=bias), refb, scaleb)
        # the transposed layout: (in, batch) -> (out, batch)
        yt = K.spmm_t(packs[2], np.ascontiguousarray(x.T), bias=bias, threads=1)
        _assert_fp32_close(yt, refb.T, scaleb.T)


def test_empty_rows_and_empty_column_blocks():
    rng = np.random.default_rng(1)
    w = _weight(rng, (70, 200), 0.3)
    w[:, 64:128] = 0  # an empty column block
    w[:, -1] = 1.5  # the last (partial) block holds something
    w[::3] = 0  # empty rows
    x = rng.standard_normal((33, 200)).astype(np.float32)
    ref, scale = _linear_ref(w, x)
    for sw in (K.pack(w, "csr"), K.pack(w, "blocked", panel=16, kblock=64)):
        _assert_fp32_close(K.spmm(sw, x), ref, scale)
        _assert_fp32_close(K.spmm(sw, x[:1]), ref[:1], scale[:1])
        assert np.array_equal(K.spmm(sw, x)[:, ::3], np.zeros_like(ref[:, ::3]))


def test_thread_counts_give_identical_bits():
    rng = np.random.default_rng(2)
    w = _weight(rng, (300, 400), 0.1)
    sw = K.pack(w, "blocked", panel=16, kblock=64)
    for batch in (1, 5, 64):
        x = rng.standard_normal((batch, 400)).astype(np.float32)
        assert np.array_equal(K.spmm(sw, x, threads=1), K.spmm(sw, x, threads=2))
        xt = np.ascontiguousarray(x.T)
        assert np.array_equal(K.spmm_t(sw, xt, threads=1), K.spmm_t(sw, xt, threads=2))
    # one panel and one tile: two threads split the panel into row chunks
    small = K.pack(_weight(rng, (120, 400), 0.1))
    x = rng.standard_normal((64, 400)).astype(np.float32)
    assert np.array_equal(K.spmm(small, x, threads=1), K.spmm(small, x, threads=2))
    wc = _weight(rng, (24, 8, 3, 3), 0.2)
    swc = K.pack(wc, panel=8, kblock=16)
    img = rng.standard_normal((2, 8, 15, 13)).astype(np.float32)
    assert np.array_equal(
        K.sparse_conv2d(swc, img, 2, 1, threads=1), K.sparse_conv2d(swc, img, 2, 1, threads=2)
    )


def _fork_child(sw, x, q) -> None:
    q.put((K.spmm(sw, x, threads=2), K.info()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_hang():
    """GNU OpenMP hangs in a child forked after a parallel region: the child runs the
    kernels built without OpenMP."""
    import multiprocessing as mp

    rng = np.random.default_rng(7)
    sw = K.pack(_weight(rng, (300, 400), 0.2))
    x = rng.standard_normal((64, 400)).astype(np.float32)
    parent = K.spmm(sw, x, threads=2)  # starts the OpenMP pool in this process
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_fork_child, args=(sw, x, q))
    proc.start()
    try:
        child, child_info = q.get(timeout=120)  # before join: the pipe holds ~77 KB
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    assert child_info["available"] and not child_info["openmp"]
    ref, scale = _linear_ref(sw.to_dense(), x)
    _assert_fp32_close(child, ref, scale)
    _assert_fp32_close(parent, ref, scale)


def test_out_buffer_and_pack_sources():
    rng = np.random.default_rng(3)
    w = _weight(rng, (40, 50), 0.2)
    x = rng.standard_normal((7, 50)).astype(np.float64)  # converted to float32
    ref, scale = _linear_ref(w, x.astype(np.float32))
    out = np.full((7, 40), np.nan, dtype=np.float32)
    assert K.spmm(K.pack(sp.csr_matrix(w)), x, out=out) is out
    _assert_fp32_close(out, ref, scale)
    _assert_fp32_close(K.spmm(K.pack(torch.from_numpy(w)), x), ref, scale)
    assert np.array_equal(K.pack(w, "blocked", panel=3, kblock=9).to_dense(), w)
    w4 = _weight(rng, (4, 3, 2, 5), 0.5)
    assert np.array_equal(K.pack(w4).to_dense(), w4)
    assert K.pack(w).nnz == np.count_nonzero(w)
    # auto picks the column block by density; csr when the weight is narrow
    assert K.pack(_weight(rng, (8, 4096), 0.01)).kblock == 1024
    assert K.pack(_weight(rng, (8, 4096), 0.5)).kblock == 128
    assert K.pack(_weight(rng, (8, 100), 0.5)).layout == "csr"


def test_repack_a_packed_weight_in_another_layout():
    # what the runtime does when a weight packed for batch > 1 first runs at batch 1: the new
    # layout is made from the packing itself, which caches no scipy copy on the way
    rng = np.random.default_rng(8)
    w = _weight(rng, (70, 600), 0.05)
    blocked = K.pack(w, "blocked", panel=16, kblock=128)
    csr = K.pack(blocked, "csr")
    assert csr.layout == "csr" and np.array_equal(csr.to_dense(), w)
    assert np.array_equal(K.pack(csr, "blocked", kblock=64).to_dense(), w)
    assert "csr" not in blocked._cache  # no hidden second copy of the weight
    w4 = _weight(rng, (6, 3, 3, 3), 0.3)
    again = K.pack(K.pack(w4, "csr"), "auto")
    assert again.kernel_size == (3, 3) and np.array_equal(again.to_dense(), w4)


CONV_CASES = [
    # (oc, ic, kernel, H, W, stride, padding, dilation, N)
    (16, 8, (3, 3), 13, 11, 1, 1, 1, 2),
    (7, 5, (3, 3), 10, 9, 2, 1, 1, 1),
    (9, 4, (1, 1), 7, 8, 1, 0, 1, 2),  # 1x1: the product on the (C, H*W) layout
    (9, 4, (1, 1), 7, 8, 2, 0, 1, 1),  # strided 1x1 (resnet downsample)
    (6, 3, (5, 5), 17, 15, 2, 2, 2, 1),
    (4, 3, (1, 3), 9, 10, (1, 2), (0, 1), (2, 1), 1),
    (5, 2, (7, 7), 23, 21, 2, 3, 1, 1),  # resnet stem shape
    (1, 1, (3, 3), 3, 3, 1, 0, 1, 3),  # one output pixel
    (33, 17, (3, 3), 6, 5, 1, 1, 1, 1),
    # 1x1, stride 1, no padding: x read in place; planes a whole number of 16-float vectors
    # (8x16), with a last tile past the plane's end (14x14 = 196, 17x19 = 323: tiles of 128,
    # 64 and 16 floats, the last one copied), and smaller than one vector (2x3)
    (12, 20, (1, 1), 8, 16, 1, 0, 1, 2),
    (12, 20, (1, 1), 14, 14, 1, 0, 1, 3),
    (40, 24, (1, 1), 17, 19, 1, 0, 1, 1),
    (7, 6, (1, 1), 2, 3, 1, 0, 1, 2),
    # stride 1 with output rows a whole number of vectors or nearly: kw shifted, aligned
    # copies of the input rows (Wo 14 -> 16, 24 -> 32, 30 -> 32; a column dilation of 2)
    (12, 5, (3, 3), 9, 14, 1, 1, 1, 2),
    (7, 3, (5, 5), 11, 28, 1, 0, 1, 1),
    (6, 4, (3, 3), 5, 30, 1, (1, 2), (1, 2), 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_sparse_conv2d_matches_torch(case, density):
    oc, ic, ks, h, w_, s, p, d, n = case
    rng = np.random.default_rng(hash((case, density)) % 2**32)
    w = _weight(rng, (oc, ic, *ks), density)
    x = rng.standard_normal((n, ic, h, w_)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    xt, wt = torch.from_numpy(x).double(), torch.from_numpy(w).double()
    ref = torch.nn.functional.conv2d(xt, wt, torch.from_numpy(b).double(), s, p, d).numpy()
    scale = torch.nn.functional.conv2d(
        xt.abs(), wt.abs(), torch.from_numpy(b).double().abs(), s, p, d
    )
    for sw in (K.pack(w), K.pack(w, "blocked", panel=4, kblock=9)):
        for tv in (1, 4, 8):
            y = K.sparse_conv2d(sw, x, s, p, d, bias=b, threads=1, tile_vectors=tv)
            _assert_fp32_close(y, ref, scale.numpy())


@pytest.mark.skipif(not K.available(), reason="the C kernels are not compiled here")
@pytest.mark.parametrize("case", CONV_CASES)
def test_sparse_conv2d_with_the_batch_in_the_lanes_matches_torch(case):
    """The batch-in-lanes path (``lanes=True``) on every conv shape, at batches that leave
    the last group of VW images part empty (VW + 3) and that fill two groups and a bit
    (2 VW + 1): the same results as torch, and as the per-image path within fp32 rounding,
    bitwise the same on 1 and 2 threads, the tile widths and a blocked layout included."""
    oc, ic, ks, h, w_, s, p, d, _ = case
    vw = K.info()["vector_width"]
    rng = np.random.default_rng(hash(case) % 2**32)
    w = _weight(rng, (oc, ic, *ks), 0.3)
    b = rng.standard_normal(oc).astype(np.float32)
    for n in (vw + 3, 2 * vw + 1):
        x = rng.standard_normal((n, ic, h, w_)).astype(np.float32)
        xt, wt = torch.from_numpy(x).double(), torch.from_numpy(w).double()
        bt = torch.from_numpy(b).double()
        ref = torch.nn.functional.conv2d(xt, wt, bt, s, p, d).numpy()
        scale = torch.nn.functional.conv2d(xt.abs(), wt.abs(), bt.abs(), s, p, d).numpy()
        for sw in (K.pack(w), K.pack(w, "blocked", panel=4, kblock=9)):
            for tv in (1, 8):
                y = K.sparse_conv2d(sw, x, s, p, d, bias=b, threads=1, tile_vectors=tv, lanes=True)
                _assert_fp32_close(y, ref, scale)
                y2 = K.sparse_conv2d(sw, x, s, p, d, bias=b, threads=2, tile_vectors=tv, lanes=True)
                np.testing.assert_array_equal(y2, y)
            per_image = K.sparse_conv2d(sw, x, s, p, d, bias=b, threads=1, lanes=False)
            _assert_fp32_close(per_image, ref, scale)
        # one image alone in a group of VW: the other lanes' zeros change nothing
        one = K.sparse_conv2d(K.pack(w), x[3:4], s, p, d, bias=b, threads=1, lanes=True)
        _assert_fp32_close(one, ref[3:4], scale[3:4])


def test_lanes_are_chosen_where_they_pay():
    """``lanes_pay``: a full vector of images, a kernel above 1x1 at stride 1, rows that waste
    columns; the plan records the choice (its last entry) and widens the scratch for it."""
    assert K.lanes_pay(16, 16, (5, 5), (1, 1), 12, 8)  # LeNet-5's conv2: 12-wide rows, 8 out
    assert not K.lanes_pay(15, 16, (5, 5), (1, 1), 12, 8)  # not a full vector of images
    assert not K.lanes_pay(64, 16, (1, 1), (1, 1), 14, 14)  # a 1x1 conv wastes nothing
    assert not K.lanes_pay(64, 16, (3, 3), (1, 1), 58, 56)  # 2 of 58 columns: under 5%
    assert not K.lanes_pay(64, 16, (3, 3), (2, 2), 8, 7)  # strided: measured slower
    if not K.available():
        return
    vw = K.info()["vector_width"]
    sw = K.pack(np.ones((4, 3, 5, 5), np.float32))
    for n, want in ((vw, True), (vw - 1, False)):
        geometry = K._conv_geometry(sw, (n, 3, 12, 12), 1, 0, 1)
        plan = K.conv_plan(sw, (n, 3, 12, 12), geometry, K._lib())
        assert bool(plan.array[-1]) is want
        assert plan.phase_floats >= (3 * 12 * 12 * vw if want else geometry[7])


DW_CASES = [
    # (C, M, kernel, H, W, stride, padding, dilation, N): M the depth multiplier
    (8, 1, (3, 3), 13, 11, 1, 1, 1, 2),  # mobilenet's stride-1 block, odd widths
    (6, 1, (3, 3), 20, 17, 2, 1, 1, 1),  # its stride-2 block
    (4, 2, (3, 3), 9, 7, 1, 1, 1, 1),  # multiplier 2: outputs 2c, 2c+1 read channel c
    (3, 1, (5, 5), 17, 15, 2, 2, 2, 3),  # dilated
    (2, 3, (2, 3), 6, 6, (1, 2), (0, 1), 1, 1),  # rectangular, unequal strides
    (5, 1, (3, 3), 3, 3, 1, 0, 1, 1),  # one output pixel
    (3, 1, (1, 1), 4, 9, 1, 0, 1, 2),  # 1x1
    (2, 1, (7, 7), 30, 33, 3, 3, 1, 1),  # large kernel, stride 3
    (1, 1, (3, 3), 1, 1, 1, 1, 1, 1),  # a 1x1 image: every tap but the centre is padding
    # wider than two 16-float vectors: whole-vector row copies, the last vector of a row
    # moved back to end at Wo, and (stride 2) the even-lane shuffle of the row copy
    (3, 1, (3, 3), 9, 37, 1, 1, 1, 2),
    (2, 2, (3, 3), 7, 75, 2, 1, 1, 1),
    (2, 1, (3, 3), 5, 64, 1, 1, 1, 1),  # rows a whole number of vectors
    # stride 2 on rows of two vectors or more: even and odd columns split in registers into
    # the two phase rows (even and odd widths, padding 0-2)
    (4, 1, (3, 3), 8, 34, 2, 1, 1, 2),
    (3, 1, (3, 3), 6, 40, 2, 0, 1, 1),
    (2, 1, (5, 5), 6, 41, 2, 2, 1, 1),
    # many small planes: VW planes at a time in the vector lanes, each with its channel's
    # weights (channels not a multiple of VW: a group spans two images), padding, strides
    (32, 1, (3, 3), 7, 7, 1, 1, 1, 2),  # mobilenet's 7x7 blocks
    (20, 1, (3, 3), 14, 14, 2, 1, 1, 3),
    (24, 1, (5, 5), 9, 11, 1, 2, 1, 1),  # efficientnet's 5x5
    (17, 1, (3, 3), 6, 5, 1, 1, 2, 1),
    # rows of 9-16 outputs, in the lanes on AVX-512 too (mobilenet's 14x14 blocks, 28 -> 14)
    (18, 1, (3, 3), 14, 14, 1, 1, 1, 1),
    (16, 1, (3, 3), 28, 28, 2, 1, 1, 1),
    (20, 1, (3, 3), 15, 16, 1, 1, 1, 2),
    (17, 1, (3, 3), 11, 9, 1, 1, 1, 1),
]


@pytest.mark.parametrize("case", DW_CASES)
def test_depthwise_conv2d_matches_torch_at_any_thread_count(case):
    c, m, ks, h, w_, s, p, d, n = case
    rng = np.random.default_rng(hash(case) % 2**32)
    w = rng.standard_normal((c * m, 1, *ks)).astype(np.float32)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    b = rng.standard_normal(c * m).astype(np.float32)
    xt, wt, bt = (torch.from_numpy(a).double() for a in (x, w, b))
    ref = torch.nn.functional.conv2d(xt, wt, bt, s, p, d, groups=c).numpy()
    scale = torch.nn.functional.conv2d(xt.abs(), wt.abs(), bt.abs(), s, p, d, groups=c).numpy()
    y1 = K.depthwise_conv2d(x, w, b, s, p, d, threads=1)
    _assert_fp32_close(y1, ref, scale)
    np.testing.assert_array_equal(K.depthwise_conv2d(x, w, b, s, p, d, threads=2), y1)
    _assert_fp32_close(K.depthwise_conv2d(x, w, None, s, p, d), ref - b[:, None, None], scale)


def test_stencil_plans_on_torch_buffers_and_without_the_kernels(monkeypatch):
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.standard_normal((2, 4, 10, 9)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((8, 1, 3, 3)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(8).astype(np.float32))
    want = K.depthwise_conv2d(x.numpy(), w.numpy(), b.numpy(), 2, 1, 1)
    geometry = K._dw_geometry(tuple(x.shape), tuple(w.shape), 2, 1, 1)
    s, p, d, m, ho, wo = geometry
    if K.available():
        plan = K.stencil_plan(K.DEPTHWISE, tuple(x.shape), (3, 3), s, p, d, m, (ho, wo))
        assert plan.out_shape == want.shape
        y = torch.full(want.shape, float("nan"))
        K.stencil_run(plan, x.data_ptr(), w.data_ptr(), b.data_ptr(), None, y.data_ptr(), 1)
        np.testing.assert_array_equal(y.numpy(), want)
        # max pool and an empty batch (nothing to write, nothing read)
        k, ps, pp, pd, out_hw = K._pool_geometry(tuple(x.shape), 3, 2, 1, 1)
        plan = K.stencil_plan(K.MAX_POOL, tuple(x.shape), k, ps, pp, pd, 1, out_hw)
        y = torch.empty(plan.out_shape)
        K.stencil_run(plan, x.data_ptr(), None, None, None, y.data_ptr(), 2)
        ref = K.max_pool2d(x.numpy(), 3, 2, 1, 1)
        np.testing.assert_array_equal(y.numpy(), ref)
        empty = K.stencil_plan(K.DEPTHWISE, (0, 4, 10, 9), (3, 3), s, p, d, m, (ho, wo))
        K.stencil_run(empty, 0, w.data_ptr(), None, None, 0, 1)
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")  # numpy computes the same sum
    slow = K.depthwise_conv2d(x.numpy(), w.numpy(), b.numpy(), 2, 1, 1)
    np.testing.assert_allclose(slow, want, rtol=1e-5, atol=1e-5)
    assert K.stencil_plan(K.DEPTHWISE, tuple(x.shape), (3, 3), s, p, d, m, (ho, wo)) is None


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kw", "match"),
    [
        ((1, 4, 8, 8), (4, 2, 3, 3), {}, r"weight must be \(C \* M, 1, kh, kw\)"),
        ((1, 3, 8, 8), (4, 1, 3, 3), {}, "a multiple of C"),
        ((1, 4, 8), (4, 1, 3, 3), {}, r"\(N, C, H, W\)"),
        ((1, 4, 2, 2), (4, 1, 3, 3), {}, "smaller than the"),
        ((1, 4, 8, 8), (4, 1, 3, 3), {"stride": 0}, "'stride' parameter of depthwise_conv2d"),
        ((1, 4, 8, 8), (4, 1, 3, 3), {"padding": (1, -1)}, "'padding' parameter"),
    ],
)
def test_depthwise_conv2d_refuses_bad_shapes_in_one_line(x_shape, w_shape, kw, match):
    with pytest.raises(SparsifyError, match=match):
        K.depthwise_conv2d(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32), **kw)


def test_fallback_when_switched_off(monkeypatch):
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    assert not K.available()
    assert K.info() == {
        "available": False,
        "reason": "SPARSIFY_KERNELS=off",
        "fallback": "scipy.sparse",
    }
    rng = np.random.default_rng(4)
    w = _weight(rng, (30, 45), 0.2)
    bias = rng.standard_normal(30).astype(np.float32)
    for batch in (1, 6):
        x = rng.standard_normal((batch, 45)).astype(np.float32)
        ref, scale = _linear_ref(w, x, bias)
        sw = K.pack(w, "blocked", panel=4, kblock=8)
        _assert_fp32_close(K.spmm(sw, x, bias=bias), ref, scale)
        _assert_fp32_close(K.spmm_t(sw, np.ascontiguousarray(x.T), bias=bias), ref.T, scale.T)
    wc = _weight(rng, (6, 3, 3, 3), 0.4)
    img = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    xt, wt = torch.from_numpy(img).double(), torch.from_numpy(wc).double()
    ref = torch.nn.functional.conv2d(xt, wt, None, 2, 1, 2).numpy()
    scale = torch.nn.functional.conv2d(xt.abs(), wt.abs(), None, 2, 1, 2).numpy()
    _assert_fp32_close(K.sparse_conv2d(K.pack(wc), img, 2, 1, 2), ref, scale)


@pytest.mark.parametrize("layout", ["csr", "blocked"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_spmm_into_on_torch_buffers_matches_spmm(layout, with_bias):
    if not K.available():
        pytest.skip("sparsify.kernels not compiled here")
    rng = np.random.default_rng(7)
    w = _weight(rng, (37, 53), 0.15)
    w[5] = 0  # an empty row
    bias = torch.from_numpy(rng.standard_normal(37).astype(np.float32)) if with_bias else None
    sw = K.pack(w, layout, panel=8, kblock=16)
    for batch in (1, 3, 17):
        x = torch.from_numpy(rng.standard_normal((batch, 53)).astype(np.float32))
        y = torch.full((batch, 37), float("nan"))
        done = K.spmm_into(
            sw, x.data_ptr(), batch, y.data_ptr(), None if bias is None else bias.data_ptr(), 1
        )
        assert done
        b = None if bias is None else bias.numpy()
        np.testing.assert_array_equal(y.numpy(), K.spmm(sw, x.numpy(), bias=b, threads=1))


def test_spmm_into_reports_when_the_kernels_are_off(monkeypatch):
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    sw = K.pack(np.eye(4, dtype=np.float32))
    x, y = torch.ones(1, 4), torch.full((1, 4), 7.0)
    assert not K.spmm_into(sw, x.data_ptr(), 1, y.data_ptr(), None, 1)
    assert torch.all(y == 7.0)  # nothing written


def test_compiler_failure_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc-for-sparsify-tests")
    monkeypatch.setattr(build, "_warned", False)
    rng = np.random.default_rng(5)
    w = _weight(rng, (12, 20), 0.3)
    x = rng.standard_normal((4, 20)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = K.spmm(K.pack(w), x)
        K.spmm(K.pack(w), x)
    assert not K.available()
    assert "no C compiler" in K.info()["reason"]
    msgs = [str(c.message) for c in caught if "sparsify.kernels" in str(c.message)]
    assert len(msgs) == 1 and "\n" not in msgs[0]
    ref, scale = _linear_ref(w, x)
    _assert_fp32_close(y, ref, scale)


def _cpu_has(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


@pytest.mark.parametrize(
    "flags",
    [
        PORTABLE,
        pytest.param(
            AVX2,
            marks=pytest.mark.skipif(
                not (_cpu_has("avx2") and _cpu_has("fma")), reason="this CPU has no AVX2+FMA"
            ),
        ),
    ],
    ids=["128bit", "avx2"],
)
def test_portable_variant_compiles_and_matches(monkeypatch, tmp_path, flags):
    """Builds other CPUs get (128-bit/scalar: no -march, no OpenMP; AVX2 without AVX-512) run
    here too: each vector width's tile, transpose and remainder paths against float64."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lib = build.load(flags)
    assert lib is not None and lib.path.is_relative_to(tmp_path)
    assert stat.S_IMODE(os.stat(lib.path.parent).st_mode) == 0o700
    assert not [f for f in os.listdir(lib.path.parent) if f != "libspk.so"]  # no temp left
    rng = np.random.default_rng(6)
    w = _weight(rng, (50, 70), 0.2)
    sw = K.pack(w, "blocked", panel=8, kblock=16)
    bias = rng.standard_normal(50).astype(np.float32)
    for batch in (1, 9, 40):
        x = rng.standard_normal((batch, 70)).astype(np.float32)
        ref, scale = _linear_ref(w, x, bias)
        for packed in (sw, K.pack(w, "csr")):  # panel 8 and panel 128 (50 rows: 3 blocks + 2)
            _assert_fp32_close(K.spmm(packed, x, bias=bias, _flags=flags), ref, scale)
    wc = _weight(rng, (5, 4, 3, 3), 0.5)
    img = rng.standard_normal((1, 4, 8, 9)).astype(np.float32)
    xt, wt = torch.from_numpy(img).double(), torch.from_numpy(wc).double()
    ref = torch.nn.functional.conv2d(xt, wt, None, 1, 1).numpy()
    scale = torch.nn.functional.conv2d(xt.abs(), wt.abs(), None, 1, 1).numpy()
    _assert_fp32_close(K.sparse_conv2d(K.pack(wc), img, 1, 1, _flags=flags), ref, scale)
    for stride, width in ((1, 9), (1, 37), (2, 75)):  # partial, moved-back and shuffled rows
        img = rng.standard_normal((1, 2, 6, width)).astype(np.float32)
        wd = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
        xt, wt = torch.from_numpy(img).double(), torch.from_numpy(wd).double()
        ref = torch.nn.functional.conv2d(xt, wt, None, stride, 1, groups=2).numpy()
        scale = torch.nn.functional.conv2d(xt.abs(), wt.abs(), None, stride, 1, groups=2).numpy()
        got = K.depthwise_conv2d(img, wd, None, stride, 1, _flags=flags)
        _assert_fp32_close(got, ref, scale)


def _good() -> SparseWeight:
    w = np.zeros((6, 10), np.float32)
    w[0, 1], w[2, 9], w[5, 4] = 1.0, 2.0, 3.0
    return K.pack(w, "blocked", panel=4, kblock=5)


def _fields(sw: SparseWeight, **change):
    base = dict(shape=sw.shape, panel=sw.panel, kblock=sw.kblock, ptr=sw.ptr.copy(),
                idx=sw.idx.copy(), val=sw.val.copy(), kernel_size=sw.kernel_size)  # fmt: skip
    base.update(change)
    return base


@pytest.mark.parametrize(
    "change, message",
    [
        ({"idx": np.array([1, 9, 10], np.int32)}, "column indices span"),
        ({"idx": np.array([-1, 9, 4], np.int32)}, "column indices span"),
        ({"idx": np.array([1, 4, 9], np.int32)}, "outside their row panel or column block"),
        ({"ptr": np.zeros(3, np.int64)}, "ptr has 3 entries"),
        ({"idx": np.array([1, 9, 4], np.int64)}, "int32"),
        ({"val": np.array([1.0, 2.0], np.float32)}, "do not describe one layout"),
        ({"shape": (4, 10)}, "ptr has"),
        ({"kernel_size": (3, 3)}, "does not divide"),
        ({"panel": 0}, "invalid"),
    ],
)
def test_corrupt_layout_is_refused(change, message):
    with pytest.raises(SparsifyError, match=message) as err:
        SparseWeight(**_fields(_good(), **change))
    assert "\n" not in str(err.value)


def test_ptr_must_rise():
    sw = _good()
    ptr = sw.ptr.copy()
    ptr[3], ptr[4] = ptr[4] + 1, ptr[3]
    with pytest.raises(SparsifyError, match="must rise"):
        SparseWeight(**_fields(sw, ptr=ptr))


def test_mutation_after_pack_is_caught_before_c():
    sw = _good()
    with pytest.raises(ValueError, match="read-only"):
        sw.idx[0] = 10**6
    sw.idx.flags.writeable = True
    sw.idx[0] = 10**6  # a deliberate corruption
    with pytest.raises(SparsifyError, match="column indices span"):
        K.spmm(sw, np.ones((2, 10), np.float32))
    view_src = _good()
    idx = view_src.idx.copy()
    sw2 = SparseWeight(**_fields(view_src, idx=idx[:]))  # a view: copied, so idx cannot alias
    idx[0] = 10**6
    assert sw2.idx[0] != 10**6


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda sw: K.spmm(sw, np.ones((2, 9), np.float32)), r"shape \(batch, 10\)"),
        (lambda sw: K.spmm(sw, np.ones(10, np.float32)), r"shape \(batch, 10\)"),
        (lambda sw: K.spmm(sw, np.ones((2, 10)), out=np.empty((2, 6))), "'out' must be"),
        (lambda sw: K.spmm(sw, np.ones((2, 10)), threads=0), "'threads'"),
        (lambda sw: K.spmm(sw, np.ones((2, 10)), bias=np.ones(5)), "'bias'"),
        (lambda sw: K.spmm("w", np.ones((2, 10))), "needs a SparseWeight"),
        (lambda sw: K.spmm_t(sw, np.ones((2, 10))), r"shape \(10, batch\)"),
        (lambda sw: K.spmm_t(sw, np.ones((10, 2)), out=np.empty((2, 6), np.float32)), "'out'"),
        (lambda sw: K.sparse_conv2d(sw, np.ones((1, 10, 4, 4))), "4-D"),
    ],
)
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises(SparsifyError, match=message) as err:
        call(_good())
    assert "\n" not in str(err.value)


CLAMPS = [(0.0, float("inf")), (0.0, 6.0), (-0.5, 0.25)]  # ReLU, ReLU6, a Hardtanh


@pytest.mark.parametrize("clamp", CLAMPS)
def test_fused_clamp_is_the_clip_of_the_unfused_result_and_keeps_nan(clamp):
    """Every kernel's ``clamp`` returns exactly np.clip of what it returns without one (the
    same sums, clamped in registers), NaN included, at batch 1 and above and on 1-2 threads."""
    rng = np.random.default_rng(3)
    lo, hi = clamp
    w2 = _weight(rng, (37, 50), 0.3)
    w4 = _weight(rng, (9, 5, 3, 3), 0.3)
    w1 = _weight(rng, (11, 6, 1, 1), 0.5)
    wd = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    b37, b9, b11, b8 = (rng.standard_normal(n).astype(np.float32) for n in (37, 9, 11, 8))
    xs = {n: rng.standard_normal((n, 50)).astype(np.float32) for n in (1, 5, 40)}
    xs[5][2, 7] = np.nan  # a NaN in: NaNs out, kept by the clamp
    img = rng.standard_normal((2, 5, 9, 8)).astype(np.float32)
    img1 = rng.standard_normal((3, 6, 14, 14)).astype(np.float32)
    img1[1, 2, 3, 4] = np.nan
    imgd = rng.standard_normal((2, 8, 10, 7)).astype(np.float32)
    calls = []
    for layout in ("csr", "auto"):
        sw = K.pack(w2, layout)
        for x in xs.values():
            calls.append(lambda c, t, sw=sw, x=x: K.spmm(sw, x, bias=b37, clamp=c, threads=t))
            calls.append(lambda c, t, sw=sw, x=x: K.spmm_t(sw, x.T, bias=b37, clamp=c, threads=t))
    imgl = rng.standard_normal((19, 5, 9, 8)).astype(np.float32)  # batch in the lanes
    imgl[4, 1, 2, 3] = np.nan
    for sw, x, s, p in (
        (K.pack(w4), img, 2, 1),
        (K.pack(w1), img1, 1, 0),
        (K.pack(w4), imgl, 1, 1),
    ):
        b = b9 if sw.shape[0] == 9 else b11
        calls.append(
            lambda c, t, sw=sw, x=x, s=s, p=p, b=b: K.sparse_conv2d(
                sw, x, s, p, bias=b, clamp=c, threads=t
            )
        )
    calls.append(lambda c, t: K.depthwise_conv2d(imgd, wd, b8, 1, 1, clamp=c, threads=t))
    for call in calls:
        plain = call(None, 1)
        want = np.clip(plain, lo, hi)
        for t in (1, 2):
            np.testing.assert_array_equal(call(clamp, t), want)
        assert np.isnan(want).sum() == np.isnan(plain).sum()


def test_fused_clamp_without_the_kernels(monkeypatch):
    rng = np.random.default_rng(4)
    w2, x = _weight(rng, (6, 9), 0.5), rng.standard_normal((3, 9)).astype(np.float32)
    w4 = _weight(rng, (4, 3, 3, 3), 0.5)
    img = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    wd = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    with_c = [
        K.spmm(K.pack(w2), x, clamp=(0, 6)),
        K.sparse_conv2d(K.pack(w4), img, 1, 1, clamp=(0, 6)),
        K.depthwise_conv2d(img, wd, None, 1, 1, clamp=(0, 6)),
    ]
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    assert not K.available()
    without = [
        K.spmm(K.pack(w2), x, clamp=(0, 6)),
        K.sparse_conv2d(K.pack(w4), img, 1, 1, clamp=(0, 6)),
        K.depthwise_conv2d(img, wd, None, 1, 1, clamp=(0, 6)),
    ]
    for a, b in zip(with_c, without, strict=True):
        assert a.min() >= 0 and a.max() <= 6
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "clamp, match",
    [((1.0, 0.0), "lo <= hi"), ((float("nan"), 1.0), "lo <= hi"), ((0.0,), "pair"), ("ab", "pair")],
)
def test_a_bad_clamp_is_refused_in_one_line(clamp, match):
    sw = K.pack(np.eye(3, dtype=np.float32))
    with pytest.raises(SparsifyError, match=match):
        K.spmm(sw, np.ones((2, 3), np.float32), clamp=clamp)


def test_sparse_conv2d_into_on_torch_buffers_matches_sparse_conv2d():
    rng = np.random.default_rng(6)
    for oc, ic, k, h, w_, s, p in ((9, 4, 3, 11, 10, 2, 1), (12, 20, 1, 14, 14, 1, 0)):
        wt = _weight(rng, (oc, ic, k, k), 0.3)
        sw = K.pack(wt)
        x = torch.randn(2, ic, h, w_)
        b = torch.randn(oc)
        act = np.array([0.0, 1.0], np.float32)
        geometry = K._conv_geometry(sw, tuple(x.shape), s, p, 1)
        plan = K.conv_plan(sw, tuple(x.shape), geometry, K._lib())
        y = torch.empty(2, oc, geometry[3], geometry[4])
        assert K.sparse_conv2d_into(
            plan, x.data_ptr(), y.data_ptr(), b.data_ptr(), 1, act.ctypes.data
        )
        want = K.sparse_conv2d(sw, x.numpy(), s, p, bias=b.numpy(), clamp=(0, 1), threads=1)
        np.testing.assert_array_equal(y.numpy(), want)


POOL_CASES = [
    # (shape, kernel, stride, padding, dilation)
    ((1, 64, 40, 40), 3, 2, 1, 1),  # resnet's stem pool
    ((2, 3, 9, 7), 3, 1, 1, 1),
    ((1, 2, 17, 20), (2, 3), (2, 1), (1, 1), (1, 2)),
    ((1, 1, 1, 1), 1, None, 0, 1),  # stride None: the kernel size, as torch
    ((3, 5, 33, 40), 5, 3, 2, 2),
    ((2, 3, 6, 75), 2, 2, 0, 1),  # LeNet's 2x2 pool, rows wider than a vector
    # many small planes: VW planes at a time in the vector lanes (groups part empty, flat
    # planes not a whole number of vectors, padding, dilation, unequal strides)
    ((2, 10, 24, 24), 2, 2, 0, 1),  # LeNet-5's first pool: 20 planes
    ((4, 8, 24, 24), 3, 3, 0, 1),  # the lecture convnet's 3x3/3 pool
    ((3, 11, 8, 8), 2, None, 0, 1),
    ((1, 17, 5, 7), 3, 1, 1, 1),
    ((2, 16, 11, 13), (2, 3), (2, 1), (1, 1), (1, 2)),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_is_torch_max_pool2d_bit_for_bit_with_nan(case):
    shape, k, s, p, d = case
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    x.view(-1)[x.numel() // 3] = float("nan")  # a NaN in a window: NaN out, as torch
    x.view(-1)[-1] = float("-inf")
    ref = torch.nn.functional.max_pool2d(x, k, s, p, d).numpy()
    for t in (1, 2):
        y = K.max_pool2d(x.numpy(), k, s, p, d, threads=t)
        np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(K.max_pool2d(x.numpy(), k, s, p, d, _flags=PORTABLE), ref)


def test_max_pool2d_without_the_kernels_and_its_errors(monkeypatch):
    x = torch.randn(2, 3, 11, 9)
    ref = torch.nn.functional.max_pool2d(x, 3, 2, 1).numpy()
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")
    np.testing.assert_array_equal(K.max_pool2d(x.numpy(), 3, 2, 1), ref)
    with pytest.raises(SparsifyError, match="at most half the kernel"):
        K.max_pool2d(x.numpy(), 3, 1, 2)
    with pytest.raises(SparsifyError, match="smaller than the"):
        K.max_pool2d(x.numpy(), 13)
    with pytest.raises(SparsifyError, match=r"\(N, C, H, W\)"):
        K.max_pool2d(x.numpy()[0], 2)
    for bad in (True, 2.5, None, (3,)):  # one line, not a TypeError from deep inside
        with pytest.raises(SparsifyError, match="'kernel_size' parameter of max_pool2d"):
            K.max_pool2d(x.numpy(), bad)


def test_conv_argument_errors():
    sw = K.pack(np.ones((2, 3, 3, 3), np.float32))
    with pytest.raises(SparsifyError, match="shape \\(N, 3, H, W\\)"):
        K.sparse_conv2d(sw, np.ones((1, 4, 5, 5), np.float32))
    with pytest.raises(SparsifyError, match="smaller than the"):
        K.sparse_conv2d(sw, np.ones((1, 3, 2, 2), np.float32))
    with pytest.raises(SparsifyError, match="'stride'"):
        K.sparse_conv2d(sw, np.ones((1, 3, 5, 5), np.float32), stride=0)
    for bad in ("no", 1, 0.0):  # "no" would read as True
        with pytest.raises(SparsifyError, match="'lanes' parameter of sparse_conv2d"):
            K.sparse_conv2d(sw, np.ones((1, 3, 5, 5), np.float32), lanes=bad)
    with pytest.raises(SparsifyError, match="NaN"):
        K.pack(np.full((2, 2), np.nan, np.float32))
    with pytest.raises(SparsifyError, match="'layout'"):
        K.pack(np.ones((2, 2), np.float32), "ell")


def test_pack_a_conv_matrix_with_its_kernel_size():
    # the ONNX runtime holds a conv weight as its 2-D (OC, IC * kh * kw) CSR matrix
    rng = np.random.default_rng(11)
    w = _weight(rng, (6, 4, 3, 3), 0.3)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    flat = sp.csr_matrix(w.reshape(6, -1))
    sw = K.pack(flat, "auto", kernel_size=(3, 3))
    assert sw.kernel_size == (3, 3) and sw.in_channels == 4
    want = K.sparse_conv2d(K.pack(w), x, 2, 1, threads=1)
    np.testing.assert_array_equal(K.sparse_conv2d(sw, x, 2, 1, threads=1), want)
    with pytest.raises(SparsifyError, match="kernel_size is for a 2-D weight"):
        K.pack(w, kernel_size=(3, 3))
    with pytest.raises(SparsifyError, match="does not divide"):
        K.pack(flat, kernel_size=(5, 5))  # 36 columns


def test_scratch_buffers_start_on_a_cache_line():
    """The packed activation is read in whole vectors from the scratch's start: numpy's
    16-byte alignment would split each of those loads across two cache lines."""
    K._scratch.bufs = {}
    sizes = [1, 5, 4096 * 64 + 3, 17, 4096 * 80]  # grows twice, reused between
    for n in sizes:
        for dtype in (np.float32, np.int32):
            buf = K._buffer(f"t_{dtype.__name__}", n, dtype)
            assert buf.shape[0] >= n and buf.dtype == dtype and buf.flags.c_contiguous
            assert buf.ctypes.data % K.SCRATCH_ALIGN == 0
            assert K._buffer_addr(f"t_{dtype.__name__}", n, dtype) == buf.ctypes.data
            buf[:n] = 1  # the whole length is writable
    rng = np.random.default_rng(11)
    w = _weight(rng, (70, 300), 0.1)
    x = rng.standard_normal((33, 300)).astype(np.float32)
    ref, scale = _linear_ref(w, x)
    _assert_fp32_close(K.spmm(K.pack(w, "blocked", kblock=64), x), ref, scale)
    assert K._buffer("xt", 1, np.float32).ctypes.data % K.SCRATCH_ALIGN == 0


_ASAN_SCRIPT = r"""
import itertools, numpy as np, torch
from sparsify import kernels as K
flags = ("-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-shared", "-fPIC")
rng = np.random.default_rng(0)
for c, m, h, w, s, p in itertools.product(
    (1, 3), (1, 2), (1, 5, 14), (1, 7, 16, 17, 33, 64, 75), (1, 2), (0, 1)
):
    if h + 2 * p < 3 or w + 2 * p < 3:
        continue
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)  # its own heap block
    wt = rng.standard_normal((c * m, 1, 3, 3)).astype(np.float32)
    y = K.depthwise_conv2d(x, wt, None, s, p, _flags=flags)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(wt).double(), None, s, p, groups=c
    ).numpy()
    assert np.allclose(y, ref, atol=1e-4), (c, m, h, w, s, p)
for c, h, w, n, s, p in ((20, 7, 7, 1, 1, 1), (17, 5, 6, 2, 2, 1), (33, 3, 4, 1, 1, 0)):
    # depthwise with the planes in the lanes: groups part empty, flat remainders
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    y = K.depthwise_conv2d(x, wt, None, s, p, clamp=(-1, 1), threads=2, _flags=flags)
    ref = np.clip(torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(wt).double(), None, s, p, groups=c
    ).numpy(), -1, 1)
    assert np.allclose(y, ref, atol=1e-4), (c, h, w, n, s, p)
vw = K.info()["vector_width"]
for ic, e, h, w, n, s, p in ((3, 5, 4, vw, 1, 1, 1), (2, 6, 5, vw + 3, 2, 2, 1), (4, 3, 3, 2 * vw + 1, 1, 1, vw + 1),
                              (3, 4, 4, 2 * vw + 1, 1, 2, 0), (3, 4, 5, 2 * vw + 2, 2, 2, 1)):
    # 1x1 into depthwise, fused: x's last row read in whole vectors, padding past a vector
    x = rng.standard_normal((n, ic, h, w)).astype(np.float32)
    ew = np.where(rng.random((e, ic)) < 0.5, 1.0, 0.0).astype(np.float32)
    wt = rng.standard_normal((e, 1, 3, 3)).astype(np.float32)
    y = K.expand_depthwise_conv2d(x, ew, None, wt, None, s, p, clamp=(-1, 1), threads=2, _flags=flags)
    hid = torch.from_numpy(np.einsum("ec,nchw->nehw", ew, x)).double()
    ref = np.clip(torch.nn.functional.conv2d(
        hid, torch.from_numpy(wt).double(), None, s, p, groups=e).numpy(), -1, 1)
    assert np.allclose(y, ref, atol=1e-4), (ic, e, h, w, n, s, p)
for ic, e, co, h, w, n, s, p in ((0, 5, 3, 4, 7, 1, 1, 1), (0, 6, 4, 9, 2 * vw + 1, 2, 2, 1),
                                 (3, 4, 2, 5, vw, 1, 1, 0), (2, 7, 5, 6, 2 * vw + 3, 2, 2, 1),
                                 (0, 3, 1, 2, 3, 1, 1, 1), (0, 2 * vw + 3, 4, 3, 3, 2, 1, 1),
                                 (0, vw + 1, 3, 7, 7, 1, 2, 1)):
    # depthwise into 1x1, fused (after a 1x1 expansion where ic): bands, last vector moved back
    x = rng.standard_normal((n, ic or e, h, w)).astype(np.float32)
    ew = np.where(rng.random((e, ic)) < 0.5, 1.0, 0.0).astype(np.float32) if ic else None
    wt = rng.standard_normal((e, 1, 3, 3)).astype(np.float32)
    pw = np.where(rng.random((co, e)) < 0.5, 1.0, 0.0).astype(np.float32)
    y = K.depthwise_project_conv2d(x, wt, None, pw, None, s, p, expand_weight=ew, threads=2,
                                   _flags=flags)
    hid = torch.from_numpy(x if ew is None else np.einsum("ec,nchw->nehw", ew, x)).double()
    mid = torch.nn.functional.conv2d(hid, torch.from_numpy(wt).double(), None, s, p, groups=e)
    ref = np.einsum("oe,nehw->nohw", pw, mid.numpy())
    assert np.allclose(y, ref, atol=1e-4), (ic, e, co, h, w, n, s, p)
for c, h, w, n in ((3, 7, 7, 1), (5, 14, 14, 2), (2, 2, 3, 1), (4, 8, 16, 1), (6, 17, 19, 2)):
    # 1x1, stride 1, no padding: read in place, the last tile's columns copied
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = np.where(rng.random((9, c, 1, 1)) < 0.5, 1.0, 0.0).astype(np.float32)
    y = K.sparse_conv2d(K.pack(wt), x, clamp=(0, 1), threads=2, _flags=flags)
    ref = np.clip(np.einsum("oc,nchw->nohw", wt[:, :, 0, 0], x), 0, 1)
    assert np.allclose(y, ref, atol=1e-4), (c, h, w, n)
for c, h, w, n, s, p, d in (
    (3, 5, 7, 17, 1, 1, 1), (2, 12, 12, 16, 1, 0, 1), (4, 9, 21, 33, 2, 1, 1), (1, 5, 6, 19, 1, 0, 2)
):
    # the batch in the lanes: flat planes moved in vectors with a scalar rest, groups part empty
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = np.where(rng.random((5, c, 3, 3)) < 0.5, 1.0, 0.0).astype(np.float32)
    y = K.sparse_conv2d(K.pack(wt), x, s, p, d, clamp=(0, 1), threads=2, lanes=True, _flags=flags)
    ref = np.clip(torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(wt).double(), None, s, p, d).numpy(), 0, 1)
    assert np.allclose(y, ref, atol=1e-4), (c, h, w, n, s, p, d)
for c, h, w, k, p, d in ((3, 5, 14, 3, 1, 1), (2, 7, 28, 5, 0, 1), (2, 4, 30, 3, 2, 2)):
    # one image at a time, kw shifted copies of the rows (aligned taps), rows to the edge
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    wt = np.where(rng.random((4, c, k, k)) < 0.5, 1.0, 0.0).astype(np.float32)
    y = K.sparse_conv2d(K.pack(wt), x, 1, p, d, lanes=False, threads=2, _flags=flags)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(wt).double(), None, 1, p, d).numpy()
    assert np.allclose(y, ref, atol=1e-4), (c, h, w, k, p, d)
for c, h, w, k, s, p in (
    (2, 5, 7, 3, 2, 1), (3, 14, 33, 3, 1, 1), (1, 6, 64, 2, 2, 0),
    (17, 5, 7, 3, 1, 1), (33, 8, 8, 2, 2, 0), (20, 24, 24, 3, 3, 0),  # planes in the lanes
):
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    y = K.max_pool2d(x, k, s, p, _flags=flags)
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p).numpy()
    assert np.array_equal(y, ref), (c, h, w, k, s, p)
for rows, cols, batch in ((5, 7, 1), (33, 40, 3), (16, 300, 17)):
    wd = np.where(rng.random((rows, cols)) < 0.3, 1.0, 0.0).astype(np.float32)
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    for sw in (K.pack(wd), K.pack(wd, "blocked", panel=4, kblock=16)):
        assert np.allclose(K.spmm(sw, x, _flags=flags), x @ wd.T, atol=1e-4)
print("asan-clean")
"""


def test_kernels_stay_inside_their_arrays_under_address_sanitizer(tmp_path):
    """The stencil's whole-vector row copies read up to the last float of x and no further
    (a load one float past it is caught here); the products likewise. gcc builds only."""
    import shutil
    import subprocess
    import sys

    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("no gcc here to build an AddressSanitizer variant")
    libasan = subprocess.run(
        [cc, "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip("gcc has no libasan here")
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0",
               XDG_CACHE_HOME=str(tmp_path), CC=cc)  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-c", _ASAN_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0 and "asan-clean" in res.stdout, res.stderr[-3000:]
