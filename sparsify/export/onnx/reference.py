"""How close an exported model's outputs are, stated against fp32's own noise.

A deep fp32 network run by two correct implementations (torch, onnxruntime) differs by
1e-6 to 1e-4: the kernels sum in different orders, and each order rounds differently. A
fixed bound such as 1e-5 then fails good exports of deep nets and passes bad exports of
shallow ones. The honest yardstick is a float64 run of the same module: ``noise`` =
max |torch fp32 - ref64| is fp32's own error on this input, and an export is faithful when
its error against ref64 is of the same size (``error <= 4 * noise + 1e-6 * max|ref64|``,
the bound tools/parity_sweep.py applies; the last term covers outputs whose fp32 error
happens to be ~0).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: an export passes when its error is at most NOISE_FACTOR * noise + SCALE_FLOOR * max|ref64|
NOISE_FACTOR = 4.0
SCALE_FLOOR = 1e-6


@dataclass(frozen=True)
class Fidelity:
    """``error`` = max |output - ref64|; ``noise`` = max |torch fp32 - ref64|; ``scale`` =
    max |ref64|; ``bound`` = ``NOISE_FACTOR * noise + SCALE_FLOOR * scale``."""

    error: float
    noise: float
    scale: float

    @property
    def bound(self) -> float:
        """The largest error that is still fp32 noise."""
        return NOISE_FACTOR * self.noise + SCALE_FLOOR * self.scale

    @property
    def ok(self) -> bool:
        """``error <= bound``."""
        return self.error <= self.bound

    def __str__(self) -> str:
        return (
            f"max error {self.error:.2e} vs float64 (fp32's own noise {self.noise:.2e}, "
            f"bound {self.bound:.2e}: {'ok' if self.ok else 'TOO LARGE'})"
        )


def fidelity(model: nn.Module, x: torch.Tensor, output: np.ndarray | torch.Tensor) -> Fidelity:
    """``output`` (e.g. onnxruntime's for input ``x``) against a float64 copy of ``model``.

    ``model`` is run in eval mode in fp32 (for ``noise``) and, deep-copied to float64, on
    ``x.double()`` (the reference); ``model`` itself is not changed.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = copy.deepcopy(model).double()(x.double()).numpy()
            fp32 = model(x.float()).numpy()
    finally:
        model.train(was_training)
    got = output.numpy() if isinstance(output, torch.Tensor) else np.asarray(output)

    def err(y: np.ndarray) -> float:
        return float(np.abs(y.astype(np.float64) - ref).max())

    return Fidelity(error=err(got), noise=err(fp32), scale=float(np.abs(ref).max()))
