"""The proximal L1 step: formula, never crossing zero, the hook with each optimizer, the lasso."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from sparsify import (
    L1Prox,
    L1Subgradient,
    SparsifyError,
    penalize_,
    soft_threshold,
)
from sparsify.penalties.prox import soft_threshold_foreach_, soft_threshold_fused_

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(1, 64), elements=finite), st.floats(0, 10, width=32))
def test_soft_threshold_formula_and_never_crosses_zero(w: np.ndarray, t: float) -> None:
    ref = np.sign(w) * np.maximum(np.abs(w) - np.float32(t), 0)
    out = soft_threshold(torch.from_numpy(w), t).numpy()
    np.testing.assert_array_equal(out, ref.astype(np.float32))
    assert np.all((out == 0) | (np.sign(out) == np.sign(w)))  # never crosses zero
    assert np.all(np.abs(out) <= np.abs(w))
    assert np.all(out[np.abs(w) <= np.float32(t)] == 0)  # exact zeros


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=finite), st.floats(0, 10, width=32))
def test_inplace_paths_bit_identical_to_reference(w: np.ndarray, t: float) -> None:
    ref = soft_threshold(torch.from_numpy(w), t)
    for path in (soft_threshold_fused_, soft_threshold_foreach_):
        x = [torch.from_numpy(w.copy()), torch.from_numpy(w.copy()).reshape(-1, 1)]
        path(x, t)
        assert torch.equal(x[0], ref) and torch.equal(x[1].flatten(), ref)
        # identical bits on every nonzero; a zero may be -0.0 from the fused CPU kernel
        nz = ref != 0
        assert torch.equal(x[0][nz].view(torch.int32), ref[nz].view(torch.int32))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("threshold", ["lambda", "lr_lambda"])
def test_hook_equals_step_then_soft_threshold(opt_name: str, threshold: str) -> None:
    model, twin = _net(), _net()
    opt, twin_opt = (
        OPTIMIZERS[opt_name](model.parameters()),
        OPTIMIZERS[opt_name](twin.parameters()),
    )
    lr, t = opt.param_groups[0]["lr"], 0.05  # the per-step threshold both conventions must give
    lam = t if threshold == "lambda" else t / lr
    handle = penalize_(model, opt, L1Prox(lam=lam, threshold=threshold))
    for _ in range(3):
        _step(model, opt)
        _step(twin, twin_opt)
        with torch.no_grad():  # the reference: plain step, then prox on Linear weights only
            for name, p in twin.named_parameters():
                if name.endswith("weight"):
                    p.copy_(soft_threshold(p, t))
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert (model[0].weight == 0).any(), "a large lambda must produce exact zeros"
    assert not (model[0].bias == 0).any(), "biases are outside the default scope"
    assert handle.step == 3
    handle.remove()
    before = model[0].weight.clone()
    _step(model, opt)
    assert (model[0].weight != 0).sum() >= (before != 0).sum()  # detached: no more shrinking


def test_lr_lambda_follows_schedule_and_param_groups() -> None:
    model = _net()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "lr": 0.01},
        ],
        lr=0.1,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    handle = penalize_(model, opt, L1Prox(lam=2.0, threshold="lr_lambda"))
    assert sorted(handle.coefficients()) == pytest.approx([0.02, 0.2])
    _step(model, opt)
    sched.step()
    assert sorted(handle.coefficients()) == pytest.approx([0.01, 0.1])


def test_selection_scope_patterns_and_group_lambdas() -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = penalize_(
        model, opt, L1Prox(lam=1.0, scope="all", exclude=[r"^2\."], groups=[(r"bias", 0.5)])
    )
    assert {s.name: s.lam for s in h.selected} == {"0.weight": 1.0, "0.bias": 0.5}
    assert {n for n, _ in h.skipped} == {"2.weight", "2.bias"}
    assert "2 tensors" in h.summary() and "skipped" in h.summary()
    h2 = penalize_(model, opt, L1Prox(lam=1.0, include=[r"^2\."]))
    assert [s.name for s in h2.selected] == ["2.weight"]


def test_errors_are_clear() -> None:
    model = _net()
    with pytest.raises(
        SparsifyError, match=r"'lam' parameter of L1Prox must be a float in the range \[0, inf\)"
    ):
        L1Prox(lam=-0.1)
    with pytest.raises(SparsifyError, match="'threshold' parameter"):
        L1Prox(lam=0.1, threshold="lr")
    with pytest.raises(SparsifyError, match="selects no parameter"):
        penalize_(
            model, torch.optim.SGD(model.parameters(), lr=0.1), L1Prox(lam=1, include=["nothing"])
        )
    with pytest.raises(SparsifyError, match="optimizer does not hold it"):
        penalize_(model, torch.optim.SGD(model[0].parameters(), lr=0.1), L1Prox(lam=1))


def _lasso_problem(n: int = 50, p: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, _ = torch.linalg.qr(torch.randn(n, p, generator=g, dtype=torch.float64))  # X^T X = I
    y = torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def _fit(x: torch.Tensor, y: torch.Tensor, config, steps: int = 200) -> torch.Tensor:
    model = nn.Linear(x.shape[1], 1, bias=False).double()
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    penalize_(model, opt, config)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((model(x).squeeze(1) - y) ** 2).sum()).backward()
        opt.step()
    return model.weight.detach().squeeze(0)


def test_orthonormal_lasso_prox_converges_to_soft_threshold_of_xty() -> None:
    """With X^T X = I the lasso solution is soft_threshold(X^T y, lam), exactly sparse."""
    x, y = _lasso_problem()
    xty = x.T @ y
    mags = xty.abs().sort().values
    lam = float(mags[9:11].mean())  # between two magnitudes: half the coordinates must end at 0
    w = _fit(x, y, L1Prox(lam=lam, threshold="lr_lambda"))
    expected = soft_threshold(xty, lam)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-9)
    assert torch.equal(w == 0, xty.abs() < lam)  # zeros exactly where |X^T y| < lam
    assert (w == 0).sum() == 10

    w_sub = _fit(x, y, L1Subgradient(lam=lam))
    assert (w_sub == 0).sum() == 0, "subgradient L1 should leave no weight exactly at zero"
    # it hovers around the solution instead: close, but not sparse
    assert (w_sub - expected).abs().max() < 2 * 0.5 * lam


def test_penalty_configs_round_trip() -> None:
    import json

    import yaml

    from sparsify.penalties.base import REGISTRY, penalty_from_dict

    for kind, cls in REGISTRY.items():
        cfg = cls(lam=0.25, include=["a"], groups=[("b", 0.5)])
        for text in (json.dumps(cfg.to_dict()), yaml.safe_dump(cfg.to_dict())):
            back = penalty_from_dict(yaml.safe_load(text))
            assert back == cfg, kind
    copy.deepcopy(L1Prox(lam=1.0))
