"""The fields every penalty shares, their validation, and (de)serialisation.

A penalty config is a frozen dataclass: *what* to apply (the subclass), *how strongly*
(``lam`` and a schedule), and *to which tensors* (scope, include/exclude, per-pattern groups).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from sparsify.errors import SparsifyError, check_choice, check_nonnegative
from sparsify.penalties.schedules import Schedule

THRESHOLDS = ("lambda", "lr_lambda")
REGISTRY: dict[str, type[PenaltyConfig]] = {}


def register(cls: type[PenaltyConfig]) -> type[PenaltyConfig]:
    """Class decorator: make ``cls`` constructible from its ``kind`` in recipes."""
    REGISTRY[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class PenaltyConfig:
    """Common fields of all penalties.

    Attributes:
        lam: strength lambda, a float in [0, inf).
        scope: "prunable" (Linear/Conv weights) or "all" (every parameter, biases too).
        include: regexes; if any is given a parameter name must match one.
        exclude: regexes; a parameter name matching one is skipped.
        groups: ``(pattern, lam)`` pairs; the first pattern a name matches sets its lambda.
        schedule: multiplies lambda over optimizer steps (see :class:`Schedule`).
    """

    lam: float = 0.0
    scope: str = "prunable"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    groups: tuple[tuple[str, float], ...] = ()
    schedule: Schedule = field(default_factory=Schedule)

    VERSION: ClassVar[int] = 1
    thresholds: ClassVar[tuple[str, ...]] = THRESHOLDS  # conventions this kind accepts
    kind: ClassVar[str] = ""
    when: ClassVar[str] = (
        "post"  # "pre": edits gradients before step(); "post": edits weights after
    )

    def __post_init__(self) -> None:
        name = type(self).__name__
        object.__setattr__(self, "lam", check_nonnegative(name, "lam", self.lam))
        check_choice(name, "scope", self.scope, ("prunable", "all"))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        groups = tuple((str(p), check_nonnegative(name, "groups.lam", g)) for p, g in self.groups)
        object.__setattr__(self, "groups", groups)
        if isinstance(self.schedule, dict):
            object.__setattr__(self, "schedule", Schedule.from_dict(self.schedule))
        threshold = getattr(self, "threshold", None)
        if threshold is not None:
            check_choice(name, "threshold", threshold, type(self).thresholds)

    def scales_with_lr(self) -> bool:
        """True when the per-step coefficient is ``lr * lambda`` (proximal-gradient convention)."""
        return getattr(self, "threshold", None) == "lr_lambda"

    def uses_optimizer_metric(self) -> bool:
        """True for the "optimizer" convention: ``t = lam * s`` with ``s`` the optimizer's own step
        (:func:`~sparsify.penalties.metric.step_sizes`), per parameter and coordinate."""
        return getattr(self, "threshold", None) == "optimizer"

    def apply_metric_(
        self, params: Sequence[torch.Tensor], coeff: float, steps: Sequence[float | torch.Tensor]
    ) -> None:
        """Apply one step with threshold ``coeff * steps[i]`` for ``params[i]`` (a float or a
        per-coordinate tensor); only kinds that list "optimizer" in ``thresholds`` implement it."""
        raise NotImplementedError

    def validate_selection(self, selected: Sequence[Any]) -> None:
        """Refuse a selection this penalty cannot act on (``penalize_`` calls it); default: accept.

        ``selected`` holds :class:`~sparsify.penalties.selection.Selected` entries (``.name``,
        ``.param``), so a refusal can name the layer. Raise SparsifyError to refuse.
        """

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        """Apply one step of the penalty to ``params`` in place with coefficient ``coeff``."""
        raise NotImplementedError

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        """The penalty term ``lam * R(w)`` summed over ``params`` (for logging)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with ``kind`` and ``version``; inverse of :func:`penalty_from_dict`."""
        d = dataclasses.asdict(self)
        d["groups"] = [{"pattern": p, "lam": g} for p, g in self.groups]
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        return {"kind": self.kind, "version": self.VERSION, **d}


class StepState:
    """A handle's resumable state: the step count that drives its schedule and a controller's
    multiplier on lambda (``lam_scale``, 1: the config's)."""

    config: PenaltyConfig
    step: int
    lam_scale: float

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the step count, the lambda scale (and the config, to read)."""
        return {"step": self.step, "lam_scale": self.lam_scale, "config": self.config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (lambda scale 1 when absent)."""
        self.step = int(state["step"])
        self.lam_scale = float(state.get("lam_scale", 1.0))


@torch.no_grad()
def add_to_grads_(params: Sequence[torch.Tensor], terms: Any, alpha: float) -> None:
    """``p.grad += alpha * term(p)`` for every param that has a gradient (gradient penalties).

    ``terms`` maps the list of live params to the tensors to add (e.g. ``torch._foreach_sign``).
    """
    live = [p for p in params if p.grad is not None]
    if live and alpha:
        torch._foreach_add_([p.grad for p in live], terms(live), alpha=alpha)


def penalty_from_dict(d: dict[str, Any]) -> PenaltyConfig:
    """Build a penalty config from ``{"kind": ..., **fields}`` (as written by ``to_dict``)."""
    d = dict(d)
    kind = d.pop("kind", None)
    version = d.pop("version", PenaltyConfig.VERSION)
    if kind not in REGISTRY:
        raise SparsifyError(
            f"Unknown penalty kind {kind!r}; choose one of {', '.join(sorted(REGISTRY))}."
        )
    if version != PenaltyConfig.VERSION:
        raise SparsifyError(
            f"Penalty config version {version} is not supported; expected {PenaltyConfig.VERSION}."
        )
    d["groups"] = tuple((g["pattern"], g["lam"]) for g in d.get("groups", ()))
    if "schedule" in d and isinstance(d["schedule"], dict):
        d["schedule"] = Schedule.from_dict(d["schedule"])
    return REGISTRY[kind](**d)
