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
from typing import Any, BinaryIO

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


# --------------------------------------------------------------------------- untrusted reading


def open_regular_file(path: str | os.PathLike[str], what: str = "file") -> tuple[BinaryIO, int]:
    """(binary file object, size) of ``path``, opened only if it is a regular file.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on that descriptor
    before one byte is read, so a FIFO, socket, device or folder put where a file should be
    is refused at once (a plain ``open`` of a FIFO blocks forever), and a file swapped
    between a ``stat`` and the read cannot slip through. Symlinks are followed: the caller
    checks where a path resolves. The caller closes the file.

    Raises:
        SparsifyError: ``"<path>: cannot read the <what> ..."`` for a missing or unreadable
            path, or anything that is not a regular file.
    """
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise SparsifyError(f"{path}: cannot read the {what} ({exc.strerror or exc}).") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(st.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a device"
            )
            raise SparsifyError(
                f"{path}: cannot read the {what}: it is {kind}, not a regular file (give the "
                "file itself)."
            )
        return os.fdopen(fd, "rb"), int(st.st_size)
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path`` if it is a regular file (:func:`open_regular_file`) of at most
    ``max_bytes``, checked before reading; memory is the file's size, once.

    Raises:
        SparsifyError: as :func:`open_regular_file`, or a file larger than ``max_bytes``.
    """
    fh, size = open_regular_file(path, what)
    with fh:
        if size > max_bytes:
            raise SparsifyError(
                f"{path}: the {what} is {size} bytes, over the {max_bytes} this reader "
                "accepts; it is not the file sparsify wrote."
            )
        # buffered read(n) fills one n-byte result (a raw read stops at 2 GiB)
        data = fh.read(min(size, max_bytes) + 1)
    if len(data) > max_bytes:  # grew after the fstat
        raise SparsifyError(f"{path}: the {what} grew while being read; refusing it.")
    return data


_JSON_STRING = None  # compiled on first use


def loads_json_bounded(
    text: str | bytes,
    where: str,
    *,
    fix: str,
    max_depth: int = 64,
    max_int_digits: int = 30,
) -> Any:
    """Parse untrusted JSON with bounds, every failure one line ``"<where>: ...; <fix>"``.

    Refused before or while parsing: text that is not UTF-8 or not JSON, nesting deeper than
    ``max_depth`` (counted on the brackets outside strings before ``json`` recurses, so
    10,000-deep input is no RecursionError), integers of more than ``max_int_digits`` digits
    (5,000-digit integers cost quadratic time and hit Python's int limit), and a key that
    appears twice in one object (``json`` would keep the last silently). The size bound is
    the caller's (:func:`read_regular_file`).

    Raises:
        SparsifyError: naming ``where`` and ending with ``fix``.
    """
    import re

    import numpy as np

    global _JSON_STRING
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SparsifyError(
                f"{where}: not valid JSON (not UTF-8: {exc.reason}); {fix}"
            ) from None
    if _JSON_STRING is None:
        _JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
    skeleton = _JSON_STRING.sub("", text).encode("utf-8", "replace")
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    step = np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
    step -= np.isin(codes, (ord("]"), ord("}")))
    depth = int(np.cumsum(step).max()) if step.size else 0
    if depth > max_depth:
        raise SparsifyError(
            f"{where}: JSON nested {depth} levels deep, over the limit of {max_depth}; {fix}"
        )

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > max_int_digits:
            raise SparsifyError(
                f"{where}: an integer of {len(digits.lstrip('-'))} digits, over the limit of "
                f"{max_int_digits}; {fix}"
            )
        return int(digits)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise SparsifyError(f"{where}: key {key!r} appears twice in one JSON object; {fix}")
            out[key] = value
        return out

    try:
        return json.loads(text, parse_int=parse_int, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise SparsifyError(f"{where}: not valid JSON ({exc}); {fix}") from None
    except RecursionError:  # the depth bound makes this unreachable; kept as a backstop
        raise SparsifyError(f"{where}: JSON nested too deeply; {fix}") from None
