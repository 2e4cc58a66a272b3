"""numpy + scipy kernels for the ONNX runtime: sparse MatMul/Gemm/Conv, fast Conv and pooling.

Sparse weights are ``scipy.sparse.csr_matrix`` (float32 values, int32 indices). Every
product is computed as CSR times a dense matrix, so the weight is never densified:

    MatMul  X (..., K) @ W (K, N)        = (Wt_csr @ X2.T).T,   Wt_csr = W.T as CSR (N, K)
    Gemm    alpha * A' @ B' + beta * C   = alpha * (Bt_csr @ A'.T).T + beta * C
    Conv    W (O, C/g, k...) on X        = W_blk @ im2col(X)    (O, N * L)

Kernels (``kernels=`` of :func:`sparsify.runtime.load`): ``spk`` computes the same products
with :mod:`sparsify.kernels` (the C kernels the converter also times), on the weight packed
on first use per layout, the packing replacing its CSR (:class:`SpkPacks`: one copy of each
weight while the model runs at one kind of batch): MatMul/Gemm ``kernels.spmm(W, X2)``
(``csr`` packing for one row, column-blocked ``auto`` above), a 2-D Conv with groups=1
``kernels.sparse_conv2d`` (no im2col; asymmetric pads applied to the input first), and a
dense 2-D depthwise Conv ``kernels.depthwise_conv2d``. Sparse grouped, non-2-D and stride > 64
Convs stay on scipy. ``scipy`` is the products above; ``auto`` (the default) is
``spk`` where the kernels are compiled, else ``scipy`` (also with ``SPARSIFY_KERNELS=off``).
The two agree within fp32 rounding (different summation orders).

A grouped or depthwise Conv is one block-diagonal CSR matrix ``W_blk`` (O, C * prod(k))
whose row ``o`` of group ``q`` holds its weights in the columns of group ``q``'s input
channels, so every ``groups`` value is one sparse product with the same im2col matrix.

The dense Conv, MaxPool and AveragePool here replace onnx's reference kernels (its MaxPool
loops in Python per output element: 0.7 s for resnet18's one pool at 64x64) with the same
arithmetic on ``sliding_window_view`` windows. Pooling semantics follow ONNX (explicit
pads, ``ceil_mode`` where the last window must start inside the input or the left pad,
``count_include_pad``, dilations). Everything is float32 in, float32 out.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from sparsify import kernels as spk
from sparsify.errors import SparsifyError, check_choice
from sparsify.kernels.layouts import auto_kblock

KERNEL_CHOICES = ("auto", "spk", "scipy")
SPK_MAX_STRIDE = 64  # kernels.sparse_conv2d refuses larger strides: such a Conv stays CSR


def csr_nbytes(matrix: sp.csr_matrix) -> int:
    """Bytes a CSR matrix holds: values + column indices + row pointers."""
    return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)


def to_csr(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """A float32 CSR matrix of ``shape`` with ``values`` at (``rows``, ``cols``) (no duplicates)."""
    m = sp.csr_matrix(
        (values.astype(np.float32, copy=False), (rows, cols)), shape=shape, dtype=np.float32
    )
    m.sum_duplicates()
    return m


def resolve_kernels(kernels: str) -> tuple[str, str]:
    """The product backend for a ``kernels`` choice: ``("spk" | "scipy", why)``.

    ``auto`` is ``spk`` where sparsify's compiled kernels run, else ``scipy`` (why says
    which); ``spk`` where they cannot run raises SparsifyError (one line, with the reason).
    """
    check_choice("load", "kernels", kernels, KERNEL_CHOICES)
    if kernels == "scipy":
        return "scipy", "kernels='scipy' asked for"
    unavailable = None if spk.available() else spk.info().get("reason", "not compiled")
    if unavailable is None:
        return "spk", f"sparsify.kernels ({spk.info()['isa']})"
    if kernels == "spk":
        raise SparsifyError(
            f"kernels='spk' needs sparsify's compiled kernels, which cannot run here "
            f"({unavailable}); use kernels='auto' or 'scipy'."
        )
    return "scipy", f"sparsify.kernels unavailable: {unavailable}"


def spk_layout(rows: int) -> str:
    """The packing ``kernels.spmm`` runs best with for ``rows`` activation rows per call:
    ``csr`` for one (gather dot products, memory-bound), ``auto`` (column-blocked) above
    (results/kernels/README.md)."""
    return "csr" if rows == 1 else "auto"


class SpkPacks:
    """The :mod:`sparsify.kernels` packings of a model's sparse weights, which replace their CSR.

    A weight is held as scipy CSR (in ``weights``) until a product first runs it on the
    kernels; it is then packed in the layout that product wants and its CSR is dropped from
    ``weights``: the packing is the weight from then on (the kernels never read the CSR).
    A later product that wants the other layout (``csr`` at batch 1, column-blocked ``auto``
    above, for a weight wide enough that the two differ: :func:`spk_layout`) repacks from
    the held packing and keeps both, each for the batches it runs fastest on. So each weight
    is held once while the model is called at one kind of batch, twice only once it has run
    at both; where ``auto`` packs as plain CSR (narrow weights) the two are one packing.
    :meth:`held_bytes` counts what is held at the time, CSR and packings together.
    """

    def __init__(
        self, weights: dict[str, sp.csr_matrix], conv_kernels: dict[str, tuple[int, int]]
    ) -> None:
        """``weights``: key -> CSR as the ops hold them (entries are removed from this dict
        as they are packed); ``conv_kernels``: key -> (kh, kw) of each 2-D groups=1 Conv
        weight the kernels take (the other Conv weights stay CSR)."""
        self.weights = weights
        self.conv_kernels = conv_kernels
        self.shapes = {k: (int(w.shape[0]), int(w.shape[1])) for k, w in weights.items()}
        self.nnz = {k: int(w.nnz) for k, w in weights.items()}
        self.packed: dict[tuple[str, str], spk.SparseWeight] = {}
        self._lock = threading.Lock()  # two threads calling the model pack a weight once

    def layout(self, key: str, layout: str) -> str:
        """``layout`` for weight ``key``, with ``auto`` named ``csr`` where ``kernels.pack``
        would make plain CSR of it anyway (fewer than 2 * auto_kblock(density) columns)."""
        if layout != "auto":
            return layout
        rows, cols = self.shapes[key]
        density = self.nnz[key] / (rows * cols) if rows * cols else 0.0
        return "csr" if cols < 2 * auto_kblock(density) else "auto"

    def get(self, key: str, layout: str) -> spk.SparseWeight:
        """The weight ``key`` packed in ``layout`` (a conv weight with its kernel size),
        packed on first use; the CSR is dropped once the weight has a packing."""
        layout = self.layout(key, layout)
        sw = self.packed.get((key, layout))
        if sw is not None:
            return sw
        with self._lock:
            sw = self.packed.get((key, layout))
            if sw is None:
                csr = self.weights.get(key)
                if csr is not None:
                    sw = spk.pack(csr, layout, kernel_size=self.conv_kernels.get(key))
                else:  # already packed in the other layout: repack that
                    held = next(w for (k, _), w in self.packed.items() if k == key)
                    sw = spk.pack(held, layout)
                self.packed[(key, layout)] = sw
                self.weights.pop(key, None)
        return sw

    @property
    def nbytes(self) -> int:
        """Bytes of every packing made so far (ptr + idx + val)."""
        return int(sum(w.ptr.nbytes + w.idx.nbytes + w.val.nbytes for w in self.packed.values()))

    def held_bytes(self) -> int:
        """Bytes the sparse weights hold now: the CSR not yet packed plus every packing."""
        return self.nbytes + sum(csr_nbytes(w) for w in self.weights.values())


def conv_pads(
    auto_pad: str | None,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int] | None,
) -> list[int]:
    """ONNX pads ``[begin_0, ..., begin_n, end_0, ..., end_n]`` for an ``auto_pad`` setting."""
    n = len(spatial)
    if auto_pad in (None, "", "NOTSET"):
        return list(pads) if pads else [0] * (2 * n)
    if auto_pad == "VALID":
        return [0] * (2 * n)
    head, tail = [], []
    for d, k, s, dil in zip(spatial, kernel, strides, dilations, strict=True):
        target = -(-d // s)
        need = max(0, (target - 1) * s + (k - 1) * dil + 1 - d)
        first = (need + 1) // 2 if auto_pad == "SAME_LOWER" else need // 2
        head.append(first)
        tail.append(need - first)
    return head + tail


def windows(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    out: Sequence[int],
    pad_value: float = 0.0,
) -> np.ndarray:
    """Windows of ``x`` (N, C, *spatial) as a view (N, C, *out, *kernel).

    ``pads`` are ONNX begin/end pads filled with ``pad_value``; the end is extended (same
    value) when ``out`` needs more input than that (ceil_mode).
    """
    n = len(kernel)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    widths = [(0, 0), (0, 0)]
    for i in range(n):
        need = (out[i] - 1) * strides[i] + extent[i]
        end = max(pads[n + i], need - x.shape[2 + i] - pads[i])
        widths.append((pads[i], end))
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, constant_values=pad_value)
    win = sliding_window_view(x, extent, axis=tuple(range(2, 2 + n)))  # (N, C, *S', *extent)
    index = (
        slice(None),
        slice(None),
        *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides, strict=True)),
        *(slice(None, None, d) for d in dilations),
    )
    return win[index]


def _out_size(d: int, k: int, s: int, dil: int, begin: int, end: int, ceil: bool) -> int:
    extent = (k - 1) * dil + 1
    span = d + begin + end - extent
    if span < 0:
        raise SparsifyError(
            f"an input of spatial size {d} (+{begin}+{end} padding) is smaller than a "
            f"window of {extent}; give a larger input."
        )
    size = (-(-span // s) if ceil else span // s) + 1
    if ceil and (size - 1) * s >= d + begin:  # ONNX/torch: the last window starts inside
        size -= 1
    return size


def im2col(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
) -> tuple[np.ndarray, list[int]]:
    """(cols (C * prod(kernel), N * prod(out)), out) for a Conv on ``x`` (N, C, *spatial).

    Row order (c, k_0, k_1, ...) matches ``W.reshape(O, -1)``; column order (n, o_0, ...).
    """
    n = len(kernel)
    out = [
        _out_size(x.shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[n + i], False)
        for i in range(n)
    ]
    win = windows(x, kernel, strides, dilations, pads, out)  # (N, C, *out, *kernel)
    perm = (1, *range(2 + n, 2 + 2 * n), 0, *range(2, 2 + n))  # (C, *kernel, N, *out)
    cols = np.ascontiguousarray(win.transpose(perm)).reshape(
        x.shape[1] * math.prod(kernel), x.shape[0] * math.prod(out)
    )
    return cols, out


def _conv_geometry(
    x: np.ndarray,
    kernel: Sequence[int],
    auto_pad: str | None,
    dilations: Sequence[int] | None,
    pads: Sequence[int] | None,
    strides: Sequence[int] | None,
) -> tuple[list[int], list[int], list[int]]:
    n = len(kernel)
    strides = list(strides) if strides else [1] * n
    dilations = list(dilations) if dilations else [1] * n
    pads = conv_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads)
    return strides, dilations, pads


def _finish_conv(y: np.ndarray, batch: int, out: list[int], bias: np.ndarray | None) -> np.ndarray:
    """(O, N * L) -> (N, O, *out), plus the per-channel bias."""
    y = y.reshape(y.shape[0], batch, *out)
    y = np.moveaxis(y, 1, 0)
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * len(out))).astype(np.float32, copy=False)
    return np.ascontiguousarray(y, dtype=np.float32)


def conv_dense(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    group: int = 1,
    auto_pad: str | None = None,
    dilations: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    depthwise_spk: bool = False,
) -> np.ndarray:
    """ONNX Conv with a dense weight ``w`` (O, C/group, *kernel): im2col + batched matmul;
    with ``depthwise_spk``, a 2-D depthwise Conv (group = C, w (C * M, 1, kh, kw)) runs
    ``kernels.depthwise_conv2d`` instead (a stencil, no im2col)."""
    kernel = list(w.shape[2:])
    strides, dilations, pads = _conv_geometry(x, kernel, auto_pad, dilations, pads, strides)
    if depthwise_spk and x.ndim == 4 and group == x.shape[1] and w.shape[1] == 1:
        if pads[0] != pads[2] or pads[1] != pads[3]:  # the kernel pads symmetrically
            x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
            pads = [0, 0, 0, 0]
        b = None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)
        return spk.depthwise_conv2d(x, w, b, tuple(strides), (pads[0], pads[1]), tuple(dilations))
    cols, out = im2col(x, kernel, strides, dilations, pads)  # (C * K, N * L)
    o = w.shape[0]
    per = cols.shape[0] // group
    y = np.matmul(w.reshape(group, o // group, per), cols.reshape(group, per, -1))  # (g, O/g, NL)
    return _finish_conv(y.reshape(o, -1), x.shape[0], out, bias)


def block_diagonal_csr(w_csr: sp.csr_matrix, group: int) -> sp.csr_matrix:
    """A grouped Conv weight (O, C/g * K) as one (O, C * K) CSR matrix (see module docstring)."""
    if group == 1:
        return w_csr
    coo = w_csr.tocoo()
    rows_per = w_csr.shape[0] // group
    cols = coo.col + (coo.row // rows_per) * w_csr.shape[1]
    return to_csr(coo.row, cols, coo.data, (w_csr.shape[0], w_csr.shape[1] * group))


def conv_sparse(
    x: np.ndarray,
    w_blk: sp.csr_matrix | None,
    kernel: Sequence[int],
    bias: np.ndarray | None = None,
    *,
    auto_pad: str | None = None,
    dilations: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    packed: spk.SparseWeight | None = None,
) -> np.ndarray:
    """ONNX Conv with a block-diagonal CSR weight ``w_blk`` (O, C * prod(kernel)).

    ``packed``: the same weight packed for ``kernels.sparse_conv2d`` (a 2-D, groups=1 Conv
    with strides <= SPK_MAX_STRIDE), which then computes it (``w_blk`` is unused, and None once the
    weight is packed); im2col + scipy otherwise."""
    strides, dilations, pads = _conv_geometry(x, kernel, auto_pad, dilations, pads, strides)
    if packed is not None:
        if x.ndim != 4:
            raise SparsifyError(
                f"Conv input has shape {tuple(x.shape)}, the 2-D Conv needs (N, C, H, W); give "
                "the input shape the model was exported with."
            )
        return _conv_spk(x, packed, bias, strides, dilations, pads)
    cols, out = im2col(x, kernel, strides, dilations, pads)  # (C * K, N * L)
    if cols.shape[0] != w_blk.shape[1]:
        raise SparsifyError(
            f"Conv input has {x.shape[1]} channels, the weight expects "
            f"{w_blk.shape[1] // math.prod(kernel)}; give the input shape the model was exported with."
        )
    return _finish_conv(np.asarray(w_blk @ cols), x.shape[0], out, bias)


def _conv_spk(
    x: np.ndarray,
    packed: spk.SparseWeight,
    bias: np.ndarray | None,
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
) -> np.ndarray:
    """A 2-D Conv by ``kernels.sparse_conv2d``; ONNX pads [top, left, bottom, right]."""
    if x.shape[1] != packed.in_channels:
        raise SparsifyError(
            f"Conv input has {x.shape[1]} channels, the weight expects {packed.in_channels}; "
            "give the input shape the model was exported with."
        )
    if pads[0] != pads[2] or pads[1] != pads[3]:  # the kernel pads symmetrically
        x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        pads = [0, 0, 0, 0]
    b = None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)
    return spk.sparse_conv2d(
        packed, x, tuple(strides), (pads[0], pads[1]), tuple(dilations), bias=b
    )


def matmul_sparse(
    x: np.ndarray, wt_csr: sp.csr_matrix | None, packs: SpkPacks | None = None, key: str = ""
) -> np.ndarray:
    """``x (..., K) @ W (K, N)`` given ``wt_csr`` = W.T (N, K) as CSR: (Wt @ X2.T).T, or
    ``kernels.spmm(W.T packed, X2)`` when ``packs`` holds weight ``key`` (``wt_csr`` is then
    unused, and None once the weight is packed)."""
    n, k_w = packs.shapes[key] if packs is not None else wt_csr.shape
    k = x.shape[-1]
    if k != k_w:
        raise SparsifyError(
            f"MatMul input has {k} features, the weight expects {k_w}; give the "
            "input shape the model was exported with."
        )
    x2 = x.reshape(-1, k)  # (M, K)
    if packs is not None:
        sw = packs.get(key, spk_layout(x2.shape[0]))
        y = spk.spmm(sw, x2)  # (M, N), row-major as the evaluator holds it
        return y.reshape(*x.shape[:-1], n)
    y = np.asarray(wt_csr @ x2.T).T  # (M, N)
    return np.ascontiguousarray(y, dtype=np.float32).reshape(*x.shape[:-1], n)


def pool(
    x: np.ndarray,
    kind: str,
    kernel: Sequence[int],
    *,
    auto_pad: str | None = None,
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    max_spk: bool = False,
) -> np.ndarray:
    """ONNX MaxPool (``kind="max"``) or AveragePool (``"avg"``) on ``x`` (N, C, *spatial);
    with ``max_spk``, a 2-D float32 MaxPool without ceil_mode runs ``kernels.max_pool2d``
    (the stencil; padding beyond what it takes, half the kernel on each side, or unequal
    sides, is applied first as -inf)."""
    n = len(kernel)
    strides = list(strides) if strides else [1] * n
    dilations = list(dilations) if dilations else [1] * n
    pads = conv_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads)
    if max_spk and kind == "max" and n == 2 and not ceil_mode and x.dtype == np.float32:
        if (
            pads[0] != pads[2]
            or pads[1] != pads[3]
            or any(pads[i] > kernel[i % 2] // 2 for i in range(4))
        ):
            widths = ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3]))
            x, pads = np.pad(x, widths, constant_values=-np.inf), [0, 0, 0, 0]
        return spk.max_pool2d(
            x, tuple(kernel), tuple(strides), (pads[0], pads[1]), tuple(dilations)
        )
    out = [
        _out_size(
            x.shape[2 + i],
            kernel[i],
            strides[i],
            dilations[i],
            pads[i],
            pads[n + i],
            bool(ceil_mode),
        )
        for i in range(n)
    ]
    axes = tuple(range(-n, 0))
    if kind == "max":
        win = windows(x, kernel, strides, dilations, pads, out, pad_value=-np.inf)
        return np.ascontiguousarray(win.max(axis=axes), dtype=x.dtype)
    win = windows(x, kernel, strides, dilations, pads, out)
    total = win.sum(axis=axes, dtype=np.float32)
    # divisor: window entries inside the input, plus the explicit pads if count_include_pad;
    # never the extra end padding that ceil_mode adds (torch and onnxruntime agree)
    ones = np.ones((1, 1, *x.shape[2:]), np.float32)
    if count_include_pad:
        ones = np.pad(
            ones, [(0, 0), (0, 0), *((pads[i], pads[n + i]) for i in range(n))], constant_values=1.0
        )
        inner = [0] * (2 * n)
    else:
        inner = pads
    count = windows(ones, kernel, strides, dilations, inner, out).sum(axis=axes, dtype=np.float32)
    return np.ascontiguousarray(total / count, dtype=x.dtype)


__all__ = [
    "KERNEL_CHOICES",
    "SpkPacks",
    "block_diagonal_csr",
    "conv_dense",
    "conv_pads",
    "conv_sparse",
    "csr_nbytes",
    "im2col",
    "matmul_sparse",
    "pool",
    "resolve_kernels",
    "spk_layout",
    "to_csr",
    "windows",
]
