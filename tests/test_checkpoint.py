"""Checkpoints: bit-identical round trip, the recipe inside, corruption caught."""

from __future__ import annotations

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
