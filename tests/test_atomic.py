"""Nothing partial: a failure in the middle of any writer leaves the old file or nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsify import fileio
from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import save_checkpoint
from sparsify.pipeline.data.idx import write_idx
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.state import save_train_state
from sparsify.pipeline.zoo import build_model


class Boom(OSError):
    pass


WRITERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    # name: (file that must stay intact, writer)
    "bytes": ("f.bin", lambda d: fileio.atomic_write_bytes(d / "f.bin", b"new" * 1000)),
    "json": ("f.json", lambda d: fileio.atomic_write_json(d / "f.json", {"new": 1})),
    "idx": ("f.gz", lambda d: write_idx(d / "f.gz", np.ones((3, 4), np.uint8))),
    "checkpoint": (
        "model.safetensors",
        lambda d: save_checkpoint(d, build_model("lenet5"), Recipe()),
    ),
    "train-state": ("resume.pt", lambda d: save_train_state(d, {"epoch": 3, "w": torch.ones(10)})),
}


@pytest.mark.parametrize("where", ["fsync", "replace"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_failure_mid_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, where: str
) -> None:
    target, writer = WRITERS[name]
    old = b"old contents"
    (tmp_path / target).write_bytes(old)
    before = set(os.listdir(tmp_path))

    def boom(*args, **kwargs):
        raise Boom("injected failure")

    monkeypatch.setattr(fileio.os, where, boom)
    with pytest.raises(Boom):
        writer(tmp_path)
    assert (tmp_path / target).read_bytes() == old, "the old file must survive"
    assert set(os.listdir(tmp_path)) == before, "no temporary file may be left behind"


@pytest.mark.parametrize("name", list(WRITERS))
def test_failure_mid_write_leaves_nothing_when_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    target, writer = WRITERS[name]
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (_ for _ in ()).throw(Boom("injected")))
    with pytest.raises(Boom):
        writer(tmp_path)
    assert not (tmp_path / target).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_directory_keeps_old_tree_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("old")
    with pytest.raises(Boom), fileio.atomic_directory(out) as tmp:
        (tmp / "a").write_text("new")
        raise Boom("half way")
    assert (out / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "out"
    ]
    with fileio.atomic_directory(out) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


def test_sigkill_during_a_large_write(tmp_path: Path) -> None:
    """A real process killed while writing 400 MB: the target keeps its old bytes."""
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    code = (
        "import sys; from sparsify.fileio import atomic_write_bytes; "
        "atomic_write_bytes(sys.argv[1], b'x' * (400 * 2**20))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"


def test_atomic_directory_swaps_in_one_step_where_the_os_can(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    if not fileio._exchange(a, b):
        pytest.skip("this filesystem has no renameat2(RENAME_EXCHANGE); two renames are used")
    assert (b / "x").read_text() == "a" and not (a / "x").exists()
    with fileio.atomic_directory(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert not list(tmp_path.glob(".out.*")), "no hidden leftovers"


def test_atomic_directory_never_replaces_a_folder_that_is_not_ours(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    (out / "2024").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")  # shares a name with our outputs, nothing more
    (out / "2024" / "img.png").write_bytes(b"\x89PNG")
    refused = pytest.raises(SparsifyError, match="not an output of this command")
    with refused, fileio.atomic_directory(out, is_ours=lambda p: False) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert (out / "2024" / "img.png").read_bytes() == b"\x89PNG"
    assert not list(tmp_path.glob(".photos.*"))
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(SparsifyError, match="not a folder"),
        fileio.atomic_directory(tmp_path / "file"),
    ):
        pass


def test_a_kill_between_the_two_renames_is_recovered_on_the_next_run(tmp_path: Path) -> None:
    # the state the fallback leaves if killed after `path -> .old/` and before `tmp -> path`
    stale = tmp_path / ".out.abc123.old"
    (stale / "out").mkdir(parents=True)
    (stale / "out" / "model.txt").write_text("old")
    (tmp_path / ".out.def456.tmp").mkdir()  # the unpublished new tree
    out = tmp_path / "out"
    with pytest.raises(Boom), fileio.atomic_directory(out):
        raise Boom
    assert (out / "model.txt").read_text() == "old", "the old output is back in place"
    assert not stale.exists()
