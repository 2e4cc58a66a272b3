"""Run an exported ONNX model (dense or compact) with numpy + scipy, sparse weights kept sparse.

    from sparsify.runtime import load_onnx_model
    model = load_onnx_model("out/model.compact.onnx")
    logits = model(images)              # float32 numpy in, float32 numpy out
    model.memory.sparse_bytes           # what the sparse weights hold (CSR or spk packings)

Design. One file format serves onnxruntime and this runtime: the compact ONNX that
:func:`sparsify.export.onnx.export_onnx` writes, where each sparse weight is stored encoded
and rebuilt in the graph by a decode subgraph of standard ops (CumSum -> ScatterElements on
a ConstantOfShape -> Reshape for the gap schemes; Gather + Where for the bitmask and
rows/cols schemes). onnxruntime folds those subgraphs into dense tensors when it creates a
session; this runtime folds them *sparsely*, once, at load:

1. Every node whose inputs are all constants is folded. A value is either a numpy array or
   a :class:`SparseConst` (shape, sorted flat indices, values). ``ConstantOfShape(0)``,
   ``ScatterElements`` into it, ``Reshape``, ``Transpose``, ``Gather`` of a sparse tensor
   and ``Where(mask, x, 0)`` (including ``x = Gather(values, rank)``, evaluated only at the
   mask's set entries) keep a value sparse, so a compact weight is never materialised
   densely; their small integer inputs (gaps, ranks, masks) are computed with onnx's
   reference kernels and dropped after each weight. Any other op on a sparse value
   densifies it (correct, counted in :attr:`WeightMemory.densified`).
2. Each folded sparse weight read by MatMul (as B, 2-D), Gemm (as B) or Conv (as W)
   becomes a scipy CSR matrix (oriented for ``W_csr @ X.T``; grouped Conv block-diagonal)
   and the node is replaced by a ``sparsify.runtime`` op (:mod:`sparse_ops`). A weight
   whose CSR would not be smaller than dense (density above ~50%) stays dense.
3. The rewritten graph runs in ``onnx.reference.ReferenceEvaluator`` (pure numpy, ships
   with onnx) with those ops plus faster dense Conv/MaxPool/AveragePool; every other op
   uses onnx's reference implementation, so the op coverage is ONNX's, not a list of ours.

Why not our own interpreter or the scipy bundle: the reference evaluator already
implements every standard op with ONNX semantics (broadcasting, attention, LayerNorm,
Resize ...), and the exported file is the one onnxruntime runs, so parity with onnxruntime
is checked on the same bytes. Transient memory at load is bounded by one weight's decode
(the rank/mask of a bitmask tensor is numel-sized), not by the model.

Files are verified by :func:`sparsify.export.onnx.load_onnx` itself (sha256 stamp, external
data inside the model's folder); its module imports no torch, and nothing here does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import scipy.sparse as sp
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from scipy.special import expit

from sparsify.errors import SparsifyError
from sparsify.export.onnx.integrity import load_onnx
from sparsify.runtime import sparse_ops

DOMAIN = "sparsify.runtime"


# --------------------------------------------------------------------------- sparse folding


@dataclass
class SparseConst:
    """A constant tensor held as flat row-major indices (sorted, unique) and their values."""

    shape: tuple[int, ...]
    index: np.ndarray  # (nnz,) int64
    values: np.ndarray  # (nnz,) float32

    @property
    def numel(self) -> int:
        """Number of entries of the dense tensor."""
        return math.prod(self.shape)

    def dense(self) -> np.ndarray:
        """The dense array (only for ops that have no sparse rule)."""
        out = np.zeros(self.numel, self.values.dtype)
        out[self.index] = self.values
        return out.reshape(self.shape)

    def coo2d(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the entries in the (shape[0], rest) matrix view."""
        width = self.numel // self.shape[0] if self.shape and self.shape[0] else 1
        return self.index // width, self.index % width


def _make_sparse(shape: tuple[int, ...], index: np.ndarray, values: np.ndarray) -> SparseConst:
    """Canonical form: int64 indices sorted, explicit zeros dropped, last duplicate wins."""
    index = np.asarray(index, np.int64).ravel()
    values = np.asarray(values).ravel()
    if index.size:
        # stable sort then keep the last of equal indices (ScatterElements: later updates win)
        order = np.argsort(index, kind="stable")
        index, values = index[order], values[order]
        last = np.append(index[1:] != index[:-1], True)
        index, values = index[last], values[last]
    keep = values != 0
    return SparseConst(tuple(int(d) for d in shape), index[keep], values[keep])


def _wrap(index: np.ndarray, size: int) -> np.ndarray:
    """ONNX Gather/ScatterElements indices: negatives count from the end; out of range refused."""
    index = np.asarray(index, np.int64)
    if index.size and (index.min() < -size or index.max() >= size):
        raise SparsifyError(
            "a decode index is out of range; the ONNX file is corrupted or edited. Re-export it."
        )
    return np.where(index < 0, index + size, index)


def _is_zero_scalar(value: Any) -> bool:
    if isinstance(value, SparseConst):
        return value.values.size == 0 and value.numel == 1
    return isinstance(value, np.ndarray) and value.size == 1 and not value.any()


def _reshape_target(shape: tuple[int, ...], target: np.ndarray, allowzero: int) -> tuple[int, ...]:
    dims = [int(d) for d in target.ravel()]
    if not allowzero:
        dims = [shape[i] if d == 0 else d for i, d in enumerate(dims)]
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = math.prod(shape) // known if known else 0
    if math.prod(dims) != math.prod(shape):
        raise SparsifyError(
            f"a decode Reshape from {shape} to {dims} changes the size; the ONNX file is "
            "corrupted or edited. Re-export it."
        )
    return tuple(dims)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def sparse_initializer_value(st: onnx.SparseTensorProto, where: str) -> SparseConst:
    """A ``sparse_initializer`` as a :class:`SparseConst`, refused unless canonical: integer
    indices, linear (nnz,) or coordinates (nnz, rank), in range, strictly increasing (ONNX
    requires it; a duplicate would be summed by one kernel and overwritten by another).

    Raises:
        SparsifyError: one line naming ``where`` and the tensor.
    """
    name = st.values.name
    dims = tuple(int(d) for d in st.dims)

    def fail(what: str) -> SparsifyError:
        return SparsifyError(
            f"{where}: sparse initializer {name!r}: {what}; the file is corrupted or was "
            "edited. Re-export the model."
        )

    if any(d < 0 for d in dims):
        raise fail(f"negative dims {list(dims)}")
    values = numpy_helper.to_array(st.values).reshape(-1)
    index = numpy_helper.to_array(st.indices)
    numel, nnz = math.prod(dims), values.size
    if index.dtype.kind not in "iu":
        raise fail(f"indices are {index.dtype}, not integers")
    if index.ndim == 2 and index.shape == (nnz, len(dims)):
        if nnz and ((index < 0).any() or (index >= np.asarray(dims)).any()):
            raise fail("an index is out of range")
        flat = np.ravel_multi_index(tuple(index.T.astype(np.int64)), dims) if nnz else index[:, 0]
    elif index.ndim == 1 and index.size == nnz:
        flat = index
        if nnz and (int(flat.min()) < 0 or int(flat.max()) >= numel):
            raise fail("an index is out of range")
    else:
        raise fail(f"indices of shape {list(index.shape)} do not fit {nnz} values")
    flat = np.asarray(flat, np.int64)
    if nnz > 1 and not (np.diff(flat) > 0).all():
        k = int(np.flatnonzero(np.diff(flat) <= 0)[0]) + 1
        raise fail(
            f"index {int(flat[k])} at position {k} repeats or is out of order (not canonical)"
        )
    keep = values != 0
    return SparseConst(dims, flat[keep], values[keep])


class _Folder:
    """Evaluate the constant part of a graph lazily, keeping decoded weights sparse."""

    def __init__(self, model: onnx.ModelProto, constant_nodes: list[int]) -> None:
        graph = model.graph
        nodes = [graph.node[i] for i in constant_nodes]
        read = {name for n in nodes for name in n.input if name}
        inits = [t for t in graph.initializer if t.name in read]
        # an evaluator over the constant nodes only, to reuse onnx's kernels node by node
        sub = helper.make_model(
            helper.make_graph(nodes, "constants", [], [], initializer=inits),
            opset_imports=list(model.opset_import),
            ir_version=model.ir_version,
        )
        self._evaluator = ReferenceEvaluator(sub)
        self._kernels = dict(zip([id(n) for n in nodes], self._evaluator.rt_nodes_, strict=True))
        self._inits = self._evaluator.rt_inits_
        self._producer = {out: n for n in nodes for out in n.output if out}
        self._memo: dict[str, Any] = {}
        self.densified: list[str] = []

    def clear(self) -> None:
        """Forget intermediate values (ranks, masks) between weights."""
        self._memo.clear()

    def value(self, name: str) -> Any:
        """The folded value of tensor ``name``: numpy array or :class:`SparseConst`."""
        if name in self._inits:
            return self._inits[name]
        if name not in self._memo:
            node = self._producer[name]
            outputs = self._run(node)
            for out, val in zip(node.output, outputs, strict=False):
                self._memo[out] = val
        return self._memo[name]

    def dense(self, name: str) -> np.ndarray:
        value = self.value(name)
        if isinstance(value, SparseConst):
            if value.values.size:
                self.densified.append(name)
            return value.dense()
        return value

    def _run(self, node: onnx.NodeProto) -> list[Any]:
        rule = getattr(self, f"_sparse_{node.op_type}", None)
        if rule is not None and node.domain in ("", "ai.onnx"):
            out = rule(node, _attrs(node))
            if out is not None:
                return [out]
        args = [self.dense(i) if i else None for i in node.input]
        return list(self._kernels[id(node)].run(*args))

    # --- rules: each returns a SparseConst, or None to fall back to the dense kernel

    def _sparse_ConstantOfShape(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> Any:
        value = attrs.get("value")
        fill = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
        if fill.dtype != np.float32 or fill.any():
            return None
        shape = tuple(int(d) for d in self.dense(node.input[0]).ravel())
        return SparseConst(shape, np.zeros(0, np.int64), np.zeros(0, np.float32))

    def _sparse_ScatterElements(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> Any:
        data = self.value(node.input[0])
        if not isinstance(data, SparseConst) or len(data.shape) != 1 or data.values.size:
            return None
        if attrs.get("reduction", "none") != "none":
            return None
        index = _wrap(self.dense(node.input[1]).ravel(), data.shape[0])
        updates = self.dense(node.input[2]).ravel()
        return _make_sparse(data.shape, index, updates)

    def _sparse_Reshape(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> Any:
        data = self.value(node.input[0])
        if not isinstance(data, SparseConst):
            return None
        shape = _reshape_target(data.shape, self.dense(node.input[1]), attrs.get("allowzero", 0))
        return SparseConst(shape, data.index, data.values)

    def _sparse_Identity(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> Any:
        data = self.value(node.input[0])
        return data if isinstance(data, SparseConst) else None

    def _sparse_Transpose(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> Any:
        data = self.value(node.input[0])
        if not isinstance(data, SparseConst):
            return None
        perm = attrs.get("perm") or list(range(len(data.shape)))[::-1]
        multi = np.unravel_index(data.index, data.shape)
        shape = tuple(data.shape[p] for p in perm)
        index = (
            np.ravel_multi_index(tuple(multi[p] for p in perm), shape)
            if data.index.size
            else data.index
        )
        return _make_sparse(shape, index, data.values)

    def _sparse_Gather(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> Any:
        data = self.value(node.input[0])
        if not isinstance(data, SparseConst) or len(data.shape) != 2:
            return None
        axis = attrs.get("axis", 0) % 2
        index = self.dense(node.input[1])
        if index.ndim != 1:
            return None
        rows, cols = data.coo2d()
        matrix = sp.csr_matrix((data.values, (rows, cols)), shape=data.shape)
        picked = (
            matrix[_wrap(index, data.shape[0])]
            if axis == 0
            else matrix.tocsc()[:, _wrap(index, data.shape[1])]
        ).tocoo()
        shape = picked.shape
        return _make_sparse(shape, picked.row.astype(np.int64) * shape[1] + picked.col, picked.data)

    def _sparse_Where(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> Any:
        cond_name, x_name, y_name = node.input
        if not _is_zero_scalar(self.value(y_name)):
            return None
        x_node = self._producer.get(x_name)
        x_known = x_name in self._memo or x_name in self._inits
        if not x_known and x_node is not None and x_node.op_type == "Gather":
            # bitmask: out[i] = cond[i] ? values[rank[i]] : 0, evaluated at the set entries only
            values = self.value(x_node.input[0])
            if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype == np.float32:
                rank = self.dense(x_node.input[1])
                cond = self.dense(cond_name)
                if cond.shape == rank.shape:
                    where = np.flatnonzero(cond)
                    picked = values[_wrap(rank.ravel()[where], values.shape[0])]
                    return _make_sparse(cond.shape, where, picked)
        x = self.value(x_name)
        if not isinstance(x, SparseConst):
            return None
        cond = self.dense(cond_name)
        try:
            shape = np.broadcast_shapes(cond.shape, x.shape)
        except ValueError:
            return None
        if shape != x.shape:
            return None
        keep = np.broadcast_to(cond, x.shape).ravel()[x.index]  # a view: no dense copy
        return SparseConst(x.shape, x.index[keep], x.values[keep])


# --------------------------------------------------------------------------- custom ops


class _SparseOp(OpRun):
    """Base of the ``sparsify.runtime`` ops; ``weights`` is set per model by a subclass."""

    op_domain = DOMAIN
    weights: dict[str, Any] = {}  # noqa: RUF012 -- replaced per model in _op_classes
    packs: sparse_ops.SpkPacks | None = None  # set per model: None runs scipy


def _op_classes(
    weights: dict[str, Any], packs: sparse_ops.SpkPacks | None = None
) -> list[type[OpRun]]:
    """The custom op classes for one model, bound to its CSR ``weights`` and, for the spk
    kernels, their packings ``packs`` (None: scipy's products)."""

    class SparseMatMul(_SparseOp):
        def _run(self, x: np.ndarray, **attrs: Any) -> tuple[np.ndarray]:
            key = attrs["weight"]
            return (sparse_ops.matmul_sparse(x, self.weights.get(key), self.packs, key),)

    class SparseGemm(_SparseOp):
        def _run(
            self, a: np.ndarray, c: np.ndarray | None = None, **attrs: Any
        ) -> tuple[np.ndarray]:
            if attrs.get("transA", 0):
                a = a.T
            key = attrs["weight"]
            y = sparse_ops.matmul_sparse(a, self.weights.get(key), self.packs, key)
            alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
            if alpha != 1.0:
                y = y * np.float32(alpha)
            if c is not None:
                y = y + (c if beta == 1.0 else np.float32(beta) * c)
            return (y.astype(np.float32, copy=False),)

    class SparseConv(_SparseOp):
        def _run(
            self, x: np.ndarray, b: np.ndarray | None = None, **attrs: Any
        ) -> tuple[np.ndarray]:
            key = attrs["weight"]
            w = self.weights.get(key)  # None once packed for the spk kernels
            packs = self.packs
            packed = (
                packs.get(key, "auto") if packs is not None and key in packs.conv_kernels else None
            )
            return (
                sparse_ops.conv_sparse(
                    x,
                    w,
                    attrs["kernel_shape"],
                    b,
                    auto_pad=attrs.get("auto_pad"),
                    dilations=attrs.get("dilations"),
                    pads=attrs.get("pads"),
                    strides=attrs.get("strides"),
                    packed=packed,
                ),
            )

    classes: list[type[OpRun]] = [SparseMatMul, SparseGemm, SparseConv]
    for cls in classes:
        cls.weights = weights
        cls.packs = packs
    return classes


class Conv(OpRun):
    """Dense ONNX Conv via im2col + matmul (onnx's reference kernel, but faster); a model
    run on the spk kernels subclasses it with ``depthwise_spk = True`` (depthwise Convs on
    ``kernels.depthwise_conv2d``)."""

    op_domain = ""
    depthwise_spk = False

    def _run(
        self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, **attrs: Any
    ) -> tuple[np.ndarray]:
        return (
            sparse_ops.conv_dense(
                x,
                w,
                b,
                group=int(attrs.get("group") or 1),
                auto_pad=attrs.get("auto_pad"),
                dilations=attrs.get("dilations"),
                pads=attrs.get("pads"),
                strides=attrs.get("strides"),
                depthwise_spk=self.depthwise_spk,
            ),
        )


class MaxPool(OpRun):
    """ONNX MaxPool on windows (onnx's reference loops in Python per output element); a
    model run on the spk kernels subclasses it with ``max_spk = True`` (2-D max pools on
    ``kernels.max_pool2d``)."""

    op_domain = ""
    max_spk = False

    def _run(self, x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, ...]:
        if len(self.onnx_node.output) > 1 and self.onnx_node.output[1]:
            from onnx.reference.ops.op_max_pool import MaxPool as Reference  # Indices output

            return Reference._run(self, x, **attrs)  # type: ignore[arg-type]
        return (_pool(x, "max", attrs, self.max_spk),)


class Sigmoid(OpRun):
    """ONNX Sigmoid as scipy's expit: the reference's ``1 / (1 + exp(-x))`` warns of overflow."""

    op_domain = ""

    def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (expit(x).astype(x.dtype, copy=False),)


class AveragePool(OpRun):
    """ONNX AveragePool on windows."""

    op_domain = ""

    def _run(self, x: np.ndarray, **attrs: Any) -> tuple[np.ndarray]:
        return (_pool(x, "avg", attrs),)


def _pool(x: np.ndarray, kind: str, attrs: dict[str, Any], max_spk: bool = False) -> np.ndarray:
    return sparse_ops.pool(
        x,
        kind,
        attrs["kernel_shape"],
        auto_pad=attrs.get("auto_pad"),
        ceil_mode=int(attrs.get("ceil_mode") or 0),
        count_include_pad=int(attrs.get("count_include_pad") or 0),
        dilations=attrs.get("dilations"),
        pads=attrs.get("pads"),
        strides=attrs.get("strides"),
        max_spk=max_spk,
    )


# --------------------------------------------------------------------------- the model


@dataclass
class WeightMemory:
    """Bytes of the weights an :class:`OnnxModel` holds.

    Attributes:
        sparse_bytes: what the sparse weights hold: CSR values + indices + row pointers,
            or, with the spk kernels, each packing made (values + indices + segment
            pointers) in place of the CSR it replaced.
        sparse_dense_bytes: what those weights would take dense (4 bytes per entry).
        dense_bytes: every other constant the graph holds (dense weights, biases, shapes).
        sparse_weights: number of weights held as CSR.
        densified: constants that had to be materialised densely from a sparse decode
            (read by an op without a sparse kernel).
    """

    sparse_bytes: int = 0
    sparse_dense_bytes: int = 0
    dense_bytes: int = 0
    sparse_weights: int = 0
    densified: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """All weight bytes held: sparse + dense."""
        return self.sparse_bytes + self.dense_bytes


def _constant_nodes(graph: onnx.GraphProto) -> list[int]:
    """Indices of the nodes whose inputs are all constants (graph order is topological)."""
    const = {t.name for t in graph.initializer} - {i.name for i in graph.input}
    out = []
    for i, node in enumerate(graph.node):
        has_graph = any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        )
        if (
            node.domain in ("", "ai.onnx")
            and not has_graph
            and all(n in const for n in node.input if n)
        ):
            out.append(i)
            const.update(o for o in node.output if o)
    return out


def _weight_slot(node: onnx.NodeProto, slot: int) -> bool:
    """Whether input ``slot`` of ``node`` is a weight a sparse kernel can take."""
    return (
        node.domain in ("", "ai.onnx") and slot == 1 and node.op_type in ("MatMul", "Gemm", "Conv")
    )


def _sparse_weight(
    op: str, slot: int, node: onnx.NodeProto, value: SparseConst
) -> sp.csr_matrix | None:
    """The CSR form of ``value`` for its consumer ``node`` (input ``slot``), or None if none."""
    attrs = _attrs(node)
    if op == "MatMul" and slot == 1 and len(value.shape) == 2:
        rows, cols = value.coo2d()  # W (K, N) -> Wt (N, K)
        return sparse_ops.to_csr(cols, rows, value.values, (value.shape[1], value.shape[0]))
    if op == "Gemm" and slot == 1 and len(value.shape) == 2:
        rows, cols = value.coo2d()
        if attrs.get("transB", 0):  # B' = B.T, so Bt = B (N, K)
            return sparse_ops.to_csr(rows, cols, value.values, value.shape)
        return sparse_ops.to_csr(cols, rows, value.values, (value.shape[1], value.shape[0]))
    if op == "Conv" and slot == 1 and len(value.shape) >= 3:
        rows, cols = value.coo2d()
        flat = (value.shape[0], value.numel // value.shape[0])
        return sparse_ops.block_diagonal_csr(
            sparse_ops.to_csr(rows, cols, value.values, flat), int(attrs.get("group", 1))
        )
    return None


class OnnxModel:
    """An ONNX model run by onnx's reference evaluator with sparse MatMul/Gemm/Conv kernels.

    Call it with one float32 array (or one per graph input); it returns the first output
    (``logits``). :attr:`memory` says what the weights hold; :attr:`input_shapes` the
    declared input shapes (``None`` for a dynamic dimension such as the batch).
    ``kernels`` (``auto``/``spk``/``scipy``, see :mod:`sparse_ops`) picks the sparse
    products; :attr:`kernels` is the one running and :attr:`kernels_reason` why.
    :attr:`weights` maps each sparse weight to its CSR; with the spk kernels an entry leaves
    it when the weight is packed (:attr:`packs`, :class:`sparse_ops.SpkPacks`), so each
    weight is held once.
    """

    def __init__(
        self, model: onnx.ModelProto, path: Path | None = None, *, kernels: str = "auto"
    ) -> None:
        self.path = path
        self.kernels, self.kernels_reason = sparse_ops.resolve_kernels(kernels)
        graph = model.graph
        constant = _constant_nodes(graph)
        folder = _Folder(model, constant)
        constant_set = set(constant)
        live_nodes = [n for i, n in enumerate(graph.node) if i not in constant_set]
        produced = {o for i in constant for o in graph.node[i].output if o}
        consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in live_nodes:
            for slot, name in enumerate(node.input):
                consumers.setdefault(name, []).append((node, slot))
        outputs = {o.name for o in graph.output}

        weights: dict[str, sp.csr_matrix] = {}
        conv_kernels: dict[str, tuple[int, int]] = {}  # 2-D groups=1 Conv weights: (kh, kw)
        dense_inits: dict[str, np.ndarray] = {}
        replaced: dict[int, onnx.NodeProto] = {}
        memory = WeightMemory()
        # plain initializers that only weight slots read and that are mostly zeros (a dense
        # export of a sparse model) get the same sparse kernels as decoded ones
        overridable = {i.name for i in graph.input}
        plain = {
            t.name: t
            for t in graph.initializer
            if t.name in consumers
            and t.name not in overridable
            and t.data_type == onnx.TensorProto.FLOAT
            and all(_weight_slot(n, k) for n, k in consumers[t.name])
        }
        # GraphProto.sparse_initializer (export_onnx(sparse_initializer=True)): COO weights,
        # checked canonical here too (onnx.checker does it in load_onnx; a model built in
        # memory skips that), then handled as decoded weights are
        sparse_inits = {
            st.values.name: sparse_initializer_value(st, str(path or "model"))
            for st in graph.sparse_initializer
            if st.values.name not in overridable
        }
        for name in sorted(
            (produced & (set(consumers) | outputs)) | set(plain) | set(sparse_inits)
        ):
            if name in sparse_inits:
                value = sparse_inits.pop(name)
                if value.values.dtype != np.float32:
                    value = value.dense()  # the sparse kernels are float32
            elif name in plain:
                array = numpy_helper.to_array(plain[name])
                if np.count_nonzero(array) * 2 > array.size:  # CSR would not be smaller
                    continue
                flat = array.ravel()
                index = np.flatnonzero(flat)
                value: Any = SparseConst(array.shape, index.astype(np.int64), flat[index])
                del array, flat
            else:
                value = folder.value(name)
                folder.clear()
            needs_dense = name in outputs
            if isinstance(value, SparseConst):
                for node, slot in consumers.get(name, []):
                    csr = _sparse_weight(node.op_type, slot, node, value)
                    if (
                        csr is None
                        or sparse_ops.csr_nbytes(csr) >= 4 * value.numel
                        or node.domain not in ("", "ai.onnx")
                    ):
                        needs_dense = True
                        continue
                    key = f"{name}#{len(weights)}"
                    weights[key] = csr
                    conv_attrs = _attrs(node) if node.op_type == "Conv" else {}
                    if (
                        node.op_type == "Conv"
                        and len(value.shape) == 4
                        and int(conv_attrs.get("group", 1)) == 1
                        and max(conv_attrs.get("strides") or [1]) <= sparse_ops.SPK_MAX_STRIDE
                    ):
                        conv_kernels[key] = (int(value.shape[2]), int(value.shape[3]))
                    replaced[id(node)] = self._sparse_node(node, key, value.shape)
                    memory.sparse_bytes += sparse_ops.csr_nbytes(csr)
                    memory.sparse_dense_bytes += 4 * value.numel
                    memory.sparse_weights += 1
                if needs_dense:
                    if value.values.size:
                        memory.densified.append(name)
                    value = value.dense()
                else:
                    continue
            dense_inits[name] = value
        memory.densified += folder.densified
        # plain initializers now held as CSR only (every reader got a sparse kernel)
        weights_of = {k.rsplit("#", 1)[0] for k in weights} - set(dense_inits)
        del folder

        kept = [
            t for t in graph.initializer if t.name not in dense_inits and t.name not in weights_of
        ]
        used = {n for node in live_nodes for n in node.input} | outputs
        kept = [t for t in kept if t.name in used]
        new_inits = kept + [
            numpy_helper.from_array(np.asarray(v), k) for k, v in dense_inits.items()
        ]
        nodes = [replaced.get(id(n), n) for n in live_nodes]
        new_graph = helper.make_graph(
            nodes,
            graph.name or "graph",
            list(graph.input),
            list(graph.output),
            initializer=new_inits,
            value_info=list(graph.value_info),  # types for ops whose kernel depends on them
        )
        opsets = [o for o in model.opset_import if o.domain != DOMAIN]
        opsets.append(helper.make_opsetid(DOMAIN, 1))
        rewritten = helper.make_model(new_graph, opset_imports=opsets, ir_version=model.ir_version)
        rewritten.functions.extend(model.functions)
        self._memory = memory
        self.weights = weights
        self.input_names = [
            i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}
        ]
        self.input_shapes = {
            i.name: tuple(
                d.dim_value if d.HasField("dim_value") else None
                for d in i.type.tensor_type.shape.dim
            )
            for i in graph.input
            if i.name in self.input_names
        }
        self.output_names = [o.name for o in graph.output]
        self.packs = sparse_ops.SpkPacks(weights, conv_kernels) if self.kernels == "spk" else None
        self._evaluator = ReferenceEvaluator(
            rewritten,
            new_ops=[
                *_op_classes(weights, self.packs),
                # the evaluator finds an op class by its name: the subclass is "Conv" too
                type("Conv", (Conv,), {"depthwise_spk": self.kernels == "spk"}),
                type("MaxPool", (MaxPool,), {"max_spk": self.kernels == "spk"}),
                AveragePool,
                Sigmoid,
            ],
        )
        # the evaluator converted every initializer to numpy; drop the protobuf copies so the
        # dense weights are not held twice (it never reads them again)
        for tensor in rewritten.graph.initializer:
            tensor.ClearField("raw_data")
        # rt_inits_: the evaluator's {name: array} of initializers, what it holds at run time
        memory.dense_bytes = int(sum(v.nbytes for v in self._evaluator.rt_inits_.values()))

    @property
    def memory(self) -> WeightMemory:
        """What the weights hold now. ``sparse_bytes`` is re-counted on each read: with the
        spk kernels a weight's CSR is replaced by its packing(s) as layers first run
        (:class:`sparse_ops.SpkPacks`), so it changes after the first calls."""
        if self.packs is not None:
            self._memory.sparse_bytes = self.packs.held_bytes()
        return self._memory

    @staticmethod
    def _sparse_node(node: onnx.NodeProto, key: str, shape: tuple[int, ...]) -> onnx.NodeProto:
        """``node`` as its ``sparsify.runtime`` op: the weight input removed, named by ``key``."""
        inputs = [name for slot, name in enumerate(node.input) if slot != 1]
        attrs = _attrs(node)
        if node.op_type == "Conv" and not attrs.get("kernel_shape"):
            attrs["kernel_shape"] = list(shape[2:])  # optional in ONNX: the weight's shape
        attrs.pop("group", None)  # the block-diagonal CSR already encodes the groups
        return helper.make_node(
            "Sparse" + node.op_type, inputs, list(node.output), domain=DOMAIN, weight=key, **attrs
        )

    def _check_input(self, name: str, x: np.ndarray) -> np.ndarray:
        declared = self.input_shapes[name]
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if x.ndim != len(declared) or any(
            d is not None and d != s for d, s in zip(declared, x.shape, strict=False)
        ):
            shown = ", ".join("batch" if d is None else str(d) for d in declared)
            raise SparsifyError(
                f"input {name!r} has shape {tuple(x.shape)}, the model was exported for "
                f"({shown}); give that shape (re-export with another example_input to change it)."
            )
        return x

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """All outputs for the given inputs (one array per graph input, in order)."""
        if len(inputs) != len(self.input_names):
            raise SparsifyError(
                f"the model takes {len(self.input_names)} input(s) {self.input_names}, got {len(inputs)}."
            )
        feeds = {n: self._check_input(n, x) for n, x in zip(self.input_names, inputs, strict=True)}
        return list(self._evaluator.run(None, feeds))

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """The first output (``logits``) for the given input(s)."""
        return self.run(*inputs)[0]


def load_onnx_model(
    path: str | os.PathLike[str],
    verify: bool = True,
    *,
    max_bytes: int | None = None,
    kernels: str = "auto",
) -> OnnxModel:
    """Verify and load an ``.onnx`` file (dense or compact) for the torch-free runtime.

    Args:
        path: an ``.onnx`` file from :func:`sparsify.export.onnx.export_onnx`.
        verify: check the sparsify metadata (sha256); ``False`` runs ONNX files from other
            tools (the structural checks still run).
        max_bytes: the tensor-size budget of ``load_onnx`` (default max(1 GiB, 1024x the
            file's size)); raise it only for a file you trust.
        kernels: ``auto`` (sparsify's C kernels where compiled, else scipy), ``spk`` or
            ``scipy`` (:mod:`sparsify.runtime.sparse_ops`).

    Raises:
        SparsifyError: the file fails verification (one line, as ``load_onnx``), or
            ``kernels='spk'`` where the compiled kernels cannot run.
    """
    path = Path(path)
    sparse_ops.resolve_kernels(kernels)  # a bad choice fails before the file is read
    return OnnxModel(load_onnx(path, verify=verify, max_bytes=max_bytes), path, kernels=kernels)


__all__ = [
    "DOMAIN",
    "OnnxModel",
    "SparseConst",
    "WeightMemory",
    "load_onnx_model",
    "sparse_initializer_value",
]
