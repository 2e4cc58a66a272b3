"""``penalize_``: attach a penalty to any optimizer through PyTorch's own step hooks.

    handle = penalize_(model, optimizer, L1Prox(lam=1e-4))   # one line, any training loop
    ...
    handle.remove()                                         # detach again

Post-step penalties (prox, decoupled decay) use ``Optimizer.register_step_post_hook``;
gradient penalties (coupled L2, L1 subgradient) use ``register_step_pre_hook``. Weights are
changed in place under ``no_grad``: no masks, no reparametrisation, state_dict keys unchanged.
The learning rate is read from ``optimizer.param_groups`` at every step, so LR schedules
are followed by the "lr_lambda" convention.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.penalties.base import PenaltyConfig, StepState
from sparsify.penalties.metric import check_supported, step_sizes
from sparsify.penalties.selection import FilterFn, Selected, select_parameters
from sparsify.penalties.variational import (
    VariationalDropout,
    VariationalHandle,
    variational_dropout_,
)


@dataclass
class _Bucket:
    """Parameters of one optimizer param group sharing one lambda: one vectorised call per step."""

    group: int
    lam: float
    params: list[torch.Tensor]


class PenaltyHandle(StepState):
    """What :func:`penalize_` returns: remove the hook, inspect the selection, save the step."""

    def __init__(
        self,
        config: PenaltyConfig,
        optimizer: torch.optim.Optimizer,
        selected: list[Selected],
        skipped: list[tuple[str, int]],
        steps_per_epoch: int | None,
    ) -> None:
        self.config = config
        self.optimizer = optimizer
        self.selected = selected
        self.skipped = skipped
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        # a controller's multiplier on every lambda (1: the config's); saved for resume
        self.lam_scale = 1.0
        self._buckets = self._make_buckets()
        if config.uses_optimizer_metric():
            check_supported(optimizer)
        register = (
            optimizer.register_step_post_hook
            if config.when == "post"
            else optimizer.register_step_pre_hook
        )
        self._hook = register(self._on_step)

    def _make_buckets(self) -> list[_Bucket]:
        group_of: dict[int, int] = {}
        for gi, group in enumerate(self.optimizer.param_groups):
            for p in group["params"]:
                group_of[id(p)] = gi
        by_key: dict[tuple[int, float], list[torch.Tensor]] = defaultdict(list)
        for s in self.selected:
            if id(s.param) not in group_of:
                raise SparsifyError(
                    f"Parameter {s.name!r} is selected for {type(self.config).__name__} but the optimizer "
                    "does not hold it; pass its parameters to the optimizer or exclude it."
                )
            by_key[(group_of[id(s.param)], s.lam)].append(s.param)
        return [_Bucket(g, lam, ps) for (g, lam), ps in by_key.items() if lam > 0]

    def coefficients(self) -> list[float]:
        """Per-bucket coefficient for the current step: lam * lam_scale * schedule(step) [* lr]
        (the "optimizer" convention multiplies by the optimizer's step later, per coordinate)."""
        factor = self.lam_scale * self.config.schedule.factor(self.step, self.steps_per_epoch)
        out = []
        for b in self._buckets:
            c = b.lam * factor
            if self.config.scales_with_lr():
                c *= float(self.optimizer.param_groups[b.group]["lr"])
            out.append(c)
        return out

    def _on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        metric = self.config.uses_optimizer_metric()
        for bucket, coeff in zip(self._buckets, self.coefficients()):
            if metric:
                steps = step_sizes(optimizer, bucket.group, bucket.params)
                self.config.apply_metric_(bucket.params, coeff, steps)
            else:
                self.config.apply_(bucket.params, coeff)
        self.step += 1

    def remove(self) -> None:
        """Detach the hook; the optimizer behaves as if ``penalize_`` had never been called."""
        self._hook.remove()

    def value(self) -> float:
        """Current penalty term ``sum lam_i * R(w_i)`` (without schedule), for logging."""
        return float(sum(self.config.value(b.params, b.lam) for b in self._buckets))

    def summary(self) -> str:
        """One line: what was selected and what was skipped (never skip silently)."""
        n_sel = sum(s.param.numel() for s in self.selected)
        n_skip = sum(n for _, n in self.skipped)
        return (
            f"{type(self.config).__name__}(lam={self.config.lam:g}): {len(self.selected)} tensors "
            f"({n_sel:,} params) selected, {len(self.skipped)} tensors ({n_skip:,} params) skipped"
        )


def penalize_(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: PenaltyConfig,
    *,
    filter_fn: FilterFn | None = None,
    steps_per_epoch: int | None = None,
) -> PenaltyHandle | VariationalHandle:
    """Attach ``config`` to ``optimizer`` for the parameters of ``model`` it selects.

    Args:
        model: where parameter names come from (for selection and reporting).
        optimizer: any ``torch.optim.Optimizer`` holding the selected parameters.
        config: an ``L1Prox``, ``L1Subgradient``, ``L2Coupled``, ``WeightDecay``,
            ``GroupLassoProx``, ``SparseGroupLassoProx``, ``NMProjection`` or
            ``VariationalDropout`` (which adds parameters: see its module).
        filter_fn: ``(module, fqn) -> bool`` replacing the built-in Linear/Conv rule.
        steps_per_epoch: needed only by schedules in epochs.

    Returns:
        A :class:`PenaltyHandle` (a ``VariationalHandle`` for ``VariationalDropout``);
        ``handle.remove()`` detaches the penalty.

    Raises:
        SparsifyError: nothing selected, a selection the penalty cannot act on (a bias for
            a group or N:M penalty, an input size not a multiple of M), or a selected
            parameter not held by the optimizer.
    """
    if not isinstance(config, PenaltyConfig):
        raise SparsifyError(
            f"penalize_ needs a penalty config such as L1Prox(lam=1e-4); got {type(config).__name__}."
        )
    if isinstance(config, VariationalDropout):
        return variational_dropout_(
            model, optimizer, config, filter_fn=filter_fn, steps_per_epoch=steps_per_epoch
        )
    selected, skipped = select_parameters(
        model,
        config.lam,
        scope=config.scope,
        include=config.include,
        exclude=config.exclude,
        groups=config.groups,
        filter_fn=filter_fn,
    )
    if not selected:
        raise SparsifyError(
            f"{type(config).__name__} selects no parameter of {type(model).__name__}; "
            "check scope/include/exclude (scope 'all' takes every parameter)."
        )
    config.validate_selection(selected)  # e.g. group/N:M penalties refuse biases, naming them
    if config.schedule.kind != "constant":
        config.schedule.length_in_steps(steps_per_epoch)  # fail now, not at the first step
    return PenaltyHandle(config, optimizer, selected, skipped, steps_per_epoch)
