"""Debiasing: fine-tune with the sparsity pattern frozen, so zeros stay exactly zero.

An L1 (or group) prox shrinks the surviving weights too, which biases them towards zero.
Re-training the survivors without the penalty removes that bias (the "relaxed lasso",
Meinshausen 2007). The support ``S = {w != 0}`` is fixed when :func:`freeze_support_` is
called; from then on, for every selected weight, three things keep ``w[~S] == 0``:

1. a gradient hook writes ``grad <- grad * 1_S`` as autograd produces it (and a gradient
   already accumulated when attaching is masked once);
2. optimizer state that has the weight's shape (SGD ``momentum_buffer``, Adam ``exp_avg``,
   ``exp_avg_sq``, ``max_exp_avg_sq``, ...) is masked when attaching and after every step,
   so a stale momentum from before cannot push a zero away;
3. a post-step hook writes ``w <- w * 1_S`` (as +0.0): whatever an optimizer does with
   coupled weight decay, eps or a custom update, a zero cannot revive.

Weights are edited in place under ``no_grad``; there is no mask parameter and no
reparametrisation, and ``handle.remove()`` restores the plain optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from sparsify.errors import SparsifyError
from sparsify.penalties.selection import FilterFn, select_held


class FrozenSupport:
    """What :func:`freeze_support_` returns: the masks, the hooks, and ``remove()``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        named: list[tuple[str, nn.Parameter]],
        skipped: list[tuple[str, int]],
        support: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.skipped = skipped
        support = support or {}
        # bool masks cost 1 byte per weight; kept because the support must not drift
        self.masks = [
            support[n].to(torch.bool).clone() if n in support else p.detach() != 0 for n, p in named
        ]
        self._hooks: list[RemovableHandle] = []
        for p, mask in zip(self.params, self.masks):
            self._hooks.append(p.register_hook(_grad_masker(mask)))
        self._hooks.append(optimizer.register_step_post_hook(self._after_step))
        self._mask_state_and_weights()
        with torch.no_grad():  # a gradient already accumulated bypassed the hook
            for p, mask in zip(self.params, self.masks):
                if p.grad is not None:
                    p.grad.masked_fill_(~mask, 0.0)

    def _mask_state_and_weights(self) -> None:
        mask_weights_and_state_(self.optimizer, self.params, self.masks)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._mask_state_and_weights()

    def remove(self) -> None:
        """Detach every hook; masks already written stay written."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def density(self) -> float:
        """Fraction of the selected weights in the frozen support."""
        total = sum(m.numel() for m in self.masks)
        return sum(int(m.sum()) for m in self.masks) / total if total else 0.0

    def summary(self) -> str:
        """One line: what is frozen, what is skipped, the support's density."""
        n_sel = sum(p.numel() for p in self.params)
        n_skip = sum(n for _, n in self.skipped)
        return (
            f"frozen support: {len(self.params)} tensors ({n_sel:,} params, "
            f"{100 * self.density():.2f}% nonzero), {len(self.skipped)} tensors "
            f"({n_skip:,} params) left free"
        )


@torch.no_grad()
def mask_weights_and_state_(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
) -> None:
    """``w[~mask] = +0.0`` and the same for every optimizer state tensor of ``w``'s shape
    (momentum, Adam's moments): a stale moment cannot push a zero away at the next step."""
    for p, mask in zip(params, masks):
        p.masked_fill_(~mask, 0.0)
        for key, value in optimizer.state.get(p, {}).items():
            # "step" is a counter, not per-weight state (and may share a scalar's shape)
            if key != "step" and torch.is_tensor(value) and value.shape == p.shape:
                value.masked_fill_(~mask, 0.0)


def _grad_masker(mask: torch.Tensor) -> Any:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(~mask, 0.0)

    return hook


def freeze_support_(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scope: str = "prunable",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_fn: FilterFn | None = None,
    support: Mapping[str, torch.Tensor] | None = None,
) -> FrozenSupport:
    """Freeze the zero pattern of ``model``'s selected weights for the rest of training.

    Contract: after any number of ``optimizer.step()`` calls, every selected weight that was
    0 at this call is exactly 0 (``support[name]`` False, for the names ``support`` gives: a
    weight that is 0 but True there trains, e.g. one regrown by ``project_to_sparsity_``);
    the others train freely. Selection is the penalties' rule
    (Linear/Conv weights by default; ``scope="all"`` adds biases, whose zeros then freeze too).

    Args:
        model: where the weights and their names come from.
        optimizer: the optimizer that fine-tunes them (any ``torch.optim.Optimizer``).
        scope, include, exclude, filter_fn: as for :func:`~sparsify.penalties.penalize.penalize_`.
        support: keep-masks by parameter name replacing ``w != 0`` for those weights.

    Returns:
        A :class:`FrozenSupport`; ``handle.remove()`` lets zeros move again.

    Raises:
        SparsifyError: nothing selected, a selected weight the optimizer does not hold, or a
            ``support`` mask whose shape is not its weight's.
    """
    named, skipped = select_held(
        "freeze_support_", model, optimizer, scope, include, exclude, filter_fn
    )
    support = dict(support or {})
    for name, p in named:
        mask = support.get(name)
        if mask is not None and mask.shape != p.shape:
            raise SparsifyError(
                f"freeze_support_: support[{name!r}] has shape {tuple(mask.shape)}, the weight "
                f"{tuple(p.shape)}; pass the masks made for this model."
            )
    return FrozenSupport(optimizer, named, skipped, support)
