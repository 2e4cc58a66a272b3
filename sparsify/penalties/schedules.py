"""Lambda schedules: a factor in [0, 1] that multiplies lambda at each optimizer step.

Units are explicit: ``unit="steps"`` counts optimizer steps, ``unit="epochs"`` multiplies the
length by ``steps_per_epoch`` (which the caller must then give).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sparsify.errors import SparsifyError, check_choice


@dataclass(frozen=True)
class Schedule:
    """``kind="constant"``: factor 1. ``kind="linear_warmup"``: factor min(1, (s+1)/L) at step s.

    Attributes:
        kind: "constant" or "linear_warmup".
        length: warm-up length L in ``unit`` (ignored for constant); >= 0.
        unit: "steps" or "epochs".
    """

    kind: str = "constant"
    length: float = 0
    unit: str = "steps"

    def __post_init__(self) -> None:
        check_choice("Schedule", "kind", self.kind, ("constant", "linear_warmup"))
        check_choice("Schedule", "unit", self.unit, ("steps", "epochs"))
        if not (isinstance(self.length, (int, float)) and self.length >= 0):
            raise SparsifyError(
                f"The 'length' parameter of Schedule must be >= 0. Got {self.length!r} instead."
            )

    def length_in_steps(self, steps_per_epoch: int | None) -> float:
        """Warm-up length converted to optimizer steps."""
        if self.unit == "steps":
            return float(self.length)
        if not steps_per_epoch:
            raise SparsifyError(
                "Schedule unit 'epochs' needs steps_per_epoch; pass it to penalize_() or use unit 'steps'."
            )
        return float(self.length) * steps_per_epoch

    def factor(self, step: int, steps_per_epoch: int | None = None) -> float:
        """Multiplier of lambda at 0-based optimizer step ``step``."""
        if self.kind == "constant":
            return 1.0
        length = self.length_in_steps(steps_per_epoch)
        return 1.0 if length <= 0 else min(1.0, (step + 1) / length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        return cls(**d)
