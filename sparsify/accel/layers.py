"""Sparse inference layers: a Linear or Conv2d whose weight is held once, as CSR.

Kernels (each computes the dense layer's output, in float32):

    torch_csr   Linear:  y = (W_csr @ x^T)^T + b         torch.sparse.mm, int32 indices
                Conv2d:  cols = unfold(x)                 # (B, C*kh*kw, L)
                         y = W_csr @ cols'                # cols' = (C*kh*kw, B*L)
    torch_csr_panels
                torch_csr with W cut into column panels W = [W_1 | ... | W_k]:
                         y^T = sum_j W_j @ x^T[cols of panel j]   (addmm into one output)
                each panel reads only its slice of x^T, sized to stay in cache
                (:func:`panel_width`); at batch 64 on a 4096-wide layer this is what
                lifts CSR from ~2.8x to ~3.5x dense (results/bench). One panel = torch_csr.
    scipy_csr   the same products with scipy.sparse (single-threaded; fast at small batch)
    dense_compact  the dense kernel on the weight without its dead rows (output units whose
                weights are all zero) and, for Linear, dead columns (inputs no unit reads):
                y = bias;  y[:, R] = x[:, C] @ W[R][:, C]^T + b[R]
                exact, and as efficient per FLOP as dense: what L1-prox training leaves
                (whole units die) is often better served by this than by CSR
    spk         :mod:`sparsify.kernels` (our C kernels, compiled at first use; the same ones
                the torch-free runtime runs): Linear ``kernels.spmm(W, x)`` on torch's (B, in)
                row-major activation, no transposes; Conv2d (groups=1) ``kernels.sparse_conv2d``
                (no im2col). W packed ``auto`` (column-blocked by density: batches >= 2, convs)
    spk_csr     the same with W packed ``csr`` (one column block: what wins at batch 1)
    spk_depthwise  not sparse: a dense depthwise Conv2d (groups = in_channels) on
                ``kernels.depthwise_conv2d``, a stencil torch's CPU convolution runs slower on
                large planes (:class:`DepthwiseConv2d`; the converter times it like the rest)
                Both run on ``torch.get_num_threads()`` threads, only without autograd (under
                ``no_grad``/``inference_mode`` or for an input that needs no grad); an input
                that needs a gradient takes the torch_csr path (built on first such call), so
                gradients flow to the input as they do through torch_csr. Absent from the
                converter's candidates where the C kernels cannot be built
                (:func:`spk_unavailable_reason`).

``torch.sparse.mm(W_csr, x.T)`` is used rather than ``F.linear(x, W_csr)``: the latter
is several times slower at batch > 1. int32 indices halve the index bytes of int64 (what
``to_sparse_csr()`` makes) and are what MKL's sparse BLAS reads natively.
The dense weight is not kept: the layer's memory is that of the CSR arrays. A grouped or
depthwise Conv2d is held as the block-diagonal CSR matrix over all of unfold's rows (same
nnz as its weight). Each layer still answers ``.weight`` (the dense view, made on read) and a
conv's ``in_channels``/``out_channels``/``groups``, for parents that read them instead of
calling the layer.

A layer that computes on the C kernels (``spk``, ``spk_csr``, ``spk_depthwise``) can also
take the activation after it (:mod:`sparsify.accel.fuse`): ``clamp = (lo, hi)`` applies
``min(max(y, lo), hi)`` (ReLU, ReLU6, Hardtanh) while the output is still in registers;
every other path of the layer applies it with ``torch.clamp``.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from sparsify import kernels as spk
from sparsify.errors import SparsifyError, check_choice

# spk_depthwise: not sparse; a dense depthwise Conv2d on kernels.depthwise_conv2d (last, so
# mode="fixed" takes it only where no sparse kernel applies)
KERNELS = (
    "torch_csr",
    "torch_csr_panels",
    "scipy_csr",
    "dense_compact",
    "spk",
    "spk_csr",
    "spk_depthwise",
)
SPARSE_KERNELS = KERNELS[:-1]  # what SparseLinear/SparseConv2d hold
SPK_KERNELS = ("spk", "spk_csr")  # kernel name -> pack layout: "spk" auto, "spk_csr" csr
STENCIL = "spk_depthwise"
# x^T slice a panel reads: width * rhs_cols * 4 bytes. 128 KiB leaves room in a 512 KiB L2
# for the output rows and the CSR stream; 4-16 panels measured alike at 4096 x batch 64.
PANEL_BYTES = 128 * 1024
MIN_PANEL = 256  # narrower panels pay more per-call overhead than the cache saves


def panel_width(in_features: int, rhs_cols: int) -> int:
    """Columns per panel: the largest power of two w with w * rhs_cols * 4 <= PANEL_BYTES,
    at least MIN_PANEL; ``in_features`` (one panel) when that is not narrower."""
    w = max(MIN_PANEL, 1 << max(0, (PANEL_BYTES // (4 * max(1, rhs_cols))).bit_length() - 1))
    return min(w, in_features)


def spk_unavailable_reason() -> str | None:
    """Why the ``spk`` kernels cannot run here (no compiler, failed build, switched off by
    ``SPARSIFY_KERNELS=off``), or None when they can."""
    if spk.available():
        return None
    return spk.info().get("reason") or "the compiled kernels are unavailable"


def csr_int32(weight2d: torch.Tensor) -> torch.Tensor:
    """``weight2d`` (out, in) as a torch CSR tensor with int32 crow/col indices."""
    rows, cols, values = weight_triplets(weight2d)
    return _torch_csr(rows, cols, values, tuple(weight2d.shape))


def weight_triplets(
    weight2d: torch.Tensor, groups: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nonzeros of ``weight2d`` (out, K), row-major, as ``(rows, cols, values)`` of the
    (out, groups * K) matrix that multiplies unfold's columns.

    groups = 1: the matrix itself. groups > 1 (a grouped conv's (out, C/g * kh * kw) weight):
    the block-diagonal matrix in which filter o, of group q = o // (out / groups), reads
    columns [q * K, (q + 1) * K), i.e. only its group's input channels. Zeros (and -0.0)
    are not entries; nothing dense of the block-diagonal size is ever made.
    """
    w = weight2d.detach()
    rows, cols = (w != 0).nonzero(as_tuple=True)  # row-major: CSR order
    values = w[rows, cols]
    if groups > 1:
        cols = cols + (rows // (w.shape[0] // groups)) * w.shape[1]
    return rows, cols, values


def _torch_csr(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """Row-major triplets as a torch CSR tensor with int32 indices (what MKL reads natively)."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.int32, device=values.device)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    return _csr(crow, cols.to(torch.int32), values.contiguous(), shape)


def _csr(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` of these parts, quietly; an inference-mode CSR where the
    values are inference tensors (else its values could not be read outside that mode)."""
    with warnings.catch_warnings(), torch.inference_mode(values.is_inference()):
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, tuple(shape), dtype=values.dtype)


class _CsrParts(tuple):
    """``(crow, col, values, shape)`` of a torch CSR tensor, which copies and pickles."""

    @classmethod
    def of(cls, c: torch.Tensor) -> _CsrParts:
        with torch.inference_mode(c.is_inference()):  # one made there is read there only
            return cls((c.crow_indices(), c.col_indices(), c.values(), tuple(c.shape)))

    def tensor(self) -> torch.Tensor:
        return _csr(*self)


def _csr_apply(
    c: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> torch.Tensor:
    """``fn`` (a Module._apply conversion) on a torch CSR's values; its indices only follow
    ``device`` (a CSR has no storage of its own for fns such as ``share_memory_``)."""
    return _csr(c.crow_indices().to(device), c.col_indices().to(device), fn(c.values()), c.shape)


def _outside_inference_mode(init: Callable[..., None]) -> Callable[..., None]:
    """Run a layer's ``__init__`` with inference mode off: the converter builds layers while
    calibrating under ``torch.inference_mode``, and tensors made there could never be used
    again in a forward that tracks gradients ("Inference tensors cannot be saved for
    backward")."""

    @functools.wraps(init)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with torch.inference_mode(False):
            init(*args, **kwargs)

    return wrapper


class _ShapeCache(tuple):
    """``(key, value)`` of :func:`per_shape`. A copy or pickle of the module drops it: the
    value holds raw addresses of the module's own arrays (a packed kernel call), which a copy
    would otherwise keep reading, the original's, freed with it."""

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self) -> tuple:
        return type(None), ()


def per_shape(module: nn.Module, key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` for this ``key`` (an input shape), computed once and kept on ``module`` until
    the key changes: the layers' checked kernel geometry and packed call, which cost more to
    recompute than a small layer's call (hot path: a plain ``__dict__`` slot, not a buffer or
    attribute); not copied with the module (:class:`_ShapeCache`)."""
    cached = module.__dict__.get("_per_shape")
    if cached is None or cached[0] != key:
        cached = module.__dict__["_per_shape"] = _ShapeCache((key, make()))
    return cached[1]


def _refs(obj: object) -> int:
    return sys.getrefcount(obj)


def _baseline_refs() -> tuple[int, int] | None:
    """What ``_refs`` reads for a tensor held only by a module's ``__dict__`` slot and the
    caller's local, and for its storage's Python object held by nothing (measured: the counts
    differ between Python versions); None where counts cannot be trusted (a free-threaded
    build defers other threads' references)."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None
    holder: dict[str, Any] = {"t": torch.empty(1)}
    last = holder["t"]
    return _refs(last), _refs(last.untyped_storage())


_FREE_REFS = _baseline_refs()


REUSE_MIN_BYTES = 32 << 20  # glibc mmaps every allocation this large (its threshold's cap)


def reused_empty(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """``torch.empty(shape)`` (float32, CPU), or, for an output of ``REUSE_MIN_BYTES`` or
    more, the tensor ``module`` returned last time for this shape when nothing but the module
    can still reach it: no other Python reference, no C++ holder (autograd, a container) and
    no view of its memory. Overwriting it is then invisible, and the output skips fresh
    memory: malloc hands an allocation that large back to the OS when it is freed, and its
    pages fault in again on first write (torch.empty + fill of resnet18's stem output at batch
    16, 51 MB: 19.8 ms; the same fill of a reused tensor: 1.2 ms). Smaller outputs are not
    kept: keeping every output of 1 MiB or more gained no more on resnet18 at batch 16-32
    (results/probes/2026-12-04-lanes/). The cost: the module keeps that one output alive
    between calls (freed when the shape changes). Safe across threads: a tensor
    another thread holds is not free, and the test and the claim run under the GIL."""
    if 4 * math.prod(shape) < REUSE_MIN_BYTES:  # math.prod: np.prod costs ~3 us a call
        return torch.empty(shape, dtype=torch.float32)
    cached = module.__dict__.get("_last_out")
    if cached is not None and _FREE_REFS is not None and tuple(cached.shape) == shape:
        last = cached
        del cached
        if (
            _refs(last) == _FREE_REFS[0]
            and last._use_count() == 1
            and _refs(last.untyped_storage()) == _FREE_REFS[1]  # no storage object held
            and torch._C._storage_Use_Count(last.untyped_storage()._cdata) == 2  # no numpy
            and last.is_inference() == torch.is_inference_mode_enabled()
        ):
            return last
    y = torch.empty(shape, dtype=torch.float32)
    module.__dict__["_last_out"] = y
    return y


class _Activated:
    """A fused activation ``clamp = (lo, hi)`` (or None): ``y -> min(max(y, lo), hi)``."""

    clamp: tuple[float, float] | None = None
    # the two float32 the C kernels read (a tensor: its address is the cheapest to read, and a
    # copy of the module gets its own)
    _act: torch.Tensor | None = None

    def fuse_clamp_(self, clamp: tuple[float, float] | None) -> None:
        """From now on return ``min(max(y, lo), hi)`` (NaN kept) of what the layer computed;
        None: the plain output again."""
        act = spk._act(clamp, f"{type(self).__name__}.fuse_clamp_")
        self._act = None if act is None else torch.from_numpy(act)
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))

    def _act_addr(self) -> int | None:
        act = self._act
        return None if act is None else act.data_ptr()

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        """The activation on a path that did not fuse it (torch.clamp keeps NaN too)."""
        return y if self.clamp is None else torch.clamp(y, *self.clamp)


class _SparseBase(_Activated, nn.Module):
    """The weight as CSR (torch or scipy, per kernel) and the bias; no dense copy."""

    def _init_weight(
        self,
        weight2d: torch.Tensor,
        bias: torch.Tensor | None,
        kernel: str,
        rhs_cols: int | None = None,
        groups: int = 1,
    ) -> None:
        """Hold ``weight2d`` (out, K) for ``kernel``; ``groups`` > 1 holds the block-diagonal
        (out, groups * K) matrix of a grouped conv (:func:`weight_triplets`)."""
        check_choice(type(self).__name__, "kernel", kernel, SPARSE_KERNELS)
        self.kernel = kernel
        self.groups = int(groups)
        self.group_cols = int(weight2d.shape[1])  # K: columns one filter reads
        self.out_features = int(weight2d.shape[0])
        self.in_features = self.group_cols * self.groups
        rows, cols, values = weight_triplets(weight2d, self.groups)
        self.nnz = int(values.numel())
        shape = (self.out_features, self.in_features)
        self.weight_csr: torch.Tensor | None = None
        self.weight_scipy: sp.csr_matrix | None = None
        self.weight_compact: torch.Tensor | None = None
        self.weight_spk: spk.SparseWeight | None = None
        self.panels: list[torch.Tensor] = []
        self.panel_cols = self.in_features
        if kernel in SPK_KERNELS:
            if self.groups > 1 or weight2d.device.type != "cpu" or weight2d.dtype != torch.float32:
                raise SparsifyError(
                    f"the {kernel} kernel takes a float32 CPU weight and groups=1; got "
                    f"{weight2d.dtype} on {weight2d.device}, groups={self.groups}: use "
                    "kernel='torch_csr'."
                )
            why = spk_unavailable_reason()
            if why is not None:
                raise SparsifyError(
                    f"the {kernel} kernel needs sparsify's compiled kernels ({why}); use "
                    "kernel='torch_csr'."
                )
            # packed by the subclass, from the layer's own weight (a conv's 4-D shape)
        elif kernel == "torch_csr":
            self.weight_csr = _torch_csr(rows, cols, values, shape)
        elif kernel == "torch_csr_panels":
            if rhs_cols is None:
                raise SparsifyError(
                    "the torch_csr_panels kernel needs rhs_cols (rows of x per call, times "
                    "output positions for Conv2d) to size its panels; pass rhs_cols=."
                )
            self.panel_cols = w = panel_width(self.in_features, int(rhs_cols))
            for j in range(0, self.in_features, w):
                keep = (cols >= j) & (cols < j + w)
                width = min(w, self.in_features - j)
                self.panels.append(
                    _torch_csr(rows[keep], cols[keep] - j, values[keep], (shape[0], width))
                )
        elif kernel == "dense_compact":
            if self.groups > 1:
                raise SparsifyError(
                    "the dense_compact kernel drops dead filters, which would regroup a grouped "
                    "conv; use kernel='torch_csr' or keep the layer dense."
                )
            w = weight2d.detach()
            nz = w != 0
            # rows: output units with a weight; cols: inputs read by any unit
            self.rows = nz.any(dim=1).nonzero().flatten()
            self.cols = nz.any(dim=0).nonzero().flatten()
            self.weight_compact = w[self.rows][:, self.cols].contiguous()
        else:
            if weight2d.device.type != "cpu" or weight2d.dtype != torch.float32:
                raise SparsifyError(
                    "the scipy_csr kernel needs a float32 CPU weight; use kernel='torch_csr'."
                )
            self.weight_scipy = sp.csr_matrix(
                (values.numpy(), (rows.numpy(), cols.numpy())), shape=shape, dtype=np.float32
            )
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        )

    _spk_here = True  # the layer's own tensors (bias) are float32 on the CPU, as spk reads them

    def __getstate__(self) -> dict[str, Any]:
        """The module's state with each torch CSR as its parts: ``copy.deepcopy`` cannot copy
        a CSR tensor ("Cannot access storage of SparseCsrTensorImpl"), its parts it can."""
        state = super().__getstate__()
        if state.get("weight_csr") is not None:
            state["weight_csr"] = _CsrParts.of(state["weight_csr"])
        state["panels"] = [_CsrParts.of(p) for p in state.get("panels", [])]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("weight_csr"), _CsrParts):
            state["weight_csr"] = state["weight_csr"].tensor()
        state["panels"] = [p.tensor() if isinstance(p, _CsrParts) else p for p in state["panels"]]
        super().__setstate__(state)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> nn.Module:
        """``Module.to`` / ``.cuda()`` / ``.double()`` for the stored weight too, which is a
        plain attribute (torch CSR, panels, compact rows) that nn.Module would not move.

        The compiled kernels' weight (spk, scipy) stays as it is, a float32 CPU array; a
        layer moved off the CPU or off float32 computes with a torch CSR made from it (cuSPARSE
        on CUDA), the path its forward takes for such inputs, and never hands its moved bias
        to the C kernels; moved back, it drops that copy and runs its own kernel again. Index
        tensors follow the device only (``.type(torch.float64)`` must not make them floats).
        """
        target = fn(torch.zeros(1))
        moved = target.device.type != "cpu" or target.dtype != torch.float32
        own_kernel = self.weight_spk is not None or self.weight_scipy is not None
        if own_kernel:
            self.weight_csr = None  # rebuilt from the stored weight, below or on demand
            if moved:
                self._spk_grad_path()  # the torch CSR of the stored weight, whichever kernel
        super()._apply(fn, recurse)
        if self.weight_csr is not None:
            self.weight_csr = _csr_apply(self.weight_csr, fn, target.device)
        self.panels = [_csr_apply(p, fn, target.device) for p in self.panels]
        if self.weight_compact is not None:
            self.weight_compact = fn(self.weight_compact)
            self.rows, self.cols = self.rows.to(target.device), self.cols.to(target.device)
        self._spk_here = not moved
        self.__dict__.pop("_per_shape", None)  # packed calls hold the old arrays' addresses
        return self

    def _spk_pack(self, weight: torch.Tensor) -> None:
        """Pack ``weight`` (the layer's dense (out, in) or 4-D conv weight) for the spk kernels."""
        layout = "csr" if self.kernel == "spk_csr" else "auto"
        self.weight_spk = spk.pack(weight.detach().numpy(), layout)

    def _spk_grad_path(self) -> None:
        """Build, once, the torch CSR the layer falls back to when its input needs a gradient."""
        if self.weight_csr is None:
            rows, cols, values = self._stored_triplets()
            self.weight_csr = _torch_csr(rows, cols, values, (self.out_features, self.in_features))

    def _spk_bias(self) -> np.ndarray | None:
        return None if self.bias is None else self.bias.detach().numpy()

    def _spk_ok(self, x: torch.Tensor) -> bool:
        """Whether the spk kernels may compute this call: the layer not moved off CPU float32
        (its bias is what they read), no autograd graph to record, a float32 CPU input."""
        return (
            self._spk_here
            and not (x.requires_grad and torch.is_grad_enabled())
            and x.dtype == torch.float32
            and x.device.type == "cpu"
        )

    def _matmul_t(self, cols: torch.Tensor) -> torch.Tensor:
        """``W @ cols`` for a dense (in, N) ``cols``; returns (out, N)."""
        if self.panels:
            w = self.panel_cols
            y = torch.sparse.mm(self.panels[0], cols[:w])
            for j, panel in enumerate(self.panels[1:], start=1):
                torch.addmm(y, panel, cols[j * w : (j + 1) * w], out=y)
            return y
        if self.weight_csr is not None:
            return torch.sparse.mm(self.weight_csr, cols)
        # scipy wants a C-contiguous float32 right-hand side; the result is a new array
        rhs = np.ascontiguousarray(cols.detach().numpy())
        return torch.from_numpy(np.asarray(self.weight_scipy @ rhs))

    def weight_nbytes(self) -> int:
        """Bytes of the stored weight (values + indices + row pointers)."""
        if self.weight_spk is not None:
            sw = self.weight_spk
            return int(sw.ptr.nbytes + sw.idx.nbytes + sw.val.nbytes)
        if self.weight_compact is not None:
            return sum(
                t.numel() * t.element_size() for t in (self.weight_compact, self.rows, self.cols)
            )
        if self.weight_csr is not None or self.panels:
            return sum(
                t.numel() * t.element_size()
                for c in (self.panels or [self.weight_csr])
                for t in (c.values(), c.col_indices(), c.crow_indices())
            )
        m = self.weight_scipy
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

    def dense_weight(self) -> torch.Tensor:
        """The weight as the dense layer holds it, as (out, K): K = in for a Linear,
        C / groups * kh * kw for a Conv2d (for checks, for converting back, and for a parent
        that reads ``weight``)."""
        if self.weight_compact is not None:
            w = self.weight_compact.new_zeros(self.out_features, self.in_features)
            w[self.rows[:, None], self.cols[None, :]] = self.weight_compact.reshape(
                self.rows.numel(), -1
            )
            return w
        rows, cols, values = self._stored_triplets()
        if self.groups > 1:  # back from the block diagonal to each filter's own columns
            cols = cols - (rows // (self.out_features // self.groups)) * self.group_cols
        w = values.new_zeros(self.out_features, self.group_cols)
        w[rows, cols] = values
        return w

    def _stored_triplets(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, values) of the stored (out, in) CSR matrix, whichever kernel holds it."""
        if self.weight_scipy is not None or self.weight_spk is not None:
            m = self.weight_scipy if self.weight_scipy is not None else self.weight_spk.to_scipy()
            coo = m.tocoo()
            return (
                torch.from_numpy(coo.row.astype(np.int64)),
                torch.from_numpy(coo.col.astype(np.int64)),
                torch.from_numpy(coo.data),
            )
        parts = []
        for j, c in enumerate(self.panels or [self.weight_csr]):
            crow = c.crow_indices().long()
            rows = torch.repeat_interleave(
                torch.arange(c.shape[0], device=crow.device), crow.diff()
            )
            parts.append((rows, c.col_indices().long() + j * self.panel_cols, c.values()))
        return tuple(torch.cat(t) for t in zip(*parts))  # type: ignore[return-value]


class SparseLinear(_SparseBase):
    """``y = x W^T + b`` with W stored as CSR; ``x`` of shape (..., in)."""

    @_outside_inference_mode
    def __init__(
        self, linear: nn.Linear, kernel: str = "torch_csr", rhs_cols: int | None = None
    ) -> None:
        super().__init__()
        self._init_weight(linear.weight, linear.bias, kernel, rhs_cols)
        if kernel in SPK_KERNELS:
            self._spk_pack(linear.weight)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight, made on each read: for a parent that reads
        ``linear.weight`` itself (torch's fused transformer path, tied weights) instead of
        calling the layer. Not a parameter; the layer stores only CSR."""
        return self.dense_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (B, in)
        if self.weight_compact is not None:
            return self._activate(self._compact(x2)).reshape(*lead, self.out_features)
        if self.weight_spk is not None:
            if self._spk_ok(x2):
                # torch's (B, in) row-major activation is what spmm reads: no transposes;
                # raw addresses, because numpy round trips cost more than a small layer's work
                x2 = x2.contiguous()
                y = reused_empty(self, (x2.shape[0], self.out_features))
                bias = self._parameters.get("bias")  # absent, not None, when made bias-free
                if spk.spmm_into(
                    self.weight_spk,
                    x2.data_ptr(),
                    x2.shape[0],
                    y.data_ptr(),
                    None if bias is None else bias.data_ptr(),
                    torch.get_num_threads(),
                    self._act_addr(),
                ):
                    return y.reshape(*lead, self.out_features)
            self._spk_grad_path()
        # contiguous (in, B): MKL's CSR x dense reads the right-hand side row by row
        y = self._matmul_t(x2.t().contiguous()).t()  # (B, out)
        if self.bias is not None:
            y = y + self.bias
        return self._activate(y).reshape(*lead, self.out_features)

    def _compact(self, x2: torch.Tensor) -> torch.Tensor:
        """y = bias; y[:, R] = x[:, C] @ W[R][:, C]^T + b[R]  (B, out)."""
        xc = x2 if self.cols.numel() == self.in_features else x2.index_select(1, self.cols)
        bc = None if self.bias is None else self.bias[self.rows]
        yc = F.linear(xc, self.weight_compact, bc)  # (B, |R|)
        if self.rows.numel() == self.out_features:
            return yc
        if self.bias is None:
            y = yc.new_zeros(x2.shape[0], self.out_features)
        else:
            y = self.bias.expand(x2.shape[0], self.out_features).clone()
        return y.index_copy_(1, self.rows, yc)  # cheaper than y[:, rows] = yc

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, nnz={self.nnz}, kernel={self.kernel}"
            + (f", clamp={self.clamp}" if self.clamp else "")
        )


class SparseConv2d(_SparseBase):
    """Conv2d (zero padding, any groups) as unfold + sparse matmul.

    cols = unfold(x): (B, C*kh*kw, L) -> (C*kh*kw, B*L); y = W_csr @ cols: (out, B*L)
    -> (B, out, Ho, Wo). With groups > 1, W_csr is the block-diagonal (out, C*kh*kw)
    matrix in which each filter reads only its group's channels (same nnz as the grouped
    weight; :func:`weight_triplets`). Unfold materialises kh*kw copies of the input, so
    this wins only at high sparsity (and hardly for depthwise convs, whose dense kernel does
    only kh*kw multiply-adds per output); the converter's calibration decides per layer.
    """

    @_outside_inference_mode
    def __init__(
        self, conv: nn.Conv2d, kernel: str = "torch_csr", rhs_cols: int | None = None
    ) -> None:
        super().__init__()
        if not conv_supported(conv):
            raise SparsifyError(
                f"SparseConv2d supports integer padding, padding_mode='zeros' and float32; "
                f"got {conv}. Keep this layer dense."
            )
        self._init_weight(
            conv.weight.reshape(conv.out_channels, -1), conv.bias, kernel, rhs_cols, conv.groups
        )
        if kernel in SPK_KERNELS:
            self._spk_pack(conv.weight)
        if kernel == "dense_compact":
            # a Conv2d keeps every input channel (cols); only dead filters (rows) are dropped
            self.cols = torch.arange(self.in_features)
            self.weight_compact = conv.weight.detach()[self.rows].contiguous()  # (|R|, C, kh, kw)
        # what a parent may read of an nn.Conv2d
        self.in_channels, self.out_channels = int(conv.in_channels), int(conv.out_channels)
        self.weight_shape = tuple(conv.weight.shape)
        self.padding_mode = "zeros"
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.padding = tuple(conv.padding)
        self.dilation = tuple(conv.dilation)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, C / groups, kh, kw) weight, made on each read (see
        :attr:`SparseLinear.weight`)."""
        return self.dense_weight().reshape(self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if self.weight_compact is not None:
            return self._activate(self._compact_conv(x))
        if self.weight_spk is not None:
            if self._spk_ok(x) and x.dim() == 4:
                # raw addresses and a geometry checked once per shape: the checked
                # kernels.sparse_conv2d costs ~15 us a call, a small conv's whole work
                x = x.contiguous()
                geometry, plan = self._geometry(tuple(x.shape))
                if plan is not None:
                    y = reused_empty(self, (x.shape[0], self.out_features, *geometry[3:5]))
                    bias = self._parameters.get("bias")
                    spk.sparse_conv2d_into(
                        plan,
                        x.data_ptr(),
                        y.data_ptr(),
                        None if bias is None else bias.data_ptr(),
                        torch.get_num_threads(),
                        self._act_addr(),
                    )
                    return y
            self._spk_grad_path()
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(
            x, self.kernel_size, self.dilation, self.padding, self.stride
        )  # (B, CKK, L)
        cols = cols.transpose(0, 1).reshape(self.in_features, -1)  # (CKK, B*L)
        y = self._matmul_t(cols)  # (out, B*L)
        y = y.reshape(self.out_features, b, ho * wo).transpose(0, 1)  # (B, out, L)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return self._activate(y.reshape(b, self.out_features, ho, wo))

    lanes: bool | None = None  # spk: the batch in the vector lanes; None: lanes_pay decides

    def use_lanes_(self, lanes: bool | None) -> None:
        """Run the spk kernel with the batch in the vector lanes (True), one image at a time
        (False) or as :func:`sparsify.kernels.lanes_pay` decides by shape (None); the
        converter's calibration times both where both apply."""
        if lanes is not None and not isinstance(lanes, bool):
            raise SparsifyError(
                f"SparseConv2d.use_lanes_ takes None (choose by shape), True or False; got "
                f"{lanes!r}."
            )
        self.lanes = lanes
        self.__dict__.pop("_per_shape", None)

    def lanes_at(self, x_shape: tuple[int, ...]) -> bool:
        """Whether the spk kernel runs with the batch in the lanes on this input shape."""
        _, plan = self._geometry(x_shape)
        return plan is not None and bool(plan.array[-1])

    def _geometry(self, x_shape: tuple[int, ...]) -> tuple:
        """The checked kernel geometry for this input shape and the kernels' packed call
        (:func:`per_shape`; the library is looked up once per shape, not per call)."""

        def make() -> tuple:
            g = spk._conv_geometry(
                self.weight_spk, x_shape, self.stride, self.padding, self.dilation
            )
            return g, spk.conv_plan(self.weight_spk, x_shape, g, spk._lib(), lanes=self.lanes)

        return per_shape(self, (x_shape, spk._epoch), make)

    def _compact_conv(self, x: torch.Tensor) -> torch.Tensor:
        bc = None if self.bias is None else self.bias[self.rows]
        yc = F.conv2d(x, self.weight_compact, bc, self.stride, self.padding, self.dilation)
        if self.rows.numel() == self.out_features:
            return yc
        shape = (yc.shape[0], self.out_features, *yc.shape[2:])
        if self.bias is None:
            y = yc.new_zeros(shape)
        else:
            y = self.bias[None, :, None, None].expand(shape).clone()
        return y.index_copy_(1, self.rows, yc)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, groups={self.groups}, nnz={self.nnz}, "
            f"kernel={self.kernel}" + (f", clamp={self.clamp}" if self.clamp else "")
        )


def conv_supported(conv: nn.Conv2d) -> bool:
    """Whether :class:`SparseConv2d` reproduces ``conv`` exactly (any groups; not 'same'
    padding given as a string, not a padding mode other than zeros, float32 only)."""
    return (
        conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.dtype == torch.float32
    )


def is_depthwise(module: nn.Module) -> bool:
    """A Conv2d with groups = in_channels > 1 (out_channels a multiple: the depth multiplier)
    that :class:`DepthwiseConv2d` reproduces (zero padding, float32)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels
        and module.out_channels % module.in_channels == 0
        and conv_supported(module)
    )


class DepthwiseConv2d(_Activated, nn.Conv2d):
    """A dense depthwise Conv2d computed by ``kernels.depthwise_conv2d`` (a stencil with the
    sums in registers, no im2col) instead of torch's convolution; the same parameters (the
    very tensors of the conv it replaces) and output, within fp32 rounding.

    Runs the C kernel on ``torch.get_num_threads()`` threads for a float32 CPU input that
    needs no gradient; anything else takes ``F.conv2d``, as the original did.
    """

    kernel = STENCIL

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> DepthwiseConv2d:
        """Wrap ``conv`` (see :func:`is_depthwise`); its weight and bias are shared, not copied."""
        if not is_depthwise(conv):
            raise SparsifyError(
                f"DepthwiseConv2d needs a zero-padded float32 Conv2d with groups = in_channels "
                f"> 1; got {conv}. Keep this layer as it is."
            )
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for k, v in vars(conv).items():
            if not k.startswith("_") or k in ("_reversed_padding_repeated_twice",):
                setattr(new, k, v)
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", clamp={self.clamp}" if self.clamp else "")

    def plan_on(
        self,
        op: int,
        x_shape: tuple[int, ...],
        csr: tuple[int, int, int] | None = None,
        project: tuple[int, int, int, int] | None = None,
    ) -> spk.StencilPlan | None:
        """``kernels.stencil_plan`` of ``op`` with this conv's geometry, for x of ``x_shape``:
        its own input (``DEPTHWISE``), or the input of the 1x1 expansion ``csr`` in front of it
        (the fused ops: the conv then reads (N, its channels, H, W)); ``project``: the 1x1
        after it. Checked; None where the C kernels cannot run it."""
        w_shape = tuple(self.weight.shape)
        s, p, d, m, ho, wo = spk._dw_geometry(
            (x_shape[0], self.in_channels, x_shape[2], x_shape[3]), w_shape, self.stride,
            self.padding, self.dilation,
        )  # fmt: skip
        m = m if op == spk.DEPTHWISE else self.out_channels
        return spk.stencil_plan(op, tuple(x_shape), w_shape[2:], s, p, d, m, (ho, wo), csr, project)

    def _plan(self, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> spk.StencilPlan | None:
        """The packed kernel call for these shapes (:func:`per_shape`, :meth:`plan_on`)."""
        return per_shape(
            self, (x_shape, w_shape, spk._epoch), lambda: self.plan_on(spk.DEPTHWISE, x_shape)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)
        )
        if not needs_grad and x.dim() == 4 and cpu_float32(x, w) and x.shape[1] == self.in_channels:
            plan = self._plan(tuple(x.shape), tuple(w.shape))
            if plan is not None:
                return run_stencil(self, plan, x, self)
        y = F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return self._activate(y)


def cpu_float32(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether input and weight are float32 on the CPU: what the C kernels read (a module
    moved by ``.double()`` or ``.cuda()`` keeps its plans' shapes but not its arrays' type or
    place). Two plain tests each, not a loop: it runs on every call of a fused layer."""
    return (
        x.dtype == torch.float32
        and w.dtype == torch.float32
        and x.device.type == "cpu"
        and w.device.type == "cpu"
    )


def _addr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def run_stencil(
    module: nn.Module,
    plan: spk.StencilPlan,
    x: torch.Tensor,
    dw: DepthwiseConv2d,
    expand: nn.Module | None = None,
    project: nn.Module | None = None,
) -> torch.Tensor:
    """``module``'s output: ``plan`` run on x with ``dw``'s weight, bias and fused clamp (and
    the 1x1 ``expand`` before it and ``project`` after it: their bias and clamp; their
    weights are in the plan) into a new (or :func:`reused_empty`) tensor of the plan's shape.
    The caller checked x (float32, CPU, 4-D, no gradient needed, the plan's shape)."""
    x, w, b = x.contiguous(), dw.weight.contiguous(), dw.bias
    b = None if b is None else b.contiguous()
    y = reused_empty(module, plan.out_shape)
    spk.stencil_run(
        plan, x.data_ptr(), w.data_ptr(), _addr(b), dw._act_addr(), y.data_ptr(),
        torch.get_num_threads(),
        None if expand is None else _addr(expand._parameters.get("bias")),
        None if expand is None else expand._act_addr(),
        None if project is None else _addr(project._parameters.get("bias")),
        None if project is None else project._act_addr(),
    )  # fmt: skip
    return y


def make_sparse(module: nn.Module, kernel: str, rhs_cols: int | None = None) -> nn.Module:
    """The sparse inference replacement of a Linear or supported Conv2d; ``rhs_cols``
    (columns of the dense operand per call) sizes ``torch_csr_panels``. ``spk_depthwise``
    gives the dense :class:`DepthwiseConv2d` of a depthwise conv."""
    if kernel == STENCIL:
        return DepthwiseConv2d.from_conv(module)
    if isinstance(module, nn.Linear):
        return SparseLinear(module, kernel, rhs_cols)
    if isinstance(module, nn.Conv2d):
        return SparseConv2d(module, kernel, rhs_cols)
    raise SparsifyError(
        f"no sparse inference layer for {type(module).__name__}; only Linear and Conv2d."
    )
