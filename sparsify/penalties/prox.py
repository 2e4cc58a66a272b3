"""L1 by its proximal operator: soft-thresholding after every optimizer step.

    prox_{t|.|}(w) = sign(w) * max(|w| - t, 0)

Weights with |w| <= t land on exactly 0.0 and a weight never crosses zero. Three conventions
for t, named explicitly (the lecture folds the step size into lambda):
    threshold="lambda"     t = lambda               (the lecture's snippet)
    threshold="lr_lambda"  t = lr * lambda          (proximal gradient; follows LR schedules).
                           Solves min f + lambda ||w||_1 with plain SGD only: with momentum mu
                           it solves it at (1 - mu) lambda, and with Adam it is no prox method.
    threshold="optimizer"  t = s * lambda, s the optimizer's own step per coordinate
                           (:mod:`sparsify.penalties.metric`): SGD with any momentum/dampening/
                           nesterov, Adam and AdamW (their diagonal metric) all solve the lasso
                           at lambda.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparsify.penalties.base import THRESHOLDS, PenaltyConfig, register


def soft_threshold(w: torch.Tensor, t: float) -> torch.Tensor:
    """Reference (out of place): ``sign(w) * max(|w| - t, 0)``."""
    return torch.sign(w) * torch.clamp(w.abs() - t, min=0)


def soft_threshold_foreach_(tensors: Sequence[torch.Tensor], t: float) -> None:
    """:func:`soft_threshold_` by multi-tensor ``torch._foreach_*`` ops (the CUDA path)."""
    # w - clamp(w, -t, t) == sign(w) * max(|w| - t, 0), bit for bit: both compute w - t
    # (or w + t) on the survivors and w - w = +0.0 on the rest.
    clipped = torch._foreach_clamp_min(list(tensors), -t)
    torch._foreach_clamp_max_(clipped, t)
    torch._foreach_sub_(list(tensors), clipped)


def soft_threshold_fused_(tensors: Sequence[torch.Tensor], t: float) -> None:
    """:func:`soft_threshold_` by in-place ``softshrink``, one tensor at a time (the CPU path)."""
    # softshrink is the soft-threshold in one fused elementwise kernel; writing into its own
    # input needs no temporary: one read and one write per weight. Its CPU kernel returns
    # -0.0 (== 0) for some negative w in [-t, 0); checkpoints store them as +0.0.
    for w in tensors:
        torch.ops.aten.softshrink.out(w, t, out=w)


@torch.no_grad()
def soft_threshold_(tensors: Sequence[torch.Tensor], t: float) -> None:
    """In place on every tensor: ``w <- sign(w) * max(|w| - t, 0)``, with ``t >= 0``.

    Zeros it makes compare equal to 0 (on CPU some are -0.0; ``save_checkpoint`` writes
    +0.0). On CUDA one multi-tensor (``torch._foreach_*``) launch per op
    covers all tensors. On CPU the foreach ops are plain loops whose temporaries cost page
    faults on large tensors (see tools/bench_prox.py), so each tensor gets the fused in-place
    softshrink kernel instead. Both paths give the same values.
    """
    if not tensors or t == 0:
        return
    if tensors[0].is_cuda:
        soft_threshold_foreach_(tensors, t)
    else:
        soft_threshold_fused_(tensors, t)


@register
@dataclass(frozen=True)
class L1Prox(PenaltyConfig):
    """L1 penalty ``lam * ||w||_1`` applied by its proximal operator after each step.

    Attributes:
        threshold: "lambda" (t = lam, the lecture's), "lr_lambda" (t = lr * lam) or
            "optimizer" (t = lam * the optimizer's own step: exact for momentum SGD and Adam).
    """

    threshold: str = "lambda"
    kind = "l1_prox"
    when = "post"
    thresholds = (*THRESHOLDS, "optimizer")

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        soft_threshold_(params, coeff)

    @torch.no_grad()
    def apply_metric_(
        self, params: Sequence[torch.Tensor], coeff: float, steps: Sequence[float | torch.Tensor]
    ) -> None:
        for w, s in zip(params, steps):
            if isinstance(s, torch.Tensor):
                t = s.mul(coeff)
                w.sub_(torch.clamp(w, min=-t, max=t))  # w - clamp(w, -t, t): +0.0 below t
            else:
                soft_threshold_([w], coeff * s)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        return lam * sum(p.detach().abs().sum() for p in params)
