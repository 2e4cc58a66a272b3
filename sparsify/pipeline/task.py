"""What a model is trained to do: the loss the loop minimises and the error it reports.

    classification  loss = sum of cross-entropy over the batch; error = misclassified / n
    regression      loss = sum of squared errors over the batch (MSE times the element
                    count: the lasso's least squares); error = mean squared error per item

The loop divides the batch sum by the batch size (see :mod:`sparsify.pipeline.loop`), so the
gradient is that of the mean loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsify.errors import SparsifyError


class Task:
    """Base: ``loss_sum(output, target)`` (a 0-dim tensor) and ``error_sum`` (a float)."""

    name = "task"
    error_name = "error"

    def loss_sum(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of the per-item losses of one batch."""
        raise NotImplementedError

    def error_sum(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """Sum of the per-item errors of one batch (divided by the item count when reported)."""
        raise NotImplementedError


class Classification(Task):
    """Cross-entropy on logits (B, K) against class indices (B,); error = wrong argmax."""

    name = "classification"
    error_name = "error rate"

    def loss_sum(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_class_targets(target, output.shape[1])
        return F.cross_entropy(output, target, reduction="sum")

    def error_sum(self, output: torch.Tensor, target: torch.Tensor) -> float:
        return (output.argmax(1) != target).sum().item()


def check_class_targets(target: torch.Tensor, num_classes: int) -> None:
    """Refuse labels that are not integers in ``[0, num_classes)``: cross-entropy would
    truncate nothing but silently skip -100 (its ignore_index) and fail deep inside on -1.

    Raises:
        SparsifyError: one line with the first bad label and the fix.
    """
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise SparsifyError(
            f"class labels must be integers; the dataset gives {target.dtype}. Fix the "
            "dataset's labels (or use task: regression)."
        )
    if target.numel():
        low, high = (int(v) for v in torch.aminmax(target))
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise SparsifyError(
                f"class label {bad} is outside 0..{num_classes - 1} (the model's "
                f"{num_classes} outputs); fix the dataset's labels or model.num_classes."
            )


class Regression(Task):
    """Squared error of outputs against float targets of the same element count per item."""

    name = "regression"
    error_name = "mean squared error"

    def loss_sum(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.reshape(target.shape), target.to(output.dtype), reduction="sum")

    def error_sum(self, output: torch.Tensor, target: torch.Tensor) -> float:
        return self.loss_sum(output, target).item()


TASKS: dict[str, type[Task]] = {"classification": Classification, "regression": Regression}


def make_task(name: str) -> Task:
    """The task called ``name`` (``classification`` or ``regression``)."""
    return TASKS[name]()
