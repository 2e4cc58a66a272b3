"""ONNX compaction: sparse float32 initializers re-encoded inside a graph stock onnxruntime runs.

Compaction (:func:`compact_model`): every float32 initializer with exact zeros is
replaced by its compact encoding (:mod:`sparsify.export.encoding`: uint8/uint16 gaps
or a bitmask, plus the stored values) and a small decode subgraph of standard ops
(Cast, CumSum, Sub, ScatterElements, BitShift, BitwiseAnd, Gather, Where, Reshape)
whose output carries the initializer's old name, so the Conv/Gemm/MatMul that read
it are untouched. ``rows_cols+<scheme>`` first drops dead output units and never-read
inputs (two masks), then encodes the remaining submatrix. Per tensor the smallest of
dense and all schemes is kept, counting the serialized bytes of the new initializers
*and* nodes. A tensor that is all zeros becomes one ``ConstantOfShape``. Every decode
input is a constant, so onnxruntime folds the subgraph when the session is created
(NonZero is avoided: onnxruntime does not fold it).
Optionally (:func:`sparse_initializer_model`) the plain ONNX form:
``GraphProto.sparse_initializer`` with int64 flat indices.

Memory: onnxruntime decodes the compact graph once when the session is created and
converts ``sparse_initializer`` to dense tensors at load too (graph.cc; no option to keep
them sparse). Both forms save disk and download bytes, not RAM: a session holds the dense
weights, and for the compact file measured slightly *more* resident memory than for the
dense one (:func:`~sparsify.export.onnx.ort.ort_resident_memory`, ``sparsify footprint``).

Why raw protobuf and not onnx_ir/onnxscript (both installed; ``torch.onnx.export`` hands
back an ``onnx_ir.Model``): the rewrite is a flat swap of an initializer for a few nodes
that write the same name, placed first in the graph, and every size decision counts the
*serialized protobuf bytes* of the candidate initializers and nodes (``ByteSize``), which
onnx_ir would first have to serialize anyway. Porting it is possible and would not change
the files; it was left for a change that needs the IR's graph passes.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sparsify.errors import SparsifyError, check_choice
from sparsify.export.encoding import (
    EncodedTensor,
    encode,
    encoded_nbytes,
    entropy_bound_bytes,
    stored_count,
)
from sparsify.export.onnx.integrity import COMPACT_KEY, STAMP_KEYS, unstamp

_ROWS_COLS = "rows_cols+"
COMPACT_SCHEMES = (
    "gaps_u8",
    "gaps_u16",
    "bitmask",
    _ROWS_COLS + "gaps_u8",
    _ROWS_COLS + "gaps_u16",
    _ROWS_COLS + "bitmask",
)
# names of the constants every decode subgraph shares (added once per model)
_SHARED = "~/"  # short: each decode node names one or two of these


@dataclass(frozen=True)
class TensorChoice:
    """What compaction did with one float32 initializer.

    Attributes:
        name: the initializer's name (also the decode subgraph's output name).
        shape: its shape.
        numel: number of entries.
        nnz: entries whose bit pattern is not +0.0 (what the encoding must store).
        scheme: ``dense`` (kept as is), ``zeros`` (one ConstantOfShape), ``gaps_u8``,
            ``gaps_u16`` or ``bitmask``.
        dense_bytes: serialized bytes of the original initializer.
        payload_bytes: raw bytes of the stored values + positions (0 for zeros/dense: dense
            counts its 4 * numel here).
        graph_bytes: serialized bytes of everything that replaced it (initializers + nodes,
            not the shared constants); equals ``dense_bytes`` when kept dense.
        bound_bytes: :func:`~sparsify.export.encoding.entropy_bound_bytes` of the tensor.
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    nnz: int
    scheme: str
    dense_bytes: int
    payload_bytes: int
    graph_bytes: int
    bound_bytes: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


# --------------------------------------------------------------------------- compaction


def _free_prefix(name: str, taken: list[str]) -> str:
    """``name + "/"``, or ``name + "/k/"``, such that no name in sorted ``taken`` starts with it."""
    prefix, k = f"{name}/", 0
    while True:
        i = bisect.bisect_left(taken, prefix)
        if i == len(taken) or not taken[i].startswith(prefix):
            return prefix
        prefix, k = f"{name}/{k}/", k + 1


def _int64(name: str, values: list[int], scalar: bool = False) -> TensorProto:
    arr = np.array(values[0] if scalar else values, dtype=np.int64)
    return numpy_helper.from_array(arr, name)


def _shared_constants() -> list[TensorProto]:
    """Constants the decode subgraphs share; only those some node reads are added."""
    return [
        _int64(_SHARED + "zero", [0], scalar=True),  # CumSum axis
        _int64(_SHARED + "one", [1], scalar=True),  # positions = cumsum - 1
        _int64(_SHARED + "start", [0]),  # Slice start of unpacked bits
        _int64(_SHARED + "flat", [-1]),
        _int64(_SHARED + "axis1", [1]),  # Unsqueeze axes
        numpy_helper.from_array(np.arange(7, -1, -1, dtype=np.uint8), _SHARED + "shifts"),
        numpy_helper.from_array(np.array(1, dtype=np.uint8), _SHARED + "one_u8"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), _SHARED + "zero_f32"),
    ]


def _node(op: str, inputs: list[str], output: str, **attrs: Any) -> onnx.NodeProto:
    # unnamed nodes: names are optional in ONNX and would only add bytes
    return helper.make_node(op, inputs, [output], **attrs)


def _serialized_bytes(inits: list[TensorProto], nodes: list[onnx.NodeProto]) -> int:
    return sum(t.ByteSize() for t in inits) + sum(n.ByteSize() for n in nodes)


def _mask_nodes(
    prefix: str, mask: np.ndarray
) -> tuple[list[TensorProto], list[onnx.NodeProto], int]:
    """Store a 1-D bool ``mask``; nodes give ``prefix + "mask"`` (bool) and ``prefix + "rank"``.

    rank[i] = (set entries before i) = cumsum(mask)[i] - 1, so a set entry's rank indexes
    the stored values. The mask is kept packed (np.packbits, big bit order, unpacked with
    BitShift/BitwiseAnd) or as plain bool, whichever serializes smaller: unpacking costs
    ~250 bytes of nodes, more than the packing saves on a mask of a few hundred entries.
    Returns (initializers, nodes, payload bytes).
    """
    rank = [
        _node("Cast", [prefix + "mask"], prefix + "mask_i64", to=TensorProto.INT64),
        _node("CumSum", [prefix + "mask_i64", _SHARED + "zero"], prefix + "cumsum"),
        _node("Sub", [prefix + "cumsum", _SHARED + "one"], prefix + "rank"),
    ]
    plain = ([numpy_helper.from_array(mask, prefix + "mask")], rank, int(mask.size))
    packed = np.packbits(mask, bitorder="big").reshape(-1, 1)  # (B, 1)
    inits = [numpy_helper.from_array(packed, prefix + "packed")]
    nodes = [
        # bit j of byte b is entry 8*b + j, most significant bit first
        _node(
            "BitShift",
            [prefix + "packed", _SHARED + "shifts"],
            prefix + "shifted",
            direction="RIGHT",
        ),
        _node("BitwiseAnd", [prefix + "shifted", _SHARED + "one_u8"], prefix + "bits8"),  # (B, 8)
        _node("Reshape", [prefix + "bits8", _SHARED + "flat"], prefix + "bits"),  # (8B,)
    ]
    if mask.size % 8:  # drop the padding bits
        inits.append(_int64(prefix + "count", [int(mask.size)]))
        nodes[-1].output[0] = prefix + "bits_padded"
        nodes.append(
            _node(
                "Slice",
                [prefix + "bits_padded", _SHARED + "start", prefix + "count"],
                prefix + "bits",
            )
        )
    nodes.append(_node("Cast", [prefix + "bits"], prefix + "mask", to=TensorProto.BOOL))
    if _serialized_bytes(inits, nodes) < _serialized_bytes(plain[0], []):
        return inits, nodes + rank, int(packed.size)
    return plain


def _decode_nodes(
    prefix: str, out: str, enc: EncodedTensor
) -> tuple[list[TensorProto], list[onnx.NodeProto], int]:
    """Initializers and nodes that rebuild ``enc`` (gaps or bitmask) as tensor ``out``.

    Only ops whose inputs are constants, so onnxruntime folds them when the session is
    created (NonZero is avoided: onnxruntime does not fold it and would decode per run).
    Returns (initializers, nodes, payload bytes).
    """
    numel = int(math.prod(enc.shape))
    inits = [
        _int64(prefix + "shape", list(enc.shape)),
        numpy_helper.from_array(enc.values, prefix + "values"),
    ]
    if enc.scheme in ("gaps_u8", "gaps_u16"):
        # flat index p_k = cumsum(g)_k - 1 (encoding.py: p_{-1} = -1, every gap >= 1);
        # CumSum has no uint8/uint16 kernel, ScatterElements wants int64 indices
        inits += [
            _int64(prefix + "numel", [numel]),
            numpy_helper.from_array(enc.positions, prefix + "gaps"),
        ]
        nodes = [
            _node("Cast", [prefix + "gaps"], prefix + "gaps_i64", to=TensorProto.INT64),
            _node("CumSum", [prefix + "gaps_i64", _SHARED + "zero"], prefix + "cumsum"),
            _node("Sub", [prefix + "cumsum", _SHARED + "one"], prefix + "index"),
            _node(
                "ConstantOfShape",
                [prefix + "numel"],
                prefix + "zeros",
                value=numpy_helper.from_array(np.zeros(1, np.float32)),
            ),
            _node(
                "ScatterElements",
                [prefix + "zeros", prefix + "index", prefix + "values"],
                prefix + "flat",
                axis=0,
            ),
        ]
        payload = encoded_nbytes(enc)
    elif enc.scheme == "bitmask":
        # entry i holds values[rank(i)] where its bit is set, else 0; an unset bit before
        # the first set one has rank -1, which Gather wraps and Where then discards
        mask = np.unpackbits(enc.positions, bitorder="big")[:numel].astype(bool)
        mask_inits, nodes, mask_bytes = _mask_nodes(prefix, mask)
        inits += mask_inits
        nodes += [
            _node("Gather", [prefix + "values", prefix + "rank"], prefix + "gathered", axis=0),
            _node(
                "Where",
                [prefix + "mask", prefix + "gathered", _SHARED + "zero_f32"],
                prefix + "flat",
            ),
        ]
        payload = int(enc.values.nbytes) + mask_bytes
    else:
        raise SparsifyError(f"cannot decode scheme {enc.scheme!r} in ONNX; this is a bug.")
    nodes.append(_node("Reshape", [prefix + "flat", prefix + "shape"], out))
    return inits, nodes, payload


def _rows_cols_nodes(
    prefix: str, out: str, shape: tuple[int, ...], rows: np.ndarray, cols: np.ndarray, sub: str
) -> tuple[list[TensorProto], list[onnx.NodeProto], int]:
    """Expand the (live rows, live cols) submatrix ``sub`` to the full tensor ``out``.

    out[r, c] = sub[rank_r, rank_c] where rows[r] and cols[c] are live, else 0
    (Gather on the ranks, then Where). Returns (initializers, nodes, mask payload bytes).
    """
    row_inits, row_nodes, row_bytes = _mask_nodes(prefix + "rows/", rows)
    col_inits, col_nodes, col_bytes = _mask_nodes(prefix + "cols/", cols)
    inits = [_int64(prefix + "shape", list(shape)), *row_inits, *col_inits]
    nodes = row_nodes + col_nodes
    nodes += [
        _node("Gather", [sub, prefix + "rows/rank"], prefix + "by_rows", axis=0),  # (R, C')
        _node("Gather", [prefix + "by_rows", prefix + "cols/rank"], prefix + "by_cols", axis=1),
        _node("Unsqueeze", [prefix + "rows/mask", _SHARED + "axis1"], prefix + "rows/column"),
        _node("And", [prefix + "rows/column", prefix + "cols/mask"], prefix + "live"),  # (R, C)
        _node(
            "Where", [prefix + "live", prefix + "by_cols", _SHARED + "zero_f32"], prefix + "flat"
        ),
        _node("Reshape", [prefix + "flat", prefix + "shape"], out),
    ]
    return inits, nodes, row_bytes + col_bytes


def _shorten(nodes: list[onnx.NodeProto], keep: str, short: str) -> list[onnx.NodeProto]:
    """Rename intermediate tensors (every node output but ``keep``) to ``short + k``.

    Each intermediate name is written twice (as output and as input); readable names would
    cost ~1.5 KB per layer, which matters next to a small sparse layer.
    """
    renamed = {}
    for node in nodes:
        for i, out in enumerate(node.output):
            if out != keep:
                renamed[out] = node.output[i] = f"{short}{len(renamed)}"
        for i, inp in enumerate(node.input):
            node.input[i] = renamed.get(inp, inp)
    return nodes


def _candidates(
    name: str, prefix: str, short: str, array: np.ndarray, schemes: tuple[str, ...]
) -> Iterator[tuple[str, list[TensorProto], list[onnx.NodeProto], int]]:
    """(scheme, initializers, nodes, payload bytes) for every way to rebuild ``array`` as ``name``.

    Initializer names start with ``prefix``, intermediate tensors with ``short``.
    """
    if not array.any():  # all +0.0 (the caller turned -0.0 into +0.0)
        node = _node(
            "ConstantOfShape",
            [prefix + "shape"],
            name,
            value=numpy_helper.from_array(np.zeros(1, np.float32)),
        )
        yield "zeros", [_int64(prefix + "shape", list(array.shape))], [node], 0
        return
    for scheme in schemes:
        if scheme.startswith(_ROWS_COLS):
            if array.ndim < 2:
                continue
            # dead output units and never-read inputs: what L1 and group penalties make
            matrix = array.reshape(array.shape[0], -1)  # (out, in * kh * kw)
            rows, cols = matrix.any(axis=1), matrix.any(axis=0)
            if rows.all() and cols.all():
                continue  # nothing to drop: the plain scheme is smaller
            enc = encode(np.ascontiguousarray(matrix[rows][:, cols]), scheme[len(_ROWS_COLS) :])
            inits, nodes, payload = _decode_nodes(prefix + "sub/", prefix + "sub", enc)
            more_inits, more_nodes, mask_bytes = _rows_cols_nodes(
                prefix, name, array.shape, rows, cols, prefix + "sub"
            )
            payload += mask_bytes
            yield scheme, inits + more_inits, _shorten(nodes + more_nodes, name, short), payload
        else:
            enc = encode(array, scheme)
            inits, nodes, payload = _decode_nodes(prefix, name, enc)
            yield scheme, inits, _shorten(nodes, name, short), payload


def _replaceable(init: TensorProto, overridable: set[str]) -> bool:
    """An initializer the sparse forms may re-encode: float32, stored inline, and not also a
    graph input (a caller could feed a different value for it)."""
    return (
        init.data_type == TensorProto.FLOAT
        and init.name not in overridable
        and init.data_location != TensorProto.EXTERNAL
    )


def compact_model(
    model: onnx.ModelProto, schemes: tuple[str, ...] = COMPACT_SCHEMES
) -> tuple[onnx.ModelProto, list[TensorChoice]]:
    """A copy of ``model`` with each sparse float32 initializer stored compactly.

    Each top-level float32 initializer that holds +0.0 entries is replaced, if that is
    smaller, by the cheapest encoding (gaps_u8, gaps_u16, bitmask; all-zero tensors by one
    ConstantOfShape) and decode nodes placed first in the graph, whose output keeps the old
    name. Initializers that are also graph inputs (overridable), stored externally or of
    another dtype are kept as they are. Decoding is bit-exact, except that -0.0 is written
    as +0.0 (equal as numbers; the exporter's BatchNorm folding makes -0.0 wherever
    gamma < 0, and each would otherwise cost a stored value).

    Args:
        model: a dense model, e.g. from :func:`export_dense_model`.
        schemes: the encodings to try per tensor (a subset of :data:`COMPACT_SCHEMES`);
            the smallest by serialized bytes wins, dense if none is smaller.

    Raises:
        SparsifyError: an unknown scheme, or a model that is already compact.

    Returns:
        (the compact model, one :class:`TensorChoice` per float32 initializer considered).
    """
    for scheme in schemes:
        check_choice("compact_model", "schemes", scheme, COMPACT_SCHEMES)
    if any(p.key == COMPACT_KEY for p in model.metadata_props):
        raise SparsifyError(
            "this ONNX model is already compact; compact the dense export (model.dense.onnx)."
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    overridable = {i.name for i in graph.input}
    taken = sorted(
        {t.name for t in graph.initializer}
        | {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
        | {o for n in graph.node for o in n.output}
    )
    if _free_prefix("~", taken) != _SHARED:
        raise SparsifyError(
            f"the model already has tensors named {_SHARED!r}...; rename them before compacting."
        )
    kept: list[TensorProto] = []
    new_inits: list[TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    choices: list[TensorChoice] = []
    for j, init in enumerate(graph.initializer):
        if not _replaceable(init, overridable):
            kept.append(init)
            continue
        # -0.0 == +0.0 as numbers; the exporter's BatchNorm folding turns +0.0 into -0.0
        # wherever gamma < 0, and the encoding would store each one as a value (bit-exact)
        array = numpy_helper.to_array(init) + np.float32(0.0)  # -0.0 + 0.0 is +0.0
        nnz = stored_count(array)
        dense_bytes = init.ByteSize()
        best = ("dense", [init], [], 4 * array.size, dense_bytes)
        if nnz < array.size:
            prefix, short = _free_prefix(init.name, taken), _free_prefix(f"~{j}", taken)
            candidates = _candidates(init.name, prefix, short, array, schemes)
            for scheme, inits, nodes, payload in candidates:
                size = _serialized_bytes(inits, nodes)
                if size < best[4]:
                    best = (scheme, inits, nodes, payload, size)
        scheme, inits, nodes, payload, size = best
        if scheme == "dense":
            kept.append(init)
        else:
            new_inits += inits
            new_nodes += nodes
        choices.append(
            TensorChoice(
                name=init.name,
                shape=tuple(int(d) for d in init.dims),
                numel=int(array.size),
                nnz=nnz,
                scheme=scheme,
                dense_bytes=dense_bytes,
                payload_bytes=int(payload),
                graph_bytes=int(size),
                bound_bytes=entropy_bound_bytes(int(array.size), nnz),
            )
        )
    if new_nodes:
        del graph.initializer[:]
        used = {name for node in new_nodes for name in node.input}
        shared = [t for t in _shared_constants() if t.name in used]
        graph.initializer.extend(kept + new_inits + shared)
        # decode nodes only read initializers, so placing them first keeps topological order
        old_nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + old_nodes)
        helper.set_model_props(
            out,
            {
                **{p.key: p.value for p in out.metadata_props if p.key not in STAMP_KEYS},
                COMPACT_KEY: json.dumps(
                    {c.name: c.scheme for c in choices if c.scheme != "dense"}, sort_keys=True
                ),
            },
        )
    return out, choices


def sparse_initializer_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with sparse float32 initializers moved to ``graph.sparse_initializer``.

    Values are the entries whose bit pattern is not +0.0, indices their flat (row-major)
    int64 positions (the checker accepts only int64). A tensor moves only where that is
    smaller than dense (12 bytes per stored entry vs 4 per entry). onnxruntime densifies
    these at load; ``onnx.checker`` passes but ``full_check`` raises InferenceError (see
    the module docstring).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    unstamp(out)  # the stamp of ``model`` would not match this graph
    graph = out.graph
    overridable = {i.name for i in graph.input}
    kept: list[TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    for init in graph.initializer:
        if not _replaceable(init, overridable):
            kept.append(init)
            continue
        flat = numpy_helper.to_array(init).reshape(-1) + np.float32(0.0)  # -0.0 -> +0.0
        index = np.flatnonzero(flat.view(np.uint32) != 0).astype(np.int64)
        if 12 * index.size >= 4 * flat.size:
            kept.append(init)
            continue
        values = numpy_helper.from_array(flat[index], init.name)
        indices = numpy_helper.from_array(index, init.name + "/indices")
        sparse.append(helper.make_sparse_tensor(values, indices, list(init.dims)))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.sparse_initializer.extend(sparse)
    return out
