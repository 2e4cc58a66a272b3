"""Sparsity targets in a run: reach exactly ``round(target * N)`` zeros, by prox or by magnitude.

A recipe's ``sparsity:`` section (:class:`~sparsify.pipeline.recipe.SparsitySpec`) is put to
work here for one train stage:

* ``method: magnitude, schedule: gradual``: Zhu & Gupta's cubic schedule as an optimizer
  step hook (:func:`~sparsify.penalties.magnitude.magnitude_prune_`), in epochs;
* ``method: prox, control: true``: after each epoch ``e`` of ``E``, every penalty's lambda
  is multiplied by ``clamp((1 - s_e) / (1 - d_e), 1/2, 2)``, where ``s_e`` is the sparsity
  reached and ``d_e = target * (1 - (1 - e / E)^3)`` the cubic ramp to the target (a
  denser model than the ramp gets a stronger penalty, a sparser one a weaker);
* every method: when the stage ends, the projection
  :func:`~sparsify.penalties.magnitude.project_to_sparsity_` makes keep-masks with exactly
  ``round(target * N)`` zeros (per tensor for ``granularity: layer``): the smallest-|w|
  selected weights are set to 0. If the penalty left *more* zeros than that, every nonzero
  weight is kept and the zeros with the largest last mini-batch gradient are kept too
  ("regrown", as in RigL): they are still 0 and come back in the debias stage, which
  trains within the masks. A regrown weight whose gradient stays 0 (a dead unit's) stays
  0, and without a debias stage none comes back: such a run ends sparser than the target
  and its record says ``exact: false`` (lower the lambda, or use ``control: true``).

The record goes to ``metrics["sparsity"]``: target, selection size, sparsity before and after
the projection, per-epoch sparsity (with the schedule's or the controller's wish), and, once
every stage has run, the sparsity ``reached`` by the final model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsify.penalties.magnitude import (
    GradualPruning,
    PruningHandle,
    magnitude_prune_,
    project_to_sparsity_,
)
from sparsify.penalties.penalize import PenaltyHandle
from sparsify.penalties.selection import select_held, select_parameters
from sparsify.penalties.variational import LOG_SIGMA2, VariationalHandle
from sparsify.pipeline.recipe import SparsitySpec

# bounds on the controller's per-epoch lambda factor: fast enough to matter within a few
# epochs, slow enough that one noisy epoch cannot zero the network
CONTROL_STEP = 2.0


def zero_count(params: list[torch.Tensor]) -> tuple[int, int]:
    """``(zeros, numel)`` over ``params``: exact zeros (``w == 0``) and the total size."""
    return sum(int((p == 0).sum()) for p in params), sum(p.numel() for p in params)


def target_zeros(spec: SparsitySpec, params: list[torch.Tensor]) -> int:
    """The zero count the target asks for: ``round(target * N)`` over all of ``params``
    (global) or summed per tensor (layer)."""
    if spec.granularity == "global":
        return round(spec.target * sum(p.numel() for p in params))
    return sum(round(spec.target * p.numel()) for p in params)


def cubic_ramp(target: float, epoch: int, epochs: int) -> float:
    """``target * (1 - (1 - epoch / epochs)^3)``: the controller's wish after ``epoch``."""
    return GradualPruning(sparsity=target, start=0, end=epochs).sparsity_at(epoch)


def selected_weights(spec: SparsitySpec, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights the target counts: Linear/Conv weights, narrowed by include/exclude."""
    chosen, _ = select_parameters(model, 1.0, include=spec.include, exclude=spec.exclude)
    return [(s.name, s.param) for s in chosen]


class SparsityTarget:
    """The sparsity section at work in one train stage (module docstring)."""

    def __init__(
        self,
        spec: SparsitySpec,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        penalties: list[PenaltyHandle | VariationalHandle],
        epochs: int,
        steps_per_epoch: int,
    ) -> None:
        self.spec, self.penalties, self.epochs = spec, penalties, epochs
        self.steps_per_epoch = steps_per_epoch
        named, skipped = select_held(
            "sparsity target", model, optimizer, "prunable", spec.include, spec.exclude
        )
        # variational dropout's log-variances live on the modules only while it trains
        self.skipped = [(n, k) for n, k in skipped if not n.endswith(LOG_SIGMA2)]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.pruning: PruningHandle | None = None
        fields = spec.pruning()
        if fields is not None:
            self.pruning = magnitude_prune_(
                model,
                optimizer,
                GradualPruning(**fields),
                include=spec.include,
                exclude=spec.exclude,
                steps_per_epoch=steps_per_epoch,
            )
        self.history: list[dict[str, float]] = []
        self.masks: list[torch.Tensor] | None = None  # the projection's, once finished

    def summary(self) -> str:
        """One line: target, method, what is counted and what is not."""
        n_sel = sum(p.numel() for p in self.params)
        n_skip = sum(n for _, n in self.skipped)
        how = self.pruning.summary() if self.pruning is not None else self._method()
        return (
            f"sparsity target {self.spec.target:g} ({self.spec.granularity}) over "
            f"{len(self.params)} tensors ({n_sel:,} params; {n_skip:,} params not counted): {how}"
        )

    def _method(self) -> str:
        if self.spec.method == "magnitude":
            return "one-shot magnitude pruning at the end of the train stage"
        return (
            "prox" + (", lambda controller on" if self.spec.control else "") + ", then projection"
        )

    def sparsity(self) -> float:
        """Fraction of the selected weights that are exactly 0 now."""
        zeros, numel = zero_count(self.params)
        return zeros / numel

    def after_epoch(self, epoch: int) -> None:
        """Record epoch ``epoch`` (0-based); with the controller on, rescale the lambdas."""
        s = self.sparsity()
        row: dict[str, float] = {"epoch": epoch + 1, "sparsity": s}
        # variational dropout zeroes nothing until the train stage ends: its progress is the
        # fraction of weights its mask would drop now
        vd = next((h for h in self.penalties if isinstance(h, VariationalHandle)), None)
        if vd is not None:
            row["dropped"] = vd.dropped()
        if self.pruning is not None:
            config, spe = self.pruning.config, self.steps_per_epoch
            t0, t1, every = config.in_steps(spe)
            last = (epoch + 1) * spe - 1  # the epoch's last optimizer step
            if last >= t0:  # the schedule's value at its last pruning step so far
                t = t1 if last >= t1 else t0 + (last - t0) // every * every
                row["scheduled"] = config.sparsity_at(t, spe)
        if self.spec.control:
            wish = cubic_ramp(self.spec.target, epoch + 1, self.epochs)
            factor = min(max((1.0 - s) / (1.0 - wish), 1.0 / CONTROL_STEP), CONTROL_STEP)
            for h in self.penalties:
                h.lam_scale *= factor
            row["wish"] = wish
            row["lam_scale"] = self.penalties[0].lam_scale if self.penalties else 1.0
        self.history.append(row)

    def support(self) -> dict[str, torch.Tensor]:
        """The projection's keep-masks by weight name (for ``freeze_support_(support=...)``)."""
        if self.masks is None:
            raise RuntimeError("support() is known once finish() has run")
        return dict(zip(self.names, self.masks))

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the per-epoch record and the pruning hook's state."""
        return {
            "history": list(self.history),
            "pruning": self.pruning.state_dict() if self.pruning is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the lambda scales travel with the penalty handles)."""
        self.history = list(state["history"])
        if self.pruning is not None and state.get("pruning") is not None:
            self.pruning.load_state_dict(state["pruning"])

    def finish(self) -> dict[str, Any]:
        """Detach the pruning hook, project to the target, and return the record."""
        if self.pruning is not None:
            self.pruning.remove()
        before = self.sparsity()
        # the last mini-batch's gradient ranks the zeros to regrow: it sees the network as
        # it is now (the optimizer's momentum still remembers units that have died since,
        # whose weights would then stay 0: measured, 6,500 of 17,000 regrown vs 95)
        grads = [p.grad for p in self.params]
        self.masks = project_to_sparsity_(
            self.params, self.spec.target, self.spec.granularity, grads
        )
        zeros, numel = zero_count(self.params)
        want = target_zeros(self.spec, self.params)
        masked = sum(int((~m).sum()) for m in self.masks)
        return {
            "target": self.spec.target,
            "granularity": self.spec.granularity,
            "method": self.spec.method,
            **(
                {"schedule": self.spec.schedule or "oneshot"}
                if self.spec.method == "magnitude"
                else {}
            ),
            **({"control": bool(self.spec.control)} if self.spec.method == "prox" else {}),
            "tensors": self.names,
            "selected": numel,
            "target_zeros": want,
            "before_projection": before,
            "after_projection": zeros / numel,
            "regrown": zeros - masked,  # kept by the masks but still 0: debias trains them
            "reached": zeros / numel,
            "zeros": zeros,
            "exact": zeros == want,
            "epochs": self.history,
            **(
                {"lam_scale": self.penalties[0].lam_scale}
                if self.spec.control and self.penalties
                else {}
            ),
        }


def record_reached(record: dict[str, Any], spec: SparsitySpec, model: nn.Module) -> None:
    """Update ``record`` (from :meth:`SparsityTarget.finish`) with ``model``'s sparsity now."""
    params = [p for _, p in selected_weights(spec, model)]
    zeros, numel = zero_count(params)
    record.update(reached=zeros / numel, zeros=zeros, exact=zeros == record["target_zeros"])
