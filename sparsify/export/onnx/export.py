"""torch -> ONNX: the dense model from ``torch.onnx.export``, and :func:`export_onnx`, which
writes the dense, compact and sparse_initializer files.

``torch.onnx.export(model, (x,), dynamo=True, opset_version=20, external_data=False,
dynamic_shapes=batch)`` -- the dynamo (``torch.export``) exporter, ONNX opset 20, one
self-contained file, the batch dimension dynamic (``dim_param: "batch"``), every other
dimension fixed by the example input: give the model's real input shape. Its optimiser
folds eval-mode BatchNorm into the preceding Conv, so a Conv initializer holds
``weight * gamma / sqrt(var + eps)``; zeros stay zeros (-0.0 where gamma < 0, which
compaction stores as +0.0).

The exporter takes a module, never a checkpoint: the caller (the CLI, the bench) resolves a
checkpoint to ``(model, example input, provenance)``; provenance is stamped into the file's
``sparsify.source`` metadata, under the sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import helper
from torch import nn

from sparsify.errors import SparsifyError, check_input_shape
from sparsify.export.onnx.compact import compact_model, sparse_initializer_model
from sparsify.export.onnx.integrity import SOURCE_KEY, write_model_files
from sparsify.fileio import atomic_directory

OPSET = 20
EXPORTER = "torch.onnx.export(dynamo=True)"
DENSE_FILE = "model.dense.onnx"
COMPACT_FILE = "model.compact.onnx"
SPARSE_INIT_FILE = "model.sparse_initializer.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def default_example_input(model: nn.Module) -> torch.Tensor:
    """``zeros(1, in_features)`` when ``model``'s first weight layer is an ``nn.Linear`` that
    reads the input as given (no ``nn.Flatten`` before it): the one input shape a module
    determines by itself. Any other model (a Conv, a Flatten first: images of any size) has
    no shape to read, and none is guessed.

    Raises:
        SparsifyError: the shape is not determined (pass ``example_input`` or ``input_shape``).
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return torch.zeros(1, int(module.in_features))
        if isinstance(module, nn.Flatten) or (
            len(list(module.parameters(recurse=False))) and module is not model
        ):
            break
    raise SparsifyError(
        f"the input shape of this {type(model).__name__} is not determined by its layers; pass "
        "example_input=torch.zeros(1, C, H, W) or input_shape=(C, H, W) (CLI: --input-shape)."
    )


def example_for(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """The tracing input: ``example_input``, else ``zeros(1, *input_shape)``, else
    :func:`default_example_input` (a plain Linear first). Refuses to guess anything else."""
    if example_input is not None:
        return example_input
    if input_shape is not None:
        return torch.zeros(1, *check_input_shape("input_shape", list(input_shape)))
    return default_example_input(model)


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
            "example_input must be a tensor with a batch dimension, e.g. torch.randn(1, 3, 64, 64)."
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
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    compact: bool = True,
    sparse_initializer: bool = False,
    *,
    input_shape: Sequence[int] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Export ``model`` to ONNX files in ``out_dir``: dense, compact, and optionally sparse_initializer.

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
        model: the module (exported in eval mode; its train/eval flags are restored).
        out_dir: folder to write into (created atomically if new; other files in an
            existing folder are left alone).
        example_input: a tensor for tracing, batch first.
        compact: write ``model.compact.onnx``.
        sparse_initializer: write ``model.sparse_initializer.onnx``.
        input_shape: instead of ``example_input``: one input without the batch, e.g.
            ``(3, 64, 64)``. With neither, only a model whose first layer is a plain
            Linear exports (:func:`default_example_input`); nothing is guessed.
        provenance: JSON-able facts about the source (checkpoint digest, recipe...),
            stamped as ``sparsify.source`` metadata.

    Returns:
        {file name: size in bytes} for every file written.

    Raises:
        SparsifyError: not a module, a model without parameters, an undetermined input
            shape, or a model the exporter cannot handle.
    """
    if not isinstance(model, nn.Module):
        raise SparsifyError(
            f"export_onnx needs an nn.Module; got {type(model).__name__} (for a checkpoint: "
            "load_checkpoint(path).build_model() and its example_input())."
        )
    example = example_for(model, example_input, input_shape)
    dense = export_dense_model(model, example)
    if provenance is not None:
        props = {p.key: p.value for p in dense.metadata_props}
        props[SOURCE_KEY] = json.dumps(dict(provenance), sort_keys=True)
        helper.set_model_props(dense, props)
    onnx.checker.check_model(dense, full_check=True)
    writers: dict[str, Callable[[Path], None]] = {
        DENSE_FILE: lambda d: write_model_files(dense, DENSE_FILE, d)
    }
    if compact:
        small, _ = compact_model(dense)
        onnx.checker.check_model(small, full_check=True)
        writers[COMPACT_FILE] = lambda d: write_model_files(small, COMPACT_FILE, d)
    if sparse_initializer:
        sparse = sparse_initializer_model(dense)
        onnx.checker.check_model(sparse)
        writers[SPARSE_INIT_FILE] = lambda d: write_model_files(sparse, SPARSE_INIT_FILE, d)
    return _publish(Path(out_dir), writers)
