"""Corrupted-artifact suite for scipy bundles: every damage is refused by ``load_bundle`` with
a one-line SparsifyError naming a file of the bundle, never a crash inside numpy/scipy, never
pickle. Cases that must get past the checksums rewrite the file *and* its sha256 (and, where
the state digest would catch it first, the manifest's state_sha256 too)."""

from __future__ import annotations

import io
import json
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import sparse_lecture_convnet
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.export import bundle_format as bf
from sparsify.export.bundle_reader import load_bundle
from sparsify.export.scipy_bundle import export_scipy_bundle

TENSOR = "fc1.weight"  # (200, 256) Linear weight, stored sparse


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three bundles of one 90 %-zero lecture_convnet: csr + compact, coo only, zlib compact."""
    root = tmp_path_factory.mktemp("bundles")
    model = sparse_lecture_convnet(0.9)
    export_scipy_bundle(model, root / "csr")
    export_scipy_bundle(model, root / "coo", sparse_format="coo", store="scipy", graph=False)
    export_scipy_bundle(model, root / "zlib", store="compact", codec="zlib", graph=False)
    return {kind: root / kind for kind in ("csr", "coo", "zlib")}


# --------------------------------------------------------------------------- helpers


def _manifest(b: Path) -> dict[str, Any]:
    return json.loads((b / bf.MANIFEST).read_text())


def _save_manifest(b: Path, m: Any) -> None:
    (b / bf.MANIFEST).write_text(json.dumps(m))


def _entry(m: dict[str, Any], name: str = TENSOR) -> dict[str, Any]:
    return next(t for t in m["tensors"] if t["name"] == name)


def _ref(m: dict[str, Any], section: str = "scipy", part: str = "data") -> dict[str, Any]:
    entry = _entry(m, "fc1.bias" if section == "dense" else TENSOR)
    return entry["files"]["array"] if section == "dense" else entry[section]["files"][part]


def _file(b: Path, section: str = "scipy", part: str = "data") -> Path:
    return b / _ref(_manifest(b), section, part)["path"]


def _edit(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """Damage: apply ``fn`` to the parsed manifest and write it back."""

    def apply(b: Path) -> None:
        m = _manifest(b)
        fn(m)
        _save_manifest(b, m)

    return apply


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _replace(
    b: Path, section: str, part: str, data: bytes, state: dict[str, np.ndarray] | None = None
) -> None:
    """Write ``data`` into one array file and make its sha256 (and the state digest) match."""
    m = _manifest(b)
    ref = _ref(m, section, part)
    (b / ref["path"]).write_bytes(data)
    ref["sha256"] = bf.sha256_bytes(data)
    if state is not None:
        m["state_sha256"] = bf.state_digest(state)
    _save_manifest(b, m)


def _with_array(
    section: str, part: str, change: Callable[[np.ndarray], np.ndarray]
) -> Callable[[Path], None]:
    """Damage: load one array, change it, store it back with a matching sha256."""

    def apply(b: Path) -> None:
        array = np.load(_file(b, section, part), allow_pickle=False)
        _replace(b, section, part, _npy(change(array.copy())))

    return apply


def _with_bytes(
    section: str, part: str, change: Callable[[bytes], bytes]
) -> Callable[[Path], None]:
    def apply(b: Path) -> None:
        _replace(b, section, part, change(_file(b, section, part).read_bytes()))

    return apply


def _truncate(b: Path) -> None:
    f = _file(b)
    f.write_bytes(f.read_bytes()[:-7])


def _flip(b: Path) -> None:
    f = _file(b)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))


def _symlink_outside(b: Path) -> None:
    # the same bytes, so the sha256 matches: only the path check can refuse it
    f = _file(b)
    outside = b.parent / f"{b.name}-outside.npy"
    outside.write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(outside)


def _nan_weights(b: Path) -> None:
    """A NaN in fc1's stored values; file sha256 and state digest both recomputed."""
    state = dict(load_bundle(b).state_dict)
    data = np.load(_file(b), allow_pickle=False).copy()
    dense = state[TENSOR].copy()
    first = np.flatnonzero(dense.view(np.uint32).reshape(-1) != 0)[0]
    dense.reshape(-1)[first] = np.nan
    data[0] = np.nan  # csr data is in row-major order: its first entry is `first`
    state[TENSOR] = dense
    _replace(b, "scipy", "data", _npy(data), state)
    values = np.load(_file(b, "compact", "values"), allow_pickle=False).copy()
    values[np.flatnonzero(values.view(np.uint32) != 0)[0]] = np.nan  # the same entry
    _replace(b, "compact", "values", _npy(values))


def _huge_header(data: bytes) -> bytes:
    """The same .npy with a header claiming 2**40 times more entries than the file holds."""
    hlen = int.from_bytes(data[8:10], "little")  # npy 1.0: magic, version, header length
    header = data[10 : 10 + hlen].decode("latin1").rstrip()
    header = header.replace("'shape': (", "'shape': (1099511627776, ")
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return (
        data[:8] + len(header).to_bytes(2, "little") + header.encode("latin1") + data[10 + hlen :]
    )


def _swap_biases(m: dict[str, Any]) -> None:
    a, b = _entry(m, "conv1.bias"), _entry(m, "conv2.bias")
    a["files"], b["files"] = b["files"], a["files"]
    a["shape"], b["shape"] = b["shape"], a["shape"]


def _coo_duplicate(b: Path) -> None:
    m = _manifest(b)
    files = _entry(m)["scipy"]["files"]
    row = np.load(b / files["row"]["path"]).copy()
    col = np.load(b / files["col"]["path"]).copy()
    row[1], col[1] = row[0], col[0]  # the second entry lands on the first
    _replace(b, "scipy", "row", _npy(row))
    _replace(b, "scipy", "col", _npy(col))


def _zlib(payload: Callable[[int], bytes]) -> Callable[[Path], None]:
    def apply(b: Path) -> None:
        n = _ref(_manifest(b), "compact", "values")["length"] * 4
        _replace(b, "compact", "values", _npy(np.frombuffer(payload(n), np.uint8)))

    return apply


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.update({key: value})


def _set_entry(key: str, value: Any, name: str = TENSOR) -> Callable[[dict[str, Any]], None]:
    return lambda m: _entry(m, name).update({key: value})


def _set_path(path: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: _ref(m).update(path=path)


# name -> (bundle kind, damage, a phrase the message must contain)
CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # files
    "truncated-file": ("csr", _truncate, "sha256"),
    "bit-flipped-file": ("csr", _flip, "sha256"),
    "missing-file": ("csr", lambda b: _file(b).unlink(), "cannot read"),
    "file-is-a-directory": ("csr", _edit(_set_path("arrays")), "cannot read"),
    "symlink-outside-bundle": ("csr", _symlink_outside, "outside the bundle"),
    # manifest paths
    "absolute-path": ("csr", _edit(_set_path("/etc/passwd")), "refusing file path"),
    "dotdot-path": ("csr", _edit(_set_path("arrays/../../x.npy")), "refusing file path"),
    "backslash-path": ("csr", _edit(_set_path("arrays\\..\\x.npy")), "refusing file path"),
    "path-not-a-string": ("csr", _edit(_set_path(7)), "no 'path'"),  # type: ignore[arg-type]
    # manifest structure
    "no-manifest": ("csr", lambda b: (b / bf.MANIFEST).unlink(), "does not exist"),
    "manifest-truncated": (
        "csr",
        lambda b: (b / bf.MANIFEST).write_bytes((b / bf.MANIFEST).read_bytes()[:100]),
        "not valid JSON",
    ),
    "manifest-not-utf8": (
        "csr",
        lambda b: (b / bf.MANIFEST).write_bytes(b"\xff\xfe\x00garbage"),
        "not valid JSON",
    ),
    "manifest-not-an-object": (
        "csr",
        lambda b: _save_manifest(b, [_manifest(b)]),
        "not a sparsify scipy bundle",
    ),
    "wrong-format": ("csr", _edit(_set("format", "npz")), "not a sparsify scipy bundle"),
    "wrong-version": ("csr", _edit(_set("format_version", "99")), "version"),
    "no-tensors": ("csr", _edit(_set("tensors", [])), "empty model"),
    "tensors-not-a-list": ("csr", _edit(_set("tensors", "fc1.weight")), "empty model"),
    "entry-without-name": (
        "csr",
        _edit(lambda m: _entry(m).pop("name")),
        "tensor entry has no name",
    ),
    "duplicate-tensor-names": (
        "csr",
        _edit(lambda m: _entry(m, "fc1.bias").update(name="conv1.bias")),
        "appears twice",
    ),
    "files-not-an-object": (
        "csr",
        _edit(lambda m: _entry(m)["scipy"].update(files=["arrays/x.npy"])),
        "not an object",
    ),
    "scipy-section-not-an-object": ("csr", _edit(_set_entry("scipy", "csr")), "not an object"),
    "unknown-storage": ("csr", _edit(_set_entry("storage", "tiled")), "unknown storage"),
    "unknown-sparse-format": (
        "csr",
        _edit(lambda m: _entry(m)["scipy"].update(format="dok")),
        "unknown sparse format",
    ),
    "neither-scipy-nor-compact": (
        "csr",
        _edit(lambda m: [_entry(m).pop(k) for k in ("scipy", "compact")]),
        "neither scipy nor compact",
    ),
    # shapes and dtypes
    "shape-transposed": (
        "csr",
        _edit(lambda m: _entry(m).update(shape=[256, 200], matrix_shape=[256, 200])),
        "re-export",
    ),
    "matrix-shape-mismatch": ("csr", _edit(_set_entry("matrix_shape", [1, 51200])), "matrix_shape"),
    "negative-dim": ("csr", _edit(_set_entry("shape", [-200, 256])), "invalid shape"),
    "huge-shape": ("csr", _edit(_set_entry("shape", [2**40, 2**40])), "limit"),
    "dtype-changed": (
        "csr",
        _edit(_set_entry("dtype", "float16", name="fc1.bias")),
        "manifest says float16",
    ),
    "unsupported-dtype": (
        "csr",
        _edit(_set_entry("dtype", "complex64", name="fc1.bias")),
        "unsupported dtype",
    ),
    # npy files (checksums recomputed, so the npy reader itself must refuse)
    "npy-wrong-magic": (
        "csr",
        _with_bytes("scipy", "data", lambda d: b"PK\x03\x04" + d[4:]),
        ".npy",
    ),
    "npy-header-claims-huge-array": (
        "csr",
        _with_bytes("dense", "array", _huge_header),
        "header claims",
    ),
    "npy-object-dtype-pickle": (
        "csr",
        lambda b: _replace(b, "scipy", "data", _npy(np.array([{"evil": 1}], dtype=object))),
        "not a valid .npy",
    ),
    "npy-big-endian": (
        "csr",
        _with_array("scipy", "data", lambda a: a.astype(">f4")),
        "not a valid .npy",
    ),
    "npy-truncated-sha-matching": (
        "csr",
        _with_bytes("scipy", "data", lambda d: d[:-4]),
        "header claims",
    ),
    # sparse structure (checksums recomputed: scipy's full check must refuse)
    "indices-out-of-range": (
        "csr",
        _with_array("scipy", "indices", lambda a: a + 10_000),
        "inconsistent",
    ),
    "indptr-not-monotone": (
        "csr",
        _with_array("scipy", "indptr", lambda a: a[::-1].copy()),
        "inconsistent",
    ),
    "indices-are-floats": (
        "csr",
        _with_array("scipy", "indices", lambda a: a.astype(np.float32)),
        "integer",
    ),
    "coo-duplicate-entries": ("coo", _coo_duplicate, "stored twice"),
    "scipy-and-compact-differ": (
        "csr",
        _with_array("compact", "values", lambda a: a * 2),
        "differ",
    ),
    # values
    "nan-weights": ("csr", _nan_weights, "NaN/inf"),
    "swapped-files": ("csr", _edit(_swap_biases), "state_sha256"),
    "wrong-state-sha": ("csr", _edit(_set("state_sha256", "0" * 64)), "state_sha256"),
    # compressed compact files
    "zlib-garbage": ("zlib", _zlib(lambda n: b"not zlib at all"), "zlib stream"),
    "zlib-bomb": ("zlib", _zlib(lambda n: zlib.compress(bytes(n * 1000))), "zlib stream"),
    "zlib-short": ("zlib", _zlib(lambda n: zlib.compress(bytes(n - 4))), "zlib stream"),
}


def test_the_good_bundles_load(good: dict[str, Path]) -> None:
    for path in good.values():
        assert TENSOR in load_bundle(path).state_dict


@pytest.mark.parametrize("case", list(CASES))
def test_damage_is_caught(good: dict[str, Path], tmp_path: Path, case: str) -> None:
    kind, damage, phrase = CASES[case]
    bundle = tmp_path / "b"
    shutil.copytree(good[kind], bundle)
    damage(bundle)
    with pytest.raises(SparsifyError) as info:
        load_bundle(bundle)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(bundle) in msg  # names the manifest or the damaged file
    assert phrase in msg


def test_declared_nan_round_trips(tmp_path: Path) -> None:
    """A model that really holds NaN/inf exports and loads: the writer declares them."""
    model = nn.Linear(8, 4)
    with torch.no_grad():
        model.weight[0, :2] = torch.tensor([float("nan"), float("inf")])
    manifest = export_scipy_bundle(model, tmp_path / "b", graph=False)
    assert _entry(manifest, "weight")["nonfinite"] == 2
    got = load_bundle(tmp_path / "b").state_dict["weight"]
    assert got.tobytes() == model.weight.detach().numpy().tobytes()


def test_suite_size() -> None:
    assert len(CASES) >= 20
