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


def clear_train_state(out_dir: str | os.PathLike[str]) -> None:
    """Remove the resume state once the run's final artifacts are written."""
    (Path(out_dir) / STATE_FILE).unlink(missing_ok=True)
