"""Kill a training run with SIGKILL mid-way, resume it, and reach the uninterrupted weights."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import train_args

from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import load_checkpoint
from sparsify.pipeline.state import STATE_FILE, load_train_state

RECIPE = {
    "name": "resume",
    "seed": 1,
    "threads": 1,
    "device": "cpu",
    "model": {"name": "lenet300_100"},
    "data": {"train_subset": 3000, "test_subset": 200},
    # momentum, a cosine LR and a warm-up lambda: all their state must survive the kill
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "lr_schedule": "cosine"},
    "epochs": 8,
    "batch_size": 100,
    "penalties": [
        {
            "kind": "l1_prox",
            "lam": 1e-4,
            "schedule": {"kind": "linear_warmup", "length": 3, "unit": "epochs"},
        }
    ],
}


# RECIPE cut to 2 epochs (its warm-up too: a ramp past the train stage is refused)
SHORT = {
    **RECIPE,
    "epochs": 2,
    "penalties": [
        {
            **RECIPE["penalties"][0],
            "schedule": {"kind": "linear_warmup", "length": 2, "unit": "epochs"},
        }
    ],
}


def _cmd(recipe: Path, out: Path, mnist_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sparsify", *train_args(recipe, out, mnist_dir, *extra)]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(recipe, killed, mnist_dir), env=env)
    state_path = killed / STATE_FILE
    deadline = time.time() + 120
    epoch = 0
    while time.time() < deadline and proc.poll() is None:
        if state_path.is_file():
            state = load_train_state(killed)
            epoch = state["epoch"] if state else 0
            if epoch >= 2:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run must really have been killed mid-way"
    assert not (killed / "model.safetensors").exists() and 2 <= epoch < RECIPE["epochs"]

    assert subprocess.run(_cmd(recipe, killed, mnist_dir, "--resume"), env=env).returncode == 0
    ref = tmp_path / "ref"
    assert subprocess.run(_cmd(recipe, ref, mnist_dir), env=env).returncode == 0
    a, b = load_checkpoint(killed).state_dict, load_checkpoint(ref).state_dict
    for k in b:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert not (killed / STATE_FILE).exists(), (
        "the resume state is removed once the run is complete"
    )
    hist = json.loads((killed / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == list(range(1, RECIPE["epochs"] + 1))


def test_resume_refuses_other_recipe_and_damaged_state(
    tmp_path: Path, mnist_dir: Path, capsys
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**SHORT, "data": {"train_subset": 200, "test_subset": 100}}))
    out = tmp_path / "o"
    out.mkdir()
    from sparsify.pipeline.state import save_train_state

    save_train_state(out, {"recipe": {"name": "other"}, "epoch": 1})
    assert main(train_args(recipe, out, mnist_dir, "--resume")) == 2
    assert "different recipe" in capsys.readouterr().err
    (out / STATE_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SparsifyError, match="resume state is damaged"):
        load_train_state(out)


def _tiny_data():
    from sparsify.pipeline.data.mnist import MnistSplits

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    return MnistSplits(x[:48], y[:48], x[48:], y[48:], 0.0, 1.0)


TINY = {
    "name": "tiny",
    "seed": 0,
    "threads": 1,
    "device": "cpu",
    "model": {"name": "lenet300_100"},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "epochs": 2,
    "batch_size": 16,
    "penalties": [{"kind": "l1_prox", "lam": 1e-4}],
}


def _edit(state: dict, case: str) -> None:
    w = state["model"]["fc1.weight"]
    if case == "epoch-huge":
        state["epoch"] = 10**9
    elif case == "epoch-negative":
        state["epoch"] = -100000
    elif case == "epoch-bool":
        state["epoch"] = True
    elif case == "no-optimizer":
        del state["optimizer"]
    elif case == "no-recipe":
        del state["recipe"]
    elif case == "missing-tensor":
        del state["model"]["fc1.weight"]
    elif case == "wrong-shape":
        state["model"]["fc1.weight"] = w[:10]
    elif case == "float64":
        state["model"]["fc1.weight"] = w.double()
    elif case == "int32":
        state["model"]["fc1.weight"] = w.to(torch.int32)
    elif case == "history":
        state["history"] = []
    elif case == "penalties":
        state["penalties"] = [{"step": "x"}]
    elif case == "generator":
        state["generator"] = torch.zeros(3)
    elif case == "seconds":
        state["seconds"] = float("inf")
    elif case == "optimizer-groups":
        state["optimizer"] = {"state": {}, "param_groups": []}


EDITS = {
    "epoch-huge": "epoch 1000000000 is outside 0..2",
    "epoch-negative": "epoch -100000 is outside 0..2",
    "epoch-bool": "'epoch' is missing or not a int",
    "no-optimizer": "'optimizer' is missing",
    "no-recipe": "different recipe",
    "missing-tensor": "model tensor 'fc1.weight' is missing or unexpected",
    "wrong-shape": "expected torch.float32 (300, 784)",
    "float64": "fc1.weight' is torch.float64",
    "int32": "fc1.weight' is torch.int32",
    "history": "0 history entries for epoch 1",
    "penalties": "'penalties' must be 1 entries",
    "generator": "'generator' is not a random generator state",
    "seconds": "seconds inf is not a finite duration",
    "optimizer-groups": "does not fit this run",
}


@pytest.mark.parametrize("case", list(EDITS))
def test_an_edited_resume_state_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    from sparsify.pipeline.recipe import Recipe
    from sparsify.pipeline.stages import train
    from sparsify.pipeline.state import save_train_state

    recipe = Recipe.from_dict(TINY)
    train(recipe, _tiny_data(), progress=False, state_dir=tmp_path)  # leaves epoch 1's state
    state = load_train_state(tmp_path)
    assert state is not None and state["epoch"] == 1
    _edit(state, case)
    save_train_state(tmp_path, {k: v for k, v in state.items() if k != "version"})
    with pytest.raises(SparsifyError, match=re.escape(EDITS[case])) as info:
        train(recipe, _tiny_data(), progress=False, state_dir=tmp_path, resume=True)
    assert "\n" not in str(info.value)


def test_cli_resume_with_an_edited_epoch_publishes_nothing(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({**SHORT, "data": {"dir": str(mnist_dir), "train_subset": 200}})
    )
    from sparsify.pipeline.recipe import load_recipe
    from sparsify.pipeline.stages import train
    from sparsify.pipeline.state import save_train_state

    out = tmp_path / "o"
    train(load_recipe(recipe), _tiny_data(), progress=False, state_dir=out)
    state = load_train_state(out)
    state["epoch"] = 10**9
    save_train_state(out, {k: v for k, v in state.items() if k != "version"})
    proc = subprocess.run(_cmd(recipe, out, mnist_dir, "--resume"), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "outside 0..2" in proc.stderr
    assert not (out / "model.safetensors").exists() and (out / STATE_FILE).exists()
