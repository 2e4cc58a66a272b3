"""The footprint table: columns add up, ratios divide by the bound, files are written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.export.encoding import encode, encoded_nbytes, entropy_bound_bytes
from sparsify.footprint import footprint, to_markdown, write_footprint
from sparsify.pipeline.checkpoint import save_checkpoint
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.zoo import build_model


def _lenet5(fraction: float) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p[torch.rand(p.shape, generator=g) < fraction] = 0.0
    return model


@pytest.fixture(scope="module")
def result() -> dict:
    return footprint(_lenet5(0.9))


def test_rows_and_totals_add_up(result: dict) -> None:
    model = _lenet5(0.9)
    state = model.state_dict()
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == list(state)
    for name, t in state.items():
        a = t.numpy()
        r = rows[name]
        assert r["params"] == a.size and r["nnz"] == int(np.count_nonzero(a))
        assert r["dense_bytes"] == 4 * a.size
        assert r["bound_bytes"] == pytest.approx(entropy_bound_bytes(a.size, r["nnz"]))
        if a.ndim >= 2:
            assert r["prunable"] and r["compact_bytes"] == encoded_nbytes(encode(a))
            assert 0.05 < r["density"] < 0.15
        else:
            assert not r["prunable"] and r["compact_bytes"] == 4 * a.size
        assert r["gzip_bytes"] == len(gzip.compress(a.tobytes(), 9, mtime=0))
        for col in result["columns"]:
            assert r[col.replace("_bytes", "_ratio")] == pytest.approx(r[col] / r["bound_bytes"])
    total = result["total"]
    assert total["params"] == sum(r["params"] for r in rows.values())
    assert total["nnz"] == result["prunable"]["nnz"] + result["other"]["nnz"]
    assert (
        total["compact_bytes"]
        == result["prunable"]["compact_bytes"] + result["other"]["compact_bytes"]
    )
    # whole files cost more than their arrays: headers and the manifest
    assert total["scipy_bytes"] > sum(r["scipy_bytes"] for r in rows.values())
    assert total["compact_bundle_bytes"] > total["compact_bytes"]


def test_compact_beats_dense_and_gzip_near_the_bound(result: dict) -> None:
    p = result["prunable"]
    assert p["compact_ratio"] <= 1.15
    assert p["dense_bytes"] / p["compact_bytes"] >= 7.5
    assert p["compact_bytes"] < p["gzip_bytes"]


def test_extra_columns_are_added_with_ratios() -> None:
    extra = {
        "onnx_compact_bytes": {"total": 12345, "fc1.weight": 999},
        "ort_resident_mib": {"total": 3.5},
    }
    r = footprint(_lenet5(0.5), extra_columns=extra)
    assert "onnx_compact_bytes" in r["columns"] and "ort_resident_mib" in r["columns"]
    assert r["total"]["onnx_compact_ratio"] == pytest.approx(12345 / r["total"]["bound_bytes"])
    fc1 = next(row for row in r["rows"] if row["name"] == "fc1.weight")
    assert fc1["onnx_compact_bytes"] == 999
    md = to_markdown(r)
    assert "onnx_compact" in md and "ort_resident_mib" in md
    with pytest.raises(SparsifyError, match="extra column"):
        footprint(_lenet5(0.5), extra_columns={"x_bytes": {"nope": 1}})


def test_write_and_cli(tmp_path: Path, result: dict, capsys) -> None:
    j, m = write_footprint(result, tmp_path / "fp", stem="lenet5")
    assert json.loads(j.read_text())["total"]["params"] == result["total"]["params"]
    assert "fc1.weight" in m.read_text() and "**total**" in m.read_text()
    recipe = Recipe.from_dict({"name": "fp", "model": {"name": "lenet5"}})
    save_checkpoint(tmp_path / "ckpt", _lenet5(0.9), recipe)
    assert main(["footprint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "footprint.json").read_text())
    assert (
        data["total"]["checkpoint_bytes"]
        == (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    )
    assert data["source"]["recipe"]["name"] == "fp"
    total = data["total"]  # the ONNX columns the CLI adds: compact is smaller, ORT densifies
    assert total["onnx_compact_bytes"] < total["gzip_onnx_dense_bytes"] < total["onnx_dense_bytes"]
    assert total["ort_session_mib_compact"] >= 0.9 * total["ort_session_mib_dense"]
    fc1 = next(r for r in data["rows"] if r["name"] == "fc1.weight")
    assert fc1["onnx_compact_ratio"] < 1.15
    assert (tmp_path / "out" / "footprint.md").is_file()
    assert "wrote" in capsys.readouterr().out


def test_empty_model_is_refused() -> None:
    with pytest.raises(SparsifyError, match="empty model"):
        footprint(nn.Sequential(nn.ReLU()))
