"""End to end on real MNIST, seconds long: train, stats, sweep through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sparsify.cli import main
from sparsify.pipeline.checkpoint import load_checkpoint

TINY = {
    "version": 1,
    "name": "tiny",
    "seed": 0,
    "model": {"name": "lenet300_100"},
    "data": {"train_subset": 300, "test_subset": 500},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "epochs": 6,
    "batch_size": 50,
    "penalties": [{"kind": "l1_prox", "lam": 5e-4}],
}


def _recipe(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def test_train_writes_checkpoint_and_metrics(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    out = tmp_path / "run"
    assert (
        main(
            ["train", str(_recipe(tmp_path)), "--out", str(out), "--data-dir", str(mnist_dir), "-q"]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    for key in (
        "train_error",
        "test_error",
        "zero_fraction",
        "layers",
        "seconds",
        "versions",
        "threads",
    ):
        assert key in m
    assert m["layers"]["fc1.weight"]["numel"] == 784 * 300
    assert m["zero_fraction"] > 0.3, "t=5e-4 per step for 36 steps zeroes many weights"
    assert m["layers"]["fc1.bias"]["zeros"] == 0, "biases are not penalised by default"
    assert m["test_error"] < 0.5, "six epochs on 300 images learn something"
    ck = load_checkpoint(out)
    assert ck.recipe.data.dir == str(mnist_dir), "the applied recipe (with overrides) is stored"
    zeros = sum(int((t == 0).sum()) for k, t in ck.state_dict.items())
    assert zeros == m["zeros"]
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json",
        "model.safetensors",
        "recipe.yaml",
    ]
    capsys.readouterr()
    assert main(["stats", str(out)]) == 0
    table = capsys.readouterr().out
    assert "fc1.weight" in table and "all parameters" in table


def test_sweep_writes_one_run_per_lambda_and_tables(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = _recipe(tmp_path, epochs=1, penalties=[{"kind": "l1_prox", "lam": [0.0, 5e-3]}])
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--out", str(out), "--data-dir", str(mnist_dir), "-q"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["lam"] for r in res["rows"]] == [0.0, 5e-3]
    assert res["rows"][0]["zero_fraction"] == 0 and res["rows"][1]["zero_fraction"] > 0.5
    md = (out / "results.md").read_text()
    assert "| lambda |" in md and "| 0.005 |" in md
    assert (out / "l1_prox_lam_0.005" / "model.safetensors").is_file()
    history = json.loads((out / "l1_prox_lam_0.005" / "metrics.json").read_text())["history"]
    assert res["rows"][1]["final_loss"] == history[-1]["loss"]
    assert res["rows"][1]["max_late_loss"] >= res["rows"][1]["final_loss"]
    assert "max loss, last 20% of epochs" in md


def test_late_loss_is_the_largest_epoch_loss_of_the_last_fifth() -> None:
    from sparsify.cli.sweep import late_loss

    losses = [2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 4.8, 0.2, 0.1]  # a spike at epoch 8 of 10
    history = [{"epoch": i + 1, "loss": v} for i, v in enumerate(losses)]
    assert late_loss(history) == (0.1, 0.2)  # the last 2 of 10 epochs: the spike is earlier
    assert late_loss(history, 0.3) == (0.1, 4.8)
    assert late_loss(history[:1]) == (2.0, 2.0)


def test_train_refuses_a_sweep_and_missing_data(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    recipe = _recipe(tmp_path, penalties=[{"kind": "l1_prox", "lam": [0.0, 1e-3]}])
    assert (
        main(["train", str(recipe), "--out", str(tmp_path / "o"), "--data-dir", str(mnist_dir)])
        == 2
    )
    assert "sparsify sweep" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(_recipe(tmp_path)),
                "--out",
                str(tmp_path / "o"),
                "--data-dir",
                str(tmp_path / "nope"),
            ]
        )
        == 2
    )
    assert "--data-dir" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["l1_subgradient", "l2_coupled", "weight_decay"])
def test_other_penalties_train_without_exact_zeros(
    tmp_path: Path, mnist_dir: Path, kind: str
) -> None:
    out = tmp_path / kind
    recipe = _recipe(tmp_path, epochs=1, penalties=[{"kind": kind, "lam": 1e-3}])
    assert main(["train", str(recipe), "--out", str(out), "--data-dir", str(mnist_dir), "-q"]) == 0
    assert json.loads((out / "metrics.json").read_text())["zero_fraction"] < 1e-3
