"""Kill a training run with SIGKILL mid-way, resume it, and reach the uninterrupted weights."""

from __future__ import annotations

import json
import os
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
    recipe.write_text(
        yaml.safe_dump({**RECIPE, "epochs": 2, "data": {"train_subset": 200, "test_subset": 100}})
    )
    out = tmp_path / "o"
    out.mkdir()
    from sparsify.pipeline.state import save_train_state

    save_train_state(out, {"recipe": {"name": "other"}, "epoch": 1})
    assert main(train_args(recipe, out, mnist_dir, "--resume")) == 2
    assert "different recipe" in capsys.readouterr().err
    (out / STATE_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SparsifyError, match="resume state is damaged"):
        load_train_state(out)
