"""Timing: ONE interleaved timer and ONE paired-ratio rule, for ``sparsify bench``, the
converter's calibration, ``sparsify shrink`` and the GPU harness.

The timer (:func:`time_interleaved`): every candidate is timed in the same process,
interleaved; the order of the candidates is shuffled in each repetition (a seeded RNG),
so drift in clock speed or load hits all candidates alike. Before timing, each candidate
runs ``warmup`` times (caches, lazy initialisation, allocator). One sample is the mean of
``inner`` back-to-back calls, with ``inner`` chosen so a sample lasts at least
``min_sample_s`` (the clock's resolution and call overhead vanish). CUDA work is
synchronised once per sample, never inside the timed calls (callers pass ``sync``, or
``events=True`` to time with CUDA events). Summary: median and IQR of the samples.

The quartile rule (:func:`quartiles`): q25, median, q75 by ``statistics.quantiles(n=4,
method="inclusive")``; IQR = q75 - q25; one value has IQR 0.

The paired-ratio rule (:func:`paired_ratio`): a speed-up of ``other`` over ``dense`` is
computed per repetition i, r_i = t_dense_i / t_other_i (both samples of repetition i were
taken back to back, so a load spike hits both members of a pair), and reported as
median(r) with its quartiles. Pairs where either time is not > 0 are dropped.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(q25, median, q75) of ``values`` (inclusive method; all equal for one value).

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("quartiles of no values")
    if len(values) < 2:
        v = float(values[0])
        return v, v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def iqr(values: Sequence[float]) -> float:
    """q75 - q25 of ``values`` (0 for fewer than 2 values)."""
    if len(values) < 2:
        return 0.0
    q25, _, q75 = quartiles(values)
    return q75 - q25


class PairedRatio(NamedTuple):
    """Summary of per-repetition ratios t_dense_i / t_other_i (see the module docstring)."""

    median: float
    q25: float
    q75: float
    n: int

    @property
    def iqr(self) -> float:
        """q75 - q25 of the ratios."""
        return self.q75 - self.q25


def paired_ratio(dense: Sequence[float], other: Sequence[float]) -> PairedRatio:
    """Median and quartiles of r_i = dense[i] / other[i] over repetitions i.

    ``dense`` and ``other`` are per-repetition times of the same interleaved run (same
    length). A ratio > 1 means ``other`` is faster. Pairs with a time <= 0 are dropped; with
    none left the result is NaN with n = 0.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(dense) != len(other):
        raise ValueError(f"paired_ratio needs paired samples; got {len(dense)} and {len(other)}")
    r = [d / o for d, o in zip(dense, other) if d > 0 and o > 0]
    if not r:
        nan = math.nan
        return PairedRatio(nan, nan, nan, 0)
    q25, med, q75 = quartiles(r)
    return PairedRatio(med, q25, q75, len(r))


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
        """(q25, median, q75) of the samples (:func:`quartiles`)."""
        return quartiles(self.samples)

    @property
    def iqr(self) -> float:
        """q75 - q25 of the samples (0 with fewer than 2 samples)."""
        return iqr(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "iqr_s": self.iqr,
            "reps": len(self.samples),
            "inner": self.inner,
        }


Sampler = Callable[[Callable[[], Any], int], float]


def _wall_sampler(clock: Callable[[], float], sync: Callable[[], None]) -> Sampler:
    """Seconds per call of ``n`` back-to-back calls, synchronised once at the end."""

    def sample(fn: Callable[[], Any], n: int) -> float:
        t0 = clock()
        for _ in range(n):
            fn()
        sync()
        return (clock() - t0) / n

    return sample


def _cuda_event_sampler() -> Sampler:
    """Seconds per call of ``n`` calls between two CUDA events on the current stream."""
    import torch

    def sample(fn: Callable[[], Any], n: int) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n

    return sample


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reps: int = 15,
    warmup: int = 2,
    min_sample_s: float = 2e-3,
    seed: int = 0,
    sync: Callable[[], None] | None = None,
    inner: int | None = None,
    events: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time each callable of ``fns`` ``reps`` times, interleaved in a shuffled order per rep.

    Per candidate: ``warmup`` untimed calls; then ``inner`` (given, else chosen from one
    timed call so a sample lasts >= ``min_sample_s``, at most 1000); then ``reps`` samples,
    one per repetition, the candidates' order reshuffled each repetition (``seed``).
    ``sync`` is called after the warm-up and at the end of each sample (CUDA:
    ``torch.cuda.synchronize``); ``events=True`` times samples with CUDA events instead of
    ``clock`` (a host clock; injectable for tests).

    Returns:
        ``{name: Timing}`` in the order of ``fns``; ``Timing.median`` is seconds per call.
    """
    sync = sync or (lambda: None)
    sample = _cuda_event_sampler() if events else _wall_sampler(clock, sync)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync()
    if inner is not None:
        counts = {name: max(1, int(inner)) for name in fns}
    else:
        counts = {}
        for name, fn in fns.items():
            one = max(_wall_sampler(clock, sync)(fn, 1), 1e-7)
            counts[name] = max(1, min(1000, int(min_sample_s / one + 0.999)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    rng = random.Random(seed)
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            samples[name].append(sample(fns[name], counts[name]))
    return {name: Timing(tuple(samples[name]), counts[name]) for name in fns}


def measure_latency(
    models: Mapping[str, Any], x: Any, repeats: int = 50, warmup: int = 5
) -> dict[str, float]:
    """Median milliseconds per ``model(x)`` of each model, by :func:`time_interleaved`.

    The models are put in eval mode and run under ``torch.inference_mode``; ``repeats``
    interleaved samples each (>= 2 ms per sample), after ``warmup`` untimed calls; CUDA
    inputs are synchronised per sample. The method ``sparsify bench`` uses.
    """
    import torch

    for m in models.values():
        m.eval()
    sync = torch.cuda.synchronize if getattr(x, "is_cuda", False) else None
    with torch.inference_mode():
        fns = {name: (lambda m=m: m(x)) for name, m in models.items()}
        t = time_interleaved(fns, reps=int(repeats), warmup=int(warmup), sync=sync)
    return {name: 1e3 * v.median for name, v in t.items()}


def race(
    baseline: Callable[[], Any], candidate: Callable[[], Any], reps: int, margin: float
) -> tuple[Timing, Timing, PairedRatio, bool]:
    """Time ``baseline`` and ``candidate`` interleaved (``reps`` samples of >= 1 ms, one
    warm-up) and apply the converter's rule: the candidate wins when the median paired ratio
    t_baseline / t_candidate exceeds 1 / (1 - margin) and its lower quartile exceeds 1.
    Returns (baseline's timing, candidate's, the paired ratio, whether it wins)."""
    t = time_interleaved({"a": baseline, "b": candidate}, reps=reps, warmup=1, min_sample_s=1e-3)
    r = paired_ratio(t["a"].samples, t["b"].samples)
    return t["a"], t["b"], r, r.median > 1.0 / (1.0 - margin) and r.q25 > 1.0


def verdict(
    label: str, timed: bool, measure: Callable[[], tuple[str, bool]], kept: str, untimed: str
) -> tuple[str, bool]:
    """A converter step's report line and whether to take the replacement: untimed, always
    (``"label: untimed (untimed)"``); timed, as ``measure()`` (what it measured, whether the
    replacement won) says, ``"label: what"`` or ``"label: kept (what)"``."""
    if not timed:
        return f"{label}: {untimed} (untimed)", True
    said, faster = measure()
    return (f"{label}: {said}" if faster else f"{label}: {kept} ({said})"), faster


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


class CpuSnapshot(NamedTuple):
    """Machine-wide busy CPU seconds, this process's CPU seconds and the wall clock, at once."""

    machine_busy_s: float
    own_s: float
    wall_s: float


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a live process from ``/proc/<pid>/stat``; 0 if gone."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()  # after "(comm)", which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_snapshot(pids: Sequence[int] = ()) -> CpuSnapshot | None:
    """Now, from ``/proc/stat`` (busy = user + nice + system + irq + softirq + steal: the
    hypervisor's steal is work this machine did not get) and ``os.times()`` (all threads of
    this process and its waited-for children), plus the CPU time of the live processes
    ``pids`` (workers the benchmark itself runs, e.g. DeepSparse's); None where there is no
    ``/proc/stat``."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    t = os.times()  # children: the ones waited for (a compiler this process ran, say)
    own = t.user + t.system + t.children_user + t.children_system
    own += sum(_process_cpu_s(p) for p in pids)
    return CpuSnapshot(busy / os.sysconf("SC_CLK_TCK"), own, time.monotonic())


def others_busy_cores(start: CpuSnapshot | None, end: CpuSnapshot | None) -> float | None:
    """Cores kept busy on average by everything but this process between two snapshots:
    (machine busy seconds - this process's CPU seconds) / wall seconds, >= 0.

    Unlike the load average, this does not count the benchmark's own threads, so a quiet
    machine reads ~0 however many threads the benchmark runs (resolution: one clock tick,
    10 ms, per snapshot). None where either snapshot is.
    """
    if start is None or end is None or end.wall_s <= start.wall_s:
        return None
    other = (end.machine_busy_s - start.machine_busy_s) - (end.own_s - start.own_s)
    return max(0.0, other) / (end.wall_s - start.wall_s)


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
