"""Checks on output paths shared by every command that writes (torch-free)."""

from __future__ import annotations

import os
import tempfile
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
    try:  # a real write: os.access says yes to root even where the kernel says no
        os.rmdir(tempfile.mkdtemp(prefix=".sparsify-probe-", dir=parent))
    except OSError as exc:
        raise SparsifyError(
            f"--out {out} is not writable ({parent}: {exc.strerror}); choose a folder you can "
            "write to."
        ) from None
    return out
