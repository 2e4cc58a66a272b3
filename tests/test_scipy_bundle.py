"""The scipy bundle: bit-identical round trips in every format, and refusal of bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.export import bundle_format as bf
from sparsify.export.bundle_reader import load_bundle
from sparsify.export.scipy_bundle import export_scipy_bundle, load_state_dict
from sparsify.pipeline.checkpoint import load_checkpoint, save_checkpoint, tensors_digest
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.zoo import build_model

RECIPE = Recipe.from_dict({"name": "bundle", "model": {"name": "lecture_convnet"}})


def zero_(model: nn.Module, fraction: float, seed: int = 0) -> nn.Module:
    """Zero ``fraction`` of every rank >= 2 weight at random (as +0.0, the way prox writes it)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p[torch.rand(p.shape, generator=g) < fraction] = 0.0
    return model.eval()


@pytest.fixture()
def ckpt_dir(tmp_path: Path) -> Path:
    """A lecture-convnet checkpoint: conv1 all zeros, fc2 fully dense, some -0.0 in fc1."""
    torch.manual_seed(0)
    model = zero_(build_model("lecture_convnet"), 0.9)
    with torch.no_grad():
        model.conv1.weight.zero_()  # a 100%-zero layer
        model.fc2.weight.add_(1e-3).abs_()  # a 0%-zero layer
        model.fc1.weight.view(-1)[:3] = -0.0  # stored, so it survives bit-exactly
    save_checkpoint(tmp_path / "ckpt", model, RECIPE)
    return tmp_path / "ckpt"


def _model(ckpt_dir: Path) -> nn.Module:
    return load_checkpoint(ckpt_dir).build_model()


def _bits(t: torch.Tensor | np.ndarray) -> bytes:
    a = t.numpy() if isinstance(t, torch.Tensor) else t
    return a.tobytes()


@pytest.mark.parametrize(
    "sparse_format,blocksize,store",
    [
        ("csr", None, "both"),
        ("csc", None, "scipy"),
        ("coo", None, "both"),
        ("bsr", (2, 1), "scipy"),
        ("csr", None, "compact"),
    ],
)
def test_round_trip_is_bit_identical(
    ckpt_dir: Path, tmp_path: Path, sparse_format, blocksize, store
) -> None:
    ckpt = load_checkpoint(ckpt_dir)
    out = tmp_path / "bundle"
    manifest = export_scipy_bundle(
        ckpt.build_model(),
        out,
        provenance=ckpt.provenance(),
        sparse_format=sparse_format,
        blocksize=blocksize,
        store=store,
    )
    assert manifest["state_sha256"] == tensors_digest(ckpt.state_dict)  # the same tensors
    assert manifest["source"]["checkpoint_sha256"] == ckpt.metadata["sha256"]
    bundle = load_bundle(out)
    state = load_state_dict(out)
    assert sorted(state) == sorted(ckpt.state_dict)
    for name, t in ckpt.state_dict.items():
        assert state[name].dtype == t.dtype and state[name].shape == t.shape
        assert _bits(state[name]) == _bits(t), name
    want_format = sparse_format if store != "compact" else "csr"
    for name in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"):
        m = bundle.sparse[name]
        assert m.format == want_format
        w = ckpt.state_dict[name].numpy()
        assert m.shape == (w.shape[0], int(np.prod(w.shape[1:])))
        assert _bits(bf.to_dense(m)) == _bits(w.reshape(m.shape))
    assert bundle.sparse["conv1.weight"].nnz == 0
    assert (name in bundle.compact) == (store != "scipy")
    assert "conv1.bias" not in bundle.sparse and bundle.state_dict["conv1.bias"].ndim == 1
    assert manifest["source"]["recipe"]["name"] == "bundle"


def test_nan_inf_survive_and_negative_zero_is_zero_from_a_module(tmp_path: Path) -> None:
    """Checkpoints refuse NaN/inf, but a module can hold them: the bundle keeps every bit,
    except that -0.0 is a zero and stored as +0.0 (as a checkpoint stores it)."""
    model = zero_(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)), 0.7)
    with torch.no_grad():
        model[0].weight.view(-1)[:4] = torch.tensor(
            [-0.0, float("nan"), float("inf"), -float("inf")]
        )
    for fmt in ("csr", "bsr"):
        export_scipy_bundle(
            model, tmp_path / fmt, sparse_format=fmt, blocksize=(2, 2) if fmt == "bsr" else None
        )
        state = load_state_dict(tmp_path / fmt)
        for name, t in model.state_dict().items():
            assert _bits(state[name]) == _bits(t + 0.0), (fmt, name)  # -0.0 + 0.0 is +0.0
        assert not torch.signbit(state["0.weight"].view(-1)[0])


def test_manifest_describes_every_tensor(ckpt_dir: Path, tmp_path: Path) -> None:
    import sparsify

    export_scipy_bundle(_model(ckpt_dir), tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["format"] == bf.FORMAT and manifest["format_version"] == bf.FORMAT_VERSION
    assert manifest["sparsify_version"] == sparsify.__version__
    by_name = {t["name"]: t for t in manifest["tensors"]}
    fc1 = by_name["fc1.weight"]
    assert fc1["storage"] == "sparse" and fc1["dtype"] == "float32" and fc1["shape"] == [200, 256]
    assert fc1["scipy"]["format"] == "csr" and set(fc1["scipy"]["arrays"]) == {
        "data",
        "indices",
        "indptr",
    }
    assert by_name["conv1.weight"]["density"] == 0.0 and by_name["fc2.weight"]["density"] == 1.0
    assert by_name["conv2.weight"]["matrix_shape"] == [64, 32 * 5 * 5]
    # two files: the manifest and one container that the array references tile exactly
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [bf.DATA_FILE, bf.MANIFEST]
    data = (tmp_path / "b" / bf.DATA_FILE).read_bytes()
    assert manifest["data"] == {"path": bf.DATA_FILE, "bytes": len(data)}
    refs = []
    for t in manifest["tensors"]:
        refs += list((t.get("arrays") or {}).values())
        refs += [r for k in ("scipy", "compact") if k in t for r in t[k]["arrays"].values()]
    assert len(refs) == 4 * 5 + 4  # 4 weights: 3 csr parts + 2 compact; 4 dense biases
    end = 0
    for ref in sorted(refs, key=lambda r: r["offset"]):
        assert ref["offset"] == end and set(ref) >= {"bytes", "dtype", "shape", "sha256"}
        end += ref["bytes"]
        assert bf.sha256_bytes(data[ref["offset"] : end]) == ref["sha256"]
    assert end == len(data)
    assert (tmp_path / "b" / bf.MANIFEST).read_text().count("\n") == 1  # minified
    assert manifest["graph"]["ops"][0]["op"] == "conv2d"


def test_zero_and_sparse_small_tensors_are_stored_compactly(tmp_path: Path) -> None:
    """All-zero buffers store no array; a float32 bias with zeros stores its encoding;
    the round trip stays bit-exact (NaN and int buffers included), -0.0 stored as +0.0."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 300))
    with torch.no_grad():
        model[3].bias.zero_()
        model[3].bias[:3] = torch.tensor([-0.0, float("nan"), 2.5])  # 297 zeros
        model[1].running_var[0] = -0.0
    manifest = export_scipy_bundle(model, tmp_path / "b", graph=False, codec="none")
    by_name = {t["name"]: t for t in manifest["tensors"]}
    assert by_name["1.bias"]["storage"] == "zeros" and "arrays" not in by_name["1.bias"]
    assert by_name["1.running_mean"]["storage"] == "zeros"
    assert by_name["1.num_batches_tracked"]["storage"] == "zeros"
    assert by_name["1.running_var"]["storage"] == "compact"  # its -0.0 is a zero: 3 values
    bias = by_name["3.bias"]
    assert bias["storage"] == "compact" and bias["nonfinite"] == 1
    assert sum(r["bytes"] for r in bias["compact"]["arrays"].values()) < 4 * 300
    bundle = load_bundle(tmp_path / "b")
    for name, t in model.state_dict().items():
        got = bundle.state_dict[name]
        assert got.dtype == t.numpy().dtype and got.shape == tuple(t.shape), name
        want = t + 0.0 if t.is_floating_point() else t  # -0.0 + 0.0 is +0.0
        assert _bits(got) == _bits(want), name
    assert "3.bias" not in bundle.sparse and "3.bias" not in bundle.compact


def test_auto_codec_deflates_only_what_shrinks(tmp_path: Path) -> None:
    """The default codec deflates an array only when that is smaller; scipy parts stay raw."""
    model = nn.Linear(256, 16)
    rng = np.random.default_rng(0)
    w = np.where(rng.random((16, 256)) < 0.1, rng.uniform(0.01, 0.02, (16, 256)), 0.0)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        model.bias.copy_(torch.from_numpy(rng.standard_normal(16).astype(np.float32)))
    manifest = export_scipy_bundle(model, tmp_path / "b", graph=False)
    assert manifest["codec"] == "auto"
    by_name = {t["name"]: t for t in manifest["tensors"]}
    weight = by_name["weight"]
    assert all("codec" not in r for r in weight["scipy"]["arrays"].values())
    assert weight["compact"]["arrays"]["values"]["codec"] == "zlib"  # few exponents: shrinks
    assert "codec" not in by_name["bias"]["arrays"]["array"]  # 64 random bytes: raw is smaller
    state = load_state_dict(tmp_path / "b")
    for name, t in model.state_dict().items():
        assert _bits(state[name]) == _bits(t), name


# damaged bundles: tests/test_corrupt_bundle.py


def test_zlib_makes_trained_like_values_smaller(tmp_path: Path) -> None:
    """Values with few distinct exponents (as training leaves them) deflate below 32 bits."""
    rng = np.random.default_rng(0)
    w = np.where(rng.random((256, 256)) < 0.1, rng.uniform(0.01, 0.02, (256, 256)), 0.0)
    model = nn.Linear(256, 256, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w.astype(np.float32)))
    plain = export_scipy_bundle(
        model, tmp_path / "plain", store="compact", codec="none", graph=False
    )
    packed = export_scipy_bundle(
        model, tmp_path / "zlib", store="compact", codec="zlib", graph=False
    )
    size = lambda m: sum(r["bytes"] for r in m["tensors"][0]["compact"]["arrays"].values())  # noqa: E731
    assert size(packed) < 0.9 * size(plain)
    assert (
        load_bundle(tmp_path / "zlib").state_dict["weight"].tobytes()
        == w.astype(np.float32).tobytes()
    )


def test_empty_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="empty model"):
        export_scipy_bundle(nn.Sequential(nn.ReLU()), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_failed_export_leaves_no_output_directory(
    ckpt_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import sparsify.export.scipy_bundle as sb

    calls = {"n": 0}
    real = sb.encode

    def failing(a, scheme=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(a, scheme)

    monkeypatch.setattr(sb, "encode", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        export_scipy_bundle(_model(ckpt_dir), tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no partial or temp dir


def test_refuses_to_replace_a_directory_that_is_not_a_bundle(ckpt_dir: Path) -> None:
    with pytest.raises(SparsifyError, match="not an output of this command"):
        export_scipy_bundle(_model(ckpt_dir), ckpt_dir)
    assert (ckpt_dir / "model.safetensors").is_file()


def test_a_user_folder_holding_a_manifest_json_is_never_deleted(
    ckpt_dir: Path, tmp_path: Path
) -> None:
    user = tmp_path / "user"
    (user / "photos").mkdir(parents=True)
    (user / "photos" / "a.png").write_bytes(b"png")
    (user / "manifest.json").write_text('{"mine": true}')
    with pytest.raises(SparsifyError, match="not an output of this command"):
        export_scipy_bundle(_model(ckpt_dir), user)
    assert (user / "photos" / "a.png").read_bytes() == b"png"
    assert (user / "manifest.json").read_text() == '{"mine": true}'
    # a real bundle, or an empty folder, is replaced
    export_scipy_bundle(_model(ckpt_dir), tmp_path / "b")
    export_scipy_bundle(_model(ckpt_dir), tmp_path / "b")
    (tmp_path / "empty").mkdir()
    export_scipy_bundle(_model(ckpt_dir), tmp_path / "empty")
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_bad_arguments_are_refused(ckpt_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="sparse_format"):
        export_scipy_bundle(_model(ckpt_dir), tmp_path / "b", sparse_format="dok")
    with pytest.raises(SparsifyError, match="'conv1.weight': BSR blocksize"):
        export_scipy_bundle(_model(ckpt_dir), tmp_path / "b", sparse_format="bsr", blocksize=(3, 3))
    assert not (tmp_path / "b").exists()


def test_cli_export_scipy_and_missing_checkpoint(ckpt_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(ckpt_dir), "--format", "scipy", "--out", str(tmp_path / "b")]) == 0
    assert "fc1.weight" in capsys.readouterr().out
    assert load_bundle(tmp_path / "b").manifest["store"] == "both"
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_reader_does_not_import_torch(ckpt_dir: Path, tmp_path: Path) -> None:
    import subprocess

    export_scipy_bundle(_model(ckpt_dir), tmp_path / "b")
    code = (
        "import sys; from sparsify.export.bundle_reader import load_bundle; "
        f"b = load_bundle({str(tmp_path / 'b')!r}); sys.exit(('torch' in sys.modules) or len(b.sparse) != 4)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0
    )
