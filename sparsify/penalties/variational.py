"""Sparse variational dropout (Molchanov, Ashukha & Vetrov, ICML 2017) on any model, by hooks.

    ramp = Schedule("linear_warmup", length=epochs // 3, unit="epochs")
    handle = penalize_(model, optimizer, VariationalDropout(lam=1 / len(train_set), schedule=ramp),
                       steps_per_epoch=len(loader))
    ...                                   # the user's own training loop, unchanged
    handle.remove()                       # drop every weight with log alpha >= 3, detach

Every selected Linear/Conv2d weight ``w`` gets a learned log-variance ``log sigma^2`` (a
parameter ``weight_log_sigma2`` registered on its module and handed to the optimizer as a new
param group, without weight decay), so ``w_ij ~ N(theta_ij, sigma_ij^2)`` with
``alpha = sigma^2 / theta^2`` its dropout rate. In training mode a forward hook adds the
local reparameterisation noise ``sqrt(conv(x^2, sigma^2)) * eps`` (``eps ~ N(0, 1)``) to the
layer's output; in eval mode it recomputes the output with the weights of
``log alpha >= log_alpha_max`` set to 0, the model the run ends with. Before every optimizer
step a pre-hook adds the gradient of ``lam * KL`` with the paper's approximation

    KL(alpha) ~= k1 - k1 * sigmoid(k2 + k3 * log alpha) + 0.5 * log(1 + 1 / alpha)
    (k1, k2, k3 = 0.63576, 1.87320, 1.48695)

summed over weights, so the step minimises ``loss + lam * KL``: with the loss a mean over
the training set's N items, ``lam = 1 / N`` is the paper's variational lower bound (its
log-uniform prior makes large alpha, i.e. dropped weights, cheap). ``remove()`` hardens the
model (``w *= log alpha < log_alpha_max``), drops the log-variances from the modules and the
optimizer and the hooks: ``model(x)`` in eval mode is the same before and after.
Ramp the KL in (or start from a trained model): at full strength from a random start, the
KL's steady pull outweighs a data gradient that is still noise, and with Adam every weight
can be dropped (a small CNN on 2,500 images: all of them at full strength, chance error; 95%
with the KL ramped in over half the epochs, 32% error against 20% dense;
``results/probes/2026-12-04-vd/stranger.txt``). ``remove()`` warns when a layer is left with
no weight. With few training items ``1 / N`` is a strong penalty: lower ``lam`` to keep more. Attach it before creating an LR scheduler: older torch schedulers do
not step a param group added after them (2.15 does).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.penalties.base import PenaltyConfig, StepState, register
from sparsify.penalties.selection import FilterFn, select_parameters

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_SIGMA2 = "weight_log_sigma2"
LOG_ALPHA_CLAMP = 10.0  # the paper's code clamps log alpha to [-10, 10]
VARIANCE_FLOOR = 1e-8  # keeps sqrt differentiable where an input is exactly 0


@register
@dataclass(frozen=True)
class VariationalDropout(PenaltyConfig):
    """Sparse variational dropout: learned per-weight dropout rates, a KL penalty (``lam``).

    Attributes:
        log_alpha_max: a weight with ``log alpha >= log_alpha_max`` is dropped (paper: 3,
            i.e. alpha ~ 20, a weight 4.5 sigma inside noise).
        init_log_sigma2: starting ``log sigma^2`` of every weight (paper's code: -10).
    """

    log_alpha_max: float = 3.0
    init_log_sigma2: float = -10.0

    kind: ClassVar[str] = "variational_dropout"
    when: ClassVar[str] = "pre"
    thresholds: ClassVar[tuple[str, ...]] = ()

    def validate_selection(self, selected: Sequence[Any]) -> None:
        bad = [s.name for s in selected if not s.name.endswith("weight")]
        if bad:
            raise SparsifyError(
                f"variational_dropout acts on Linear/Conv2d weights, not {', '.join(bad)}; "
                "use scope 'prunable'."
            )


def kl_approx(log_alpha: torch.Tensor) -> torch.Tensor:
    """Molchanov et al.'s approximation of ``KL(N(theta, alpha theta^2) || log-uniform)``, summed."""
    return (K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)).sum()


def log_alpha(weight: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """``log(sigma^2 / theta^2)``, clamped to [-10, 10]."""
    la = log_sigma2 - torch.log(weight * weight + VARIANCE_FLOOR)
    return la.clamp(-LOG_ALPHA_CLAMP, LOG_ALPHA_CLAMP)


def _layer(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The module's own op with another weight (Conv2d keeps its padding mode)."""
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, weight, bias)
    return F.linear(x, weight, bias)


class VariationalHandle(StepState):
    """What :func:`variational_dropout_` returns (the :class:`PenaltyHandle` interface; the
    log-variances travel in the model's state_dict, not in :meth:`state_dict`)."""

    def __init__(
        self,
        config: VariationalDropout,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        layers: list[tuple[str, nn.Module, float]],
        skipped: list[tuple[str, int]],
        steps_per_epoch: int | None,
    ) -> None:
        self.config, self.optimizer, self.skipped = config, optimizer, skipped
        self.steps_per_epoch = steps_per_epoch
        self.layers = layers
        self.step = 0
        self.lam_scale = 1.0  # a controller's multiplier on lambda, as PenaltyHandle's
        group = next(
            g for g in optimizer.param_groups if any(p is layers[0][1].weight for p in g["params"])
        )
        sigmas = []
        for _, module, _ in layers:
            p = nn.Parameter(torch.full_like(module.weight, config.init_log_sigma2))
            module.register_parameter(LOG_SIGMA2, p)
            sigmas.append(p)
        # the weights' hyperparameters (lr, betas, momentum) but no decay: decaying
        # log sigma^2 towards 0 would push every variance towards 1
        extra = {k: v for k, v in group.items() if k != "params"}
        optimizer.add_param_group({**extra, "params": sigmas, "weight_decay": 0.0})
        self._group = optimizer.param_groups[-1]
        self._ran: set[int] = set()  # layers whose forward ran in training mode (first step)
        self._hooks = [m.register_forward_hook(self._forward) for _, m, _ in layers]
        self._hooks.append(optimizer.register_step_pre_hook(self._on_step))

    def _forward(self, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        x, sigma2 = args[0], getattr(module, LOG_SIGMA2)
        if module.training:
            if self.step == 0:
                self._ran.add(id(module))
            var = _layer(module, x * x, sigma2.exp(), None)
            return out + (var + VARIANCE_FLOOR).sqrt() * torch.randn_like(out)
        keep = log_alpha(module.weight, sigma2) < self.config.log_alpha_max
        return _layer(module, x, module.weight * keep, module.bias)

    def kl(self) -> torch.Tensor:
        """``sum_i lam_i * KL_i`` over the layers (without schedule or controller)."""
        return sum(
            (
                lam * kl_approx(log_alpha(m.weight, getattr(m, LOG_SIGMA2)))
                for _, m, lam in self.layers
            ),
            torch.zeros(()),
        )

    def _on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.step == 0:
            self._check_ran()
        factor = self.lam_scale * self.config.schedule.factor(self.step, self.steps_per_epoch)
        self.step += 1
        if factor == 0:
            return
        params = [t for _, m, _ in self.layers for t in (m.weight, getattr(m, LOG_SIGMA2))]
        with torch.enable_grad():
            grads = torch.autograd.grad(self.kl() * factor, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if p.grad is None:
                    p.grad = g.detach().clone()
                else:
                    p.grad.add_(g)

    def _check_ran(self) -> None:
        # a weight used without its module's forward (nn.MultiheadAttention's out_proj) gets no
        # noise, so the KL alone would drive it to 0: refuse before the first step changes it
        idle = [n for n, m, _ in self.layers if id(m) not in self._ran]
        if idle:
            raise SparsifyError(
                f"variational dropout: the forward of {', '.join(idle)} did not run in training "
                "mode before the first step (its weight is used by another module, e.g. "
                "nn.MultiheadAttention's out_proj, or the model was in eval mode); exclude it "
                f"(exclude: {[n.rsplit('.', 1)[0] for n in idle][:3]}) or call model.train()."
            )

    def log_alphas(self) -> dict[str, torch.Tensor]:
        """``log alpha`` of every selected weight, by weight name (detached)."""
        with torch.no_grad():
            return {n: log_alpha(m.weight, getattr(m, LOG_SIGMA2)) for n, m, _ in self.layers}

    def dropped(self) -> float:
        """Fraction of the selected weights with ``log alpha >= log_alpha_max`` now."""
        las = self.log_alphas().values()
        return sum(int((la >= self.config.log_alpha_max).sum()) for la in las) / sum(
            la.numel() for la in las
        )

    def remove(self) -> None:
        """Harden (``w *= log alpha < log_alpha_max``) and detach: the eval model stays as it was.

        Warns (one line) when a layer has lost every weight: the model then ignores its input.
        """
        emptied = []
        with torch.no_grad():
            for name, m, _ in self.layers:
                if hasattr(m, LOG_SIGMA2):
                    m.weight.mul_(
                        log_alpha(m.weight, getattr(m, LOG_SIGMA2)) < self.config.log_alpha_max
                    )
                    m.weight[m.weight == 0] = 0.0  # no -0.0 from the multiply
                    if not m.weight.any():
                        emptied.append(name)
        if emptied:
            warnings.warn(
                f"variational dropout dropped every weight of {', '.join(emptied)}: the model no "
                "longer sees its input; ramp the KL in (schedule linear_warmup over the first "
                "third of training), start from a trained model, or lower lam.",
                stacklevel=2,
            )
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for _, m, _ in self.layers:
            p = m._parameters.pop(LOG_SIGMA2, None)
            if p is not None:
                self.optimizer.state.pop(p, None)
        self.optimizer.param_groups[:] = [
            g for g in self.optimizer.param_groups if g is not self._group
        ]

    def value(self) -> float:
        """Current ``sum lam_i * KL_i`` (for logging)."""
        with torch.no_grad():
            return float(self.kl())

    def summary(self) -> str:
        n_sel = sum(m.weight.numel() for _, m, _ in self.layers)
        n_skip = sum(n for _, n in self.skipped)
        return (
            f"VariationalDropout(lam={self.config.lam:g}): {len(self.layers)} layers ({n_sel:,} "
            f"weights, as many log-variances added) selected, {len(self.skipped)} tensors "
            f"({n_skip:,} params) skipped"
        )


def variational_dropout_(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: VariationalDropout,
    *,
    filter_fn: FilterFn | None = None,
    steps_per_epoch: int | None = None,
) -> VariationalHandle:
    """Attach sparse variational dropout to the Linear/Conv2d weights of ``model`` it selects.

    Raises:
        SparsifyError: nothing selected, a selected weight of another layer type (Conv1d/3d),
            a layer that already has one, or a selected weight the optimizer does not hold.
    """
    selected, skipped = select_parameters(
        model, config.lam, scope=config.scope, include=config.include, exclude=config.exclude,
        groups=config.groups, filter_fn=filter_fn,
    )  # fmt: skip
    config.validate_selection(selected)
    owner = {
        id(m.weight): (n, m)
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), nn.Parameter)
    }
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    layers = []
    for s in selected:
        _, module = owner[id(s.param)]
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise SparsifyError(
                f"variational_dropout supports Linear and Conv2d layers; {s.name} is a "
                f"{type(module).__name__}: exclude it (exclude: ['{s.name}'])."
            )
        if hasattr(module, LOG_SIGMA2):
            raise SparsifyError(
                f"{s.name} already has variational dropout; remove() the first handle."
            )
        if id(s.param) not in held:
            raise SparsifyError(
                f"Parameter {s.name!r} is selected for VariationalDropout but the optimizer does "
                "not hold it; pass its parameters to the optimizer or exclude it."
            )
        if s.lam > 0:
            layers.append((s.name, module, s.lam))
    if not layers:
        raise SparsifyError(
            f"VariationalDropout selects no layer of {type(model).__name__} with lam > 0; "
            "check lam, include/exclude and groups."
        )
    if config.schedule.kind != "constant":
        config.schedule.length_in_steps(steps_per_epoch)  # fail now, not at the first step
    return VariationalHandle(config, model, optimizer, layers, skipped, steps_per_epoch)
