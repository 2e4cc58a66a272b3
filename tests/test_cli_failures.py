"""Every failure reaches a CLI user as one line and exit status 2; --debug shows the traceback."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_args

from sparsify.cli import main
from sparsify.errors import describe_failure
from sparsify.pipeline.checkpoint import checkpoint_from_module


def _checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)
    )
    checkpoint_from_module(tmp_path / "ckpt", model, input_shape=(1, 8, 8))
    return tmp_path / "ckpt"


def test_file_size_limit_during_export_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "out"

    def limit() -> None:  # ~64 KB: the bundle (>128 KB of weights) cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsify",
            "export",
            str(ckpt),
            "--no-graph",
            "--codec",
            "none",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "ulimit -f" in err
    assert not out.exists() and not list(tmp_path.glob(".out.*")), "no partial output"


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import sparsify.cli.stats as stats

    def boom(args):
        raise RuntimeError("library said no\nsecond line \x1b[31mred")

    monkeypatch.setattr(stats, "run", boom)
    ckpt = _checkpoint(tmp_path)
    assert main(["stats", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err
    assert "unexpected RuntimeError: library said no; rerun with --debug" in err
    with pytest.raises(RuntimeError, match="library said no"):
        main(["--debug", "stats", str(ckpt)])


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (OSError(28, "No space left on device", "/x/arrays.bin"), "free some disk space"),
        (OSError(13, "Permission denied", "/ro/out"), "choose a folder you can write to"),
        (MemoryError(), "out of memory"),
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    ],
)
def test_failures_are_described_with_the_file_and_the_fix(exc: BaseException, needle: str) -> None:
    line = describe_failure(exc)
    assert needle in line and "\n" not in line
    if isinstance(exc, OSError):
        assert exc.filename in line


def test_train_refuses_an_out_that_is_a_file_before_training(tmp_path: Path, capsys) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("mine")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: lenet300_100}\nepochs: 1\n")
    for command in ("train", "sweep"):
        assert main([command, str(recipe), "--out", str(target), "-q"]) == 2
        err = capsys.readouterr().err
        assert f"--out {target} is a file" in err and err.count("\n") == 1
    assert target.read_text() == "mine"


# ----------------------------------------------------------------------------- CLI subprocesses


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m sparsify ARGS`` in a child process (this worktree's code)."""
    import os

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sparsify", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr, proc.stdout)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


SMALL = "model: {name: lenet300_100}\ndata: {train_subset: 200, test_subset: 100}\nepochs: 1\nthreads: 1\n"


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_a_recipe_output_dir_outside_the_current_folder_is_refused(
    tmp_path: Path, mnist_dir: Path, where: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "resume.pt").write_bytes(b"the user's file")
    (victim / "model.safetensors").write_bytes(b"the user's model")
    work = tmp_path / "work"
    work.mkdir()
    target = {"parent": "../victim", "absolute": str(victim), "symlink": "link/run"}[where]
    (work / "link").symlink_to(victim)
    recipe = work / "r.yaml"
    recipe.write_text(SMALL + f"output: {{dir: {target!r}}}\n")
    before = _files(victim)
    for command in ("train", "sweep"):
        proc = _cli(command, str(recipe), "--data-dir", str(mnist_dir), "-q", cwd=work)
        err = _one_line_exit_2(proc)
        assert "output.dir" in err and "--out" in err, err
    assert _files(victim) == before and not (victim / "run").exists()


def test_a_recipe_output_dir_under_the_current_folder_is_used(
    tmp_path: Path, mnist_dir: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL + "output: {dir: runs/mine}\n")
    proc = _cli("train", str(recipe), "--data-dir", str(mnist_dir), "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "mine" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["resume.pt", "model.safetensors"])
def test_train_never_deletes_or_overwrites_a_file_it_did_not_write(
    tmp_path: Path, mnist_dir: Path, name: str
) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    (out / name).write_bytes(b"not sparsify's")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL)
    err = _one_line_exit_2(_cli(*train_args(recipe, out, mnist_dir)))
    assert str(out / name) in err, err
    assert _files(out) == {name: b"not sparsify's"}


def test_a_sweep_leaves_a_resume_state_it_did_not_write(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL)
    out = tmp_path / "sweep"
    (out / "none_lam_0").mkdir(parents=True)
    (out / "none_lam_0" / "resume.pt").write_bytes(b"kept")
    proc = _cli("sweep", str(recipe), "--out", str(out), "--data-dir", str(mnist_dir), "-q")
    assert proc.returncode == 0, proc.stderr
    assert (out / "none_lam_0" / "resume.pt").read_bytes() == b"kept"


def _zoo_checkpoint(tmp_path: Path) -> Path:
    from sparsify.pipeline.zoo import build_model

    torch.manual_seed(0)
    out = tmp_path / "zoo"
    checkpoint_from_module(out, build_model("lenet300_100"), (1, 28, 28), "lenet300_100")
    return out


@pytest.mark.parametrize(
    "command", ["train", "sweep", "shrink", "export", "footprint", "bench", "report"]
)
def test_an_out_that_cannot_be_created_is_one_line_for_every_command(
    tmp_path: Path, command: str
) -> None:
    """``--out`` under a regular file fails for root too (a chmod 0o500 folder does not)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "out"
    ckpt = _zoo_checkpoint(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL)
    # train/sweep must refuse before loading any data: this data folder does not exist
    args = {
        "train": ["train", str(recipe), "--data-dir", str(tmp_path / "no_data"), "-q"],
        "sweep": ["sweep", str(recipe), "--data-dir", str(tmp_path / "no_data"), "-q"],
        "shrink": ["shrink", str(ckpt)],
        "export": ["export", str(ckpt), "--no-graph"],
        "footprint": ["footprint", str(ckpt)],
        "bench": ["bench", "--linear", "8x8", "--quick", "--no-rss"],
        "report": ["report", str(ckpt)],
    }[command]
    before = _files(tmp_path)
    err = _one_line_exit_2(_cli(*args, "--out", str(out)))
    assert str(blocker) in err, err
    assert _files(tmp_path) == before


def _unwritable_for_root() -> Path | None:
    """A folder even root cannot create entries in (sysfs), or None where there is none."""
    probe = Path("/sys/kernel/sparsify-probe")
    try:
        probe.mkdir()
    except OSError:
        return probe.parent
    probe.rmdir()
    return None


@pytest.mark.parametrize("command", ["train", "shrink", "export", "footprint", "bench", "report"])
def test_an_out_in_a_read_only_folder_is_one_line(tmp_path: Path, command: str) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # chmod does not stop root: use a folder the kernel refuses
        ro = _unwritable_for_root()  # type: ignore[assignment]
        if ro is None:
            pytest.skip("root here, and no folder refuses root's writes")
    ckpt = _zoo_checkpoint(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL)
    args = {
        "train": ["train", str(recipe), "--data-dir", str(tmp_path / "no_data"), "-q"],
        "shrink": ["shrink", str(ckpt)],
        "export": ["export", str(ckpt), "--no-graph"],
        "footprint": ["footprint", str(ckpt)],
        "bench": ["bench", "--linear", "8x8", "--quick", "--no-rss"],
        "report": ["report", str(ckpt)],
    }[command]
    before = sorted(p.name for p in ro.iterdir())
    if os.geteuid() != 0:
        ro.chmod(0o500)
    try:
        err = _one_line_exit_2(_cli(*args, "--out", str(ro / "out")))
    finally:
        if os.geteuid() != 0:
            ro.chmod(0o700)
    assert str(ro) in err and sorted(p.name for p in ro.iterdir()) == before, err


@pytest.mark.parametrize("shape", ["0x0", "-5x3", "3x-1", "99999999x99999999"])
def test_bench_refuses_an_impossible_linear_layer(tmp_path: Path, shape: str) -> None:
    out = tmp_path / "bench"
    err = _one_line_exit_2(_cli("bench", f"--linear={shape}", "--quick", "--out", str(out)))
    assert f"--linear {shape}" in err and not out.exists(), err


@pytest.mark.parametrize(
    "text", ['{"recipe": {}}', "[1, 2]", '{"rows": []}', '{"rows": [{"lam": 1}]}', "garbage"]
)
def test_report_on_a_results_json_sparsify_did_not_write_is_one_line(
    tmp_path: Path, text: str
) -> None:
    (tmp_path / "results.json").write_text(text)
    err = _one_line_exit_2(_cli("report", str(tmp_path)))
    assert str(tmp_path / "results.json") in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_validate_names_a_utf16_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes("model: {name: lenet300_100}\n".encode("utf-16"))
    proc = _cli("validate", str(recipe))  # validate lists problems on stdout, one per line
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    assert str(recipe) in proc.stdout and "not UTF-8" in proc.stdout, proc.stdout


def test_an_lr_beyond_float32_is_refused_before_training(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL + "optimizer: {lr: 1.0e308}\n")
    out = tmp_path / "out"
    err = _one_line_exit_2(_cli(*train_args(recipe, out, mnist_dir)))
    assert "'optimizer.lr' must fit float32" in err and not out.exists(), err


def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_writes_nothing(
    tmp_path: Path, mnist_dir: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL.replace("epochs: 1", "epochs: 3") + "optimizer: {lr: 1.0e30}\n")
    out = tmp_path / "out"
    err = _one_line_exit_2(_cli(*train_args(recipe, out, mnist_dir)))
    assert "training diverged at epoch 1 step " in err and "lower optimizer.lr" in err, err
    assert not out.exists() or not (out / "model.safetensors").exists()


def test_a_dataset_without_training_images_is_one_line_before_training(tmp_path: Path) -> None:
    import numpy as np

    from sparsify.pipeline.data import write_idx

    data = tmp_path / "data"
    for name, shape in (
        ("train-images-idx3-ubyte.gz", (0, 28, 28)),
        ("train-labels-idx1-ubyte.gz", (0,)),
        ("t10k-images-idx3-ubyte.gz", (4, 28, 28)),
        ("t10k-labels-idx1-ubyte.gz", (4,)),
    ):
        write_idx(data / name, np.zeros(shape, np.uint8))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: lenet300_100}\nepochs: 1\nthreads: 1\n")
    out = tmp_path / "out"
    err = _one_line_exit_2(_cli(*train_args(recipe, out, data)))
    assert "has no training images" in err and str(data) in err and not out.exists(), err


def test_train_refuses_an_empty_in_memory_dataset() -> None:
    from sparsify.errors import SparsifyError
    from sparsify.pipeline.data.mnist import MnistSplits
    from sparsify.pipeline.recipe import Recipe
    from sparsify.pipeline.stages import train

    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    recipe = Recipe.from_dict({"model": {"name": "lenet300_100"}, "epochs": 1, "threads": 1})
    with pytest.raises(SparsifyError, match="has no training images"):
        train(recipe, MnistSplits(x[:0], y[:0], x, y, 0.0, 1.0), progress=False)
