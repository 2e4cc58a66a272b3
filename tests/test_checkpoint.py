"""Checkpoints: bit-identical round trip, the recipe inside, corruption caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import load_checkpoint, save_checkpoint
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.zoo import build_model

RECIPE = Recipe.from_dict(
    {"name": "ck", "model": {"name": "lenet5"}, "penalties": [{"kind": "l1_prox", "lam": 1e-4}]}
)


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("lenet5")
    with torch.no_grad():
        model.fc1.weight[torch.rand_like(model.fc1.weight) < 0.9] = 0
    save_checkpoint(tmp_path / "run", model, RECIPE, {"test_error": 0.5})
    return tmp_path / "run", model


def test_round_trip_bit_identical(saved) -> None:
    path, model = saved
    ck = load_checkpoint(path)
    assert ck.recipe == RECIPE
    assert set(ck.state_dict) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(ck.state_dict[k], v) and ck.state_dict[k].dtype == v.dtype
    rebuilt = ck.build_model()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(rebuilt(x), model.eval()(x))
    assert (path / "recipe.yaml").read_text().startswith("version: 1")
    assert load_checkpoint(path / "model.safetensors").metadata["sha256"] == ck.metadata["sha256"]


def _flip(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_bit_flip_in_tensor_data_is_caught(saved) -> None:
    path, _ = saved
    _flip(path / "model.safetensors", 100)
    with pytest.raises(SparsifyError, match="does not match its sha256"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncate", "header", "empty", "text"])
def test_damaged_files_are_refused_with_the_path(saved, damage: str) -> None:
    path, _ = saved
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(
        {
            "truncate": data[: len(data) // 2],
            "header": b"\xff" * 8 + data[8:],
            "empty": b"",
            "text": b"hello world, not a checkpoint",
        }[damage]
    )
    with pytest.raises(SparsifyError) as info:
        load_checkpoint(path)
    assert str(f) in str(info.value)


def test_foreign_safetensors_and_wrong_architecture(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(SparsifyError, match="not a sparsify checkpoint"):
        load_checkpoint(tmp_path)
    other = Recipe.from_dict({"model": {"name": "lenet300_100"}})
    save_checkpoint(tmp_path / "x", build_model("lenet5"), other)
    with pytest.raises(SparsifyError, match="weights do not fit model 'lenet300_100'"):
        load_checkpoint(tmp_path / "x").build_model()
    with pytest.raises(SparsifyError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


def test_batchnorm_models_save_and_load(tmp_path: Path) -> None:
    """0-d buffers (BatchNorm's num_batches_tracked) must hash and round-trip too."""
    model = build_model("torchvision:resnet18")
    recipe = Recipe.from_dict({"model": {"name": "torchvision:resnet18"}})
    save_checkpoint(tmp_path, model, recipe)
    ck = load_checkpoint(tmp_path)
    assert ck.state_dict["bn1.num_batches_tracked"].dim() == 0
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(ck.build_model()(x), model.eval()(x))


def test_negative_zeros_are_stored_as_positive_zeros(tmp_path: Path) -> None:
    model = build_model("lenet300_100")
    with torch.no_grad():
        model.fc3.weight[0, :5] = -0.0
    save_checkpoint(tmp_path, model, Recipe.from_dict({"model": {"name": "lenet300_100"}}))
    w = load_checkpoint(tmp_path).state_dict["fc3.weight"]
    assert (w[0, :5] == 0).all() and not torch.signbit(w[0, :5]).any()
    assert torch.equal(w[1:], model.fc3.weight[1:].detach())


def _v1_file(path: Path, model: torch.nn.Module, recipe: Recipe) -> None:
    """A checkpoint as sparsify wrote it before format 2: tensors-only sha256, no
    model/input_shape keys."""
    from safetensors.torch import save_file

    from sparsify.pipeline.checkpoint import tensors_digest

    path.mkdir(parents=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "sparsify.checkpoint",
        "format_version": "1",
        "sparsify_version": "0.1.0",
        "recipe": json.dumps(recipe.to_dict(), sort_keys=True),
        "sha256": tensors_digest(state),
    }
    save_file(state, str(path / "model.safetensors"), metadata=meta)


def test_version_1_files_still_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    _v1_file(tmp_path / "zoo", model, RECIPE)
    ck = load_checkpoint(tmp_path / "zoo")
    assert ck.model_name == "lenet5" and ck.input_shape == (1, 28, 28)  # the v1 zoo fallback
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(ck.build_model()(x), model(x))
    tv = Recipe.from_dict({"model": {"name": "torchvision:resnet18"}})
    _v1_file(tmp_path / "tv", build_model("torchvision:resnet18"), tv)
    ck = load_checkpoint(tmp_path / "tv")
    assert ck.input_shape is None  # no guess outside the zoo
    with pytest.raises(SparsifyError, match="records no input shape; pass --input-shape"):
        ck.example_input()
    assert ck.example_input(input_shape=(1, 32, 32)).shape == (1, 1, 32, 32)


def test_the_header_is_under_the_digest(saved) -> None:
    """Version 2 hashes the recipe, model name and input shape with the tensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path, _ = saved
    f = path / "model.safetensors"
    with safe_open(str(f), framework="pt") as fh:
        meta = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    assert meta["format_version"] == "2" and json.loads(meta["input_shape"]) == [1, 28, 28]
    for key, value in [
        ("input_shape", "[1, 32, 32]"),
        ("model", "lenet300_100"),
        ("recipe", meta["recipe"].replace('"ck"', '"cx"')),
    ]:
        save_file(state, str(f), metadata={**meta, key: value})
        with pytest.raises(SparsifyError, match="does not match its sha256"):
            load_checkpoint(path)
    save_file(state, str(f), metadata=meta)
    assert load_checkpoint(path).model_name == "lenet5"


def test_untrusted_header_names_are_refused_before_building(tmp_path: Path) -> None:
    from sparsify.pipeline.checkpoint import save_checkpoint as save

    save(tmp_path / "a", build_model("lenet5"), None, model_name="lenet5", input_shape=(1, 28, 28))
    ck = load_checkpoint(tmp_path / "a")
    assert ck.recipe is None and not (tmp_path / "a" / "recipe.yaml").exists()
    ck.metadata["model"] = "no_such_model"
    with pytest.raises(SparsifyError, match="unknown model 'no_such_model'.*--plugin"):
        ck.build_model()
    # a torchvision name is compared with the tensors on the meta device: no allocation
    ck.metadata["model"] = "torchvision:vit_h_14"
    with pytest.raises(SparsifyError, match="weights do not fit model 'torchvision:vit_h_14'"):
        ck.build_model()
    with pytest.raises(SparsifyError, match="input_shape must be"):
        save(tmp_path / "b", build_model("lenet5"), None, input_shape=(1, -28))


def test_bench_rebuilds_a_bundle_of_a_shrunk_checkpoint(tmp_path: Path, capsys) -> None:
    """Used to die with a raw 'size mismatch for fc1.weight' traceback: the bench rebuilt
    bundles without resizing. Now every rebuild goes through Checkpoint.build_model."""
    from sparsify.bench.sources import load_source
    from sparsify.cli import main

    torch.manual_seed(0)
    model = build_model("lecture_convnet").eval()
    with torch.no_grad():
        model.fc1.weight[:120] = 0.0  # dead units: shrink removes them
        model.fc1.bias[:120] = 0.0
    recipe = Recipe.from_dict({"model": {"name": "lecture_convnet"}})
    save_checkpoint(tmp_path / "run", model, recipe)
    assert (
        main(["shrink", str(tmp_path / "run"), "--out", str(tmp_path / "small"), "--repeats", "2"])
        == 0
    )
    assert main(["export", str(tmp_path / "small"), "--out", str(tmp_path / "bundle")]) == 0
    source = load_source({"kind": "bundle", "path": str(tmp_path / "bundle")})
    assert source.model.fc1.out_features == 80 and source.input_shape == (1, 28, 28)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(source.model(x), model(x), rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    args = ["--backends", "dense", "scipy_runtime", "--batch", "1", "--reps", "2", "--quick"]
    assert main(["bench", str(tmp_path / "bundle"), *args, "--out", str(tmp_path / "b")]) == 0
    assert "Traceback" not in capsys.readouterr().err
