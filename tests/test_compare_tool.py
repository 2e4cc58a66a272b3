"""tools/compare_methods.py as a user runs it: a run killed midway continues, and the
summary keeps every method's rows whichever recipes one call ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "compare_methods.py"


def _tiny_recipe(tmp_path: Path, epochs: int) -> Path:
    """lenet300_gmp_t95 on 300 MNIST images: a few steps per epoch."""
    d = yaml.safe_load((ROOT / "recipes" / "compare" / "lenet300_gmp_t95.yaml").read_text())
    d["name"] = "tiny_gmp_t95"
    d["data"].update(train_subset=300, val_size=100, test_subset=100)
    d["epochs"] = epochs
    d["sparsity"].update(start=0, end=1)
    d["stages"][1]["epochs"] = 1
    path = tmp_path / "tiny_gmp_t95.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def _tool(*args: str, **kw: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(TOOL), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches the train child
        **kw,
    )


def test_a_killed_run_continues_and_the_summary_keeps_other_rows(
    tmp_path: Path, mnist_dir: Path
) -> None:
    recipe, out = _tiny_recipe(tmp_path, epochs=30), tmp_path / "compare"
    run = out / "tiny_gmp_t95_seed0"
    args = ("--recipes", str(recipe), "--seeds", "0", "--data-dir", str(mnist_dir))
    proc = _tool(*args, "--out", str(out))
    deadline = time.monotonic() + 240
    while not (run / "resume.pt").is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no resume.pt within 240 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the tool and its train process, mid-run
    proc.wait()
    assert (run / "resume.pt").is_file() and not (run / "metrics.json").exists()

    # a finished run of a shipped recipe, which this call does not name
    other = out / "lenet300_gmp_t95_seed0"
    other.mkdir()
    (other / "metrics.json").write_text(
        json.dumps({"sparsity": {"reached": 0.95}, "val_error": 0.02, "test_error": 0.018})
    )
    proc = _tool(*args, "--out", str(out))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["sparsity"]["exact"] and m["sparsity"]["zeros"] == round(0.95 * 266_200)
    rows = {r["recipe"]: r for r in json.loads((out / "summary.json").read_text())}
    assert set(rows) == {"lenet300_gmp_t95", "tiny_gmp_t95"}
    assert rows["lenet300_gmp_t95"]["test_error"][0] == 0.018


def test_paired_gap_pairs_runs_by_seed_across_folders(tmp_path: Path) -> None:
    def run(folder: str, name: str, seed: int, val: float, test: float) -> None:
        d = tmp_path / folder / f"{name}_seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"val_error": val, "test_error": test}))

    run("a", "vd", 0, 0.020, 0.017)
    run("a", "gmp", 0, 0.022, 0.020)
    run("b", "vd", 3, 0.018, 0.018)
    run("b", "gmp", 3, 0.021, 0.021)
    run("b", "gmp", 4, 0.021, 0.021)  # no vd run of seed 4: left out, and said
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tool = [sys.executable, str(ROOT / "tools" / "paired_gap.py"), "vd", "gmp"]
    dirs = ["--dirs", str(tmp_path / "a"), str(tmp_path / "b")]
    out = tmp_path / "paired.json"
    proc = subprocess.run(
        [*tool, *dirs, "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["seeds"] == [0, 3] and res["unpaired"] == [4]
    assert abs(res["gap_test"]["mean"] - 0.3) < 1e-9  # (0.3 + 0.3) / 2 points
    assert abs(res["gap_val"]["mean"] - 0.25) < 1e-9 and abs(res["gap_val"]["sd"] - 0.0707) < 1e-4
    assert "left out (one run only): seeds [4]" in proc.stdout

    run("b", "vd", 0, 0.020, 0.017)  # seed 0 twice: refused, nothing written
    out.unlink()
    proc = subprocess.run(
        [*tool, *dirs, "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "vd seed 0 is in two folders" in proc.stderr
    assert not out.exists()

    (tmp_path / "b" / "vd_seed3" / "metrics.json").write_text(json.dumps({"test_error": 0.02}))
    dirs = ["--dirs", str(tmp_path / "b")]
    proc = subprocess.run([*tool, *dirs], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "has no val_error" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no traceback

    proc = subprocess.run(
        [*tool, "--dirs", str(tmp_path / "nope")], env=env, capture_output=True, text=True
    )
    assert (
        proc.returncode == 2
        and proc.stderr
        == f"paired_gap.py: error: --dirs: no such folder {tmp_path / 'nope'}; pass the --out of compare_methods.py runs.\n"
    )
