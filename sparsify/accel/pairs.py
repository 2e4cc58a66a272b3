"""Which module's output goes to exactly one other module: the pairs a fusion may merge.

A pair ``(a, b)`` means: ``b``'s only input is ``a``'s output (with ``through=True``,
possibly through ``nn.Identity`` modules in between: the batch norms
:mod:`sparsify.accel.fold` left behind) and nothing else reads that output, so ``b(a(x))`` may be computed by ``a`` alone and ``b``
replaced by ``nn.Identity`` without changing the model. Found

- inside a plain ``nn.Sequential`` (its own ``forward``), adjacent children, by construction;
- elsewhere, as ``torch.fx`` traces ``forward`` on a data-less copy (ResNet's
  ``conv1``/``bn1``): a module that cannot be traced is searched child by child instead.

Modules registered twice are never paired, nor ``a`` called more than once; ``b`` called more
than once only with ``shared=True`` and only when every one of its calls reads the sole output
of a module it pairs with (LeNet's one ``self.relu`` after each Linear: one pair per call).
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable
from functools import partial

import torch
from torch import fx, nn

from sparsify.timing import fmt_seconds, race, verdict

Pairable = Callable[[nn.Module, nn.Module], bool]


def sequential_pairs(
    model: nn.Module, pairable: Pairable, through: bool = False
) -> list[tuple[str, str]]:
    """``(a, b)`` adjacent children of every plain ``nn.Sequential`` (``through``: with only
    ``nn.Identity`` between them) with ``pairable(a, b)``."""
    pairs = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue  # a subclass with its own forward may not chain its children
        names = [n for n, m in seq._modules.items() if not (through and type(m) is nn.Identity)]
        full = f"{prefix}." if prefix else ""
        for a, b in zip(names, names[1:], strict=False):
            if pairable(seq._modules[a], seq._modules[b]):
                pairs.append((full + a, full + b))
    return pairs


def _traced_pairs(
    module: nn.Module, pairable: Pairable, through: bool, shared: bool = False, prefix: str = ""
) -> list[tuple[str, str]]:
    """Pairs of ``module``'s traced graph (see the module docstring); untraceable modules:
    their children's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = fx.Tracer().trace(module)
    except Exception:  # noqa: BLE001 - any failure to trace means: look inside instead
        pairs = []
        for name, child in module.named_children():
            pairs += _traced_pairs(child, pairable, through, shared, f"{prefix}{name}.")
        return pairs
    nodes = [n for n in graph.nodes if n.op == "call_module"]
    calls = Counter(id(module.get_submodule(n.target)) for n in nodes)

    def single_input(node: fx.Node) -> fx.Node | None:
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        ok = isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
        return src if ok else None

    pairs = []
    for node in nodes:
        src = single_input(node)
        while through and src is not None and type(module.get_submodule(src.target)) is nn.Identity:
            src = single_input(src)  # a folded batch norm between them
        if src is None:
            continue
        a, b = module.get_submodule(src.target), module.get_submodule(node.target)
        if calls[id(a)] == 1 and (shared or calls[id(b)] == 1) and pairable(a, b):
            pairs.append((src.target, node.target))
    paired = Counter(b for _, b in pairs)  # a b called k times pairs only if all k calls did
    called = Counter(n.target for n in nodes)
    return [(prefix + a, prefix + b) for a, b in pairs if paired[b] == called[b]]


def _meta_copy(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no data), to
    trace: a ``forward`` that caches what it computes on ``self`` then caches ``torch.fx``
    proxies on the copy, not on the user's model. None if the model cannot be copied."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    try:
        return copy.deepcopy(model, memo)
    except Exception:  # noqa: BLE001 - uncopyable state (locks, handles): trace nothing
        return None


def traced_pairs(
    model: nn.Module, pairable: Pairable, through: bool = False, shared: bool = False
) -> list[tuple[str, str]]:
    """The pairs ``torch.fx`` finds in a :func:`_meta_copy` of ``model`` (none if it cannot be
    copied). ``forward`` runs once on proxies, on the copy, never on the model itself."""
    twin = _meta_copy(model)
    return [] if twin is None else _traced_pairs(twin, pairable, through, shared)


def registered_once(model: nn.Module) -> Callable[[nn.Module], bool]:
    """A test that a module appears once in ``model`` (one registered at two places may run
    twice, and a fusion would change both)."""
    shared = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    return lambda m: shared[id(m)] == 1


def time_fused(
    first: nn.Module,
    second: nn.Module,
    fused: nn.Module,
    shape: tuple[int, ...],
    reps: int,
    margin: float,
) -> tuple[str, bool]:
    """(what was measured, whether ``fused`` wins by the converter's rule) for ``fused``
    standing in for ``second(first(x))`` on a random x of ``shape``: its output must match
    (within 1e-4 of the largest), then the two are raced (``timing.race``)."""
    x = torch.randn(shape)
    with torch.inference_mode():
        ref, got = second(first(x)).clone(), fused(x)
        scale = float(ref.abs().max()) + 1.0
        if not bool(torch.isfinite(got).all()) or float((got - ref).abs().max()) > 1e-4 * scale:
            return "the fused output differed", False
        t_apart, t_fused, r, faster = race(lambda: second(first(x)), lambda: fused(x), reps, margin)
    said = (
        f"fused {fmt_seconds(t_fused.median)} against {fmt_seconds(t_apart.median)} "
        f"apart, {r.median:.2f}x (lower quartile {r.q25:.2f}x)"
    )
    return said, faster


def fuse_pair_(
    model: nn.Module,
    names: tuple[str, str],
    label: str,
    first: nn.Module,
    second: nn.Module,
    fused: nn.Module,
    shape: tuple[int, ...],
    *,
    timed: bool,
    reps: int,
    margin: float,
) -> tuple[str, tuple[str, str, nn.Module, nn.Module] | None]:
    """Put ``fused`` (standing in for ``second(first(x))``) at ``names[0]`` and ``nn.Identity``
    at ``names[1]`` where it wins (``timed``: :func:`time_fused` on ``shape``; else always).
    Returns the report line (``timing.verdict``, labelled ``label``) and the entry
    :func:`unfuse_` takes to undo it, or None where it was kept apart."""
    measure = partial(time_fused, first, second, fused, shape, reps, margin)
    line, take = verdict(label, timed, measure, "kept apart", "fused")
    if not take:
        return line, None
    model.set_submodule(names[0], fused)
    model.set_submodule(names[1], nn.Identity())
    return line, (names[0], names[1], first, second)


def unfuse_(model: nn.Module, done: list[tuple[str, str, nn.Module, nn.Module]]) -> None:
    """Undo a pair fusion: each ``(a, b, first, second)`` puts ``first`` back at ``a`` and
    ``second`` at ``b`` (where the fused module and ``nn.Identity`` stood)."""
    for a, b, first, second in done:
        model.set_submodule(a, first)
        model.set_submodule(b, second)
