"""The compact encoding: bit-exact round trips, the gap definition the ONNX graph relies on,
sizes against the information bound, and refusal of damaged encodings."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsify.errors import SparsifyError
from sparsify.export.encoding import (
    SCHEMES,
    EncodedTensor,
    decode,
    encode,
    encoded_nbytes,
    entropy_bound_bytes,
)


def _sparse(shape: tuple[int, ...], density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = rng.random(shape) < density
    # np.where, not multiplication: w * False is -0.0 for negative w
    return np.where(keep, rng.standard_normal(shape), 0.0).astype(np.float32)


@st.composite
def sparse_arrays(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=0, max_size=4)))
    density = draw(st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 1.0]))
    return _sparse(shape, density, draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=150, deadline=None)
@given(array=sparse_arrays(), scheme=st.sampled_from([None, *SCHEMES]))
def test_round_trip_is_bit_exact(array: np.ndarray, scheme: str | None) -> None:
    enc = encode(array, scheme)
    out = decode(enc)
    assert out.dtype == np.float32
    assert out.shape == array.shape
    assert out.tobytes() == array.tobytes()
    assert encoded_nbytes(enc) == enc.values.nbytes + enc.positions.nbytes


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300_000),
    nnz=st.integers(0, 40),
    scheme=st.sampled_from(["gaps_u8", "gaps_u16"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_long_gaps_get_fillers(n: int, nnz: int, scheme: str, seed: int) -> None:
    """Gaps beyond 255/65535 are split by filler zeros; p = cumsum(gaps) - 1 still holds."""
    rng = np.random.default_rng(seed)
    a = np.zeros(n, np.float32)
    pos = np.sort(rng.choice(n, size=min(nnz, n), replace=False))
    a[pos] = rng.standard_normal(pos.size).astype(np.float32) + 3.0  # never 0
    enc = encode(a, scheme)
    max_gap = 255 if scheme == "gaps_u8" else 65535
    assert enc.positions.dtype == (np.uint8 if scheme == "gaps_u8" else np.uint16)
    assert enc.positions.min(initial=1) >= 1
    flat = np.cumsum(enc.positions.astype(np.int64)) - 1
    assert np.all(np.diff(flat) > 0)
    real = enc.values != 0
    np.testing.assert_array_equal(flat[real], pos)
    # fillers are exactly the entries that carry gap == max and value 0.0
    assert np.all(enc.positions[~real] == max_gap)
    expected_fillers = int(((np.diff(pos, prepend=-1) - 1) // max_gap).sum())
    assert int((~real).sum()) == expected_fillers
    assert decode(enc).tobytes() == a.tobytes()


def test_gap_definition_matches_the_onnx_contract() -> None:
    a = np.zeros(600, np.float32)
    a[[0, 3, 500]] = [1.0, 2.0, 3.0]
    enc = encode(a, "gaps_u8")
    # p_-1 = -1: first gap 1; 3 - 0 = 3; 500 - 3 = 497 = 255 (filler) + 242
    np.testing.assert_array_equal(enc.positions, np.array([1, 3, 255, 242], np.uint8))
    np.testing.assert_array_equal(enc.values, np.array([1.0, 2.0, 0.0, 3.0], np.float32))


def test_special_values_round_trip_bit_exactly() -> None:
    bits = np.array(
        [0x7FC00001, 0xFFC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0, 0x3F800000],
        dtype=np.uint32,
    )  # NaN payloads, +-inf, -0.0, a denormal, +0.0, 1.0
    a = np.tile(bits, 40).view(np.float32).reshape(8, 40)
    for scheme in (None, *SCHEMES):
        assert decode(encode(a, scheme)).view(np.uint32).tobytes() == a.view(np.uint32).tobytes()


@pytest.mark.parametrize("density", [0.0, 1.0])
def test_all_zero_and_all_dense_layers(density: float) -> None:
    a = _sparse((64, 32, 3, 3), density, seed=1)
    for scheme in (None, *SCHEMES):
        enc = encode(a, scheme)
        assert decode(enc).tobytes() == a.tobytes()
    best = encode(a)
    bound = entropy_bound_bytes(a.size, int(np.count_nonzero(a)))
    if density == 0.0:
        assert encoded_nbytes(best) == 0 and bound == 0.0
    else:
        assert best.scheme == "dense" and encoded_nbytes(best) == bound == 4 * a.size


def test_auto_picks_the_smallest_scheme() -> None:
    for density in (0.003, 0.05, 0.3, 0.7):
        a = _sparse((300, 200), density, seed=2)
        sizes = {s: encoded_nbytes(encode(a, s)) for s in SCHEMES}
        assert encoded_nbytes(encode(a)) == min(sizes.values())


@pytest.mark.parametrize("density", [0.1, 0.01])
def test_within_115_percent_of_the_bound(density: float) -> None:
    a = _sparse((512, 512), density, seed=3)
    enc = encode(a)
    bound = entropy_bound_bytes(a.size, int(np.count_nonzero(a)))
    assert encoded_nbytes(enc) <= 1.15 * bound


def test_entropy_bound_formula() -> None:
    n, k = 1000, 100
    d = k / n
    h = -d * math.log2(d) - (1 - d) * math.log2(1 - d)
    assert entropy_bound_bytes(n, k) == pytest.approx((n * h + 32 * k) / 8)
    assert entropy_bound_bytes(n, k, value_bits=0) <= math.log2(math.comb(n, k)) / 8 + n / 8
    assert entropy_bound_bytes(0, 0) == 0.0
    with pytest.raises(SparsifyError):
        entropy_bound_bytes(10, 11)


def test_refuses_other_dtypes_and_schemes() -> None:
    with pytest.raises(SparsifyError, match="float32"):
        encode(np.zeros(4, np.float64))
    with pytest.raises(SparsifyError, match="scheme"):
        encode(np.zeros(4, np.float32), "zip")


def _damaged(enc: EncodedTensor, **change: object) -> EncodedTensor:
    return dataclasses.replace(enc, **change)


def test_decode_refuses_malformed_encodings() -> None:
    a = _sparse((40, 40), 0.1, seed=4)
    gaps = encode(a, "gaps_u8")
    mask = encode(a, "bitmask")
    bad = [
        _damaged(gaps, scheme="rle"),
        _damaged(gaps, values=gaps.values[:-1]),
        _damaged(gaps, positions=gaps.positions.astype(np.uint16)),
        _damaged(
            gaps,
            positions=np.where(np.arange(gaps.positions.size) == 0, 0, gaps.positions).astype(
                np.uint8
            ),
        ),
        _damaged(gaps, shape=(40, 10)),  # last position past the end
        _damaged(gaps, values=gaps.values.astype(np.float64)),
        _damaged(mask, positions=mask.positions[:-1]),
        _damaged(mask, values=mask.values[:-1]),
        _damaged(encode(a, "dense"), values=a.reshape(-1)[:-1]),
        _damaged(gaps, shape=(-1, 40)),
    ]
    for enc in bad:
        with pytest.raises(SparsifyError, match="malformed"):
            decode(enc)


def test_encoding_does_not_import_torch() -> None:
    import subprocess

    code = "import sparsify.export.encoding, sys; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
