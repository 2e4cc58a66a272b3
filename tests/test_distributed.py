"""DDP with real torchrun processes on CPU (gloo): ranks agree bit for bit and match one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_args
from safetensors.torch import load_file

from sparsify.pipeline.data import load_mnist
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.stages import train

HERE = Path(__file__).resolve().parent
RECIPE = {
    "name": "ddp",
    "seed": 3,
    "threads": 1,
    "device": "cpu",
    "model": {"name": "lenet300_100"},
    "data": {"train_subset": 250, "test_subset": 200},  # 250 % 100: an uneven last batch too
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "epochs": 2,
    "batch_size": 100,
    "penalties": [{"kind": "l1_prox", "lam": 2e-3}],
}


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_ranks_bit_identical_and_match_single_process(tmp_path: Path, mnist_dir: Path) -> None:
    proc = _torchrun(
        str(HERE / "ddp_worker.py"), json.dumps(RECIPE), str(mnist_dir), str(tmp_path), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (
        load_file(str(tmp_path / "rank0.safetensors")),
        load_file(str(tmp_path / "rank1.safetensors")),
    )
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
    assert (r0["fc1.weight"] == 0).float().mean() > 0.2, "the prox step must have made zeros"
    assert json.loads((tmp_path / "rank0.json").read_text()) == json.loads(
        (tmp_path / "rank1.json").read_text()
    )

    recipe = Recipe.from_dict(RECIPE)
    torch.set_num_threads(1)
    single = train(recipe, load_mnist(mnist_dir, 250, 200), progress=False).model.state_dict()
    for k in r0:
        torch.testing.assert_close(r0[k], single[k], rtol=0, atol=1e-5, msg=k)
        agree = ((r0[k] == 0) == (single[k] == 0)).float().mean().item()
        assert agree > 0.999, f"{k}: zero patterns agree on only {agree:.4%}"


def test_cli_under_torchrun_writes_once(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = tmp_path / "r.json"  # JSON is YAML
    recipe.write_text(json.dumps({**RECIPE, "epochs": 1}))
    out = tmp_path / "out"
    proc = _torchrun("-m", "sparsify", *train_args(recipe, out, mnist_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json",
        "model.safetensors",
        "recipe.yaml",
    ]
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    assert proc.stdout.count("test error") == 1, "only rank 0 reports"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_under_torchrun_without_a_gpu_is_one_line(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({**RECIPE, "device": "cuda", "epochs": 1}))
    out = tmp_path / "out"
    proc = _torchrun("-m", "sparsify", *train_args(recipe, out, mnist_dir), cwd=tmp_path)
    assert proc.returncode != 0
    assert "under torchrun but no GPU is visible" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists() or not (out / "model.safetensors").exists()
