"""Corrupted-artifact suite for checkpoints: every damage is caught with an error naming the
file, never a crash deep inside safetensors/torch, never code execution."""

from __future__ import annotations

import json
import re
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
    with pytest.raises(SparsifyError, match="is not a regular file"):
        load_checkpoint(tmp_path)


# ------------------------------------------------- edits whose digest was recomputed (well-formed)


def _restamped(
    edit_state: Callable[[dict], None] | None = None, **meta: str
) -> Callable[[bytes], bytes]:
    """An edit made by someone who recomputes the sha256: only content checks can catch it."""

    def apply(data: bytes) -> bytes:
        from safetensors.torch import load, save

        from sparsify.pipeline.checkpoint import checkpoint_digest

        header, _ = _split(data)
        state = load(data)
        if edit_state is not None:
            edit_state(state)
        metadata = {**header["__metadata__"], **meta}
        metadata["sha256"] = checkpoint_digest(state, metadata)
        return save(state, metadata=metadata)

    return apply


def _cast(name: str, dtype: torch.dtype) -> Callable[[dict], None]:
    def fn(state: dict) -> None:
        state[name] = state[name].to(dtype)

    return fn


RESTAMPED: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "float64-weight": (_restamped(_cast("fc1.weight", torch.float64)), "is torch.float64"),
    "int32-weight": (_restamped(_cast("fc1.weight", torch.int32)), "is torch.int32"),
    "float16-bias": (_restamped(_cast("fc2.bias", torch.float16)), "is torch.float16"),
    # a header asking for a model far larger than its weights is refused before it is built
    "huge-num-classes": (
        _restamped(model_args=json.dumps({"num_classes": 10**12, "in_channels": 1})),
        "holds torch.float32 (1000000000000, 200)",
    ),
    "negative-num-classes": (
        _restamped(model_args=json.dumps({"num_classes": -5, "in_channels": 1})),
        "do not build model 'lecture_convnet'",
    ),
    "huge-shrunk-model": (
        _restamped(
            model_args=json.dumps({"num_classes": 10, "in_channels": 10**7}),
            shrunk=json.dumps({}),
        ),
        "would take",
    ),
    "huge-torchvision-model": (
        _restamped(model="torchvision:vit_h_14", model_args="{}"),
        "weights do not fit model 'torchvision:vit_h_14'",
    ),
}


@pytest.mark.parametrize("damage", list(RESTAMPED))
def test_restamped_edits_are_caught_before_building(
    good: bytes, tmp_path: Path, damage: str, monkeypatch
) -> None:
    import sparsify.pipeline.zoo as zoo

    edit, expected = RESTAMPED[damage]
    path = tmp_path / "model.safetensors"
    path.write_bytes(edit(good))
    ckpt = load_checkpoint(tmp_path)  # well-formed: the digest matches
    real = zoo.build_registered
    built: list[str] = []

    def spy(name, kwargs):  # records every real (non-meta) build
        model = real(name, kwargs)
        if any(p.device.type != "meta" for p in model.parameters()):
            built.append(name)
        return model

    monkeypatch.setattr(zoo, "build_registered", spy)
    with pytest.raises(SparsifyError, match=re.escape(expected)) as info:
        ckpt.build_model()
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert not built or damage.endswith("-weight") or damage.endswith("-bias"), built


def test_a_module_of_another_dtype_is_refused_not_cast(good: bytes, tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(good)
    with pytest.raises(SparsifyError, match="holds torch.float64"):
        load_checkpoint(tmp_path, model=build_model("lecture_convnet").double())


JSON_BOMBS = {
    "model_args-5000-digit-int": ({"model_args": '{"num_classes": ' + "9" * 5000 + "}"}, "digits"),
    "input_shape-10000-deep": ({"input_shape": "[" * 10000 + "]" * 10000}, "deep"),
    "recipe-10000-deep": ({"recipe": '{"a": ' + "[" * 10000 + "]" * 10000 + "}"}, "deep"),
    "recipe-duplicate-key": ({"recipe": '{"seed": 0, "seed": 1}'}, "twice"),
}


@pytest.mark.parametrize("bomb", list(JSON_BOMBS))
def test_json_bombs_in_the_header_are_one_line(good: bytes, tmp_path: Path, bomb: str) -> None:
    # restamped, so only the header's own parsing can refuse them: no RecursionError or
    # ValueError from Python's int limit may escape
    meta, expected = JSON_BOMBS[bomb]
    (tmp_path / "model.safetensors").write_bytes(_restamped(**meta)(good))
    with pytest.raises(SparsifyError, match=expected) as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value)
