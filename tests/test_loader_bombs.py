"""Hostile files for the bundle reader, the torch-free runtime and the ONNX loader (issue 12):
digests over the runtime graph, FIFOs and devices where a file should be, declared sizes no
file can justify (zeros entries, zlib streams, ConstantOfShape/Expand/Tile/Range), JSON
bombs (depth, digits, duplicate keys), and malformed op lists. Every refusal is one
SparsifyError line naming the file; none allocates what the file declares first
(tracemalloc sees numpy's allocations). Real files are made in tmp_path; real onnxruntime.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from conftest import sparse_lecture_convnet
from onnx import TensorProto, helper
from torch import nn

import sparsify.runtime
from sparsify.errors import SparsifyError
from sparsify.export import bundle_format as bf
from sparsify.export import onnx as ox
from sparsify.export.bundle_reader import load_bundle
from sparsify.export.scipy_bundle import export_scipy_bundle


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    ).eval()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    export_scipy_bundle(_model(), root / "graph")
    export_scipy_bundle(_model(), root / "nograph", graph=False)
    return {"graph": root / "graph", "nograph": root / "nograph"}


@pytest.fixture()
def bundle(bundles: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of the bundle with a graph."""
    shutil.copytree(bundles["graph"], tmp_path / "b")
    return tmp_path / "b"


def _manifest(b: Path) -> dict[str, Any]:
    return json.loads((b / bf.MANIFEST).read_text())


def _save(b: Path, m: dict[str, Any], restamp: bool = True) -> None:
    if restamp:
        m[bf.DIGEST_KEY] = bf.manifest_digest(m)
    (b / bf.MANIFEST).write_text(json.dumps(m))


def _one_line(exc: pytest.ExceptionInfo[SparsifyError], where: Path, phrase: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(where) in msg
    assert phrase in msg, msg
    return msg


@contextmanager
def _deadline(seconds: int = 20) -> Iterator[None]:
    """Fail instead of hanging: a blocking open() is interrupted by SIGALRM (PEP 475)."""

    def fire(signum: int, frame: Any) -> None:
        raise TimeoutError("the loader blocked")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def _peak_below(limit: int) -> Iterator[None]:
    """Assert the block's traced allocations (numpy's included) stay under ``limit`` bytes."""
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < limit, f"allocated {peak} bytes before refusing"


# --------------------------------------------------------------------------- item 4: digests


def test_graph_edit_relu_to_identity_is_refused(bundle: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    before = sparsify.runtime.load(bundle)(x)
    m = _manifest(bundle)
    relu = next(op for op in m["graph"]["ops"] if op["op"] == "relu")
    relu["op"] = "identity"
    _save(bundle, m, restamp=False)
    with pytest.raises(SparsifyError) as info:
        sparsify.runtime.load(bundle)
    _one_line(info, bundle, "manifest_sha256 does not match")
    with pytest.raises(SparsifyError):
        load_bundle(bundle, verify=False)  # the manifest digest is not optional
    _save(bundle, m)  # the digest recomputed (it is unkeyed): loads, as SECURITY.md says
    assert not np.array_equal(sparsify.runtime.load(bundle)(x), before)


def test_other_manifest_fields_are_under_the_digest(bundle: Path) -> None:
    m = _manifest(bundle)
    m["source"] = {"kind": "module", "recipe": {"edited": True}}
    _save(bundle, m, restamp=False)
    with pytest.raises(SparsifyError) as info:
        load_bundle(bundle)
    _one_line(info, bundle, "manifest_sha256")


def test_bundle_without_digest_old_writer(bundles: dict[str, Path], tmp_path: Path) -> None:
    """A bundle from before the manifest digest: with a graph it is refused (re-export);
    without one its array and state digests cover everything it holds, so it loads."""
    for kind in ("graph", "nograph"):
        shutil.copytree(bundles[kind], tmp_path / kind)
        m = _manifest(tmp_path / kind)
        del m[bf.DIGEST_KEY]
        _save(tmp_path / kind, m, restamp=False)
    with pytest.raises(SparsifyError) as info:
        load_bundle(tmp_path / "graph")
    _one_line(info, tmp_path / "graph", "re-export the bundle")
    assert "0.weight" in load_bundle(tmp_path / "nograph").state_dict


# --------------------------------------------------------------------------- item 5: canonical CSR


def test_canonical_form_is_required_of_every_compressed_format() -> None:
    """Duplicates and unsorted indices pass scipy's full check; from_parts refuses them."""
    data = np.ones(3, np.float32)
    ok = {"data": data, "indices": np.array([0, 2, 1], np.int32), "indptr": np.array([0, 2, 3])}
    bf.from_parts("csr", ok, (2, 3))  # row 0: 0, 2; row 1: 1 (a new row may start lower)
    for fmt in ("csr", "csc", "bsr"):
        for indices, phrase in (([1, 1, 0], "twice or out of order"), ([2, 1, 0], "out of order")):
            parts = {**ok, "indices": np.array(indices, np.int32)}
            if fmt == "bsr":  # (1, 1) blocks
                parts["data"] = data.reshape(3, 1, 1)
            with pytest.raises(SparsifyError, match=phrase):
                bf.from_parts(fmt, parts, (2, 3) if fmt != "csc" else (3, 2))


# --------------------------------------------------------------------------- item 10: FIFOs


@pytest.mark.parametrize("name", [bf.DATA_FILE, bf.MANIFEST])
def test_a_fifo_in_a_bundle_is_refused_without_blocking(bundle: Path, name: str) -> None:
    (bundle / name).unlink()
    os.mkfifo(bundle / name)
    with _deadline(), pytest.raises(SparsifyError) as info:
        sparsify.runtime.load(bundle)
    _one_line(info, bundle / name, "a FIFO, not a regular file")


def test_a_device_as_manifest_is_refused(bundle: Path) -> None:
    (bundle / bf.MANIFEST).unlink()
    (bundle / bf.MANIFEST).symlink_to("/dev/zero")  # endless: reading it would never stop
    with _deadline(), pytest.raises(SparsifyError) as info:
        load_bundle(bundle)
    _one_line(info, bundle / bf.MANIFEST, "a device, not a regular file")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx")
    ox.export_onnx(_model(), root, input_shape=(1, 8, 8))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ox.integrity, "_PROTO_LIMIT", 0)  # weights into model.dense.onnx.data
        (root / "ext").mkdir()
        ox.save_onnx(ox.load_onnx(root / ox.DENSE_FILE), root / "ext" / ox.DENSE_FILE)
    return root


def test_onnx_fifos_are_refused_without_blocking(onnx_dir: Path, tmp_path: Path) -> None:
    """A FIFO named model.onnx (for load_onnx, ort_session and runtime.load) or in place of
    the external .data file. (Already refused by a stat check before this suite; kept so a
    rewrite of the loaders cannot reintroduce a blocking open.)"""
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    for load in (ox.load_onnx, ox.ort_session, sparsify.runtime.load):
        with _deadline(), pytest.raises(SparsifyError) as info:
            load(fifo)
        _one_line(info, fifo, "not a")
    shutil.copytree(onnx_dir / "ext", tmp_path / "ext")
    data = tmp_path / "ext" / (ox.DENSE_FILE + ".data")
    data.unlink()
    os.mkfifo(data)
    with _deadline(), pytest.raises(SparsifyError) as info:
        ox.load_onnx(tmp_path / "ext" / ox.DENSE_FILE)
    assert "FIFO" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- item 11: budgets


def test_a_huge_zeros_entry_is_refused_before_allocating(bundle: Path) -> None:
    m = _manifest(bundle)
    entry = next(t for t in m["tensors"] if t["name"] == "0.bias")
    m["tensors"].append(
        {"name": "bomb", "shape": [2**15, 2**15], "dtype": "float32", "storage": "zeros"}
    )
    assert entry  # a 4 GiB all-zero tensor described in 60 bytes
    _save(bundle, m)
    with _peak_below(64 << 20), pytest.raises(SparsifyError) as info:
        load_bundle(bundle)
    _one_line(info, bundle, "over the 1073741824 a bundle of")


def test_the_budget_scales_and_can_be_raised(bundle: Path) -> None:
    """The default budget is max(1 GiB, 1024x the bundle); ``max_bytes`` sets another."""
    with pytest.raises(SparsifyError, match="pass max_bytes"):
        load_bundle(bundle, max_bytes=100)
    assert load_bundle(bundle, max_bytes=10**6).state_dict
    m = _manifest(bundle)
    m["tensors"].append({"name": "z", "shape": [2**28 + 1], "dtype": "float32", "storage": "zeros"})
    _save(bundle, m)
    with _peak_below(16 << 20), pytest.raises(SparsifyError, match="over the"):
        load_bundle(bundle)  # 1 GiB + 4 bytes in a bundle of a few KB


def test_a_zlib_stream_cannot_claim_more_than_deflate_can_hold(bundle: Path) -> None:
    """A 1 KB stream declared as a 512 MiB array: refused before inflating a byte."""
    stream = zlib.compress(bytes(1 << 20))
    with _peak_below(16 << 20), pytest.raises(SparsifyError, match="cannot inflate"):
        bf.unpack(stream, "zlib", np.dtype("<f4"), 2**27)
    # a stream that really inflates past what is declared stops at the declared size + 1
    stream = zlib.compress(bytes(64 << 20))
    with _peak_below(40 << 20), pytest.raises(SparsifyError, match="inflates past"):
        bf.unpack(stream, "zlib", np.dtype("<f4"), 2**20)
    data = np.arange(10**5, dtype=np.float32)
    assert np.array_equal(bf.unpack(bf.pack(data, "zlib"), "zlib", data.dtype, data.size), data)


# --------------------------------------------------------------------------- item 15: JSON


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ('{"format": ' + "9" * 5000 + "}", "integer of 5000 digits"),
        ("[" * 10_000 + "]" * 10_000, "nested 10000 levels deep"),
        ('{"a": 1, "a": 2}', "appears twice"),
        ('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', ""),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_json_bombs_are_one_line(bundle: Path, text: str | bytes, phrase: str) -> None:
    from sparsify.fileio import loads_json_bounded

    if not phrase:  # brackets inside a string do not count as depth
        assert loads_json_bounded(text, "x", fix="f") == {"a": "[" * 66}
        return
    raw = text if isinstance(text, bytes) else text.encode()
    (bundle / bf.MANIFEST).write_bytes(raw)
    with pytest.raises(SparsifyError) as info:
        load_bundle(bundle)
    _one_line(info, bundle, phrase)


def test_an_oversized_manifest_is_refused_before_reading(bundle: Path) -> None:
    with open(bundle / bf.MANIFEST, "r+b") as fh:
        fh.truncate(bf.MAX_MANIFEST_BYTES + 1)  # sparse: nothing is written
    with _peak_below(16 << 20), pytest.raises(SparsifyError) as info:
        load_bundle(bundle)
    _one_line(info, bundle, "over the")


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        (lambda m: m["data"].update(path="arrays\x00.bin"), "refusing file path"),
        (lambda m: m["tensors"][0].update(shape=[0, 2**70]), "limit"),
        (lambda m: m["tensors"][0].update(shape=[1] * 100), "limit"),
        (lambda m: m["tensors"][0].update(shape=[2.5]), "invalid shape"),
    ],
)
def test_nul_bytes_and_overflowing_shapes_are_one_line(
    bundle: Path, edit: Callable[[dict[str, Any]], None], phrase: str
) -> None:
    m = _manifest(bundle)
    edit(m)
    _save(bundle, m)
    with pytest.raises(SparsifyError) as info:
        load_bundle(bundle)
    _one_line(info, bundle, phrase)


# --------------------------------------------------------------------------- malformed graphs


def _op(m: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(op for op in m["graph"]["ops"] if op["op"] == kind)


GRAPH_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "conv-stride-missing": (lambda m: _op(m, "conv2d").pop("stride"), "'stride'"),
    "conv-stride-a-string": (lambda m: _op(m, "conv2d").update(stride="2"), "'stride'"),
    "conv-padding-absurd": (lambda m: _op(m, "conv2d").update(padding=[10**9, 0]), "'padding'"),
    "pool-kernel-zero": (lambda m: _op(m, "maxpool2d").update(kernel=[0, 2]), "'kernel'"),
    "pool-dilation-negative": (
        lambda m: _op(m, "maxpool2d").update(dilation=[-1, 1]),
        "'dilation'",
    ),
    "weight-missing-tensor": (lambda m: _op(m, "linear").update(weight="nope"), "'weight'"),
    "weight-wrong-rank": (lambda m: _op(m, "linear").update(weight="0.bias"), "'weight'"),
    "unknown-op": (lambda m: _op(m, "relu").update(op="gelu"), "'op'"),
    "input-from-a-later-op": (
        lambda m: m["graph"]["ops"][0].update(inputs=[m["graph"]["ops"][-1]["name"]]),
        "'inputs'",
    ),
    "inputs-not-a-list": (lambda m: _op(m, "relu").update(inputs="x"), "'inputs'"),
    "ops-not-a-list": (lambda m: m["graph"].update(ops={"a": 1}), "'ops'"),
    "op-not-an-object": (lambda m: m["graph"]["ops"].insert(0, 7), "'ops'"),
    "flatten-dim-huge": (lambda m: _op(m, "flatten").update(start_dim=10**6), "'start_dim'"),
    "output-unknown": (lambda m: m["graph"].update(output="nowhere"), "'output'"),
    "graph-a-list": (lambda m: m.update(graph=[1, 2]), "'graph'"),
}


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_malformed_graph_is_one_line(bundle: Path, case: str) -> None:
    edit, phrase = GRAPH_CASES[case]
    m = _manifest(bundle)
    edit(m)
    _save(bundle, m)  # re-stamped: the graph check itself must refuse
    with _deadline(), pytest.raises(SparsifyError) as info:
        sparsify.runtime.load(bundle)
    msg = _one_line(info, bundle, phrase)
    assert "re-export" in msg.lower()


def test_a_wrong_input_shape_at_run_time_is_one_line(bundle: Path) -> None:
    model = sparsify.runtime.load(bundle)
    with pytest.raises(SparsifyError, match="give the input shape"):
        model(np.zeros((1, 1, 12, 12), np.float32))


# --------------------------------------------------------------------------- item 12: ONNX bombs


def _bomb(
    tmp_path: Path, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], rank: int = 1
) -> Path:
    """A stamped model, valid for onnx.checker: ``y = x + big`` (``big`` of rank ``rank``)
    where ``big`` comes from ``nodes`` on constants."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * rank)
    graph = helper.make_graph(
        [*nodes, helper.make_node("Add", ["x", "big"], ["y"])], "g", [x], [y], inits
    )
    # IR 10: what onnxruntime >= 1.18 (pyproject's floor) reads; helper's default is the
    # installed onnx's newest, which an older onnxruntime refuses (seen: onnx 1.23, ORT 1.30)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    return ox.save_onnx(model, tmp_path / "bomb.onnx")


def _i64(name: str, values: list[int], dims: list[int] | None = None) -> onnx.TensorProto:
    return helper.make_tensor(
        name, TensorProto.INT64, [len(values)] if dims is None else dims, values
    )


BOMBS: dict[str, Callable[[], tuple[Any, ...]]] = {
    "constant-of-shape-256-gib": lambda: (
        [helper.make_node("ConstantOfShape", ["s"], ["big"])],
        [_i64("s", [2**18, 2**18])],
        2,
    ),
    "constant-of-shape-2-gib": lambda: (
        [helper.make_node("ConstantOfShape", ["s"], ["big"])],
        [_i64("s", [2**29])],
    ),
    "expand": lambda: (
        [helper.make_node("Expand", ["one", "s"], ["big"])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]), _i64("s", [2**16, 2**16])],
        2,
    ),
    "tile": lambda: (
        [helper.make_node("Tile", ["one", "r"], ["big"])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1, 1], [1.0]), _i64("r", [2**16, 2**16])],
        2,
    ),
    "range": lambda: (
        [
            helper.make_node("Range", ["a", "b", "c"], ["r"]),
            helper.make_node("Cast", ["r"], ["big"], to=TensorProto.FLOAT),
        ],
        [_i64("a", [0], []), _i64("b", [2**34], []), _i64("c", [1], [])],
    ),
    "shape-through-concat": lambda: (
        [
            helper.make_node("Concat", ["s1", "s2"], ["s"], axis=0),
            helper.make_node("ConstantOfShape", ["s"], ["big"]),
        ],
        [_i64("s1", [2**15]), _i64("s2", [2**15])],
        2,
    ),
    "many-under-the-limit": lambda: (
        [helper.make_node("ConstantOfShape", ["s"], [f"c{i}"]) for i in range(3)]
        + [helper.make_node("Sum", ["c0", "c1", "c2"], ["big"])],
        [_i64("s", [2**27])],  # 512 MiB each: no one tensor is over, their sum is
    ),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_onnx_size_bombs_are_refused_at_load(tmp_path: Path, case: str) -> None:
    path = _bomb(tmp_path, *BOMBS[case]())
    assert path.stat().st_size < 4096
    for load in (ox.load_onnx, ox.ort_session, sparsify.runtime.load):
        with _peak_below(64 << 20), pytest.raises(SparsifyError) as info:
            load(path)
        _one_line(info, path, "over the")


def test_a_small_constant_of_shape_loads_and_runs(tmp_path: Path) -> None:
    path = _bomb(
        tmp_path, [helper.make_node("ConstantOfShape", ["s"], ["big"])], [_i64("s", [1000])]
    )
    y = ox.ort_session(path).run(None, {"x": np.ones(1, np.float32)})[0]
    assert y.shape == (1000,)
    assert np.array_equal(sparsify.runtime.load(path)(np.ones(1, np.float32)), y)
    with pytest.raises(SparsifyError, match="pass max_bytes"):
        ox.load_onnx(path, max_bytes=100)


def test_declared_static_shapes_are_bounded_too(tmp_path: Path) -> None:
    """A graph whose declared input fixes a 4 TiB activation is refused at load."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2**40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2**40])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = ox.save_onnx(model, tmp_path / "declared.onnx")
    with pytest.raises(SparsifyError) as info:
        ox.load_onnx(path)
    _one_line(info, path, "over the")


def test_the_exported_files_pass_the_size_check(onnx_dir: Path) -> None:
    for f in (ox.DENSE_FILE, ox.COMPACT_FILE, f"ext/{ox.DENSE_FILE}"):
        ox.load_onnx(onnx_dir / f)


# --------------------------------------------------------------------------- item 5: ONNX COO


def test_sparse_initializers_run_in_the_runtime_and_must_be_canonical(tmp_path: Path) -> None:
    """The torch-free runtime runs the sparse_initializer file (it raised a RuntimeError
    before) and refuses a duplicate or unsorted index itself, not only via onnx.checker."""
    from onnx import numpy_helper

    from sparsify.runtime.onnx_model import OnnxModel

    ox.export_onnx(
        sparse_lecture_convnet(0.9), tmp_path, input_shape=(1, 28, 28), sparse_initializer=True
    )
    path = tmp_path / ox.SPARSE_INIT_FILE
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    want = ox.ort_session(path).run(None, {ox.INPUT_NAME: x})[0]
    np.testing.assert_allclose(sparsify.runtime.load(path)(x), want, rtol=1e-5, atol=1e-6)
    for change, phrase in (("duplicate", "repeats"), ("swap", "out of order")):
        model = ox.load_onnx(path)
        st = max(model.graph.sparse_initializer, key=lambda t: t.values.dims[0])
        idx = numpy_helper.to_array(st.indices).copy()
        if change == "duplicate":
            idx[1] = idx[0]
        else:
            idx[0], idx[1] = idx[1], idx[0]
        st.indices.CopyFrom(numpy_helper.from_array(idx, st.indices.name))
        with pytest.raises(SparsifyError, match=phrase):
            OnnxModel(model, path)
        stamped = ox.save_onnx(model, tmp_path / f"{change}.onnx")
        with pytest.raises(SparsifyError) as info:
            sparsify.runtime.load(stamped)
        _one_line(info, stamped, "not in sorted order")  # onnx.checker, in load_onnx


def test_a_fifo_named_as_the_checkpoint_is_refused_as_not_a_file(tmp_path: Path) -> None:
    """A FIFO in place of model.safetensors exists: the error says what it is, not that it is
    missing."""
    from sparsify.pipeline.checkpoint import load_checkpoint

    os.mkfifo(tmp_path / "model.safetensors")
    for path in (tmp_path, tmp_path / "model.safetensors"):
        with _deadline(), pytest.raises(SparsifyError) as info:
            load_checkpoint(path)
        _one_line(info, tmp_path / "model.safetensors", "not a regular file")
