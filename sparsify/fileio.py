"""Atomic file writing: a reader sees the old file or the new one, never a torn one.

Contract: data goes to a temporary file in the destination's directory, is flushed and
fsync'ed, then ``os.replace`` moves it into place (atomic on POSIX within a filesystem).
Directories are published the same way: built under a temporary name, then renamed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sparsify.errors import SparsifyError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the call does not exist or the filesystem refuses it; the caller then
    falls back to two renames (with :func:`_restore_stale` to recover from a kill between them).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _restore_stale(path: Path) -> None:
    """Put back an old ``path`` left in ``.<name>.*.old/`` by a kill between two renames."""
    if path.exists() or path.is_symlink():
        return
    for old in sorted(path.parent.glob(f".{path.name}.*.old")):
        if (old / path.name).exists():
            os.replace(old / path.name, path)
            shutil.rmtree(old, ignore_errors=True)
            return


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str],
    overwrite: bool = True,
    is_ours: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    On an exception the temporary directory is removed and ``path`` is left as it was.
    An existing ``path`` is replaced when ``overwrite`` is true and, if ``is_ours`` is given,
    only when ``is_ours(path)`` says it is an output this tool wrote (a user's folder that
    merely shares the name is never deleted). The swap is one atomic step where the OS has
    ``renameat2(RENAME_EXCHANGE)`` (Linux); elsewhere two renames, and an old tree left
    aside by a kill between them is put back on the next call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _restore_stale(path)
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not path.is_dir():
            raise SparsifyError(f"{path} exists and is not a folder; choose another --out.")
        if not overwrite:
            raise SparsifyError(f"{path} exists; choose another --out or remove it first.")
        if is_ours is not None and not is_ours(path):
            raise SparsifyError(
                f"{path} exists and is not an output of this command; choose another --out "
                "(nothing was deleted)."
            )
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if _exchange(tmp, path):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old tree
                return
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
