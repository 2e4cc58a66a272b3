"""Resumable training state: everything a killed run needs to continue bit-for-bit.

Saved at epoch boundaries to ``<out>/resume.pt``, atomically (temp file + os.replace), so a
kill at any moment leaves the previous state or the new one. It holds only tensors, numbers,
strings, lists and dicts, and is read with ``torch.load(weights_only=True)``: no pickle code
runs when a state file is loaded.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from sparsify.errors import SparsifyError
from sparsify.fileio import atomic_write_bytes

STATE_FILE = "resume.pt"
STATE_VERSION = 1


def save_train_state(out_dir: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (plus a version) to ``out_dir/resume.pt`` atomically."""
    buf = io.BytesIO()
    torch.save({"version": STATE_VERSION, **state}, buf)
    return atomic_write_bytes(Path(out_dir) / STATE_FILE, buf.getvalue())


def load_train_state(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The state saved in ``out_dir``, or None when there is none.

    Raises:
        SparsifyError: the file is damaged, not a state file, or of another version.
    """
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle stream
        raise SparsifyError(
            f"{path}: resume state is damaged or unsafe ({type(exc).__name__}); delete it to start over."
        ) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise SparsifyError(
            f"{path}: not a sparsify resume state of version {STATE_VERSION}; delete it to start over."
        )
    return state


# key -> what it must hold (checked before anything is restored from a state file)
_KEYS: dict[str, tuple[type, ...]] = {
    "recipe": (dict,),
    "epoch": (int,),
    "model": (dict,),
    "optimizer": (dict,),
    "scheduler": (dict, type(None)),
    "penalties": (list,),
    "generator": (torch.Tensor,),
    "torch_rng": (torch.Tensor,),
    "history": (list,),
    "seconds": (int, float),
}


def check_train_state(
    path: str | os.PathLike[str],
    state: dict[str, Any],
    epochs: int,
    model_state: dict[str, torch.Tensor],
    penalties: int,
) -> None:
    """Refuse a resume state that does not fit the run about to continue from it.

    Checked: every key is present with its type; ``0 <= epoch <= epochs`` (the recipe's);
    ``history`` holds one entry per finished epoch; one penalty state per penalty, each
    ``{"step": int >= 0}``; the model's tensors have exactly the names, shapes and dtypes of
    ``model_state`` (no silent cast); the RNG states are uint8 tensors.

    Raises:
        SparsifyError: one line naming ``path``, the first problem and the fix.
    """

    def refuse(problem: str) -> SparsifyError:
        return SparsifyError(
            f"{path}: {problem}; the resume state is damaged or from another run, delete it "
            "to start over."
        )

    for key, types in _KEYS.items():
        value = state.get(key)
        if key not in state or not isinstance(value, types) or isinstance(value, bool):
            raise refuse(f"{key!r} is missing or not a {types[0].__name__}")
    epoch = state["epoch"]
    if not 0 <= epoch <= epochs:
        raise refuse(f"epoch {epoch} is outside 0..{epochs} (the recipe's epochs)")
    if not 0 <= state["seconds"] < float("inf"):
        raise refuse(f"seconds {state['seconds']!r} is not a finite duration")
    if len(state["history"]) != epoch:
        raise refuse(f"{len(state['history'])} history entries for epoch {epoch}")
    marks = state["penalties"]
    if len(marks) != penalties or not all(
        isinstance(m, dict)
        and isinstance(m.get("step"), int)
        and not isinstance(m.get("step"), bool)
        and m["step"] >= 0
        for m in marks
    ):
        raise refuse(f"'penalties' must be {penalties} entries of {{'step': int >= 0}}")
    saved = state["model"]
    if set(saved) != set(model_state):
        name = sorted(set(saved) ^ set(model_state))[0]
        raise refuse(f"model tensor {name!r} is missing or unexpected")
    for name, want in model_state.items():
        got = saved[name]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            what = (
                f"{got.dtype} {tuple(got.shape)}"
                if isinstance(got, torch.Tensor)
                else type(got).__name__
            )
            raise refuse(
                f"model tensor {name!r} is {what}, expected {want.dtype} {tuple(want.shape)}"
            )
    for key in ("generator", "torch_rng") + (
        ("worker_generator",) if "worker_generator" in state else ()
    ):
        t = state[key]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
            raise refuse(f"{key!r} is not a random generator state (a 1-D uint8 tensor)")


def clear_train_state(out_dir: str | os.PathLike[str]) -> None:
    """Remove the resume state once the run's final artifacts are written."""
    (Path(out_dir) / STATE_FILE).unlink(missing_ok=True)
