"""One error type for everything a user can get wrong, and one message template.

Every message names the problem and the fix on one line, in scikit-learn's style:
"The 'lam' parameter of L1Prox must be a float in the range [0, inf). Got -0.1 instead."
The CLI prints ``str(err)`` and exits with status 2; no traceback reaches the user.
"""

from __future__ import annotations

import math
from typing import Any


class SparsifyError(ValueError):
    """A problem with user input (recipe, file, argument). Its message is one line."""


def check_nonnegative(owner: str, name: str, value: Any) -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise SparsifyError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SparsifyError(
            f"The '{name}' parameter of {owner} must be a float in the range [0, inf). "
            f"Got {value!r} instead."
        )
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise SparsifyError(
            f"The '{name}' parameter of {owner} must be a float in the range [0, inf). "
            f"Got {value!r} instead."
        )
    return value


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise SparsifyError."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise SparsifyError(
            f"The '{name}' parameter of {owner} must be one of {options}. Got {value!r} instead."
        )
    return value


MAX_INPUT_DIMS, MAX_INPUT_DIM = 8, 1 << 20


def check_input_shape(where: str, shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of 1-8 ints in [1, 2**20]: one model input without the batch
    dimension (``(3, 64, 64)``). Raise SparsifyError naming ``where`` otherwise."""
    ok = (
        isinstance(shape, (list, tuple))
        and 1 <= len(shape) <= MAX_INPUT_DIMS
        and all(
            isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_INPUT_DIM
            for d in shape
        )
    )
    if not ok:
        raise SparsifyError(
            f"{where}: input_shape must be 1-{MAX_INPUT_DIMS} positive integers without the "
            f"batch dimension, e.g. [3, 64, 64]; got {shape!r}."
        )
    return tuple(int(d) for d in shape)


def one_line(text: str) -> str:
    """``text`` safe to print as one terminal line: newlines, escape sequences and other
    control characters shown as Python escapes (a file name or key may hold any of them)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


_ERRNO_FIX = {
    "ENOSPC": "free some disk space and run again",
    "EDQUOT": "free some disk space and run again",
    "EFBIG": "the file-size limit was reached (ulimit -f); raise it or write elsewhere",
    "EACCES": "choose a folder you can write to, or fix its permissions",
    "EPERM": "choose a folder you can write to, or fix its permissions",
    "EROFS": "the filesystem is read-only; choose another --out",
    "ENOENT": "check the path",
    "ENOTDIR": "a part of the path is a file, not a folder; check the path",
    "EISDIR": "the path is a folder; give a file",
}


def describe_failure(exc: BaseException) -> str:
    """One line for an error that is not a :class:`SparsifyError`: what failed, on which
    file, and the fix (the CLI prints it and exits with status 2)."""
    import errno

    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        where = f" ({exc.filename})" if exc.filename else ""
        what = exc.strerror or str(exc) or type(exc).__name__
        fix = _ERRNO_FIX.get(name, "check the file and the disk")
        return one_line(f"{what}{where}; {fix}; nothing half-written was left in place.")
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller batch, model or input, or a machine with more memory."
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read; check the file (rerun with --debug for where)."
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return one_line(
        f"unexpected {type(exc).__name__}: {first}; rerun with --debug for the traceback "
        "and report it if the input was valid."
    )
