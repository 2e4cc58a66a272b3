"""Magnitude pruning: the baseline every prox result is compared against, and exact targets.

One-shot and gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune") as
an optimizer step hook, like the penalties: no masks in the model, state_dict unchanged.
The sparsity at optimizer step ``t`` follows their cubic schedule

    s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3     for t0 <= t <= t1,

``s_i`` before ``t0`` (nothing pruned when ``s_i = 0``) and ``s_f`` after ``t1``. At every
pruning step (``t0``, ``t0 + every``, ..., and ``t1``) the ``round(s(t) * N)`` smallest-|w|
weights are zeroed, N counted over all selected weights (``granularity="global"``) or per
tensor (``"layer"``); after *every* step the pruned weights and their optimizer state are
written back to +0.0, so they stay pruned. ``start == end`` is one-shot pruning.

:func:`prune_to_sparsity_` is the same projection done once, exactly: it is how a run
reaches a sparsity target to the weight (then fine-tune with
:func:`~sparsify.penalties.freeze.freeze_support_`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from sparsify.errors import SparsifyError, check_choice
from sparsify.penalties.freeze import mask_weights_and_state_
from sparsify.penalties.selection import FilterFn, select_held

GRANULARITIES = ("global", "layer")


@torch.no_grad()
def magnitude_masks(
    params: Sequence[torch.Tensor], sparsity: float, granularity: str = "global"
) -> list[torch.Tensor]:
    """Keep-masks with exactly ``round(sparsity * N)`` False entries: the smallest ``|w|``.

    ``N`` is the total size (``"global"``) or each tensor's size (``"layer"``); ties at the
    threshold are broken by position, so the count is exact whatever the values.
    """
    check_choice("magnitude_masks", "granularity", granularity, GRANULARITIES)
    if not 0.0 <= sparsity <= 1.0:
        raise SparsifyError(f"sparsity must be in [0, 1]; got {sparsity!r}.")
    groups = [list(params)] if granularity == "global" else [[p] for p in params]
    masks: list[torch.Tensor] = []
    for group in groups:
        flat = torch.cat([p.detach().abs().reshape(-1).float() for p in group])
        keep = flat.numel() - round(sparsity * flat.numel())
        mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        if keep > 0:
            mask[torch.topk(flat, keep, largest=True, sorted=False).indices] = True
        masks.extend(m.view_as(p) for m, p in zip(mask.split([p.numel() for p in group]), group))
    return masks


@torch.no_grad()
def prune_to_sparsity_(
    params: Sequence[torch.Tensor], sparsity: float, granularity: str = "global"
) -> list[torch.Tensor]:
    """Zero (as +0.0) the smallest-|w| weights so exactly ``round(sparsity * N)`` are zero;
    return the keep-masks. Weights already at zero are counted (they are the smallest)."""
    masks = magnitude_masks(params, sparsity, granularity)
    for p, m in zip(params, masks):
        p.masked_fill_(~m, 0.0)
    return masks


@torch.no_grad()
def project_to_sparsity_(
    params: Sequence[torch.Tensor],
    sparsity: float,
    granularity: str = "global",
    grow: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """Keep-masks with exactly ``round(sparsity * N)`` False entries, applied to ``params``.

    Per group (all params for ``"global"``, each tensor for ``"layer"``): when at most the
    target count is zero already, this is :func:`prune_to_sparsity_` (the smallest |w| go).
    When more weights are zero than the target allows, every nonzero weight is kept and the
    zeros with the largest ``|grow|`` (e.g. the last gradient, as RigL regrows connections;
    None: by position) are kept too: those masks are True at weights that are still 0, so
    fine-tune with the masks (``freeze_support_(..., support=...)``) to bring them back.
    """
    check_choice("project_to_sparsity_", "granularity", granularity, GRANULARITIES)
    params = list(params)
    grow = list(grow) if grow is not None else [None] * len(params)
    groups = (
        [list(range(len(params)))] if granularity == "global" else [[i] for i in range(len(params))]
    )
    masks: list[torch.Tensor] = [torch.ones(0)] * len(params)
    for group in groups:
        ps = [params[i] for i in group]
        numel = sum(p.numel() for p in ps)
        zeros = sum(int((p == 0).sum()) for p in ps)
        if zeros <= round(sparsity * numel):
            scores = ps
        else:  # nonzeros outrank every zero; among zeros the larger |grow| ranks first
            top = max(
                (float(g.abs().max()) for g in (grow[i] for i in group) if g is not None),
                default=0.0,
            )
            scores = [
                torch.where(
                    params[i] != 0,
                    torch.full_like(params[i], top + 1.0),
                    grow[i].abs() if grow[i] is not None else torch.zeros_like(params[i]),
                )
                for i in group
            ]
        for i, m in zip(group, magnitude_masks(scores, sparsity, "global")):
            masks[i] = m
    for p, m in zip(params, masks):
        p.masked_fill_(~m, 0.0)
    return masks


@dataclass(frozen=True)
class GradualPruning:
    """Zhu & Gupta's schedule (module docstring).

    Attributes:
        sparsity: final fraction of zeros ``s_f`` among the selected weights, in [0, 1].
        start, end: first and last pruning step ``t0 <= t1`` in ``unit`` (equal: one-shot).
        every: steps between pruning steps (in ``unit``), >= 1.
        initial_sparsity: ``s_i``, in [0, sparsity].
        granularity: "global" (one threshold for all selected weights) or "layer".
        unit: "steps" or "epochs" (then ``steps_per_epoch`` is needed).
    """

    sparsity: float
    start: float = 0
    end: float = 0
    every: float = 1
    initial_sparsity: float = 0.0
    granularity: str = "global"
    unit: str = "steps"

    def __post_init__(self) -> None:
        check_choice("GradualPruning", "granularity", self.granularity, GRANULARITIES)
        check_choice("GradualPruning", "unit", self.unit, ("steps", "epochs"))
        if not 0.0 <= self.initial_sparsity <= self.sparsity <= 1.0:
            raise SparsifyError(
                "GradualPruning needs 0 <= initial_sparsity <= sparsity <= 1; got "
                f"{self.initial_sparsity!r} and {self.sparsity!r}."
            )
        if not 0 <= self.start <= self.end or self.every <= 0:
            raise SparsifyError(
                "GradualPruning needs 0 <= start <= end and every > 0; got "
                f"start={self.start!r}, end={self.end!r}, every={self.every!r}."
            )

    def in_steps(self, steps_per_epoch: int | None) -> tuple[int, int, int]:
        """``(t0, t1, every)`` in optimizer steps."""
        if self.unit == "steps":
            k = 1
        elif steps_per_epoch:
            k = steps_per_epoch
        else:
            raise SparsifyError(
                "GradualPruning unit 'epochs' needs steps_per_epoch; pass it or use unit 'steps'."
            )
        return round(self.start * k), round(self.end * k), max(1, round(self.every * k))

    def sparsity_at(self, step: int, steps_per_epoch: int | None = None) -> float:
        """``s(t)`` of the cubic schedule at 0-based optimizer step ``step``."""
        t0, t1, _ = self.in_steps(steps_per_epoch)
        if step < t0:
            return self.initial_sparsity
        if step >= t1:
            return self.sparsity
        frac = 1.0 - (step - t0) / (t1 - t0)
        return self.sparsity + (self.initial_sparsity - self.sparsity) * frac**3

    def is_pruning_step(self, step: int, steps_per_epoch: int | None = None) -> bool:
        """True at ``t0, t0 + every, ...`` up to ``t1``, and at ``t1`` itself."""
        t0, t1, every = self.in_steps(steps_per_epoch)
        return step == t1 or (t0 <= step < t1 and (step - t0) % every == 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PruningHandle:
    """What :func:`magnitude_prune_` returns: the masks, the step count, ``remove()``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: GradualPruning,
        named: list[tuple[str, nn.Parameter]],
        skipped: list[tuple[str, int]],
        steps_per_epoch: int | None,
    ) -> None:
        self.optimizer, self.config, self.skipped = optimizer, config, skipped
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        self.masks: list[torch.Tensor] | None = None  # None until the first pruning step
        self._hook = optimizer.register_step_post_hook(self._after_step)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.config.is_pruning_step(self.step, self.steps_per_epoch):
            s = self.config.sparsity_at(self.step, self.steps_per_epoch)
            self.masks = magnitude_masks(self.params, s, self.config.granularity)
        if self.masks is not None:
            mask_weights_and_state_(self.optimizer, self.params, self.masks)
        self.step += 1

    def sparsity(self) -> float:
        """Fraction of the selected weights that are exactly zero now."""
        total = sum(p.numel() for p in self.params)
        return sum(int((p == 0).sum()) for p in self.params) / total

    def remove(self) -> None:
        """Detach the hook; zeros already written stay (freeze them with freeze_support_)."""
        self._hook.remove()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the step and the masks (so pruned weights stay pruned)."""
        return {"step": self.step, "masks": self.masks, "config": self.config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s step and masks, each on its weight's device (a resume
        state is read onto the CPU; the weights may be on a GPU)."""
        masks = state["masks"]
        if masks is not None:
            masks = [m.to(p.device) for m, p in zip(masks, self.params)]
        self.step, self.masks = int(state["step"]), masks

    def summary(self) -> str:
        """One line: the schedule, what is selected, what is skipped."""
        n_sel = sum(p.numel() for p in self.params)
        n_skip = sum(n for _, n in self.skipped)
        c = self.config
        return (
            f"GradualPruning(sparsity={c.sparsity:g}, {c.start:g}..{c.end:g} {c.unit}, "
            f"{c.granularity}): {len(self.params)} tensors ({n_sel:,} params) selected, "
            f"{len(self.skipped)} tensors ({n_skip:,} params) skipped"
        )


def magnitude_prune_(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: GradualPruning,
    *,
    scope: str = "prunable",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_fn: FilterFn | None = None,
    steps_per_epoch: int | None = None,
) -> PruningHandle:
    """Attach gradual (or one-shot) magnitude pruning to ``optimizer`` for ``model``'s weights.

    Contract: after the step at which ``s(t)`` is evaluated, exactly ``round(s(t) * N)``
    selected weights are +0.0 (per tensor for ``granularity="layer"``), and pruned weights
    stay 0 at every later step. Selection is the penalties' rule (Linear/Conv weights).

    Raises:
        SparsifyError: nothing selected, a selected weight the optimizer does not hold, or a
            schedule in epochs without ``steps_per_epoch``.
    """
    if not isinstance(config, GradualPruning):
        raise SparsifyError(
            f"magnitude_prune_ needs a GradualPruning(...) config; got {type(config).__name__}."
        )
    config.in_steps(steps_per_epoch)  # fail now, not at the first step
    named, skipped = select_held(
        "magnitude_prune_", model, optimizer, scope, include, exclude, filter_fn
    )
    return PruningHandle(optimizer, config, named, skipped, steps_per_epoch)
