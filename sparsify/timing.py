"""Timing primitives shared by the converter's calibration and ``sparsify bench``.

Contract: every candidate is timed in the same process, interleaved (the order is shuffled
in each repetition, so drift in clock speed or load hits all candidates alike), after a
warm-up; one sample is the mean of ``inner`` back-to-back calls, with ``inner`` chosen so a
sample lasts at least ``min_sample_s`` (the clock's resolution and call overhead vanish).
Reported: median and inter-quartile range (IQR = q75 - q25) of the samples, in seconds.
CUDA work is synchronised per sample (callers pass ``sync``); CPU work needs none.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Samples of one candidate (seconds per call) and their summary."""

    samples: tuple[float, ...]
    inner: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def quartiles(self) -> tuple[float, float, float]:
        """(q25, median, q75) of the samples (inclusive method; all equal for one sample)."""
        if len(self.samples) < 2:
            return (self.median,) * 3
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[1], q[2]

    @property
    def iqr(self) -> float:
        """q75 - q25 of the samples (0 with fewer than 2 samples)."""
        q25, _, q75 = self.quartiles
        return q75 - q25

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "iqr_s": self.iqr,
            "reps": len(self.samples),
            "inner": self.inner,
        }


def _inner_count(fn: Callable[[], Any], min_sample_s: float, sync: Callable[[], None]) -> int:
    """Calls per sample so one sample lasts >= ``min_sample_s`` (at most 1000 calls)."""
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(1000, int(min_sample_s / one + 0.999)))


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reps: int = 15,
    warmup: int = 2,
    min_sample_s: float = 2e-3,
    seed: int = 0,
    sync: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time each callable of ``fns`` ``reps`` times, interleaved in a shuffled order per rep.

    Returns ``{name: Timing}``; ``Timing.median`` is seconds per call.
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync()
    inner = {name: _inner_count(fn, min_sample_s, sync) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    rng = random.Random(seed)
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            fn, n = fns[name], inner[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: Timing(tuple(samples[name]), inner[name]) for name in fns}


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(n)`` (None: leave as is); restore after."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Machine and library versions a benchmark must record to be reproducible."""
    import numpy
    import scipy
    import torch

    import sparsify

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "torch_mkl": bool(torch.backends.mkl.is_available()),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "sparsify": sparsify.__version__,
        "cuda_available": bool(torch.cuda.is_available()),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def fmt_seconds(s: float | None) -> str:
    """Milliseconds (or microseconds below 0.1 ms) with 3 significant digits."""
    if s is None:
        return "–"
    return f"{s * 1e3:.3g} ms" if s >= 1e-4 else f"{s * 1e6:.3g} µs"
