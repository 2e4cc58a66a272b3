"""``sparsify sweep --seeds``: every lambda per seed, mean and spread; no run overwrites another."""

from __future__ import annotations

import json
from pathlib import Path

from sparsify.cli import main

RECIPE = """\
model: {name: lenet300_100}
data: {train_subset: 200, test_subset: 200}
threads: 1
epochs: 1
penalties:
  - kind: l1_prox
    lam: [0.0, 1.0e-4, 1.0000001e-4]
"""


def test_seeds_and_lambdas_that_print_alike_get_their_own_runs(
    tmp_path: Path, mnist_dir: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "sweep"
    argv = ["sweep", str(recipe), "--out", str(out), "--data-dir", str(mnist_dir), "-q"]
    assert main([*argv, "--seeds", "0", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = {r["run"] for r in results["rows"]}
    assert len(runs) == 6 and all((out / r / "model.safetensors").is_file() for r in runs)
    assert {"l1_prox_lam_0.0001_seed1", "l1_prox_lam_0.00010000001_seed1"} <= runs
    assert results["seeds"] == [0, 1]
    by_seed = {
        s: [r["test_error"] for r in results["rows"] if r["seed"] == s and r["lam"] == 0.0]
        for s in (0, 1)
    }
    assert by_seed[0] != by_seed[1]  # the seed really changed the run
    text = (out / "results.md").read_text()
    mean = 100 * (by_seed[0][0] + by_seed[1][0]) / 2
    assert "| 0 | 0,1 | " in text and f"{mean:.2f} ± " in text
    assert "| 0.00010000001 |" in text and "| 0.0001 |" in text
    assert "seed: 1" in (out / "l1_prox_lam_0.0_seed1" / "recipe.yaml").read_text()
