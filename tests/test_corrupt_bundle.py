"""Corrupted-artifact suite for scipy bundles: every damage is refused by ``load_bundle`` with
a one-line SparsifyError naming a file of the bundle, never a crash inside numpy/scipy, never
pickle. A bundle is ``manifest.json`` + ``arrays.bin`` (every array's bytes, referenced by
offset/bytes/dtype/shape/sha256). Cases that must get past the checksums rewrite the array
*and* its sha256 (re-laying out arrays.bin and the manifest's offsets, and where the state
digest would catch it first, the manifest's state_sha256 too)."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import sparse_lecture_convnet
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.export import bundle_format as bf
from sparsify.export.bundle_reader import load_bundle
from sparsify.export.scipy_bundle import export_scipy_bundle

TENSOR = "fc1.weight"  # (200, 256) Linear weight, stored sparse
SMALL = "2.bias"  # the "small" bundle's Linear bias: mostly zeros, stored compact


def _small_model() -> nn.Module:
    """Conv + BatchNorm (zeros storage for its fresh buffers) + Linear whose bias is compact."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(26, 64)).eval()
    with torch.no_grad():
        model[2].bias[4:] = 0.0
    return model


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles of one 90 %-zero lecture_convnet (csr + compact with the default codec, coo
    only, zlib compact) and a small model with zeros- and compact-stored vectors."""
    root = tmp_path_factory.mktemp("bundles")
    model = sparse_lecture_convnet(0.9)
    export_scipy_bundle(model, root / "csr")
    export_scipy_bundle(model, root / "coo", sparse_format="coo", store="scipy", graph=False)
    export_scipy_bundle(model, root / "zlib", store="compact", codec="zlib", graph=False)
    export_scipy_bundle(_small_model(), root / "small", codec="none", graph=False)
    export_scipy_bundle(model, root / "csrs", store="scipy", graph=False)  # no compact copy
    return {kind: root / kind for kind in ("csr", "coo", "zlib", "small", "csrs")}


# --------------------------------------------------------------------------- helpers


def _manifest(b: Path) -> dict[str, Any]:
    return json.loads((b / bf.MANIFEST).read_text())


def _save_manifest(b: Path, m: Any, restamp: bool = True) -> None:
    """Write ``m`` back, with its manifest_sha256 recomputed (unless ``restamp`` is False) so
    the deeper checks are reached: the digest is unkeyed, anyone can recompute it."""
    if restamp and isinstance(m, dict) and bf.DIGEST_KEY in m:
        m[bf.DIGEST_KEY] = bf.manifest_digest(m)
    (b / bf.MANIFEST).write_text(json.dumps(m))


def _entry(m: dict[str, Any], name: str = TENSOR) -> dict[str, Any]:
    return next(t for t in m["tensors"] if t["name"] == name)


def _ref(m: dict[str, Any], section: str = "scipy", part: str = "data") -> dict[str, Any]:
    """An array reference: ``dense`` is fc1.bias, ``small`` the small bundle's compact bias."""
    if section == "dense":
        return _entry(m, "fc1.bias")["arrays"]["array"]
    if section == "small":
        return _entry(m, SMALL)["compact"]["arrays"][part]
    return _entry(m)[section]["arrays"][part]


def _all_refs(m: dict[str, Any]) -> list[dict[str, Any]]:
    refs = []
    for t in m["tensors"]:
        refs += list((t.get("arrays") or {}).values())
        refs += [r for k in ("scipy", "compact") if k in t for r in t[k]["arrays"].values()]
    return refs


def _data(b: Path) -> Path:
    return b / bf.DATA_FILE


def _bytes_of(b: Path, ref: dict[str, Any]) -> bytes:
    return _data(b).read_bytes()[ref["offset"] : ref["offset"] + ref["bytes"]]


def _array(b: Path, section: str = "scipy", part: str = "data") -> np.ndarray:
    ref = _ref(_manifest(b), section, part)
    n = int(np.prod(ref["shape"], dtype=np.int64))
    dtype = np.dtype(ref["dtype"])
    flat = bf.unpack(_bytes_of(b, ref), ref.get("codec", "none"), dtype, n)
    return flat.reshape(ref["shape"]).copy()


def _edit(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """Damage: apply ``fn`` to the parsed manifest and write it back."""

    def apply(b: Path) -> None:
        m = _manifest(b)
        fn(m)
        _save_manifest(b, m)

    return apply


def _replace(
    b: Path,
    section: str,
    part: str,
    data: bytes,
    state: dict[str, np.ndarray] | None = None,
    **ref_fields: Any,
) -> None:
    """Put ``data`` in place of one array's bytes: arrays.bin is laid out again, and the
    offsets, that array's bytes/sha256 (and ``ref_fields``), the container size and (given
    ``state``) the state digest are rewritten to match."""
    m = _manifest(b)
    target = _ref(m, section, part)
    old = _data(b).read_bytes()
    refs = sorted(_all_refs(m), key=lambda r: r["offset"])
    chunks = [data if r is target else old[r["offset"] : r["offset"] + r["bytes"]] for r in refs]
    offset = 0
    for r, chunk in zip(refs, chunks, strict=True):
        r["offset"], r["bytes"] = offset, len(chunk)
        offset += len(chunk)
    target.update(sha256=bf.sha256_bytes(data), **ref_fields)
    _data(b).write_bytes(b"".join(chunks))
    m["data"]["bytes"] = offset
    if state is not None:
        m["state_sha256"] = bf.state_digest(state)
    _save_manifest(b, m)


def _put(b: Path, section: str, part: str, array: np.ndarray, **kw: Any) -> None:
    """Store ``array`` (with the reference's codec) as one array of the bundle."""
    codec = _ref(_manifest(b), section, part).get("codec", "none")
    data = bf.pack(array, codec)
    _replace(b, section, part, data, dtype=array.dtype.name, shape=list(array.shape), **kw)


def _with_array(
    section: str, part: str, change: Callable[[np.ndarray], np.ndarray]
) -> Callable[[Path], None]:
    """Damage: load one array, change it, store it back with a matching sha256."""

    def apply(b: Path) -> None:
        _put(b, section, part, change(_array(b, section, part)))

    return apply


def _with_bytes(
    section: str, part: str, change: Callable[[bytes], bytes]
) -> Callable[[Path], None]:
    def apply(b: Path) -> None:
        ref = _ref(_manifest(b), section, part)
        _replace(b, section, part, change(_bytes_of(b, ref)))

    return apply


def _truncate(b: Path) -> None:
    _data(b).write_bytes(_data(b).read_bytes()[:-7])


def _flip(b: Path) -> None:
    """One bit of fc1's csr data flipped inside arrays.bin (manifest untouched)."""
    ref = _ref(_manifest(b))
    data = bytearray(_data(b).read_bytes())
    data[ref["offset"] + ref["bytes"] // 2] ^= 0x10
    _data(b).write_bytes(bytes(data))


def _symlink_outside(b: Path) -> None:
    # the same bytes, so every sha256 matches: only the path check can refuse it
    outside = b.parent / f"{b.name}-outside.bin"
    outside.write_bytes(_data(b).read_bytes())
    _data(b).unlink()
    _data(b).symlink_to(outside)


def _dir_instead_of_file(b: Path) -> None:
    _data(b).unlink()
    _data(b).mkdir()


def _append(b: Path) -> None:
    """Eight stray bytes at the end, with the declared size updated to match."""
    _data(b).write_bytes(_data(b).read_bytes() + bytes(8))
    _edit(lambda m: m["data"].update(bytes=m["data"]["bytes"] + 8))(b)


def _overlap(m: dict[str, Any]) -> None:
    """fc1.bias points into fc1.weight's csr data (read earlier)."""
    _ref(m, "dense").update(offset=_ref(m)["offset"])


def _nan_weights(b: Path) -> None:
    """A NaN in fc1's stored values; sha256s and state digest all recomputed."""
    state = dict(load_bundle(b).state_dict)
    data = _array(b)
    dense = state[TENSOR].copy()
    first = np.flatnonzero(dense.view(np.uint32).reshape(-1) != 0)[0]
    dense.reshape(-1)[first] = np.nan
    data[0] = np.nan  # csr data is in row-major order: its first entry is `first`
    state[TENSOR] = dense
    _put(b, "scipy", "data", data, state=state)
    values = _array(b, "compact", "values")
    values[np.flatnonzero(values.view(np.uint32) != 0)[0]] = np.nan  # the same entry
    _put(b, "compact", "values", values)


def _swap_biases(m: dict[str, Any]) -> None:
    a, b = _entry(m, "conv1.bias"), _entry(m, "conv2.bias")
    a["arrays"], b["arrays"] = b["arrays"], a["arrays"]
    a["shape"], b["shape"] = b["shape"], a["shape"]


def _coo_duplicate(b: Path) -> None:
    row, col = _array(b, "scipy", "row"), _array(b, "scipy", "col")
    row[1], col[1] = row[0], col[0]  # the second entry lands on the first
    _put(b, "scipy", "row", row)
    _put(b, "scipy", "col", col)


def _csr_row(change: Callable[[np.ndarray, int], None]) -> Callable[[Path], None]:
    """Damage: ``change(indices, k)`` inside the first row holding two entries (k, k + 1);
    sha256 recomputed. scipy's full check accepts the result; canonical form does not."""

    def apply(b: Path) -> None:
        state = dict(load_bundle(b).state_dict)
        indptr, indices = _array(b, "scipy", "indptr"), _array(b, "scipy", "indices")
        row = int(np.flatnonzero(np.diff(indptr) >= 2)[0])
        change(indices, int(indptr[row]))
        # the state digest recomputed for what a reader would rebuild (the last write wins)
        matrix = sp.csr_array((_array(b), indices, indptr), shape=state[TENSOR].shape)
        state[TENSOR] = bf.to_dense(matrix)
        _put(b, "scipy", "indices", indices, state=state)

    return apply


def _duplicate(indices: np.ndarray, k: int) -> None:
    indices[k + 1] = indices[k]  # the matmul would add both values, the dense copy keep one


def _swap(indices: np.ndarray, k: int) -> None:
    indices[k], indices[k + 1] = indices[k + 1], indices[k]


def _zlib(payload: Callable[[int], bytes]) -> Callable[[Path], None]:
    def apply(b: Path) -> None:
        n = _ref(_manifest(b), "compact", "values")["shape"][0] * 4
        _replace(b, "compact", "values", payload(n))

    return apply


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.update({key: value})


def _set_entry(key: str, value: Any, name: str = TENSOR) -> Callable[[dict[str, Any]], None]:
    return lambda m: _entry(m, name).update({key: value})


def _set_path(path: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["data"].update(path=path)


def _set_ref(
    key: str, value: Any, section: str = "scipy", part: str = "data"
) -> Callable[[dict[str, Any]], None]:
    return lambda m: _ref(m, section, part).update({key: value})


# name -> (bundle kind, damage, a phrase the message must contain)
CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # the container file
    "truncated-file": ("csr", _truncate, "truncated"),
    "bit-flipped-file": ("csr", _flip, "sha256"),
    "missing-file": ("csr", lambda b: _data(b).unlink(), "cannot read"),
    "file-is-a-directory": ("csr", _dir_instead_of_file, "cannot read"),
    "symlink-outside-bundle": ("csr", _symlink_outside, "outside the bundle"),
    "bytes-appended": ("csr", _append, "belong to no array"),
    "declared-size-edited": (
        "csr",
        _edit(lambda m: m["data"].update(bytes=m["data"]["bytes"] - 1)),
        "truncated",
    ),
    "no-data-entry": ("csr", _edit(lambda m: m.pop("data")), "'data' entry"),
    # manifest paths
    "absolute-path": ("csr", _edit(_set_path("/etc/passwd")), "refusing file path"),
    "dotdot-path": ("csr", _edit(_set_path("../csr/arrays.bin")), "refusing file path"),
    "backslash-path": ("csr", _edit(_set_path("..\\x.bin")), "refusing file path"),
    "path-not-a-string": ("csr", _edit(_set_path(7)), "'data' entry"),
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
    "old-version-1": (
        "csr",
        _edit(_set("format_version", "1")),
        "version '1' is not supported",
    ),
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
    "arrays-not-an-object": (
        "csr",
        _edit(lambda m: _entry(m)["scipy"].update(arrays=["arrays.bin"])),
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
    # array references (the container reader must refuse them before using any byte)
    "ref-missing": (
        "csr",
        _edit(lambda m: _entry(m)["scipy"]["arrays"].pop("indices")),
        "no valid 'offset'",
    ),
    "ref-offset-negative": ("csr", _edit(_set_ref("offset", -1)), "no valid 'offset'"),
    "ref-bytes-not-an-int": ("csr", _edit(_set_ref("bytes", "12")), "no valid 'offset'"),
    "ref-past-the-end": ("csr", _edit(_set_ref("offset", 10**9)), "runs past the end"),
    "refs-overlap": ("csr", _edit(_overlap), "overlaps another array"),
    "ref-object-dtype-pickle": ("csr", _edit(_set_ref("dtype", "object")), "never loaded"),
    "ref-big-endian": ("csr", _edit(_set_ref("dtype", ">f4")), "unsupported dtype"),
    "ref-claims-huge-array": (
        "csr",
        _edit(_set_ref("shape", [2**40], "dense", "array")),
        "limit",
    ),
    "ref-shape-disagrees-with-bytes": (
        "csr",
        _edit(lambda m: _ref(m).update(shape=[_ref(m)["shape"][0] + 1])),  # raw csr data
        "needs",
    ),
    "array-shortened-sha-matching": (
        "csr",
        _with_bytes("scipy", "data", lambda d: d[:-4]),
        "needs",
    ),
    "ref-unknown-codec": ("csr", _edit(_set_ref("codec", "lzma")), "unsupported codec"),
    "ref-without-sha256": (
        "csr",
        _edit(lambda m: _ref(m, "dense", "array").pop("sha256")),
        "sha256",
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
    "csr-duplicate-entry": ("csrs", _csr_row(_duplicate), "not canonical"),
    "csr-row-unsorted": ("csrs", _csr_row(_swap), "not canonical"),
    # the manifest digest (not recomputed: any edit of the graph or other fields is refused)
    "manifest-edited-not-restamped": (
        "csr",
        lambda b: _save_manifest(b, {**_manifest(b), "store": "scipy"}, restamp=False),
        "manifest_sha256 does not match",
    ),
    "graph-edited-not-restamped": (
        "csr",
        lambda b: _save_manifest(
            b,
            {**_manifest(b), "graph": {**_manifest(b)["graph"], "output": "conv1"}},
            restamp=False,
        ),
        "manifest_sha256 does not match",
    ),
    "manifest-digest-removed-graph-kept": (
        "csr",
        _edit(lambda m: m.pop(bf.DIGEST_KEY)),
        "no manifest_sha256",
    ),
    # declared sizes no file can justify, JSON bombs
    "zeros-entry-of-4-gib": (
        "small",
        _edit(
            lambda m: m["tensors"].append(
                {"name": "bomb", "shape": [2**30], "dtype": "float32", "storage": "zeros"}
            )
        ),
        "pass max_bytes",
    ),
    "zlib-claims-more-than-deflate-holds": (
        "zlib",
        lambda b: _replace(
            b, "compact", "values", zlib.compress(bytes(1000)), shape=[2**28], dtype="float32"
        ),
        "cannot inflate",
    ),
    "manifest-5000-digit-int": (
        "csr",
        lambda b: (b / bf.MANIFEST).write_text('{"format_version": ' + "7" * 5000 + "}"),
        "5000 digits",
    ),
    "manifest-nested-10000-deep": (
        "csr",
        lambda b: (b / bf.MANIFEST).write_text("[" * 10_000 + "]" * 10_000),
        "levels deep",
    ),
    "manifest-duplicate-key": (
        "csr",
        lambda b: (b / bf.MANIFEST).write_text(
            (b / bf.MANIFEST).read_text().replace('{"format":', '{"format":"x","format":', 1)
        ),
        "appears twice",
    ),
    "data-path-with-nul": ("csr", _edit(_set_path("arrays.bin\x00")), "refusing file path"),
    "zero-size-tensor-with-2-70-dim": (
        "small",
        _edit(_set_entry("shape", [0, 2**70], name="1.running_mean")),
        "limit",
    ),
    # type confusion a fuzz of every manifest field found (TypeError/IndexError before)
    "dtype-a-list": ("csr", _edit(_set_entry("dtype", ["float32"])), "unsupported dtype"),
    "sparse-tensor-of-rank-0": ("csr", _edit(_set_entry("shape", [])), "rank >= 2"),
    "arrays-bin-is-a-fifo": (
        "csr",
        lambda b: (_data(b).unlink(), os.mkfifo(_data(b))),
        "a FIFO, not a regular file",
    ),
    "scipy-and-compact-differ": (
        "csr",
        _with_array("compact", "values", lambda a: a * 2),
        "differ",
    ),
    # values
    "nan-weights": ("csr", _nan_weights, "NaN/inf"),
    "swapped-arrays": ("csr", _edit(_swap_biases), "state_sha256"),
    "wrong-state-sha": ("csr", _edit(_set("state_sha256", "0" * 64)), "state_sha256"),
    # compressed arrays
    "zlib-garbage": ("zlib", _zlib(lambda n: b"not zlib at all"), "zlib stream"),
    "zlib-bomb": ("zlib", _zlib(lambda n: zlib.compress(bytes(n * 1000))), "zlib stream"),
    "zlib-short": ("zlib", _zlib(lambda n: zlib.compress(bytes(n - 4))), "zlib stream"),
    "zlib-trailing-bytes": ("zlib", _zlib(lambda n: zlib.compress(bytes(n)) + b"x"), "zlib stream"),
    # zeros- and compact-stored vectors (BatchNorm buffers, a mostly-zero bias)
    "zeros-storage-claimed-for-a-stored-tensor": (
        "small",
        _edit(_set_entry("storage", "zeros", name="0.bias")),
        "belong to no array",
    ),
    "zeros-tensor-shape-edited": (
        "small",
        _edit(_set_entry("shape", [5], name="1.running_mean")),
        "state_sha256",
    ),
    "compact-vector-values-edited": (
        "small",
        _with_array("small", "values", lambda a: a + 1),
        "state_sha256",
    ),
    "compact-vector-not-float32": (
        "small",
        _edit(_set_entry("dtype", "float64", name=SMALL)),
        "must be float32",
    ),
    "compact-vector-without-arrays": (
        "small",
        _edit(lambda m: _entry(m, SMALL).pop("compact")),
        "no compact arrays",
    ),
}


def test_the_good_bundles_load(good: dict[str, Path]) -> None:
    for kind, path in good.items():
        assert (TENSOR if kind != "small" else SMALL) in load_bundle(path).state_dict
    storages = {t["name"]: t["storage"] for t in _manifest(good["small"])["tensors"]}
    assert storages[SMALL] == "compact" and storages["1.running_mean"] == "zeros"
    assert _ref(_manifest(good["zlib"]), "compact", "values")["codec"] == "zlib"


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
    assert len(CASES) >= 78
