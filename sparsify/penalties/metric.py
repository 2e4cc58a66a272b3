"""The optimizer's own step size per coordinate: what makes a prox step solve the stated lasso.

A proximal-gradient method ``w <- prox_{s*lam*R}(w - s * g)`` has the solutions of
``min f(w) + lam * R(w)`` as its fixed points only when the prox uses the *same* step ``s``
(a scalar, or a diagonal metric) as the gradient step. Optimizers other than plain SGD do not
step by ``lr * g``:

    SGD, momentum mu, dampening d   at a fixed point the buffer is b = (1 - d) g / (1 - mu),
                                    so the step is s * g with s = lr (1 - d) / (1 - mu)
                                    (nesterov: g + mu b, so s = lr (1 + mu (1 - d) / (1 - mu)))
    Adam / AdamW                    w <- w - lr * m_hat / (sqrt(v_hat) + eps): at a fixed point
                                    m_hat = g, so s_i = lr / (sqrt(v_hat_i) + eps) per coordinate
                                    (v_hat = v / (1 - beta2^k); amsgrad: the running max of v)

With ``t = lr * lam`` (the "lr_lambda" convention) momentum SGD therefore solves the lasso at
``(1 - mu) * lam`` and Adam is not a proximal method at all (its threshold ignores the metric).
:func:`step_sizes` returns ``s`` so that ``t = s * lam`` (the "optimizer" convention) solves the
lasso at ``lam`` for these optimizers; any other optimizer is refused by :func:`check_supported`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sparsify.errors import SparsifyError

SUPPORTED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def check_supported(optimizer: torch.optim.Optimizer) -> None:
    """Refuse, in one line, an optimizer whose step metric :func:`step_sizes` does not know."""
    if type(optimizer) not in SUPPORTED:
        raise SparsifyError(
            f"threshold 'optimizer' knows the step of SGD, Adam and AdamW, not "
            f"{type(optimizer).__name__}; use threshold 'lr_lambda' (exact for plain SGD only)."
        )
    for group in optimizer.param_groups:
        if group.get("maximize"):
            raise SparsifyError(
                "threshold 'optimizer' needs a minimising optimizer; set maximize=False."
            )


@torch.no_grad()
def step_sizes(
    optimizer: torch.optim.Optimizer, group: int, params: Sequence[torch.Tensor]
) -> list[float | torch.Tensor]:
    """Per parameter, the step ``s`` (a float, or a tensor of ``p``'s shape) such that the
    optimizer's last update at a fixed point is ``s * grad``; see the module docstring.

    An Adam parameter without state (it had no gradient yet) gets 0: no threshold until the
    optimizer has stepped it (``lr / eps`` would zero it at once).
    """
    g = optimizer.param_groups[group]
    lr = float(g["lr"])
    if isinstance(optimizer, torch.optim.SGD):
        mu, d = float(g.get("momentum", 0.0)), float(g.get("dampening", 0.0))
        if mu == 0.0:
            return [lr] * len(params)
        s = lr * (1 + mu * (1 - d) / (1 - mu)) if g.get("nesterov") else lr * (1 - d) / (1 - mu)
        return [s] * len(params)
    _beta1, beta2 = g["betas"]
    eps = float(g["eps"])
    out: list[float | torch.Tensor] = []
    for p in params:
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            out.append(0.0)
            continue
        step = float(state["step"])
        v = state["max_exp_avg_sq"] if g.get("amsgrad") else state["exp_avg_sq"]
        bias2 = 1 - float(beta2) ** step
        out.append(lr / (v.sqrt() / math.sqrt(bias2)).add_(eps))
    return out
