"""Which tensors a penalty acts on: the built-in rule, name patterns, and per-pattern lambdas.

Default (``scope="prunable"``): the ``weight`` of every Linear and Conv layer, the tensors
that sparse storage and sparse kernels can exploit. ``scope="all"`` takes every parameter
(biases included), as the lecture's snippet does. ``include``/``exclude`` are regular
expressions searched in the parameter's fully qualified name (``"features.0.weight"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sparsify.errors import SparsifyError

FilterFn = Callable[[nn.Module, str], bool]
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_prunable(module: nn.Module, fqn: str) -> bool:
    """Built-in rule: Linear and Conv layers (their ``weight`` is penalised)."""
    return isinstance(module, PRUNABLE_TYPES)


@dataclass(frozen=True)
class Selected:
    """A parameter chosen for a penalty, with the lambda that applies to it."""

    name: str
    param: nn.Parameter
    lam: float


def _compile(patterns: Sequence[str], key: str) -> list[re.Pattern[str]]:
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as exc:
            raise SparsifyError(
                f"{key} pattern {p!r} is not a valid regular expression ({exc}); fix it."
            ) from None
    return compiled


def select_parameters(
    model: nn.Module,
    lam: float,
    scope: str = "prunable",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    groups: Sequence[tuple[str, float]] = (),
    filter_fn: FilterFn | None = None,
) -> tuple[list[Selected], list[tuple[str, int]]]:
    """Split ``model``'s parameters into (selected with their lambda, skipped as (name, numel)).

    A parameter is selected when it is in ``scope`` (or passes ``filter_fn`` for its module),
    matches some ``include`` pattern (if any are given) and no ``exclude`` pattern. Its lambda
    is that of the first ``groups`` entry ``(pattern, lam)`` whose pattern it matches, else
    ``lam``. Parameters with ``requires_grad=False`` are skipped.
    """
    if scope not in ("prunable", "all"):
        raise SparsifyError(
            f"The 'scope' parameter must be 'prunable' or 'all'. Got {scope!r} instead."
        )
    inc, exc = _compile(include, "include"), _compile(exclude, "exclude")
    grp = [
        (rx, g_lam) for rx, (_, g_lam) in zip(_compile([p for p, _ in groups], "groups"), groups)
    ]
    rule = filter_fn or is_prunable
    in_scope: set[int] = set()
    for mod_name, module in model.named_modules():
        if scope == "all" or rule(module, mod_name):
            for p_name, p in module.named_parameters(recurse=False):
                if scope == "all" or p_name == "weight":
                    in_scope.add(id(p))
    selected: list[Selected] = []
    skipped: list[tuple[str, int]] = []
    for name, p in model.named_parameters():
        chosen = (
            id(p) in in_scope
            and p.requires_grad
            and (not inc or any(rx.search(name) for rx in inc))
            and not any(rx.search(name) for rx in exc)
        )
        if not chosen:
            skipped.append((name, p.numel()))
            continue
        p_lam = next((g_lam for rx, g_lam in grp if rx.search(name)), lam)
        selected.append(Selected(name, p, p_lam))
    return selected, skipped


def select_held(
    who: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scope: str = "prunable",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_fn: FilterFn | None = None,
) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, int]]]:
    """(selected ``(name, param)``, skipped) for a masking hook named ``who``; refuses in one
    line an empty selection or a selected parameter that ``optimizer`` does not hold."""
    selected, skipped = select_parameters(
        model, 1.0, scope=scope, include=include, exclude=exclude, filter_fn=filter_fn
    )
    if not selected:
        raise SparsifyError(
            f"{who} selects no parameter of {type(model).__name__}; check scope/include/exclude."
        )
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    missing = [s.name for s in selected if id(s.param) not in held]
    if missing:
        raise SparsifyError(
            f"{who}: the optimizer does not hold {', '.join(missing)}; pass those "
            "parameters to it or exclude them."
        )
    return [(s.name, s.param) for s in selected], skipped
