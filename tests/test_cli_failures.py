"""Every failure reaches a CLI user as one line and exit status 2; --debug shows the traceback."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
