"""Sparse-weight x dense-activation kernels for CPU inference (no torch needed).

    from sparsify import kernels
    sw = kernels.pack(weight)                  # (out, in) or (out, in, kh, kw), zeros dropped
    y = kernels.spmm(sw, x, bias=b)            # x (batch, in) -> y (batch, out) = x W^T + b
    yt = kernels.spmm_t(sw, xt)                # xt (in, batch) -> (out, batch): no transposes
    y = kernels.sparse_conv2d(sw4, img, stride=2, padding=1)   # (N, C, H, W) -> (N, OC, Ho, Wo)
    y = kernels.depthwise_conv2d(img, w_dw, stride=2, padding=1) # dense depthwise (C*M, 1, kh, kw)
    y = kernels.max_pool2d(img, 3, stride=2, padding=1)           # torch's MaxPool2d, same stencil
    kernels.info()                             # ISA, compiler, flags, library path

Contracts:
- Layouts (``pack(w, layout)``): ``csr`` for batch 1 (a gather-based dot product per row,
  memory-bound); ``blocked``/``auto`` for batches >= 2 and convolutions (register-tiled
  product, column blocks sized by density). The converter should pick per layer and batch by
  timing both; results/kernels/README.md has the measured crossovers.
- Formulas: ``spmm`` computes ``y[b, o] = sum_i W[o, i] * x[b, i] + bias[o]`` (torch's
  ``F.linear``); ``sparse_conv2d`` computes torch's ``F.conv2d(x, W, bias, stride, padding,
  dilation, groups=1)``. fp32 in, fp32 out, fp32 accumulation (the sum order differs from
  dense kernels: results agree with a float64 reference within fp32 rounding noise,
  ~ sqrt(nnz per row) * 2^-24 * sum |W x|).
- Threads: ``threads=None`` uses all cores (OpenMP), an int pins that many. Every output is
  computed by one thread in an order fixed by the layout and the batch, so results are
  bitwise identical for any thread count. A process forked after this one ran a
  multi-threaded call runs the kernels built without OpenMP, on one thread (GNU OpenMP would
  hang in the child); the "spawn" start method keeps all cores in children.
- Fused activation: ``spmm``, ``spmm_t``, ``sparse_conv2d`` and ``depthwise_conv2d`` take
  ``clamp=(lo, hi)``: ``y = min(max(y, lo), hi)`` after the bias, on each output while it is
  still in registers (ReLU ``(0, inf)``, ReLU6 ``(0, 6)``), NaN kept as torch keeps it; the
  result is exactly ``np.clip`` of the unclamped one, without a second pass over y.
- Inputs are taken as float32 C-contiguous (converted with a copy otherwise); ``out`` if
  given must already be float32, C-contiguous and of the result's shape.
- Depthwise convolutions (``groups == in_channels``) are dense stencils, 1-9 weights per
  output: ``depthwise_conv2d`` runs them directly (no im2col, no CSR), because torch's CPU
  depthwise conv costs several times their memory traffic at small batches (measured in
  results/kernels/depthwise/). Other grouped convolutions are not handled here.
- Fallback: when the C library cannot be built (no compiler, failed compilation) or
  ``SPARSIFY_KERNELS=off``, the same functions compute with scipy's CSR product (one warning
  line at first use; ``available()`` tells which path runs).

The C source is ``spk.c``; ``build.py`` says why it is compiled at first use, and
``layouts.py`` documents the packed format.
"""

from __future__ import annotations

import os
import threading
from typing import Any, NamedTuple

import numpy as np

from sparsify.errors import SparsifyError
from sparsify.kernels import build
from sparsify.kernels.layouts import LAYOUTS, SparseWeight, pack

__all__ = [
    "LAYOUTS",
    "SparseWeight",
    "available",
    "conv_output_size",
    "depthwise_conv2d",
    "depthwise_project_conv2d",
    "expand_csr",
    "expand_depthwise_conv2d",
    "info",
    "max_pool2d",
    "pack",
    "sparse_conv2d",
    "sparse_conv2d_into",
    "spmm",
    "spmm_into",
    "spmm_t",
    "stencil_plan",
    "stencil_run",
    "StencilPlan",
    "DEPTHWISE",
    "MAX_POOL",
    "EXPAND_DEPTHWISE",
    "DEPTHWISE_PROJECT",
]

# floats per output tile (batch columns or output positions): 64 = 8 AVX2 / 4 AVX-512
# registers of accumulators; measured best at batch 64 (results/kernels/README.md)
DEFAULT_TILE_FLOATS = 64
_scratch = threading.local()


def _lib(flags: tuple[str, ...] | None = None) -> build.Library | None:
    lib = build.load(flags)
    if lib is not None and _forked_after_pool and lib.openmp:
        # see _after_fork_in_child: the same source built without OpenMP (cached on disk)
        return build.load(tuple(f for f in lib.flags if f != "-fopenmp"))
    return lib


def _default_nv(lib: build.Library) -> int:
    return max(1, min(8, DEFAULT_TILE_FLOATS // lib.vector_width))


def available() -> bool:
    """True when the compiled kernels run (False: the scipy fallback runs)."""
    return _lib() is not None


def info() -> dict[str, Any]:
    """How the kernels were built: ``available``, ``isa``, ``vector_width`` (floats),
    ``openmp``, ``max_threads``, ``compiler``, ``compiler_version``, ``flags``, ``library``,
    and ``reason`` when the fallback runs."""
    lib = _lib()
    if lib is None:
        return {"available": False, "reason": build.failure_reason(), "fallback": "scipy.sparse"}
    return {
        "available": True,
        "isa": lib.isa,
        "vector_width": lib.vector_width,
        "openmp": lib.openmp,
        "max_threads": int(lib.lib.spk_max_threads()),
        "compiler": lib.compiler,
        "compiler_version": lib.compiler_version,
        "flags": " ".join(lib.flags),
        "library": str(lib.path),
    }


SCRATCH_ALIGN = 64  # bytes: one cache line, one AVX-512 vector


def _aligned_empty(n: int, dtype: type, align: int = SCRATCH_ALIGN) -> np.ndarray:
    """An uninitialised 1-D array of n elements whose first byte is ``align``-aligned.

    numpy only promises 16 bytes; the kernels read the packed activation in whole vectors at
    multiples of the tile width, so a scratch that starts 16 bytes off a cache line splits
    every one of those loads across two lines (measured: 1.07-1.46x slower products;
    results/probes/2026-12-03-night/).
    """
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + align, dtype=np.uint8)
    off = -raw.ctypes.data % align
    return raw[off : off + n * itemsize].view(dtype)


def _buffer(name: str, n: int, dtype: type) -> np.ndarray:
    """A per-thread, 64-byte-aligned scratch array of at least n elements (grown, never shrunk)."""
    return _scratch_entry(name, n, dtype)[0]


def _buffer_addr(name: str, n: int, dtype: type) -> int:
    """The address of ``_buffer(name, n, dtype)`` (kept with it: reading an array's address
    costs ~1 us, a tenth of a small layer's call)."""
    return _scratch_entry(name, n, dtype)[1]


def _scratch_entry(name: str, n: int, dtype: type) -> tuple[np.ndarray, int, int]:
    """(array, address, capacity) of this thread's scratch ``name``, grown to n elements."""
    store = getattr(_scratch, "bufs", None)
    if store is None:
        store = _scratch.bufs = {}
    entry = store.get(name)
    if entry is None or entry[2] < n:
        buf = _aligned_empty(max(n, 1), dtype)
        entry = store[name] = (buf, _ptr(buf), buf.shape[0])
    return entry


# GNU OpenMP is not fork-safe: a child forked after the parent ran a parallel region hangs
# in its next OpenMP call, even a one-thread one (libgomp waits for the parent's pool threads,
# which do not exist in the child). So we remember whether this process started the pool,
# and a child forked after that loads the same kernels built without OpenMP (one thread;
# compiled once, then cached like the main library) and never touches libgomp.
_pool_started = False
_forked_after_pool = False


# Bumped when the library to call changes under layers that keep a plan (a fork after the
# pool): their per-shape plans hold the library's function and are keyed on this.
_epoch = 0


def _after_fork_in_child() -> None:
    global _forked_after_pool, _epoch
    if _pool_started and not _forked_after_pool:
        _epoch += 1
    _forked_after_pool = _forked_after_pool or _pool_started


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _checked(sw: Any, who: str, threads: int | None) -> int:
    """Refuse anything but a valid :class:`SparseWeight` (re-checked if it was made writable)
    before C touches it; return the thread count to use."""
    if not isinstance(sw, SparseWeight):
        raise SparsifyError(
            f"{who} needs a SparseWeight from kernels.pack; got {type(sw).__name__}."
        )
    sw.ensure_checked()
    return _threads(threads)


def _threads(threads: int | None) -> int:
    """The thread count for the C side (0 = all cores); 1 in a child forked after the pool."""
    global _pool_started
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise SparsifyError(
            f"The 'threads' parameter must be an int >= 1 or None. Got {threads!r} instead."
        )
    if threads != 1:
        _pool_started = True
    return 0 if threads is None else threads


def _f32(name: str, a: Any) -> np.ndarray:
    """``a`` as a C-contiguous float32 array; one line naming ``name`` where it is not numeric."""
    try:
        return np.ascontiguousarray(a, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise SparsifyError(
            f"'{name}' must be an array of numbers; got {type(a).__name__} ({err})."
        ) from None


def _check_out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if (
        not isinstance(out, np.ndarray)
        or out.dtype != np.float32
        or not out.flags.c_contiguous
        or not out.flags.writeable
        or out.shape != shape
    ):
        got = getattr(out, "shape", type(out).__name__)
        raise SparsifyError(
            f"'out' must be a writable C-contiguous float32 array of shape {shape}; got {got}."
        )
    return out


def _bias(bias: Any, n: int, name: str = "bias") -> np.ndarray | None:
    if bias is None:
        return None
    b = _f32(name, bias)
    if b.shape != (n,):
        raise SparsifyError(f"'{name}' must have shape ({n},); got {b.shape}.")
    return b


def _act(clamp: Any, who: str) -> np.ndarray | None:
    """The fused activation ``clamp = (lo, hi)`` as the C side reads it (two float32), or None.

    ``y = min(max(y, lo), hi)`` after the bias, NaN kept: ReLU is ``(0, inf)``, ReLU6
    ``(0, 6)``, Hardtanh ``(min_val, max_val)``."""
    if clamp is None:
        return None
    try:
        lo, hi = (float(v) for v in clamp)
    except (TypeError, ValueError):
        raise SparsifyError(
            f"The 'clamp' parameter of {who} must be None or a pair (lo, hi) of floats, e.g. "
            f"(0, inf) for ReLU. Got {clamp!r} instead."
        ) from None
    if not lo <= hi:  # also refuses NaN
        raise SparsifyError(
            f"The 'clamp' parameter of {who} must have lo <= hi (neither NaN). Got {clamp!r} instead."
        )
    return np.array([lo, hi], dtype=np.float32)


def _clip_(y: np.ndarray, act: np.ndarray | None) -> np.ndarray:
    """The fallback paths' fused activation (np.clip keeps NaN, as the C side does)."""
    if act is not None:
        np.clip(y, act[0], act[1], out=y)
    return y


def _ptr(a: np.ndarray | None) -> int | None:
    """The data address of ``a`` (None for None); cheaper than ``a.ctypes.data``."""
    return None if a is None else a.__array_interface__["data"][0]


def _weight_ptrs(sw: SparseWeight) -> tuple[int, int, int]:
    """(ptr, idx, val) addresses, cached: the arrays are owned and read-only."""
    ptrs = sw._cache.get("ptrs")
    if ptrs is None:
        ptrs = sw._cache["ptrs"] = (_ptr(sw.ptr), _ptr(sw.idx), _ptr(sw.val))
    return ptrs


def spmm(
    sw: SparseWeight,
    x: Any,
    out: np.ndarray | None = None,
    *,
    bias: Any = None,
    clamp: tuple[float, float] | None = None,
    threads: int | None = None,
    tile_vectors: int | None = None,
    _flags: tuple[str, ...] | None = None,
) -> np.ndarray:
    """``y = x @ W.T + bias`` for a packed W (rows, cols): x (batch, cols) -> y (batch, rows).

    Args:
        sw: the packed weight (a 2-D one; a convolution weight works on its matrix view).
        x: (batch, cols) activations, row-major as torch and onnxruntime hold them.
        out: optional result buffer (float32, C-contiguous, (batch, rows)).
        bias: optional (rows,) added to every row of the result.
        clamp: optional fused activation ``(lo, hi)``: ``y = min(max(y, lo), hi)`` after the
            bias, NaN kept (ReLU ``(0, inf)``, ReLU6 ``(0, 6)``), in the same pass.
        threads: OpenMP threads (None: all cores).
        tile_vectors: output tile width in vectors (1, 2, 4, 8; None: 64 floats); a tuning
            knob.

    Batch 1 runs a gather-based dot product per row (memory-bound); larger batches the
    register-tiled product over the transposed activation (see spk.c).
    """
    nt, (rows, cols) = _checked(sw, "spmm", threads), sw.shape
    xa = _f32("x", x)
    if xa.ndim != 2 or xa.shape[1] != cols:
        raise SparsifyError(f"spmm: x must have shape (batch, {cols}); got {xa.shape}.")
    batch = xa.shape[0]
    y = _check_out(out, (batch, rows))
    b = _bias(bias, rows)
    act = _act(clamp, "spmm")
    lib = _lib(_flags)
    if batch == 0 or rows == 0:
        return y
    if lib is None:
        res = (sw.to_scipy() @ xa.T).T
        if b is not None:
            res = res + b
        y[...] = res
        return _clip_(y, act)
    if batch == 1:
        rc = lib.lib.spk_spmv(
            rows, cols, sw.panel, sw.nkb, *_weight_ptrs(sw), _ptr(xa), _ptr(y), _ptr(b), _ptr(act), nt,
        )  # fmt: skip
    else:
        vw = lib.vector_width
        bpad = -(-batch // vw) * vw
        xt = _buffer("xt", cols * bpad, np.float32)
        rc = lib.lib.spk_spmm(
            rows, cols, sw.panel, sw.nkb, *_weight_ptrs(sw), _ptr(xa), batch, _ptr(y), _ptr(b), _ptr(act),
            _ptr(xt), tile_vectors or _default_nv(lib), nt,
        )  # fmt: skip
    if rc != 0:
        raise MemoryError(f"sparsify.kernels: spmm failed with code {rc} (out of memory)")
    return y


def spmm_into(
    sw: SparseWeight,
    x_addr: int,
    batch: int,
    y_addr: int,
    bias_addr: int | None,
    threads: int,
    act_addr: int | None = None,
) -> bool:
    """``spmm`` on raw addresses, for callers that own the buffers (a torch layer's tensors).

    Contract: ``x_addr`` points to ``batch * cols`` float32 (row-major (batch, cols)),
    ``y_addr`` to ``batch * rows`` writable float32, ``bias_addr`` to ``rows`` float32 or is
    None; ``act_addr`` to the two float32 of a fused activation (see :func:`_act`) or None;
    all C-contiguous and alive for the call; ``threads`` >= 1; ``sw`` a checked
    ``SparseWeight`` (from :func:`pack`). Nothing is validated here: the per-call checks and
    array conversions of :func:`spmm` cost more than a small layer's arithmetic (about 40 us
    against 5 us on a 100x300 layer at batch 1). Returns False, having computed nothing, when
    the compiled kernels are not available (the caller then uses another path).
    """
    lib = _lib()
    if lib is None:
        return False
    rows, cols = sw.shape
    if threads != 1:
        _threads(threads)  # remembers that the OpenMP pool started (see _after_fork_in_child)
    wp, ip, vp = _weight_ptrs(sw)
    if batch == 1:
        rc = lib.lib.spk_spmv(
            rows, cols, sw.panel, sw.nkb, wp, ip, vp, x_addr, y_addr, bias_addr, act_addr, threads
        )
    else:
        vw = lib.vector_width
        xt = _buffer("xt", cols * (-(-batch // vw) * vw), np.float32)
        rc = lib.lib.spk_spmm(
            rows, cols, sw.panel, sw.nkb, wp, ip, vp, x_addr, batch, y_addr, bias_addr, act_addr,
            _ptr(xt), _default_nv(lib), threads,
        )  # fmt: skip
    if rc != 0:
        raise MemoryError(f"sparsify.kernels: spmm failed with code {rc} (out of memory)")
    return True


def spmm_t(
    sw: SparseWeight,
    xt: Any,
    out: np.ndarray | None = None,
    *,
    bias: Any = None,
    clamp: tuple[float, float] | None = None,
    threads: int | None = None,
    tile_vectors: int | None = None,
    _flags: tuple[str, ...] | None = None,
) -> np.ndarray:
    """``y = W @ xt + bias[:, None]`` in the transposed layout: xt (cols, batch) -> (rows, batch).

    Same kernels and contract as ``spmm`` without its two transpositions (activation in,
    result out): a chain of sparse layers can keep its activations as (features, batch).
    Batch 1 runs the same gather-based dot product as ``spmm``.
    """
    nt, (rows, cols) = _checked(sw, "spmm_t", threads), sw.shape
    xa = _f32("xt", xt)
    if xa.ndim != 2 or xa.shape[0] != cols:
        raise SparsifyError(f"spmm_t: xt must have shape ({cols}, batch); got {xa.shape}.")
    batch = xa.shape[1]
    y = _check_out(out, (rows, batch))
    b = _bias(bias, rows)
    act = _act(clamp, "spmm_t")
    lib = _lib(_flags)
    if batch == 0 or rows == 0:
        return y
    if lib is None:
        res = np.asarray(sw.to_scipy() @ xa)
        y[...] = res if b is None else res + b[:, None]
        return _clip_(y, act)
    if batch == 1:  # (cols, 1) and (rows, 1) are plain vectors
        rc = lib.lib.spk_spmv(
            rows, cols, sw.panel, sw.nkb, *_weight_ptrs(sw), _ptr(xa), _ptr(y), _ptr(b), _ptr(act), nt,
        )  # fmt: skip
        if rc != 0:
            raise MemoryError(f"sparsify.kernels: spmm_t failed with code {rc}")
        return y
    vw = lib.vector_width
    scratch = _buffer("xt", cols * (-(-batch // vw) * vw), np.float32)
    rc = lib.lib.spk_spmm_t(
        rows, cols, sw.panel, sw.nkb, *_weight_ptrs(sw), _ptr(xa), batch, _ptr(y), _ptr(b),
        _ptr(act), _ptr(scratch), tile_vectors or _default_nv(lib), nt,
    )  # fmt: skip
    if rc != 0:
        raise MemoryError(f"sparsify.kernels: spmm_t failed with code {rc} (out of memory)")
    return y


def _pair(name: str, v: Any, minimum: int, fn: str = "sparse_conv2d") -> tuple[int, int]:
    try:
        t = (v, v) if isinstance(v, int) and not isinstance(v, bool) else tuple(v)
    except TypeError:  # a bool, float or None: not a size
        t = ()
    if len(t) != 2 or any(isinstance(a, bool) or not isinstance(a, int) or a < minimum for a in t):
        raise SparsifyError(
            f"The '{name}' parameter of {fn} must be an int >= {minimum} or a pair of "
            f"them. Got {v!r} instead."
        )
    return int(t[0]), int(t[1])


def conv_output_size(
    size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """(Ho, Wo) = floor((H + 2p - d (k - 1) - 1) / s) + 1 per axis (torch's formula)."""
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel_size, stride, padding, dilation)
    )


def _conv_fallback(
    sw: SparseWeight,
    x: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ho: int,
    wo: int,
) -> np.ndarray:
    """im2col + scipy CSR: (N, C, H, W) -> (N, OC, Ho, Wo)."""
    kh, kw = sw.kernel_size or (1, 1)
    (sh, sw_), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((x.shape[0], x.shape[1], kh, kw, ho, wo), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[
                :,
                :,
                i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                j * dw : j * dw + sw_ * (wo - 1) + 1 : sw_,
            ]
    cols = cols.reshape(x.shape[0], -1, ho * wo)
    csr = sw.to_scipy()
    return np.stack([np.asarray(csr @ c) for c in cols]).reshape(x.shape[0], sw.shape[0], ho, wo)


def sparse_conv2d(
    sw: SparseWeight,
    x: Any,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    bias: Any = None,
    clamp: tuple[float, float] | None = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
    tile_vectors: int | None = None,
    lanes: bool | None = None,
    _flags: tuple[str, ...] | None = None,
) -> np.ndarray:
    """torch's ``conv2d(x, W, bias, stride, padding, dilation, groups=1)`` with a sparse W.

    Args:
        sw: a weight packed from a 4-D (OC, IC, kh, kw) array.
        x: (N, IC, H, W) input (NCHW, as torch and onnxruntime hold it).
        stride, padding, dilation: ints or (h, w) pairs (zero padding).
        bias, clamp, out, threads, tile_vectors: as in ``spmm``; out is (N, OC, Ho, Wo).
        lanes: True runs VW images at a time with the batch in the vector lanes, False one
            image at a time; None (default) lets ``lanes_pay`` choose. Same sums either way
            up to their order (fp32 rounding).

    No im2col: each nonzero (oc, ic, i, j) adds its value times a shifted run of the
    (padded, stride-phase-split) input plane ic to a run of output row oc; 1x1 convolutions
    are the matrix product on the (C, H*W) layout, and with stride 1 and no padding read x
    in place (no copy). Depthwise/grouped convolutions are not supported (keep them dense).
    """
    if not isinstance(sw, SparseWeight) or sw.kernel_size is None:
        raise SparsifyError(
            "sparse_conv2d needs a SparseWeight packed from a 4-D (out, in, kh, kw) weight."
        )
    sw.ensure_checked()
    if lanes is not None and not isinstance(lanes, (bool, np.bool_)):
        raise SparsifyError(
            f"The 'lanes' parameter of sparse_conv2d must be None (choose by shape), True or "
            f"False. Got {lanes!r} instead."
        )
    nt = _threads(threads)
    xa = _f32("x", x)
    geometry = _conv_geometry(sw, xa.shape, stride, padding, dilation)
    s, p, d, ho, wo = geometry[:5]
    n, oc = xa.shape[0], sw.shape[0]
    y = _check_out(out, (n, oc, ho, wo))
    b = _bias(bias, oc)
    act = _act(clamp, "sparse_conv2d")
    lib = _lib(_flags)
    if n == 0 or oc == 0:
        return y
    if lib is None or not geometry[-1]:
        res = _conv_fallback(sw, xa, s, p, d, ho, wo)
        if b is not None:
            res = res + b[:, None, None]
        y[...] = res
        return _clip_(y, act)
    plan = conv_plan(sw, xa.shape, geometry, lib, tile_vectors, lanes)
    _conv_run(plan, _ptr(xa), _ptr(y), _ptr(b), _ptr(act), nt)
    return y


MAX_VW = 16  # floats per vector of the widest build (AVX-512); sizes scratch for any build


def _conv_geometry(
    sw: SparseWeight, x_shape: tuple[int, ...], stride: Any, padding: Any, dilation: Any
) -> tuple:
    """Checked geometry of ``sparse_conv2d`` on an input of ``x_shape``: (stride, padding,
    dilation, Ho, Wo, Hq, Wq, phase_floats, fits) with (Hq, Wq) the stride-phase plane,
    phase_floats the scratch the C side needs (phase planes; for a 1x1 conv with stride 1
    and no padding, read in place, the last tile's columns of every channel; for stride 1
    and kw > 1 the kw row-shifted copies of the aligned-taps layout; the largest, so a build
    without a path fits too) and fits False where the planes overflow int32 offsets."""
    s, p, d = (
        _pair("stride", stride, 1),
        _pair("padding", padding, 0),
        _pair("dilation", dilation, 1),
    )
    ic, (kh, kw) = sw.in_channels, sw.kernel_size
    if len(x_shape) != 4 or x_shape[1] != ic:
        raise SparsifyError(
            f"sparse_conv2d: x must have shape (N, {ic}, H, W); got {tuple(x_shape)}."
        )
    h, w = x_shape[2:]
    ho, wo = conv_output_size((h, w), (kh, kw), s, p, d)
    if ho < 1 or wo < 1:
        raise SparsifyError(
            f"sparse_conv2d: input {h}x{w} is smaller than the (dilated) kernel {kh}x{kw} "
            f"after padding {p}."
        )
    hq = -(-(h + 2 * p[0]) // s[0])
    wq = -(-(w + 2 * p[1]) // s[1])
    used = ic * s[0] * s[1] * hq * wq
    # stride 1, kw > 1: the C side may lay out kw shifted copies of the padded rows, each
    # round_up(Wo, VW) long (aligned taps); sized for the widest vector
    aligned = ic * kw * hq * -(-wo // MAX_VW) * MAX_VW if s == (1, 1) and kw > 1 else 0
    phase_floats = max(used + wq + 2 * MAX_VW, ic * 8 * MAX_VW, aligned)
    fits = used + wq * (ho + 2) <= np.iinfo(np.int32).max
    return s, p, d, ho, wo, hq, wq, phase_floats, fits


def lanes_pay(
    n: int, vw: int, kernel_size: tuple[int, int], stride: tuple[int, int], wq: int, wo: int
) -> bool:
    """Whether ``sparse_conv2d`` runs with the batch in the vector lanes (``spk_conv2d_lanes``)
    rather than over one image's positions: with at least one full vector of images (n >= vw),
    a kernel larger than 1x1 at stride 1, and rows at least 5% wider than the output rows (the
    positions the per-image path computes and throws away). Measured on AVX-512 at batch 16
    and 64 (``results/probes/2026-12-04-lanes/lanes_ab.txt``): 1.1-2.2x on every such conv
    there (LeNet-5's and the lecture convnet's, resnet18's 3x3 on 7-28 pixel planes); 0.87x
    on 56x56 planes (2 of 58 columns thrown away), 0.65-0.99x on 1x1 convs, which waste
    nothing, and at stride 2 1.15x on a 28x28 plane but 0.79-0.84x on 14x14, so not there.
    The default of ``sparse_conv2d`` and of the converter's fixed and cost-model modes; its
    calibration times both ways per conv instead."""
    return (
        n >= vw
        and kernel_size[0] * kernel_size[1] > 1
        and tuple(stride) == (1, 1)
        and wq >= 1.05 * wo
    )


class ConvPlan(NamedTuple):
    """What ``spk_conv2d_plan`` reads for one weight and input shape (see ``conv_plan``)."""

    array: np.ndarray  # int64 (25,), kept alive with the plan
    addr: int
    phase_floats: int
    colmap_ints: int
    stride: tuple[int, int]
    run: Any  # the library's spk_conv2d_plan


def conv_plan(
    sw: SparseWeight,
    x_shape: tuple[int, ...],
    geometry: tuple,
    lib: build.Library | None,
    nv: int | None = None,
    lanes: bool | None = None,
) -> ConvPlan | None:
    """The packed arguments of one ``sparse_conv2d`` call shape on ``lib`` (geometry from
    ``_conv_geometry``; ``nv`` tile vectors, None: the default; ``lanes``: the batch in the
    vector lanes, None: where ``lanes_pay`` says so), or None where the C kernels
    cannot run it (``lib`` None, or planes past int32 offsets). Valid while ``sw`` lives (it
    holds the weight's addresses)."""
    if lib is None or not geometry[-1]:
        return None
    (sh, sw_), (ph, pw), (dh, dw), ho, wo, hq, wq, phase_floats, _ = geometry
    n, ic, h, w = x_shape
    kh, kw = sw.kernel_size
    vw = lib.vector_width
    lane_floats = ic * sh * sw_ * hq * wq * vw
    if lanes is None:
        lanes = lanes_pay(n, vw, (kh, kw), (sh, sw_), wq, wo)
    lanes = bool(lanes) and lane_floats <= np.iinfo(np.int32).max
    if lanes:
        phase_floats = lane_floats
    arr = np.array(
        [sw.shape[0], ic, kh, kw, sw.panel, sw.nkb, *_weight_ptrs(sw), n, h, w, sh, sw_, ph, pw,
         dh, dw, ho, wo, hq, wq, phase_floats, nv or (8 if lanes else _default_nv(lib)),
         int(lanes)],
        dtype=np.int64,
    )  # fmt: skip
    return ConvPlan(
        arr, _ptr(arr), int(phase_floats), 2 * int(sw.shape[1]), (sh, sw_), lib.lib.spk_conv2d_plan
    )


def _conv_run(
    plan: ConvPlan,
    x_addr: int,
    y_addr: int,
    bias_addr: int | None,
    act_addr: int | None,
    threads: int,
) -> None:
    """Run ``spk_conv2d_plan`` (scratch from this thread's buffers); raise on its error codes."""
    scratch = _buffer_addr("phases", plan.phase_floats, np.float32)
    colmap = _buffer_addr("colmap", plan.colmap_ints, np.int32)
    rc = plan.run(plan.addr, x_addr, y_addr, bias_addr, act_addr, scratch, colmap, threads)
    if rc == -3:
        raise SparsifyError(
            f"sparse_conv2d: strides above 64 are not supported; got {plan.stride}."
        )
    if rc != 0:
        raise MemoryError(f"sparsify.kernels: sparse_conv2d failed with code {rc} (out of memory)")


def sparse_conv2d_into(
    plan: ConvPlan | None,
    x_addr: int,
    y_addr: int,
    bias_addr: int | None,
    threads: int,
    act_addr: int | None = None,
) -> bool:
    """``sparse_conv2d`` on raw addresses, for a torch layer that owns the buffers.

    Contract: ``plan`` from ``conv_plan`` for this weight and input shape (N >= 1);
    C-contiguous float32 buffers, alive for the call: x of that shape, y of (N, OC, Ho, Wo),
    bias of OC or None, the fused activation's two float32 (see :func:`_act`) or None;
    ``threads`` >= 1. Nothing is checked here (the checks cost ~15 us a call, more than a
    small conv's work). Returns False, computing nothing, when ``plan`` is None (the C
    kernels were not available when it was made, or the shape needs the fallback). A plan
    calls the library it was made with: a layer that keeps plans keys them on ``_epoch``.
    """
    if plan is None:
        return False
    if threads != 1:
        _threads(threads)  # remembers that the OpenMP pool started (see _after_fork_in_child)
    _conv_run(plan, x_addr, y_addr, bias_addr, act_addr, threads)
    return True


def _dw_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    dilation: Any,
    fn: str = "depthwise_conv2d",
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int, int, int]:
    """Checked (stride, padding, dilation, multiplier M, Ho, Wo) of a depthwise conv; errors
    name ``fn``."""
    s, p, d = (
        _pair("stride", stride, 1, fn),
        _pair("padding", padding, 0, fn),
        _pair("dilation", dilation, 1, fn),
    )
    if len(w_shape) != 4 or w_shape[1] != 1:
        raise SparsifyError(f"{fn}: the weight must be (C * M, 1, kh, kw); got {tuple(w_shape)}.")
    if len(x_shape) != 4 or x_shape[1] < 1 or w_shape[0] % x_shape[1]:
        raise SparsifyError(
            f"{fn}: x must be (N, C, H, W) with the weight's {w_shape[0]} filters a "
            f"multiple of C; got x {tuple(x_shape)}."
        )
    ho, wo = conv_output_size(x_shape[2:], w_shape[2:], s, p, d)
    if ho < 1 or wo < 1:
        raise SparsifyError(
            f"{fn}: input {x_shape[2]}x{x_shape[3]} is smaller than the (dilated) "
            f"kernel {w_shape[2]}x{w_shape[3]} after padding {p}."
        )
    return s, p, d, w_shape[0] // x_shape[1], ho, wo


def depthwise_conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    clamp: tuple[float, float] | None = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
    _flags: tuple[str, ...] | None = None,
) -> np.ndarray:
    """torch's ``conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` (dense).

    ``y[n, o, oy, ox] = bias[o] + sum_{i,j} weight[o, 0, i, j] * x[n, o // M, oy*sh - ph +
    i*dh, ox*sw - pw + j*dw]`` with zero padding, for x (N, C, H, W) and weight (C * M, 1, kh,
    kw) (M the depth multiplier), then the fused activation ``clamp`` as in ``spmm``. fp32;
    without the C kernels, numpy computes the same sum.
    """
    xa, wa = _f32("x", x), _f32("weight", weight)
    (sh, sw_), (ph, pw), (dh, dw), m, ho, wo = _dw_geometry(
        xa.shape, wa.shape, stride, padding, dilation
    )
    n, c, h, w = xa.shape
    y = _check_out(out, (n, c * m, ho, wo))
    b = _bias(bias, c * m)
    act = _act(clamp, "depthwise_conv2d")
    nt = _threads(threads)
    lib = _lib(_flags)
    if lib is None:
        xp = np.pad(np.repeat(xa, m, axis=1), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        acc = (
            np.zeros((n, c * m, ho, wo), np.float32)
            if b is None
            else np.broadcast_to(b[None, :, None, None], (n, c * m, ho, wo)).copy()
        )
        for i in range(wa.shape[2]):
            for j in range(wa.shape[3]):
                tap = xp[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                         j * dw : j * dw + sw_ * (wo - 1) + 1 : sw_]  # fmt: skip
                acc += wa[None, :, 0, i, j, None, None] * tap
        y[...] = acc
        return _clip_(y, act)
    rc = lib.lib.spk_dwconv2d(
        n, c, m, h, w, wa.shape[2], wa.shape[3], sh, sw_, ph, pw, dh, dw, ho, wo,
        _ptr(xa), _ptr(wa), _ptr(b), _ptr(act), _ptr(y), nt,
    )  # fmt: skip
    if rc != 0:
        raise MemoryError(
            f"sparsify.kernels: depthwise_conv2d failed with code {rc} (out of memory)"
        )
    return y


def expand_csr(weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ptr int64, idx int32, val float32): the CSR of a 1x1 conv's (E, IC) or (E, IC, 1, 1)
    weight, row by row, columns ascending (zeros dropped); row e is ``idx[ptr[e]:ptr[e+1]]``."""
    w = _f32("expand_weight", weight)
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w.reshape(w.shape[0], w.shape[1])
    if w.ndim != 2:
        raise SparsifyError(
            f"expand_csr: the weight must be (E, IC) or (E, IC, 1, 1); got {tuple(w.shape)}."
        )
    rows, cols = np.nonzero(w)
    ptr = np.zeros(w.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=ptr[1:])
    return ptr, cols.astype(np.int32), np.ascontiguousarray(w[rows, cols], np.float32)


def expand_depthwise_conv2d(
    x: Any,
    expand_weight: Any,
    expand_bias: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    expand_clamp: tuple[float, float] | None = None,
    clamp: tuple[float, float] | None = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
    _flags: tuple[str, ...] | None = None,
) -> np.ndarray:
    """``depthwise_conv2d(clamp_e(conv2d(x, expand_weight, expand_bias)), weight, bias, ...)``.

    A 1x1 conv (E, IC) into a depthwise conv (E, 1, kh, kw) (multiplier 1), the pair of an
    inverted-residual block, in one pass that never writes the (N, E, H, W) expanded tensor:
    ``h = clip(expand_bias[e] + sum_c expand_weight[e, c] * x[n, c], *expand_clamp)``, then
    ``y = clip(depthwise_conv2d(h, weight, bias, stride, padding, dilation), *clamp)``. The C
    kernel takes planes at least one vector wide (W >= the vector width); narrower ones, and
    machines without the kernels, compute the two steps one after the other.
    """
    xa, ew, wa = _f32("x", x), _f32("expand_weight", expand_weight), _f32("weight", weight)
    if xa.ndim != 4:
        raise SparsifyError(f"expand_depthwise_conv2d: x must be (N, C, H, W); got {xa.shape}.")
    e = ew.shape[0]
    if ew.shape not in ((e, xa.shape[1]), (e, xa.shape[1], 1, 1)) or wa.shape[:2] != (e, 1):
        raise SparsifyError(
            f"expand_depthwise_conv2d: needs expand_weight (E, {xa.shape[1]}) or (E, "
            f"{xa.shape[1]}, 1, 1) and weight (E, 1, kh, kw) with the same E; got "
            f"{tuple(ew.shape)} and {tuple(wa.shape)}."
        )
    n, ic, h, w = xa.shape
    geometry = _dw_geometry((n, e, h, w), wa.shape, stride, padding, dilation)
    y = _check_out(out, (n, e, geometry[4], geometry[5]))
    eb, b = _bias(expand_bias, e, "expand_bias"), _bias(bias, e)
    ea, act = _act(expand_clamp, "expand_depthwise_conv2d"), _act(clamp, "expand_depthwise_conv2d")
    nt = _threads(threads)
    lib = _lib(_flags)
    if lib is not None and w >= lib.vector_width:
        ptr, idx, val = expand_csr(ew)
        rc = lib.lib.spk_expand_dw(
            n, ic, e, h, w, _ptr(ptr), _ptr(idx), _ptr(val), _ptr(eb), _ptr(ea),
            wa.shape[2], wa.shape[3], *geometry[0], *geometry[1], *geometry[2],
            geometry[4], geometry[5], _ptr(wa), _ptr(b), _ptr(act), _ptr(xa), _ptr(y), nt,
        )  # fmt: skip
        if rc == -1:
            raise MemoryError("sparsify.kernels: expand_depthwise_conv2d failed (out of memory)")
        return y
    hid = np.einsum("ec,nchw->nehw", ew.reshape(e, ic), xa, optimize=True).astype(np.float32)
    if eb is not None:
        hid += eb[None, :, None, None]
    _clip_(hid, ea)
    return depthwise_conv2d(
        hid, wa, b, stride, padding, dilation, clamp=clamp, out=y, threads=threads, _flags=_flags
    )


def depthwise_project_conv2d(
    x: Any,
    weight: Any,
    bias: Any,
    project_weight: Any,
    project_bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    clamp: tuple[float, float] | None = None,
    project_clamp: tuple[float, float] | None = None,
    expand_weight: Any = None,
    expand_bias: Any = None,
    expand_clamp: tuple[float, float] | None = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
    _flags: tuple[str, ...] | None = None,
) -> np.ndarray:
    """``conv2d(h, project_weight, project_bias)`` (a 1x1 conv, then ``project_clamp``) of
    ``h = clip(depthwise_conv2d(x, weight, bias, stride, padding, dilation), *clamp)``, the end
    of an inverted-residual block, in one pass that never writes ``h``: each image a band of
    output rows at a time, every channel's rows of the band in a buffer that stays in L2, the
    projection read from there. With ``expand_weight`` (E, IC) the depthwise conv reads the
    1x1 expansion of x as in :func:`expand_depthwise_conv2d` (the whole block in one pass;
    needs W >= the vector width, else the steps run one after the other). Weight (E, 1, kh,
    kw), multiplier 1; ``project_weight`` (CO, E) or (CO, E, 1, 1). Without the C kernels the
    steps run one after the other in numpy.
    """
    xa, wa, pwt = _f32("x", x), _f32("weight", weight), _f32("project_weight", project_weight)
    e = wa.shape[0]
    if pwt.ndim == 4 and pwt.shape[2:] == (1, 1):
        pwt = pwt.reshape(pwt.shape[:2])
    if xa.ndim != 4 or wa.ndim != 4 or wa.shape[1] != 1 or pwt.ndim != 2 or pwt.shape[1] != e:
        raise SparsifyError(
            f"depthwise_project_conv2d: needs x (N, C, H, W), weight (E, 1, kh, kw) and "
            f"project_weight (CO, E) or (CO, E, 1, 1); got {tuple(xa.shape)}, "
            f"{tuple(wa.shape)} and {tuple(pwt.shape)}."
        )
    ew = None if expand_weight is None else _f32("expand_weight", expand_weight)
    if ew is not None:
        ew = ew.reshape(ew.shape[:2]) if ew.ndim == 4 and ew.shape[2:] == (1, 1) else ew
    if (xa.shape[1] if ew is None else ew.shape[0]) != e or (
        ew is not None and ew.shape != (e, xa.shape[1])
    ):
        raise SparsifyError(
            f"depthwise_project_conv2d: the depthwise conv's {e} channels must be x's (or, "
            f"with expand_weight (E, {xa.shape[1]}), its rows); got x {tuple(xa.shape)}"
            + ("" if ew is None else f" and expand_weight {tuple(ew.shape)}")
            + "."
        )
    n, _, h, w = xa.shape
    co = pwt.shape[0]
    s, p, d, _, ho, wo = _dw_geometry(
        (n, e, h, w), wa.shape, stride, padding, dilation, "depthwise_project_conv2d"
    )
    y = _check_out(out, (n, co, ho, wo))
    b, pb = _bias(bias, e), _bias(project_bias, co, "project_bias")
    eb = None if ew is None else _bias(expand_bias, e, "expand_bias")
    act, pact = (
        _act(clamp, "depthwise_project_conv2d"),
        _act(project_clamp, "depthwise_project_conv2d"),
    )
    ea = None if ew is None else _act(expand_clamp, "depthwise_project_conv2d")
    nt = _threads(threads)
    pc, ec = expand_csr(pwt), None if ew is None else expand_csr(ew)
    plan = stencil_plan(
        DEPTHWISE_PROJECT, xa.shape, wa.shape[2:], s, p, d, e, (ho, wo),
        None if ec is None else tuple(_ptr(a) for a in ec), (*(_ptr(a) for a in pc), co),
        _flags=_flags,
    )  # fmt: skip
    if plan is not None:
        stencil_run(
            plan, _ptr(xa), _ptr(wa), _ptr(b), _ptr(act), _ptr(y), nt, _ptr(eb), _ptr(ea),
            _ptr(pb), _ptr(pact),
        )  # fmt: skip
        return y
    if ew is None:
        hid = depthwise_conv2d(xa, wa, b, s, p, d, clamp=clamp, threads=threads, _flags=_flags)
    else:
        hid = expand_depthwise_conv2d(
            xa, ew, eb, wa, b, s, p, d, expand_clamp=expand_clamp, clamp=clamp,
            threads=threads, _flags=_flags,
        )  # fmt: skip
    y[...] = np.einsum("oe,nehw->nohw", pwt, hid, optimize=True)
    if pb is not None:
        y += pb[:, None, None]
    return _clip_(y, pact)


def _pool_geometry(
    x_shape: tuple[int, ...], kernel_size: Any, stride: Any, padding: Any, dilation: Any
) -> tuple[tuple[int, int], ...]:
    """Checked ((kh, kw), stride, padding, dilation, (Ho, Wo)) of ``max_pool2d`` (torch's
    rules: stride defaults to the kernel size, padding at most half the kernel)."""
    fn = "max_pool2d"
    k = _pair("kernel_size", kernel_size, 1, fn)
    s = k if stride is None or stride == () else _pair("stride", stride, 1, fn)
    p, d = _pair("padding", padding, 0, fn), _pair("dilation", dilation, 1, fn)
    if len(x_shape) != 4:
        raise SparsifyError(f"max_pool2d: x must be (N, C, H, W); got {tuple(x_shape)}.")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise SparsifyError(
            f"max_pool2d: padding {p} must be at most half the kernel size {k}, as in torch."
        )
    ho, wo = conv_output_size(x_shape[2:], k, s, p, d)
    if ho < 1 or wo < 1:
        raise SparsifyError(
            f"max_pool2d: input {x_shape[2]}x{x_shape[3]} is smaller than the (dilated) "
            f"kernel {k[0]}x{k[1]} after padding {p}."
        )
    return k, s, p, d, (ho, wo)


def max_pool2d(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
    _flags: tuple[str, ...] | None = None,
) -> np.ndarray:
    """torch's ``max_pool2d(x, kernel_size, stride, padding, dilation)`` (ceil_mode=False).

    ``y[n, c, oy, ox] = max_{i,j} x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]`` over the
    window, padding read as -inf, a NaN in the window gives NaN (as torch). The depthwise
    stencil with a max in place of the weighted sum: one padded copy per plane, the window's
    maxima of VW outputs in one register. On this project's CPU torch's own NCHW max pooling
    is several times slower (results/probes/2026-12-04/).
    """
    xa = _f32("x", x)
    (kh, kw), (sh, sw_), (ph, pw), (dh, dw), (ho, wo) = _pool_geometry(
        xa.shape, kernel_size, stride, padding, dilation
    )
    n, c, h, w = xa.shape
    y = _check_out(out, (n, c, ho, wo))
    nt = _threads(threads)
    lib = _lib(_flags)
    if lib is None:
        xp = np.pad(xa, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
        acc = np.full((n, c, ho, wo), -np.inf, np.float32)
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                         j * dw : j * dw + sw_ * (wo - 1) + 1 : sw_]  # fmt: skip
                np.maximum(acc, tap, out=acc)  # propagates NaN
        y[...] = acc
        return y
    if n * c:
        _pool_call(lib, _ptr(xa), xa.shape, _ptr(y), (kh, kw, sh, sw_, ph, pw, dh, dw, ho, wo), nt)
    return y


def _pool_call(
    lib: build.Library, x_addr: int, x_shape: tuple[int, ...], y_addr: int, g: tuple, nt: int
) -> None:
    n, c, h, w = x_shape
    rc = lib.lib.spk_maxpool2d(n, c, h, w, *g, x_addr, y_addr, nt)
    if rc != 0:
        raise MemoryError(f"sparsify.kernels: max_pool2d failed with code {rc} (out of memory)")


# spk_stencil_plan's ops
DEPTHWISE, MAX_POOL, EXPAND_DEPTHWISE, DEPTHWISE_PROJECT = 0, 1, 2, 3
_STENCIL_NAMES = (
    "depthwise_conv2d",
    "max_pool2d",
    "expand_depthwise_conv2d",
    "depthwise_project_conv2d",
)


class StencilPlan(NamedTuple):
    """What ``spk_stencil_plan`` reads for one layer and input shape (see ``stencil_plan``)."""

    array: np.ndarray  # int64 (24,), kept alive with the plan
    addr: int
    run: Any  # the library's spk_stencil_plan
    out_shape: tuple[int, int, int, int]


def stencil_plan(
    op: int,
    x_shape: tuple[int, int, int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    m: int,
    out_hw: tuple[int, int],
    csr: tuple[int, int, int] | None = None,
    project: tuple[int, int, int, int] | None = None,
    *,
    _flags: tuple[str, ...] | None = None,
) -> StencilPlan | None:
    """The packed arguments of one stencil call on x of ``x_shape`` (N, C, H, W), checked
    geometry given (``_dw_geometry``, ``_pool_geometry``): ``DEPTHWISE`` (``m`` the depth
    multiplier, y (N, C * m, Ho, Wo)), ``MAX_POOL`` (m = 1, y (N, C, Ho, Wo)),
    ``EXPAND_DEPTHWISE`` (``m`` = E rows of the 1x1 expansion whose (ptr, idx, val) addresses
    are ``csr``, from :func:`expand_csr`; y (N, E, Ho, Wo)) or ``DEPTHWISE_PROJECT`` (a
    depthwise conv of multiplier 1 on the m = E channels of x, or of the expansion ``csr`` of
    x's C channels, into the 1x1 projection ``project`` = (ptr, idx, val, CO) addresses and
    rows; y (N, CO, Ho, Wo)). None where the C kernels are not available, or where an
    expansion's planes are narrower than a vector (the caller runs the layers apart). Valid
    while the CSR arrays live."""
    lib = _lib(_flags)
    if lib is None or (csr is not None and x_shape[3] < lib.vector_width):
        return None
    n, c, h, w = x_shape
    ic = c
    if op == DEPTHWISE_PROJECT:
        c = m  # the stencil's channels: E
    arr = np.array(
        [op, n, c, m, h, w, *kernel_size, *stride, *padding, *dilation, *out_hw,
         *(csr or (0, 0, 0)), ic, *(project or (0, 0, 0, 0))],
        dtype=np.int64,
    )  # fmt: skip
    if op == DEPTHWISE_PROJECT:
        oc = project[3] if project else 0
    else:
        oc = c * m if op == DEPTHWISE else (c if op == MAX_POOL else m)
    return StencilPlan(arr, _ptr(arr), lib.lib.spk_stencil_plan, (n, oc, *out_hw))


def stencil_run(
    plan: StencilPlan,
    x_addr: int,
    w_addr: int | None,
    bias_addr: int | None,
    act_addr: int | None,
    y_addr: int,
    threads: int,
    expand_bias_addr: int | None = None,
    expand_act_addr: int | None = None,
    project_bias_addr: int | None = None,
    project_act_addr: int | None = None,
) -> None:
    """Run ``plan`` on raw addresses, for a torch layer that owns the buffers.

    Contract: C-contiguous float32 buffers, alive for the call: x of the plan's input shape,
    y of ``plan.out_shape``; for the convs the (C * m or E, 1, kh, kw) weight, bias or None
    and the fused activation's two float32 (see :func:`_act`) or None; for the fused op also
    the expansion's bias and activation, and the projection's. Nothing is checked here (the
    checks cost more than a small layer's work); ``threads`` 0 means all cores. The plan calls
    the library it was made with: a layer that keeps plans keys them on ``_epoch``.
    """
    global _pool_started
    if threads != 1:
        _pool_started = True  # see _after_fork_in_child
    rc = plan.run(
        plan.addr, x_addr, w_addr, bias_addr, act_addr, y_addr, expand_bias_addr,
        expand_act_addr, project_bias_addr, project_act_addr, threads,
    )  # fmt: skip
    if rc != 0:
        raise MemoryError(
            f"sparsify.kernels: {_STENCIL_NAMES[int(plan.array[0])]} failed with code {rc} "
            "(out of memory)"
        )
