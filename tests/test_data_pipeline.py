"""The data pipeline end to end: registry, DataLoader loop, tasks, validation split,
augmentation, workers, and the recipes that train on new datasets through the CLI.

The reproducibility contract is checked against a reference loop written here (the lecture
loop as it was before DataLoaders): in-memory MNIST must train bit for bit the same.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from test_data_formats import cifar_folder, idx_folder, png_folder
from torch import nn
from torch.utils.data import TensorDataset

import sparsify
from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.penalties import L1Prox, penalize_
from sparsify.penalties.base import penalty_from_dict
from sparsify.pipeline.checkpoint import load_checkpoint
from sparsify.pipeline.data import registry
from sparsify.pipeline.data.loader import FixedBatches, TrainBatches, batch_loader
from sparsify.pipeline.data.mnist import load_mnist
from sparsify.pipeline.data.registry import DataRequest, DatasetSplits
from sparsify.pipeline.data.splits import Augmented, RandomShift
from sparsify.pipeline.distributed import DistContext
from sparsify.pipeline.loop import evaluate, run_epochs
from sparsify.pipeline.recipe import Recipe, load_recipe
from sparsify.pipeline.stages import build_data, train
from sparsify.pipeline.task import Regression
from sparsify.pipeline.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "name": "small",
    "seed": 4,
    "threads": 1,
    "device": "cpu",
    "model": {"name": "lenet300_100"},
    "data": {"train_subset": 300, "test_subset": 100},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "epochs": 2,
    "batch_size": 64,  # 300 % 64: a short last batch
    "penalties": [{"kind": "l1_prox", "lam": 1e-3, "threshold": "lambda"}],
}


def _reference_loop(recipe: Recipe, mnist_dir: Path) -> dict[str, torch.Tensor]:
    """The pre-DataLoader loop: randperm per epoch, perm[i:i+B], mean CE via sum / B."""
    d = load_mnist(mnist_dir, recipe.data.train_subset, recipe.data.test_subset)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = math.ceil(len(d.train_x) / recipe.batch_size)
    cfg = penalty_from_dict(recipe.penalties[0].to_config_dict())
    penalize_(model, opt, cfg, steps_per_epoch=steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    n, b = len(d.train_x), recipe.batch_size
    for _ in range(recipe.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, b):
            batch = perm[i : i + b]
            loss = F.cross_entropy(model(d.train_x[batch]), d.train_y[batch], reduction="sum")
            opt.zero_grad(set_to_none=True)
            (loss * (1 / len(batch))).backward()
            opt.step()
    return model.state_dict()


def test_in_memory_mnist_trains_bit_for_bit_like_the_reference_loop(mnist_dir: Path) -> None:
    torch.set_num_threads(1)
    recipe = Recipe.from_dict({**SMALL, "data": {**SMALL["data"], "dir": str(mnist_dir)}})
    ref = _reference_loop(recipe, mnist_dir)
    got = train(recipe, build_data(recipe), progress=False).model.state_dict()
    assert (ref["fc1.weight"] == 0).any(), "the prox step must have made zeros"
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"{k} differs from the reference loop"


def test_workers_do_not_change_the_math(mnist_dir: Path) -> None:
    data = {**SMALL["data"], "dir": str(mnist_dir)}
    plain = Recipe.from_dict({**SMALL, "epochs": 1, "data": data})
    workers = Recipe.from_dict({**SMALL, "epochs": 1, "data": {**data, "num_workers": 2}})
    a = train(plain, build_data(plain), progress=False)
    b = train(workers, build_data(workers), progress=False)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert b.metrics["data"]["num_workers"] == 2


def test_validation_split_is_carved_deterministically(mnist_dir: Path) -> None:
    recipe = Recipe.from_dict(
        {
            **SMALL,
            "epochs": 1,
            "data": {**SMALL["data"], "dir": str(mnist_dir), "val_fraction": 0.2},
        }
    )
    d1, d2 = build_data(recipe), build_data(recipe)
    assert len(d1.train) == 240 and len(d1.val) == 60
    assert torch.equal(d1.val.tensors[1], d2.val.tensors[1])
    # the two parts are disjoint and together the training subset
    full = load_mnist(mnist_dir, 300, 100).train_x
    both = torch.cat([d1.train.tensors[0], d1.val.tensors[0]])
    assert torch.equal(both.sum(dim=(1, 2, 3)).sort().values, full.sum(dim=(1, 2, 3)).sort().values)
    other = Recipe.from_dict({**recipe.to_dict(), "seed": 5})
    assert not torch.equal(build_data(other).val.tensors[1], d1.val.tensors[1])
    m = train(recipe, d1, progress=False).metrics
    assert 0 <= m["val_error"] <= 1 and m["val_images"] == 60 and m["train_images"] == 240
    assert m["data"]["val_images"] == 60 and m["test_images"] == 100
    with pytest.raises(SparsifyError, match="leaves no training images"):
        build_data(
            Recipe.from_dict(
                {
                    **recipe.to_dict(),
                    "data": {**recipe.to_dict()["data"], "val_fraction": 0, "val_size": 300},
                }
            )
        )


def test_register_dataset_and_its_errors() -> None:
    def tiny(request: DataRequest) -> DatasetSplits:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(40, 1, 28, 28, generator=g)
        y = torch.arange(40) % 10
        return DatasetSplits(TensorDataset(x, y), TensorDataset(x[:10], y[:10]), (1, 28, 28), 10)

    sparsify.register_dataset("tiny_test_set", tiny)
    try:
        assert "tiny_test_set" in registry.dataset_names()
        recipe = Recipe.from_dict({**SMALL, "epochs": 1, "data": {"dataset": "tiny_test_set"}})
        m = train(recipe, build_data(recipe), progress=False).metrics
        assert m["train_images"] == 40 and m["data"]["dataset"] == "tiny_test_set"
        with pytest.raises(SparsifyError, match="already registered"):
            sparsify.register_dataset("tiny_test_set", tiny)
        with pytest.raises(SparsifyError, match="already registered"):
            sparsify.register_dataset("mnist", tiny)
        with pytest.raises(SparsifyError, match="plain identifier"):
            sparsify.register_dataset("my.module:fn", tiny)
        sparsify.register_dataset("tiny_test_set", lambda r: "nope", overwrite=True)
        with pytest.raises(SparsifyError, match="returned str, not"):
            build_data(recipe)
        wrong = Recipe.from_dict(
            {**recipe.to_dict(), "model": {"name": "lenet300_100", "num_classes": 12}}
        )
        sparsify.register_dataset("tiny_test_set", tiny, overwrite=True)
        with pytest.raises(SparsifyError, match="has 10 classes but model.num_classes is 12"):
            train(wrong, build_data(wrong), progress=False)
    finally:
        registry._USER.pop("tiny_test_set", None)
    with pytest.raises(
        SparsifyError, match="unknown dataset 'tiny_test_set'; choose one of .*register your own"
    ):
        Recipe.from_dict({"data": {"dataset": "tiny_test_set"}})


def test_entry_point_plugin_is_found(tmp_path: Path, monkeypatch) -> None:
    """A package's ``sparsify.datasets`` entry point makes its name valid in recipes."""
    pkg = tmp_path / "site"
    (pkg / "plug_data").mkdir(parents=True)
    (pkg / "plug_data" / "__init__.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "from sparsify.pipeline.data import DatasetSplits\n"
        "def make(request):\n"
        "    x = torch.zeros(20, 1, 28, 28); y = torch.arange(20) % 10\n"
        "    return DatasetSplits(TensorDataset(x, y), TensorDataset(x, y), (1, 28, 28), 10)\n"
    )
    info = pkg / "plug_data-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-data\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sparsify.datasets]\nplugged = plug_data:make\n")
    monkeypatch.syspath_prepend(str(pkg))
    assert "plugged" in registry.dataset_names()
    recipe = Recipe.from_dict({"data": {"dataset": "plugged"}})
    assert len(build_data(recipe).train) == 20


def test_regression_task_fits_a_lasso() -> None:
    """The loop with the regression task and an L1 prox recovers a sparse linear model."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 20, generator=g)
    w_true = torch.zeros(20)
    w_true[:3] = torch.tensor([2.0, -1.5, 1.0])
    y = x @ w_true + 0.01 * torch.randn(400, generator=g)
    model = nn.Linear(20, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    handle = penalize_(model, opt, L1Prox(lam=2e-3))
    batches = TrainBatches(TensorDataset(x, y), 50, torch.Generator().manual_seed(0))
    history: list[dict[str, float]] = []
    run_epochs(
        model,
        model,
        opt,
        None,
        batches,
        Regression(),
        epochs=range(30),
        dist=DistContext(),
        history=history,
        desc="lasso",
        progress=False,
    )
    handle.remove()
    w = model.weight.detach()[0]
    assert (w[3:] == 0).all(), "the lasso must zero the irrelevant inputs exactly"
    torch.testing.assert_close(w[:3], w_true[:3], atol=0.05, rtol=0)
    mse, _ = evaluate(model, TensorDataset(x, y), Regression())
    assert mse < 0.01 and history[-1]["loss"] < history[0]["loss"]


def test_augmentation_is_seeded_and_off_by_default(tmp_path: Path) -> None:
    root = cifar_folder(tmp_path, "cifar10", n_train=40, n_test=10)
    base = {
        **SMALL,
        "epochs": 1,
        "batch_size": 10,
        "model": {"name": "lecture_convnet", "in_channels": 3},
        "data": {"dataset": "cifar10", "dir": str(root)},
    }
    plain = Recipe.from_dict(base)
    aug = Recipe.from_dict({**base, "data": {**base["data"], "augment": True}})
    runs = [train(r, build_data(r), progress=False) for r in (plain, aug, aug)]
    w = [r.model.state_dict()["fc1.weight"] for r in runs]
    assert torch.equal(w[1], w[2]), "augmented runs repeat from the seed"
    assert not torch.equal(w[0], w[1]), "augmentation changes what is trained on"
    assert (
        runs[0].metrics["data"]["augment"] is False and runs[1].metrics["data"]["augment"] is True
    )
    assert runs[1].metrics["input_shape"] == [3, 32, 32]
    # the MNIST family's augmentation is a small translation, recorded as applied
    folder = idx_folder(tmp_path / "f")
    r = Recipe.from_dict(
        {
            **SMALL,
            "epochs": 1,
            "data": {"dataset": "fashion_mnist", "dir": str(folder), "augment": True},
        }
    )
    m = train(r, build_data(r), progress=False).metrics["data"]
    assert m["augment"] is True and m["augmentation"].startswith("RandomShift(max_shift=2")


def test_augmented_in_memory_data_stays_on_the_batched_path() -> None:
    """A shift-augmented TensorDataset is fetched a batch at a time (no per-item collate), and
    the batch is shifted image by image: the loader's path, not only the transform."""
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    ds = Augmented(TensorDataset(x, torch.arange(64)), RandomShift(2, [0.0]))
    loader = batch_loader(ds, FixedBatches(64, 32, DistContext()))
    assert loader.batch_sampler is None, "in-memory + a batch augmentation: no per-item fetch"
    torch.manual_seed(0)
    xb, yb = next(iter(loader))
    assert xb.shape == (32, 1, 8, 8) and torch.equal(yb, torch.arange(32))
    assert torch.equal(xb.sum(dim=(1, 2, 3)), torch.full((32,), 4.0)), "a 2 px margin: kept whole"
    assert len({tuple(torch.nonzero(im[0])[0].tolist()) for im in xb}) > 5, "one draw per image"
    # a transform without a batch method keeps the per-item path
    per_item = Augmented(TensorDataset(x, torch.arange(64)), lambda im: im)
    assert batch_loader(per_item, FixedBatches(64, 32, DistContext())).batch_sampler is not None


def test_resume_with_augmentation_and_workers_is_bit_exact(tmp_path: Path, monkeypatch) -> None:
    """A run stopped after epoch 1 and resumed equals the uninterrupted run: the batch order,
    the workers' seeds and the augmentation draws all come back from the saved state."""
    from sparsify.pipeline import stages

    root = cifar_folder(tmp_path, "cifar10", n_train=30, n_test=10)
    recipe = Recipe.from_dict(
        {
            **SMALL,
            "epochs": 3,
            "batch_size": 10,
            "model": {"name": "lecture_convnet", "in_channels": 3},
            "data": {"dataset": "cifar10", "dir": str(root), "augment": True, "num_workers": 1},
        }
    )
    data = build_data(recipe)
    ref = train(recipe, data, progress=False).model.state_dict()

    real_save = stages.save_train_state

    def save_then_die(state_dir: Path, state: dict) -> Path:
        real_save(state_dir, state)
        raise KeyboardInterrupt  # the "kill", right after the epoch-1 state is on disk

    monkeypatch.setattr(stages, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, data, progress=False, state_dir=tmp_path / "s")
    monkeypatch.setattr(stages, "save_train_state", real_save)
    resumed = train(recipe, data, progress=False, state_dir=tmp_path / "s", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for k, v in ref.items():
        assert torch.equal(v, resumed.model.state_dict()[k]), f"{k} differs after resume"


def test_every_shipped_recipe_pins_threads_and_validates() -> None:
    paths = sorted((ROOT / "recipes").rglob("*.yaml"))
    assert len(paths) >= 11
    for p in paths:
        r = load_recipe(p)
        assert r.threads is not None, f"{p.name} does not pin threads"
        assert "sparsify " in p.read_text().split("version:")[0], (
            f"{p.name}: header lacks the command"
        )


def _recipe_copy(tmp_path: Path, name: str, **data: object) -> Path:
    d = yaml.safe_load((ROOT / "recipes" / name).read_text())
    d["data"].update(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return path


def test_cli_fashion_mnist_convnet_recipe(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(ROOT / "recipes" / "fashion_mnist_convnet.yaml")]) == 0
    folder = idx_folder(tmp_path / "fashion", n_train=120, n_test=40)
    recipe = _recipe_copy(tmp_path, "fashion_mnist_convnet.yaml", train_subset=100, val_size=20)
    out = tmp_path / "run"
    args = [
        "train",
        str(recipe),
        "--out",
        str(out),
        "--data-dir",
        str(folder),
        "--epochs",
        "1",
        "-q",
    ]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["data"]["dataset"] == "fashion_mnist"
        and m["train_images"] == 80
        and m["val_images"] == 20
    )
    assert {"val_error", "test_error", "train_error"} <= m.keys() and m["threads"] == 1
    assert m["input_shape"] == [1, 28, 28] and m["task"] == "classification"
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["data"]["dataset"] == "fashion_mnist" and saved["data"]["dir"] == str(folder)
    assert load_checkpoint(out).recipe.data.dataset == "fashion_mnist"


def test_cli_sweep_reports_val_error(tmp_path: Path) -> None:
    folder = idx_folder(tmp_path / "k", n_train=60, n_test=20)
    recipe = tmp_path / "s.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                **SMALL,
                "epochs": 1,
                "data": {"dataset": "kmnist", "val_size": 10},
                "penalties": [{"kind": "l1_prox", "lam": [0.0, 1e-3]}],
            }
        )
    )
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--out", str(out), "--data-dir", str(folder), "-q"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 2 and all(0 <= r["val_error"] <= 1 for r in rows)
    assert "| lambda | train error | val error | test error |" in (out / "results.md").read_text()


def test_cli_resnet18_on_a_png_image_folder(tmp_path: Path) -> None:
    root = png_folder(tmp_path / "images", {"red": 12, "green": 12}, test_per_class=4)
    recipe = _recipe_copy(
        tmp_path, "image_folder_resnet18.yaml", image_size=[32, 32], num_workers=0
    )
    out = tmp_path / "run"
    args = ["train", str(recipe), "--out", str(out), "--data-dir", str(root), "--epochs", "1", "-q"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["input_shape"] == [3, 32, 32] and m["num_classes"] == 2
    assert m["data"]["classes"] == ["green", "red"] and m["data"]["augment"] is True
    assert m["train_images"] + m["val_images"] == 24 and m["test_images"] == 8
    ckpt = load_checkpoint(out)
    assert ckpt.recipe.model.name == "torchvision:resnet18"
    assert list(ckpt.input_shape) == [3, 32, 32]  # the dataset's shape, recorded: never guessed
    exported = tmp_path / "export"
    assert main(["export", str(out), "--format", "all", "--out", str(exported)]) == 0
    import numpy as np

    from sparsify.export.onnx import COMPACT_FILE, INPUT_NAME, ort_session

    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    logits = ort_session(exported / "onnx" / COMPACT_FILE).run(None, {INPUT_NAME: x})[0]
    assert logits.shape == (3, 2)
    assert main(["stats", str(out)]) == 0


def test_cli_image_folder_without_a_folder_is_one_line(tmp_path: Path, capsys) -> None:
    recipe = ROOT / "recipes" / "image_folder_resnet18.yaml"
    assert main(["train", str(recipe), "--out", str(tmp_path / "x"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "image_folder needs a folder" in err and len(err.splitlines()) == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
