"""sparsify.timing: the paired-ratio rule on fixed numbers and the interleaved timer on a fake clock."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsify.timing import iqr, measure_latency, paired_ratio, quartiles, time_interleaved


def test_paired_ratio_is_the_median_of_per_repetition_ratios() -> None:
    dense = [3.0, 8.0, 6.0, 10.0, 12.0]
    other = [1.0, 2.0, 3.0, 2.0, 4.0]
    # r = [3, 4, 2, 5, 3] -> sorted [2, 3, 3, 4, 5]; inclusive quartiles at positions 1, 2, 3
    r = paired_ratio(dense, other)
    assert (r.median, r.q25, r.q75, r.n) == (3.0, 3.0, 4.0, 5)
    assert r.iqr == 1.0
    # the ratio of the medians (8 / 2 = 4) is not the rule: pairs are compared, then summarised
    assert r.median != (sorted(dense)[2] / sorted(other)[2])


def test_paired_ratio_interpolates_quartiles_and_is_not_symmetric_by_accident() -> None:
    r = paired_ratio([1.0, 4.0, 8.0, 16.0], [1.0, 2.0, 2.0, 2.0])  # r = [1, 2, 4, 8]
    assert r.median == 3.0
    assert r.q25 == pytest.approx(1.75)  # position 0.75 between 1 and 2
    assert r.q75 == pytest.approx(5.0)  # position 2.25 between 4 and 8
    inv = paired_ratio([1.0, 2.0, 2.0, 2.0], [1.0, 4.0, 8.0, 16.0])  # slower: ratios < 1
    assert inv.median == pytest.approx(0.375) and inv.q75 <= 1.0


def test_paired_ratio_edge_cases() -> None:
    one = paired_ratio([2.0, 1.0], [0.0, 0.5])  # the pair with a zero time is dropped
    assert (one.median, one.iqr, one.n) == (2.0, 0.0, 1)
    none = paired_ratio([1.0], [0.0])
    assert math.isnan(none.median) and none.n == 0
    with pytest.raises(ValueError, match="paired"):
        paired_ratio([1.0, 2.0], [1.0])


def test_quartiles_and_iqr() -> None:
    assert quartiles([5.0]) == (5.0, 5.0, 5.0) and iqr([5.0]) == 0.0
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert iqr([4.0, 1.0, 3.0, 2.0, 5.0]) == 2.0
    with pytest.raises(ValueError):
        quartiles([])


def test_time_interleaved_on_a_fake_clock() -> None:
    now = [0.0]
    calls: list[str] = []

    def make(name: str, dt: float):
        def fn() -> None:
            calls.append(name)
            now[0] += dt

        return fn

    fns = {"a": make("a", 1e-3), "b": make("b", 4e-3)}
    reps = 8
    t = time_interleaved(fns, reps=reps, warmup=2, min_sample_s=2.5e-3, clock=lambda: now[0])
    # inner: a sample lasts >= 2.5 ms -> a runs 3 times per sample, b once
    assert (t["a"].inner, t["b"].inner) == (3, 1)
    assert calls.count("a") == 2 + 1 + 3 * reps and calls.count("b") == 2 + 1 + reps
    assert calls[:6] == ["a", "a", "b", "b", "a", "b"]  # warm-up, then one call to size inner
    blocks = ["".join(calls[6 + 4 * i : 10 + 4 * i]) for i in range(reps)]
    assert set(blocks) == {"aaab", "baaa"}  # each rep runs both, in a shuffled order
    assert all(s == pytest.approx(1e-3) for s in t["a"].samples)
    assert all(s == pytest.approx(4e-3) for s in t["b"].samples) and len(t["b"].samples) == reps
    assert paired_ratio(t["b"].samples, t["a"].samples).median == pytest.approx(4.0)
    fixed = time_interleaved(fns, reps=2, warmup=0, inner=5, clock=lambda: now[0])
    assert fixed["b"].inner == 5 and fixed["b"].to_dict()["reps"] == 2


def test_measure_latency_names_and_units() -> None:
    models = {
        "before": nn.Sequential(nn.Linear(64, 64), nn.Dropout(0.5)),
        "after": nn.Linear(64, 64),
    }
    ms = measure_latency(models, torch.randn(4, 64), repeats=3, warmup=1)
    assert list(ms) == ["before", "after"] and all(v > 0 for v in ms.values())
    assert not models["before"].training  # timed in eval mode (dropout off)


def test_others_busy_cores_counts_a_busy_child_and_not_this_process() -> None:
    """A spinning child is another process: about one core. Our own spinning is not counted
    (that is what separates this from the load average); the tolerance leaves room for
    whatever else the CI machine runs."""
    import subprocess
    import sys
    import time

    from sparsify.timing import CpuSnapshot, cpu_snapshot, others_busy_cores

    if cpu_snapshot() is None:
        pytest.skip("no /proc/stat here")
    spin = "import time\nt = time.time()\nwhile time.time() - t < 2.0: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # past the interpreter's start
        a = cpu_snapshot()
        time.sleep(1.0)
        b = cpu_snapshot()
        # named as a worker of ours, its CPU is not "other load": about one core less
        c, c_all = cpu_snapshot((child.pid,)), cpu_snapshot()
        time.sleep(0.6)
        d, d_all = cpu_snapshot((child.pid,)), cpu_snapshot()
    finally:
        child.wait()
    assert 0.5 <= others_busy_cores(a, b) <= 2.5
    assert others_busy_cores(c_all, d_all) - others_busy_cores(c, d) >= 0.5
    a = cpu_snapshot()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.6:
        pass
    mine = others_busy_cores(a, cpu_snapshot())
    assert mine is not None and mine >= 0.0
    assert others_busy_cores(None, a) is None
    assert others_busy_cores(a, CpuSnapshot(a.machine_busy_s, a.own_s, a.wall_s)) is None
