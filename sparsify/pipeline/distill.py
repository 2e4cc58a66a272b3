"""Distillation: a frozen teacher's soft labels join the task's loss.

A recipe's ``distill:`` section (:class:`~sparsify.pipeline.recipe.DistillSpec`) names the
teacher: the model itself, copied after train-stage epoch ``from_epoch`` (with gradual
magnitude pruning starting there, the copy is the dense network), or a checkpoint (a dense
model the run compresses). Once the teacher is there, every training step of the train and
debias stages minimises, summed over the batch,

    (1 - a) * CE(s, y)  +  a * T^2 * KL( softmax(t / T) || softmax(s / T) )

where ``s`` are the student's logits, ``t`` the frozen teacher's (eval mode, no gradient),
``a`` the ``weight`` and ``T`` the ``temperature`` (Hinton et al. 2015; the ``T^2`` keeps the
soft term's gradient on the scale of the hard one's as T grows). The teacher costs one extra
forward pass per step and no extra epoch: the budget stays the recipe's ``epochs`` (a
checkpoint teacher's own training is not counted in it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsify.pipeline.task import Task


class Distillation:
    """The distillation loss of one run; teaches once it has a teacher (``teacher`` given, or
    :meth:`snapshot` at ``from_epoch``)."""

    def __init__(
        self,
        teacher: nn.Module | None = None,
        *,
        build: Callable[[], nn.Module] | None = None,
        from_epoch: int | None = None,
        weight: float = 0.5,
        temperature: float = 4.0,
    ) -> None:
        self.from_epoch, self.weight, self.temperature = from_epoch, weight, temperature
        self._build = build  # a fresh model of the student's architecture, for snapshots
        self.teacher: nn.Module | None = None
        self._given = teacher is not None  # a given teacher is not the run's state to save
        if teacher is not None:
            self.teacher = teacher.eval().requires_grad_(False)
        self.measured: dict[str, float] = {}  # the teacher's errors when taken (set by the run)

    def snapshot(self, model: nn.Module) -> None:
        """Copy ``model``'s current weights into a frozen eval-mode teacher.

        A fresh model plus ``load_state_dict`` rather than ``deepcopy``: the student carries
        penalty and pruning hooks that must not run in (or keep references to) the teacher.
        """
        self.load_state_dict(model.state_dict())

    def load_state_dict(
        self, state: dict[str, torch.Tensor], device: torch.device | str | None = None
    ) -> None:
        """Set the teacher from saved weights (a resume state's ``teacher``), on ``device``
        (the student's: a resume state is read onto the CPU; None: where ``state`` lies)."""
        if self._build is None:
            raise ValueError("a snapshot teacher needs build=, a function making a fresh student")
        if device is None:
            device = next(iter(state.values())).device if state else torch.device("cpu")
        with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the run's RNG
            teacher = self._build()
        teacher = teacher.to(device)
        teacher.load_state_dict(state)
        teacher.eval().requires_grad_(False)
        self.teacher = teacher

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """A snapshot teacher's weights, for the resume state (None before the snapshot, and
        for a given teacher, which the resumed run loads again)."""
        return None if self.teacher is None or self._given else self.teacher.state_dict()

    def loss_sum(
        self, student: torch.Tensor, x: torch.Tensor, y: torch.Tensor, task: Task
    ) -> torch.Tensor:
        """The module docstring's loss summed over the batch; ``task``'s alone before the
        snapshot."""
        hard = task.loss_sum(student, y)
        if self.teacher is None:
            return hard
        with torch.no_grad():
            teacher = self.teacher(x)
        a, t = self.weight, self.temperature
        soft = F.kl_div(
            F.log_softmax(student / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="sum",
            log_target=True,
        )
        return (1 - a) * hard + a * t * t * soft

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` says about the distillation."""
        return {
            **({"from_epoch": self.from_epoch} if self.from_epoch is not None else {}),
            "weight": self.weight,
            "temperature": self.temperature,
            "teacher_taken": self.teacher is not None,
            **self.measured,
        }
