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
