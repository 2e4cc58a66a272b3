"""ONNX export: a dense model from ``torch.onnx.export``, and a compact one stock onnxruntime runs.

Pipeline:
    1. ``torch.onnx.export(model, (x,), dynamo=True, opset_version=20, external_data=False,
       dynamic_shapes=batch)`` -- the dynamo (``torch.export``) exporter, ONNX opset 20, one
       self-contained file, the batch dimension dynamic (``dim_param: "batch"``). Its
       optimiser folds eval-mode BatchNorm into the preceding Conv, so a Conv initializer
       holds ``weight * gamma / sqrt(var + eps)``; zeros stay zeros (-0.0 where gamma < 0).
    2. Compaction (:func:`compact_model`): every float32 initializer with exact zeros is
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
    3. Optionally (:func:`sparse_initializer_model`) the plain ONNX form:
       ``GraphProto.sparse_initializer`` with int64 flat indices.

Memory: onnxruntime decodes the compact graph once when the session is created and
converts ``sparse_initializer`` to dense tensors at load too (graph.cc; no option to keep
them sparse). Both forms save disk and download bytes, not RAM: a session holds the dense
weights, and for the compact file measured slightly *more* resident memory than for the
dense one (see :func:`ort_resident_memory` and ``tools/onnx_sizes.py``).

Loading (:func:`load_onnx`, :func:`ort_session`): every file export writes carries
``metadata_props`` ``sparsify.format`` / ``sparsify.format_version`` / ``sparsify.version``
and ``sparsify.sha256``, the sha256 of the deterministic serialization of the whole model
with that one value blanked (so the graph, its weights, opsets and the other metadata are all
covered); ``sparsify.external_sha256`` adds the sha256 of a ``.data`` file where there is one.
``load_onnx`` checks them, then external-data paths, initializer sizes, NaN/inf weights and
``onnx.checker``, before onnx or onnxruntime touch anything else.

Checker: the dense and compact files pass ``onnx.checker.check_model(m, full_check=True)``.
The ``sparse_initializer`` file passes the plain check; ``full_check`` raises
``onnx.shape_inference.InferenceError`` ("type case mismatch ... inferred=sparse_tensor_type"):
strict shape inference types a sparse initializer as ``sparse_tensor`` and rejects the
Conv/Gemm that read it. onnxruntime still loads and runs it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper, helper, numpy_helper
from torch import nn

from sparsify.errors import SparsifyError, check_choice
from sparsify.export.encoding import (
    EncodedTensor,
    encode,
    encoded_nbytes,
    entropy_bound_bytes,
    stored_count,
)
from sparsify.fileio import atomic_directory, atomic_write_bytes
from sparsify.probe import ChildFailed, run_json_child

OPSET = 20
EXPORTER = "torch.onnx.export(dynamo=True)"
DENSE_FILE = "model.dense.onnx"
COMPACT_FILE = "model.compact.onnx"
SPARSE_INIT_FILE = "model.sparse_initializer.onnx"
_ROWS_COLS = "rows_cols+"
COMPACT_SCHEMES = (
    "gaps_u8",
    "gaps_u16",
    "bitmask",
    _ROWS_COLS + "gaps_u8",
    _ROWS_COLS + "gaps_u16",
    _ROWS_COLS + "bitmask",
)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# protobuf cannot serialize a message of 2 GiB or more; leave room for the graph itself
_PROTO_LIMIT = 2**31 - 2**24
# names of the constants every decode subgraph shares (added once per model)
_SHARED = "~/"  # short: each decode node names one or two of these
_COMPACT_KEY = "sparsify.compact"  # model metadata: {initializer: scheme}
# model metadata every exported file carries (see load_onnx)
ONNX_FORMAT = "sparsify.onnx"
ONNX_FORMAT_VERSION = "1"
_FORMAT_KEY = "sparsify.format"
_VERSION_KEY = "sparsify.format_version"
_TOOLKIT_KEY = "sparsify.version"
_SHA_KEY = "sparsify.sha256"
_EXTERNAL_KEY = "sparsify.external_sha256"  # {".data" file: sha256}, only when there is one
_STAMP_KEYS = (_FORMAT_KEY, _VERSION_KEY, _TOOLKIT_KEY, _SHA_KEY, _EXTERNAL_KEY)


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


# --------------------------------------------------------------------------- torch -> ONNX


# first layers whose input shape the default cannot guess
_OTHER_INPUT_LAYERS = (
    nn.Conv1d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
    nn.EmbeddingBag,
)


def default_example_input(model: nn.Module) -> torch.Tensor:
    """A zero batch of one for tracing ``model``, shaped by its first Conv2d or Linear.

    Conv2d: ``(1, in_channels, 28, 28)``. Linear: ``(1, in_features)``, unless an
    ``nn.Flatten`` comes first and ``in_features`` is a multiple of 28 * 28 (a model that
    flattens images, e.g. LeNet-300-100): then ``(1, in_features // 784, 28, 28)``.

    Raises:
        SparsifyError: no Conv2d or Linear, or a Conv1d/Conv3d/ConvTranspose/Embedding first.
    """
    flattens = False
    for module in model.modules():
        if isinstance(module, nn.Flatten):
            flattens = True
        elif isinstance(module, nn.Conv2d):
            return torch.zeros(1, int(module.in_channels), 28, 28)
        elif isinstance(module, nn.Linear):
            if flattens and module.in_features % (28 * 28) == 0:
                return torch.zeros(1, module.in_features // (28 * 28), 28, 28)
            return torch.zeros(1, int(module.in_features))
        elif isinstance(module, _OTHER_INPUT_LAYERS):
            break
    raise SparsifyError(
        f"cannot guess the input shape of this {type(model).__name__}: its first weight layer "
        "is not a Conv2d or Linear; pass example_input=torch.zeros(1, ...) with its input shape."
    )


def _resolve_source(source: Any) -> tuple[nn.Module, torch.Tensor]:
    """(model in eval mode, default example input) from a Checkpoint, a checkpoint path or a
    module: a checkpoint's recipe gives ``(1, in_channels, 28, 28)``, a module's first layer
    the rest (:func:`default_example_input`)."""
    from sparsify.pipeline.checkpoint import Checkpoint, load_checkpoint

    if isinstance(source, (str, os.PathLike)):
        source = load_checkpoint(source)
    if isinstance(source, Checkpoint):
        return source.build_model(), torch.zeros(1, int(source.recipe.model.in_channels), 28, 28)
    if isinstance(source, nn.Module):
        if not any(p.numel() for p in source.parameters()):
            raise SparsifyError(
                f"{type(source).__name__} has no parameters, so there is nothing to export; "
                "give a model with weights."
            )
        return source, default_example_input(source)
    raise SparsifyError(
        f"export_onnx needs a Checkpoint, a checkpoint path or an nn.Module; "
        f"got {type(source).__name__}."
    )


def export_dense_model(model: nn.Module, example_input: torch.Tensor) -> onnx.ModelProto:
    """``model`` as a dense ONNX ModelProto (dynamo exporter, opset 20, dynamic batch).

    The exporter's per-node debugging metadata is removed (:func:`strip_debug_metadata`).

    The model is exported in eval mode; the train/eval flag of every submodule is restored
    afterwards. The graph input is named ``input`` and the first output ``logits``.

    Raises:
        SparsifyError: a model without parameters, or one the exporter cannot trace.
    """
    if not any(p.numel() for p in model.parameters()):
        raise SparsifyError(
            f"{type(model).__name__} has no parameters, so there is nothing to export; "
            "give a model with weights."
        )
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise SparsifyError(
            "example_input must be a tensor with a batch dimension, e.g. torch.randn(1, 1, 28, 28)."
        )
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        program = torch.onnx.export(
            model,
            (example_input,),
            dynamo=True,
            opset_version=OPSET,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many types; the user's fix is the same
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsifyError(
            f"torch.onnx.export could not export {type(model).__name__} ({first[:200]}); "
            "check that the model runs on example_input and uses exportable ops."
        ) from None
    finally:
        for module, mode in modes.items():
            module.training = mode
    if program is None:  # only the TorchScript path returns None
        raise SparsifyError("torch.onnx.export returned no program; upgrade torch to >= 2.6.")
    return strip_debug_metadata(program.model_proto)


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


def strip_debug_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the exporter's per-node debugging metadata, in place; returns it.

    The dynamo exporter attaches to every node and value its FX node text, name scopes
    and a Python stack trace with the exporting machine's file paths (~1 KB per Conv).
    None of it affects execution, it leaks local paths, and in a compact file it would
    outweigh small sparse layers. Model-level ``metadata_props`` are kept.
    """
    g = model.graph
    for node in [*g.node, *(n for f in model.functions for n in f.node)]:
        del node.metadata_props[:]
        node.ClearField("doc_string")
    for value in [*g.input, *g.output, *g.value_info, *g.initializer]:
        del value.metadata_props[:]
        value.ClearField("doc_string")
    del g.metadata_props[:]
    g.ClearField("doc_string")
    return model


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
    if any(p.key == _COMPACT_KEY for p in model.metadata_props):
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
                **{p.key: p.value for p in out.metadata_props if p.key not in _STAMP_KEYS},
                _COMPACT_KEY: json.dumps(
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
    _unstamp(out)  # the stamp of ``model`` would not match this graph
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


# --------------------------------------------------------------------------- writing


def _digest(model: onnx.ModelProto) -> str:
    """sha256 of ``model`` serialized deterministically, with the ``sparsify.sha256`` value blanked."""
    entry = next((p for p in model.metadata_props if p.key == _SHA_KEY), None)
    saved = entry.value if entry is not None else ""
    if entry is not None:
        entry.value = ""
    try:
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    finally:
        if entry is not None:
            entry.value = saved


def _unstamp(model: onnx.ModelProto) -> None:
    """Drop the ``sparsify.*`` verification metadata (not ``sparsify.compact``), in place."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in _STAMP_KEYS]
    helper.set_model_props(model, dict(keep))


def stamp_metadata(
    model: onnx.ModelProto, external_sha256: dict[str, str] | None = None
) -> onnx.ModelProto:
    """Add the metadata :func:`load_onnx` verifies to ``model``, in place; returns it.

    Sets ``sparsify.format``, ``sparsify.format_version``, ``sparsify.version``,
    ``sparsify.external_sha256`` (when ``external_sha256`` is given: {``.data`` file name:
    sha256}) and, last, ``sparsify.sha256`` over everything else. Any earlier stamp is
    replaced. Call it on the final model, just before serializing it.
    """
    import sparsify

    props = {p.key: p.value for p in model.metadata_props if p.key not in _STAMP_KEYS}
    props[_FORMAT_KEY] = ONNX_FORMAT
    props[_VERSION_KEY] = ONNX_FORMAT_VERSION
    props[_TOOLKIT_KEY] = sparsify.__version__
    if external_sha256:
        props[_EXTERNAL_KEY] = json.dumps(external_sha256, sort_keys=True)
    props[_SHA_KEY] = ""
    helper.set_model_props(model, props)
    sha = _digest(model)
    next(p for p in model.metadata_props if p.key == _SHA_KEY).value = sha
    return model


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_files(model: onnx.ModelProto, file_name: str, directory: Path) -> None:
    """Stamp ``model`` (in place) and write it into ``directory``: one file, or file + ``.data``
    when its tensors exceed protobuf's 2 GiB limit."""
    tensor_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    if tensor_bytes < _PROTO_LIMIT:
        stamp_metadata(model)
        atomic_write_bytes(directory / file_name, model.SerializeToString())
        return
    # protobuf's 2 GiB ceiling: the only case where weights leave the .onnx file
    location = file_name + ".data"
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=location, size_threshold=1024
    )
    external_data_helper.write_external_data_tensors(model, str(directory))
    stamp_metadata(model, {location: _file_sha256(directory / location)})
    atomic_write_bytes(directory / file_name, model.SerializeToString())


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write a stamped copy of ``model`` to ``path`` atomically, so :func:`load_onnx` accepts it.

    For models built outside :func:`export_onnx` (e.g. ``export_dense_model`` +
    ``compact_model``). ``model`` itself is not changed.

    Returns:
        the path written.
    """
    path = Path(path)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _model_files(copy, path.name, path.parent)
    return path


def _publish(out_dir: Path, writers: dict[str, Callable[[Path], None]]) -> dict[str, int]:
    """Run every writer into a staging folder, then move the files into ``out_dir``.

    A new ``out_dir`` appears whole or not at all (``atomic_directory``); into an existing
    one (it may hold the scipy bundle) each file is moved with ``os.replace``, so a reader
    sees an old or a new file, never a torn one, and other files are left alone.
    """
    if not out_dir.exists():
        with atomic_directory(out_dir) as tmp:
            for write in writers.values():
                write(tmp)
            sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        return sizes
    if not out_dir.is_dir():
        raise SparsifyError(f"{out_dir} exists and is not a directory; choose another --out.")
    stage = Path(tempfile.mkdtemp(prefix=".onnx.", suffix=".tmp", dir=out_dir))
    try:
        for write in writers.values():
            write(stage)
        sizes = {}
        for path in sorted(stage.iterdir()):
            sizes[path.name] = path.stat().st_size
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return sizes


def export_onnx(
    source: Any,
    out_dir: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    compact: bool = True,
    sparse_initializer: bool = False,
) -> dict[str, int]:
    """Export a model to ONNX files in ``out_dir``: dense, compact, and optionally sparse_initializer.

    Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export based), opset 20,
    ``external_data=False``, dynamic batch dimension; input ``input``, output ``logits``.

    Files (each checked with ``onnx.checker.check_model`` before anything is written):
        model.dense.onnx               always; as the exporter wrote it, less its debugging
                                       metadata (full_check passes)
        model.compact.onnx             if ``compact``: sparse weights encoded and decoded in
                                       the graph with standard ops (full_check passes)
        model.sparse_initializer.onnx  if ``sparse_initializer``: GraphProto.sparse_initializer
                                       with int64 indices (plain check only: full_check fails)
    A file is self-contained unless its tensors exceed protobuf's 2 GiB limit, in which
    case its weights go to ``<file>.data`` beside it. onnxruntime densifies both sparse
    forms when it creates a session: they save disk, not RAM. Every file carries the
    ``sparsify.*`` metadata (format, version, sha256) that :func:`load_onnx` verifies; load
    the files with :func:`load_onnx` / :func:`ort_session`.

    Args:
        source: a :class:`~sparsify.pipeline.checkpoint.Checkpoint`, a path to one, or an nn.Module.
        out_dir: folder to write into (created atomically if new; other files in an
            existing folder are left alone).
        example_input: a tensor for tracing, batch first; default ``zeros(1, C, 28, 28)``
            with C from the checkpoint's recipe; for a module, from its first layer
            (:func:`default_example_input`: Conv2d ``(1, in_channels, 28, 28)``, Linear
            ``(1, in_features)``), refused when that is neither.
        compact: write ``model.compact.onnx``.
        sparse_initializer: write ``model.sparse_initializer.onnx``.

    Returns:
        {file name: size in bytes} for every file written.

    Raises:
        SparsifyError: unreadable checkpoint, a model without parameters, an input shape
            that cannot be guessed, or a model the exporter cannot handle.
    """
    if example_input is None:
        model, example_input = _resolve_source(source)
    else:
        model, _ = _resolve_source(source)
    dense = export_dense_model(model, example_input)
    onnx.checker.check_model(dense, full_check=True)
    writers: dict[str, Callable[[Path], None]] = {
        DENSE_FILE: lambda d: _model_files(dense, DENSE_FILE, d)
    }
    if compact:
        small, _ = compact_model(dense)
        onnx.checker.check_model(small, full_check=True)
        writers[COMPACT_FILE] = lambda d: _model_files(small, COMPACT_FILE, d)
    if sparse_initializer:
        sparse = sparse_initializer_model(dense)
        onnx.checker.check_model(sparse)
        writers[SPARSE_INIT_FILE] = lambda d: _model_files(sparse, SPARSE_INIT_FILE, d)
    return _publish(Path(out_dir), writers)


# --------------------------------------------------------------------------- loading

# what a file that is not an ONNX model usually starts with
_FOREIGN_MAGIC = (
    (b"PK\x03\x04", "a zip archive (a torch .pt/.pth checkpoint or an .npz?)"),
    (b"\x80", "a Python pickle"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"{", "JSON text"),
)


def _fail(path: Path, what: str) -> SparsifyError:
    return SparsifyError(f"{path}: {what}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, TensorProto]]:
    """(kind, tensor) for every tensor stored in ``graph``, its subgraphs and node attributes."""
    for t in graph.initializer:
        yield "initializer", t
    for st in graph.sparse_initializer:
        yield "initializer", st.values
        yield "indices", st.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[tuple[str, TensorProto]]:
    for a in node.attribute:
        if a.HasField("t"):
            yield "attribute", a.t
        for t in a.tensors:
            yield "attribute", t
        for st in [*([a.sparse_tensor] if a.HasField("sparse_tensor") else []), *a.sparse_tensors]:
            yield "attribute", st.values
            yield "indices", st.indices
        for g in [*([a.g] if a.HasField("g") else []), *a.graphs]:
            yield from _graph_tensors(g)


def _model_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
    yield from _graph_tensors(model.graph)
    for f in model.functions:
        for node in f.node:
            yield from _node_tensors(node)


def _external_location(path: Path, location: str) -> Path:
    """The file an external-data ``location`` names: relative, no ``..``, inside the folder."""
    if (
        not location
        or "\x00" in location
        or "\\" in location
        or ":" in location
        or PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or any(part in ("..", "") for part in location.split("/"))
    ):
        raise _fail(
            path,
            f"refusing external data location {location!r} (must be a file name relative to "
            "the model's folder, without '..'); the file was edited or is not from sparsify.",
        )
    root = path.parent.resolve()
    target = (path.parent / location).resolve()
    if not target.is_relative_to(root):
        raise _fail(path, f"external data {location!r} resolves outside {root}; refusing it.")
    return target


def _check_external(path: Path, model: onnx.ModelProto, verify: bool) -> bool:
    """Check every external-data reference before onnx reads one; load them. True if any."""
    refs = [t for _, t in _model_tensors(model) if t.data_location == TensorProto.EXTERNAL]
    if not refs:
        return False
    declared: dict[str, Any] = {}
    if verify:
        raw = next((p.value for p in model.metadata_props if p.key == _EXTERNAL_KEY), "{}")
        try:
            declared = json.loads(raw)
        except json.JSONDecodeError:
            declared = {}
        if not isinstance(declared, dict):
            declared = {}
    checked: dict[Path, int] = {}
    for t in refs:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        target = _external_location(path, location)
        if target not in checked:
            if not target.is_file():
                raise _fail(
                    path, f"external data file {location!r} is missing; copy it beside the model."
                )
            if verify and declared.get(location) != _file_sha256(target):
                raise _fail(
                    path,
                    f"external data file {location!r} does not match its sha256 in the model; "
                    "it is truncated, corrupted or from another export. Re-export the model.",
                )
            checked[target] = target.stat().st_size
        try:  # ONNX: no offset is 0, no length is "to the end of the file"
            offset = int(info.get("offset", "0"))
            length = int(info.get("length", str(checked[target] - offset)))
        except ValueError:
            offset = length = -1
        if offset < 0 or length < 0 or offset + length > checked[target]:
            raise _fail(
                path,
                f"tensor {t.name!r}: external data range (offset {info.get('offset')}, length "
                f"{info.get('length')}) is not inside {location!r}; re-export the model.",
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # onnx raises several types; the user's fix is the same
        raise _fail(
            path, f"cannot read its external data ({_first_line(exc)}); re-export the model."
        ) from None
    return True


def _check_tensors(path: Path, model: onnx.ModelProto) -> None:
    """Every stored tensor decodes to its declared dims and type; weights are finite."""
    for kind, t in _model_tensors(model):
        if any(d < 0 for d in t.dims):
            raise _fail(
                path, f"tensor {t.name!r} has negative dims {list(t.dims)}; re-export the model."
            )
        if t.data_type == TensorProto.UNDEFINED or t.data_type not in TensorProto.DataType.values():
            raise _fail(
                path,
                f"tensor {t.name!r} has unknown element type {t.data_type}; the file was edited "
                "or is corrupted. Re-export the model.",
            )
        try:
            array = numpy_helper.to_array(t)
        except Exception as exc:  # wrong byte count, unknown type, ... (onnx raises many types)
            raise _fail(
                path,
                f"tensor {t.name!r} does not match its dims {list(t.dims)} and type "
                f"({_first_line(exc)}); the file was edited or is corrupted. Re-export the model.",
            ) from None
        if kind == "initializer" and array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise _fail(
                    path,
                    f"weight {t.name!r} holds {bad} NaN/inf values; retrain or export a "
                    "finite checkpoint.",
                )


def load_onnx(path: str | os.PathLike[str], verify: bool = True) -> onnx.ModelProto:
    """Load an ONNX file as untrusted input and check it before anything uses it.

    Checks, in order: the file exists and is not empty; it starts like an ONNX model
    (a zip, pickle, gzip, npy or JSON file is named as such); protobuf parses it and it has
    a graph; with ``verify`` its ``sparsify.*`` metadata (format, format version, sha256 of
    the model, sha256 of any ``.data`` file); external-data references are relative paths
    without ``..`` that stay inside the model's folder and name byte ranges inside the file
    (checked before onnx reads them); every stored tensor matches its dims and type;
    initializers hold no NaN/inf; ``onnx.checker.check_model`` (``full_check`` unless the
    model has ``sparse_initializer``, which full_check rejects by design).

    Args:
        path: an ``.onnx`` file.
        verify: require and check the metadata :func:`export_onnx` writes. ``False`` loads
            ONNX files from other tools (without provenance: a bit flip that still parses and
            passes the checker is not detected); every other check still runs.

    Returns:
        the model, external data loaded.

    Raises:
        SparsifyError: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(
            path, "does not exist or is not a file; give an .onnx file from sparsify export."
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read it ({exc.strerror or exc}).") from None
    if not data:
        raise _fail(path, "is empty (0 bytes); the export was interrupted. Re-export the model.")
    # ModelProto field 1 is ir_version, and protobuf writes fields in number order
    if data[:1] != b"\x08":
        kind = next((what for magic, what in _FOREIGN_MAGIC if data.startswith(magic)), None)
        if data[8:9] == b"{" and kind is None:
            kind = "a safetensors file"
        raise _fail(
            path,
            f"not an ONNX model ({kind or 'it does not start with an ir_version field'}); "
            "give an .onnx file from sparsify export.",
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _fail(
            path,
            f"not a valid ONNX protobuf ({_first_line(exc)}); the file is truncated or "
            "corrupted. Re-export the model.",
        ) from None
    del data
    if not model.HasField("graph") or not model.graph.node:
        raise _fail(path, "holds no ONNX graph; the file is truncated or not an ONNX model.")
    props = {p.key: p.value for p in model.metadata_props}
    if verify:
        fmt = props.get(_FORMAT_KEY)
        if fmt is None:
            raise _fail(
                path,
                "has no sparsify metadata (truncated, or not written by sparsify export); "
                "re-export it, or pass verify=False for an ONNX file from another tool.",
            )
        if fmt != ONNX_FORMAT:
            raise _fail(path, f"format is {fmt!r}, expected {ONNX_FORMAT!r}; re-export the model.")
        version = props.get(_VERSION_KEY)
        if version != ONNX_FORMAT_VERSION:
            raise _fail(
                path,
                f"sparsify ONNX format version {version!r} is not supported (this sparsify "
                f"reads {ONNX_FORMAT_VERSION}); upgrade sparsify or re-export the model.",
            )
        if props.get(_SHA_KEY) != _digest(model):
            raise _fail(
                path,
                "sha256 does not match the model; the file is truncated, bit-flipped or was "
                "edited. Re-export the model.",
            )
    external = _check_external(path, model, verify)
    _check_tensors(path, model)
    full = not model.graph.sparse_initializer
    try:
        onnx.checker.check_model(str(path) if external else model, full_check=full)
    except Exception as exc:  # ValidationError, InferenceError, ...
        raise _fail(
            path,
            f"fails onnx.checker ({_first_line(exc)}); the file is corrupted or was edited. "
            "Re-export the model.",
        ) from None
    return model


def ort_session(
    path: str | os.PathLike[str],
    options: Any = None,
    providers: list[str] | None = None,
    verify: bool = True,
    *,
    threads: int | None = None,
    allow_spinning: bool = False,
) -> Any:
    """An onnxruntime ``InferenceSession`` on ``path``, created only after :func:`load_onnx`.

    The session is built from the verified model in memory (from ``path`` only when the
    weights are in a ``.data`` file), so what runs is what was checked.

    Args:
        path: an ``.onnx`` file.
        options: ``onnxruntime.SessionOptions``, used as given; default: warnings silenced,
            ``threads`` intra-op threads, one inter-op thread, sequential execution, and the
            pool threads' spinning set by ``allow_spinning``.
        providers: default ``["CPUExecutionProvider"]``.
        verify: passed to :func:`load_onnx`.
        threads: intra-op threads of the default options (None: onnxruntime's default).
        allow_spinning: let idle pool threads spin (onnxruntime's own default is on). Off,
            because spinning threads next to torch on the same cores halve torch's speed
            (Linear 4096, batch 64, 2 threads: 28.4 vs 13.9 ms, results/bench/ort_spin).

    Raises:
        SparsifyError: anything :func:`load_onnx` refuses, onnxruntime missing, or a session
            onnxruntime cannot create (unsupported op or type, ...).
    """
    path = Path(path)
    model = load_onnx(path, verify=verify)
    try:
        import onnxruntime as ort
    except ImportError:
        raise SparsifyError("onnxruntime is not installed; pip install onnxruntime.") from None
    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
    external = any(t.data_location == TensorProto.EXTERNAL for _, t in _model_tensors(model))
    source: Any = str(path) if external else model.SerializeToString()
    try:
        return ort.InferenceSession(
            source, options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's pybind errors derive from Exception only
        raise _fail(
            path,
            f"onnxruntime cannot create a session ({_first_line(exc)}); the model uses an op "
            "or type this onnxruntime lacks, or was edited. Re-export it or upgrade onnxruntime.",
        ) from None


# --------------------------------------------------------------------------- memory

_RSS_SCRIPT = r"""
import json, resource, sys

def rss():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None

import onnxruntime as ort
before = rss()
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
after = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak *= 1 if sys.platform == "darwin" else 1024
print(json.dumps({"rss_before_session": before, "rss_after_session": after, "peak_rss": peak}))
"""


def ort_resident_memory(path: str | os.PathLike[str], timeout: float = 300.0) -> dict[str, int]:
    """Resident memory of a fresh process before and after creating an ORT session on ``path``.

    Runs a separate Python (this interpreter) that imports onnxruntime, reads VmRSS from
    /proc/self/status, creates a CPUExecutionProvider session (1 thread) and reads it again.
    A compact or sparse_initializer model is decoded to dense tensors at session creation,
    so expect at least the dense model's ``session_bytes``: compact ONNX saves disk, not RAM.

    Returns:
        ``rss_before_session``, ``rss_after_session``, ``session_bytes`` (their difference)
        and ``peak_rss`` (ru_maxrss), in bytes. On systems without /proc the first three
        are -1.

    Raises:
        SparsifyError: the file is missing or onnxruntime fails to load it.
    """
    path = Path(path)
    if not path.is_file():
        raise SparsifyError(f"{path} does not exist; export the model first.")
    try:
        data = run_json_child(["-c", _RSS_SCRIPT, str(path)], timeout)
    except ChildFailed as exc:
        if str(exc).startswith("timed out"):
            raise SparsifyError(
                f"{path}: onnxruntime took over {timeout:.0f} s to load it; raise timeout."
            ) from None
        raise SparsifyError(f"{path}: onnxruntime could not load it ({exc}).") from None
    before, after = data["rss_before_session"], data["rss_after_session"]
    missing = before is None or after is None
    return {
        "rss_before_session": -1 if missing else int(before),
        "rss_after_session": -1 if missing else int(after),
        "session_bytes": -1 if missing else int(after) - int(before),
        "peak_rss": int(data["peak_rss"]),
    }


__all__ = [
    "COMPACT_FILE",
    "COMPACT_SCHEMES",
    "DENSE_FILE",
    "EXPORTER",
    "ONNX_FORMAT",
    "ONNX_FORMAT_VERSION",
    "OPSET",
    "SPARSE_INIT_FILE",
    "TensorChoice",
    "compact_model",
    "export_dense_model",
    "export_onnx",
    "load_onnx",
    "ort_resident_memory",
    "ort_session",
    "save_onnx",
    "sparse_initializer_model",
    "stamp_metadata",
    "strip_debug_metadata",
]
