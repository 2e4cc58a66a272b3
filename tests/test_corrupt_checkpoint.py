"""Corrupted-artifact suite for checkpoints: every damage is caught with an error naming the
file, never a crash deep inside safetensors/torch, never code execution."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import load_checkpoint, save_checkpoint
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.zoo import build_model

RECIPE = Recipe.from_dict({"model": {"name": "lecture_convnet"}})


def _split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _edit_header(fn: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, body = _split(data)
        fn(header)
        return _join(header, body)

    return apply


def _meta(key: str, value: str | None) -> Callable[[bytes], bytes]:
    def fn(h: dict) -> None:
        if value is None:
            h["__metadata__"].pop(key)
        else:
            h["__metadata__"][key] = value

    return _edit_header(fn)


def _tensor(name: str, **changes) -> Callable[[bytes], bytes]:
    return _edit_header(lambda h: h[name].update(changes))


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        b = bytearray(data)
        b[offset] ^= 0x10
        return bytes(b)

    return apply


def _nan_weights(data: bytes) -> bytes:
    # a well-formed file whose checksum matches, but whose weights are NaN
    from safetensors.torch import load, save

    from sparsify.pipeline.checkpoint import tensors_digest

    header, _ = _split(data)
    state = load(data)
    state["fc1.weight"][0, 0] = float("nan")
    meta = dict(header["__metadata__"], sha256=tensors_digest(state))
    return save(state, metadata=meta)


def _recipe_for(name: str) -> Callable[[bytes], bytes]:
    other = Recipe.from_dict({"model": {"name": name}})
    return _meta("recipe", json.dumps(other.to_dict()))


CASES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda d: b"",
    "seven-bytes": lambda d: d[:7],
    "header-length-only": lambda d: d[:8],
    "truncated-header": lambda d: d[:40],
    "truncated-data": lambda d: d[: len(d) // 2],
    "last-byte-missing": lambda d: d[:-1],
    "trailing-garbage": lambda d: d + b"garbage",
    "huge-header-length": lambda d: struct.pack("<Q", 2**60) + d[8:],
    "header-not-json": lambda d: (
        d[:8] + b"{" * (struct.unpack("<Q", d[:8])[0]) + d[8 + struct.unpack("<Q", d[:8])[0] :]
    ),
    "bit-flip-early-data": lambda d: _flip(len(d) - 4000)(d),
    "bit-flip-last-byte": lambda d: _flip(len(d) - 1)(d),
    "zip-magic": lambda d: b"PK\x03\x04" + d[4:],
    "pickle-bytes": lambda d: b"\x80\x04\x95" + b"cos\nsystem\n(S'true'\ntR.",
    "no-format": _meta("format", None),
    "foreign-format": _meta("format", "someone.else"),
    "wrong-version": _meta("format_version", "99"),
    "no-sha": _meta("sha256", None),
    "wrong-sha": _meta("sha256", "0" * 64),
    "no-recipe": _meta("recipe", None),
    "recipe-not-json": _meta("recipe", "{not json"),
    "recipe-invalid": _meta("recipe", json.dumps({"epochs": -1})),
    "recipe-other-model": _recipe_for("lenet5"),
    "dtype-changed": _tensor("fc2.bias", dtype="F16"),
    "shape-changed": _tensor("fc2.weight", shape=[20, 100]),
    "offsets-out-of-range": _tensor("fc2.bias", data_offsets=[0, 10**9]),
    "nan-weights": _nan_weights,
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    save_checkpoint(d, build_model("lecture_convnet"), RECIPE)
    return (d / "model.safetensors").read_bytes()


def test_the_good_file_loads(good: bytes, tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(good)
    load_checkpoint(tmp_path).build_model()


@pytest.mark.parametrize("damage", list(CASES))
def test_damage_is_caught(good: bytes, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(CASES[damage](good))
    with pytest.raises(SparsifyError) as info:
        load_checkpoint(tmp_path).build_model()
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_suite_size() -> None:
    assert len(CASES) >= 20


def test_a_directory_in_place_of_the_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(SparsifyError, match="does not exist"):
        load_checkpoint(tmp_path)
