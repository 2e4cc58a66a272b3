"""Checks on output paths shared by every command that writes (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

from sparsify.errors import SparsifyError


def check_out_dir(out: Path) -> Path:
    """Refuse, before any training, an ``--out`` that exists and is not a folder, or one
    that cannot be created or written to (its nearest existing parent is a file, or not
    writable)."""
    if out.exists() and not out.is_dir():
        raise SparsifyError(f"--out {out} is a file; choose a folder (it is created if missing).")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SparsifyError(
            f"--out {out} cannot be created: {parent} is a file; choose another folder."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SparsifyError(
            f"--out {out} is not writable ({parent} is read-only for you); choose a folder "
            "you can write to."
        )
    return out
