"""Corrupted-artifact suite for ONNX files: every damage is refused by ``load_onnx`` /
``ort_session`` with a one-line SparsifyError naming the file, never a crash inside
protobuf/onnx/onnxruntime, never a read outside the model's folder.

Cases that must get past the sha256 re-stamp the edited model (``stamp_metadata``), so the
deeper checks (tensor sizes, NaN, external paths, checker, onnxruntime) are exercised too.
One small model is exported once per module; each case damages a copy.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import sparse_lecture_convnet
from onnx import TensorProto, helper, numpy_helper

from sparsify.errors import SparsifyError
from sparsify.export import onnx as ox
from sparsify.export.onnx import integrity

WEIGHT = "fc1.weight"  # a (200, 256) Gemm weight


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the three exported files and, under ext/, the dense model with its
    weights in ``model.dense.onnx.data`` (the >2 GiB path, forced with a zero limit)."""
    root = tmp_path_factory.mktemp("onnx")
    model = sparse_lecture_convnet(0.9)
    ox.export_onnx(model, root, input_shape=(1, 28, 28), sparse_initializer=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(integrity, "_PROTO_LIMIT", 0)
        (root / "ext").mkdir()
        ox.save_onnx(ox.load_onnx(root / ox.DENSE_FILE), root / "ext" / ox.DENSE_FILE)
    return root


# --------------------------------------------------------------------------- damages

Damage = Callable[[Path], Path]  # damages a copy of the good folder, returns the file to load


def _bytes(change: Callable[[bytes], bytes], name: str = ox.DENSE_FILE) -> Damage:
    def apply(d: Path) -> Path:
        f = d / name
        f.write_bytes(change(f.read_bytes()))
        return f

    return apply


def _replace_file(make: Callable[[Path], object]) -> Damage:
    """Remove the dense file, then ``make`` something (or nothing) in its place."""

    def apply(d: Path) -> Path:
        f = d / ox.DENSE_FILE
        f.unlink()
        make(f)
        return f

    return apply


def _flip(at: float) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        b = bytearray(data)
        b[min(int(len(b) * at), len(b) - 1)] ^= 0x10
        return bytes(b)

    return change


def _model(
    edit: Callable[[onnx.ModelProto], object], restamp: bool = True, name: str = ox.DENSE_FILE
) -> Damage:
    """Parse the file, edit the model, write it back (re-stamped: the sha256 then matches)."""

    def apply(d: Path) -> Path:
        f = d / name
        model = onnx.load_model_from_string(f.read_bytes())
        edit(model)
        if restamp:
            ox.stamp_metadata(model)
        f.write_bytes(model.SerializeToString())
        return f

    return apply


def _init(model: onnx.ModelProto, name: str = WEIGHT) -> TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set_prop(key: str, value: str | None) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        props = {p.key: p.value for p in model.metadata_props}
        if value is None:
            props.pop(key)
        else:
            props[key] = value
        helper.set_model_props(model, props)

    return edit


def _set_weight(change: Callable[[np.ndarray], np.ndarray], name: str = WEIGHT):
    def edit(model: onnx.ModelProto) -> None:
        t = _init(model, name)
        t.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(t).copy()), t.name))

    return edit


def _nan(a: np.ndarray) -> np.ndarray:
    a.reshape(-1)[0] = np.nan
    return a


def _dims(*dims: int) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        t = _init(model)
        del t.dims[:]
        t.dims.extend(dims)

    return edit


def _external(location: str, offset: int = 0, length: int | None = None):
    """Point fc1.weight at external data (its bytes dropped from the file)."""

    def edit(model: onnx.ModelProto) -> None:
        t = _init(model)
        size = len(t.raw_data)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", location),
            ("offset", str(offset)),
            ("length", str(size if length is None else length)),
        ):
            entry = t.external_data.add()
            entry.key, entry.value = key, value

    return edit


def _symlink_outside(d: Path) -> Path:
    outside = d.parent / f"{d.name}-outside.bin"
    outside.write_bytes(bytes(200 * 256 * 4))
    (d / "weights.bin").symlink_to(outside)
    return _model(_external("weights.bin"))(d)


def _ext_bytes(change: Callable[[bytes], bytes]) -> Damage:
    def apply(d: Path) -> Path:
        data = d / "ext" / (ox.DENSE_FILE + ".data")
        data.write_bytes(change(data.read_bytes()))
        return d / "ext" / ox.DENSE_FILE

    return apply


def _dangling_input(model: onnx.ModelProto) -> None:
    model.graph.node[-1].input[0] = "no_such_tensor"


def _unknown_op(model: onnx.ModelProto) -> None:
    # a custom-domain op the checker cannot judge and onnxruntime has no kernel for
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    node = model.graph.node[-1]
    node.op_type, node.domain = "Mystery", "com.example"
    del node.attribute[:]


def _no_graph(model: onnx.ModelProto) -> None:
    model.ClearField("graph")


def _sparse_index_out_of_range(model: onnx.ModelProto) -> None:
    st = model.graph.sparse_initializer[0]
    idx = numpy_helper.to_array(st.indices).copy()
    idx[-1] = 10**9
    st.indices.CopyFrom(numpy_helper.from_array(idx, st.indices.name))


def _compact_values_nan(model: onnx.ModelProto) -> None:
    t = next(t for t in model.graph.initializer if t.name.endswith("values"))
    t.CopyFrom(numpy_helper.from_array(_nan(numpy_helper.to_array(t).copy()), t.name))


def _range_past_end(d: Path) -> Path:
    """fc1.weight's offset moved past the end of the .data file (stamp and sha kept valid)."""
    f = d / "ext" / ox.DENSE_FILE
    model = onnx.load_model_from_string(f.read_bytes())
    t = next(t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    for e in t.external_data:
        if e.key == "offset":
            e.value = str(10**9)
    data = f.parent / (ox.DENSE_FILE + ".data")
    ox.stamp_metadata(model, {data.name: hashlib.sha256(data.read_bytes()).hexdigest()})
    f.write_bytes(model.SerializeToString())
    return f


def _safetensors(_: bytes) -> bytes:
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  '
    return struct.pack("<Q", len(header)) + header + bytes(4)


def _npy(_: bytes) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.float32))
    return buf.getvalue()


COMPACT, SPARSE = ox.COMPACT_FILE, ox.SPARSE_INIT_FILE

# name -> (damage, a phrase the message must contain)
CASES: dict[str, tuple[Damage, str]] = {
    # the file itself
    "missing": (_replace_file(lambda f: None), "does not exist"),
    "directory": (_replace_file(lambda f: f.mkdir()), "not a file"),
    "empty": (_bytes(lambda b: b""), "empty"),
    "truncated-to-ten-bytes": (_bytes(lambda b: b[:10]), "truncated"),
    "truncated-half": (_bytes(lambda b: b[: len(b) // 2]), "truncated"),
    "last-byte-missing": (_bytes(lambda b: b[:-1]), "truncated"),
    "trailing-garbage": (_bytes(lambda b: b + b"\x00garbage"), "truncated"),
    "bit-flip-in-weights": (_bytes(_flip(0.5)), "sha256"),
    "bit-flip-near-end": (_bytes(_flip(0.999)), "sha256"),
    "compact-bit-flip": (_bytes(_flip(0.5), COMPACT), "sha256"),
    "sparse-initializer-bit-flip": (_bytes(_flip(0.5), SPARSE), "sha256"),
    # not ONNX at all
    "zip-magic": (_bytes(lambda b: b"PK\x03\x04" + b[4:]), "zip archive"),
    "pickle": (_bytes(lambda b: b"\x80\x04\x95" + b"cos\nsystem\n(S'true'\ntR."), "pickle"),
    "gzipped": (_bytes(gzip.compress), "gzip"),
    "npy": (_bytes(_npy), "npy"),
    "safetensors": (_bytes(_safetensors), "safetensors"),
    "random-after-ir-tag": (
        _bytes(lambda b: b"\x08\x09" + np.random.default_rng(0).bytes(4000)),
        "truncated",
    ),
    "no-graph": (_model(_no_graph), "no ONNX graph"),
    # provenance metadata
    "foreign-file-without-metadata": (
        _model(lambda m: helper.set_model_props(m, {}), restamp=False),
        "no sparsify metadata",
    ),
    "wrong-format-name": (_model(_set_prop("sparsify.format", "x"), restamp=False), "format is"),
    "wrong-format-version": (
        _model(_set_prop("sparsify.format_version", "99"), restamp=False),
        "version '99'",
    ),
    "sha-removed": (_model(_set_prop("sparsify.sha256", None), restamp=False), "sha256"),
    "edited-shape-not-restamped": (_model(_dims(256, 200), restamp=False), "sha256"),
    "nan-weight-not-restamped": (_model(_set_weight(_nan), restamp=False), "sha256"),
    # tensors (re-stamped: the tensor checks must refuse)
    "edited-shape-wrong-size": (_model(_dims(200, 255)), "does not match its dims"),
    "edited-shape-transposed": (_model(_dims(256, 200)), "onnx.checker"),
    "negative-dims": (_model(_dims(-200, -256)), "negative dims"),
    "unknown-element-type": (
        _model(lambda m: setattr(_init(m), "data_type", 999)),
        "unknown element type",
    ),
    "nan-weight": (_model(_set_weight(_nan)), "NaN/inf"),
    "inf-bias": (_model(_set_weight(lambda a: a * np.inf, "fc1.bias")), "NaN/inf"),
    "nan-in-compact-values": (_model(_compact_values_nan, name=COMPACT), "NaN/inf"),
    # external data (re-stamped: the path checks must refuse before onnx reads anything)
    "external-absolute-path": (_model(_external("/etc/passwd")), "refusing external data"),
    "external-dotdot-path": (_model(_external("../secret.bin")), "refusing external data"),
    "external-nested-dotdot": (_model(_external("a/../../x.bin")), "refusing external data"),
    "external-windows-path": (_model(_external("C:\\x.bin")), "refusing external data"),
    "external-symlink-outside": (_symlink_outside, "outside"),
    "external-missing-file": (_model(_external("weights.bin")), "missing"),
    "external-range-past-end": (_range_past_end, "not inside"),
    "external-data-truncated": (_ext_bytes(lambda b: b[: len(b) // 2]), "sha256"),
    "external-data-bit-flip": (_ext_bytes(_flip(0.5)), "sha256"),
    # structure
    "dangling-node-input": (_model(_dangling_input), "onnx.checker"),
    "ir-version-too-new": (_model(lambda m: setattr(m, "ir_version", 99)), "onnx.checker"),
    "sparse-index-out-of-range": (_model(_sparse_index_out_of_range, name=SPARSE), "onnx.checker"),
    "op-onnxruntime-lacks": (_model(_unknown_op), "onnxruntime cannot create a session"),
}


def test_the_good_files_load_and_run(good: Path) -> None:
    x = np.zeros((2, 1, 28, 28), np.float32)
    for f in (ox.DENSE_FILE, ox.COMPACT_FILE, ox.SPARSE_INIT_FILE, f"ext/{ox.DENSE_FILE}"):
        model = ox.load_onnx(good / f)
        props = {p.key: p.value for p in model.metadata_props}
        assert props["sparsify.format"] == ox.ONNX_FORMAT, f
        assert ox.ort_session(good / f).run(None, {ox.INPUT_NAME: x})[0].shape == (2, 10)


@pytest.mark.parametrize("case", list(CASES))
def test_damage_is_caught(good: Path, tmp_path: Path, case: str) -> None:
    damage, phrase = CASES[case]
    folder = tmp_path / "m"
    shutil.copytree(good, folder, symlinks=True)
    path = damage(folder)
    with pytest.raises(SparsifyError) as info:
        ox.ort_session(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert phrase in msg


def test_foreign_files_load_with_verify_false(good: Path, tmp_path: Path) -> None:
    """An ONNX file from another tool (no sparsify metadata) loads with verify=False only;
    the safety checks still run on it."""
    folder = tmp_path / "m"
    shutil.copytree(good, folder)
    foreign = _model(lambda m: helper.set_model_props(m, {}), restamp=False)(folder)
    with pytest.raises(SparsifyError, match="verify=False"):
        ox.load_onnx(foreign)
    ox.ort_session(foreign, verify=False)
    nan = _model(_set_weight(_nan), restamp=False)(folder)
    with pytest.raises(SparsifyError, match="NaN/inf"):
        ox.load_onnx(nan, verify=False)
    outside = _model(_external("../x.bin"), restamp=False)(folder)
    with pytest.raises(SparsifyError, match="refusing external data"):
        ox.load_onnx(outside, verify=False)


def test_a_compacted_loaded_model_gets_a_fresh_stamp(good: Path, tmp_path: Path) -> None:
    """compact_model drops the dense file's stamp; save_onnx stamps the result."""
    compact, _ = ox.compact_model(ox.load_onnx(good / ox.DENSE_FILE))
    assert not any(p.key == "sparsify.sha256" for p in compact.metadata_props)
    ox.load_onnx(ox.save_onnx(compact, tmp_path / "c.onnx"))


def test_suite_size() -> None:
    assert len(CASES) >= 20
