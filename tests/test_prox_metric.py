"""The "optimizer" threshold solves the stated lasso for SGD (any momentum) and Adam/AdamW.

Reference: coordinate descent on min 1/(2n) ||Xw - y||^2 + lam ||w||_1 over a correlated
design. Exact zeros and the solution must match; "lr_lambda" is shown to solve a different
problem under momentum ((1 - mu) lam) and under Adam (no prox method at all).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from sparsify import L1Prox, penalize_
from sparsify.errors import SparsifyError


def _problem(seed: int = 0, n: int = 100, p: int = 20, rho: float = 0.6):
    rng = np.random.default_rng(seed)
    cov = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    x = rng.standard_normal((n, p)) @ np.linalg.cholesky(cov).T
    w = np.zeros(p)
    w[::4] = 2 * rng.standard_normal(len(w[::4]))
    return x, x @ w + 0.5 * rng.standard_normal(n)


def _coordinate_descent(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    n, p = x.shape
    w, col, r = np.zeros(p), (x**2).sum(0) / n, y.copy()
    for _ in range(10_000):
        moved = 0.0
        for j in range(p):
            old = w[j]
            rho = x[:, j] @ r / n + col[j] * old
            w[j] = np.sign(rho) * max(abs(rho) - lam, 0.0) / col[j]
            r -= x[:, j] * (w[j] - old)
            moved = max(moved, abs(w[j] - old))
        if moved < 1e-15:
            return w
    raise AssertionError("coordinate descent did not converge")


def _prox_train(
    x, y, lam, make_opt: Callable, threshold: str, steps: int, device: str = "cpu"
) -> np.ndarray:
    xt, yt = torch.tensor(x, device=device), torch.tensor(y, device=device)
    lin = torch.nn.Linear(x.shape[1], 1, bias=False).double().to(device)
    torch.nn.init.zeros_(lin.weight)
    opt = make_opt(lin.parameters())
    handle = penalize_(lin, opt, L1Prox(lam=lam, threshold=threshold))
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((lin(xt).squeeze(1) - yt) ** 2).mean()).backward()
        opt.step()
    handle.remove()
    return lin.weight.detach().cpu().numpy()[0]


X, Y = _problem()
L_SMOOTH = float(np.linalg.eigvalsh(X.T @ X / len(Y)).max())
LAM = 0.25 * float(np.abs(X.T @ Y / len(Y)).max())
REF = _coordinate_descent(X, Y, LAM)

OPTIMIZERS = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=1 / L_SMOOTH), 1500),
    "sgd-momentum": (lambda ps: torch.optim.SGD(ps, lr=0.5 / L_SMOOTH, momentum=0.9), 1500),
    "sgd-nesterov": (
        lambda ps: torch.optim.SGD(ps, lr=0.5 / L_SMOOTH, momentum=0.9, nesterov=True),
        1500,
    ),
    "sgd-dampening": (
        lambda ps: torch.optim.SGD(ps, lr=0.5 / L_SMOOTH, momentum=0.9, dampening=0.5),
        1500,
    ),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=3e-2), 1500),
    "adamw": (lambda ps: torch.optim.AdamW(ps, lr=3e-2, weight_decay=0.0), 1500),
    "adam-amsgrad": (lambda ps: torch.optim.Adam(ps, lr=3e-2, amsgrad=True), 1500),
}


def test_reference_is_a_sparse_lasso_solution() -> None:
    assert 3 <= int((REF == 0).sum()) < len(REF) - 1


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_threshold_solves_the_lasso(name: str) -> None:
    make, steps = OPTIMIZERS[name]
    w = _prox_train(X, Y, LAM, make, "optimizer", steps)
    np.testing.assert_array_equal(w == 0, REF == 0)  # the same exact zeros
    np.testing.assert_allclose(w, REF, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_threshold_solves_the_lasso_on_cuda(name: str) -> None:
    # CUDA runs the optimizers' foreach paths and the prox's foreach soft-threshold
    make, steps = OPTIMIZERS[name]
    w = _prox_train(X, Y, LAM, make, "optimizer", steps, device="cuda")
    np.testing.assert_array_equal(w == 0, REF == 0)
    np.testing.assert_allclose(w, REF, atol=1e-9)


def test_lr_lambda_under_momentum_solves_the_lasso_at_one_minus_mu_lambda() -> None:
    make, steps = OPTIMIZERS["sgd-momentum"]
    w = _prox_train(X, Y, LAM, make, "lr_lambda", steps)
    assert np.abs(w - REF).max() > 0.1  # not the stated problem...
    np.testing.assert_allclose(w, _coordinate_descent(X, Y, 0.1 * LAM), atol=1e-9)  # ...this one


def test_lr_lambda_under_adam_is_not_the_lasso() -> None:
    make, steps = OPTIMIZERS["adam"]
    w = _prox_train(X, Y, LAM, make, "lr_lambda", steps)
    assert not np.array_equal(w == 0, REF == 0) or np.abs(w - REF).max() > 0.1


def test_unknown_optimizers_are_refused_in_one_line() -> None:
    lin = torch.nn.Linear(4, 1)
    for opt in (
        torch.optim.RMSprop(lin.parameters()),
        torch.optim.SGD(lin.parameters(), lr=0.1, maximize=True),
    ):
        with pytest.raises(SparsifyError) as err:
            penalize_(lin, opt, L1Prox(lam=0.1, threshold="optimizer"))
        assert "\n" not in str(err.value) and "threshold 'optimizer'" in str(err.value)


def test_zeros_written_by_the_metric_prox_are_positive_zero() -> None:
    lin = torch.nn.Linear(64, 8)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    penalize_(lin, opt, L1Prox(lam=1e4, threshold="optimizer"))
    lin(torch.randn(4, 64)).sum().backward()
    opt.step()
    w = lin.weight.detach()
    assert (w == 0).all() and not torch.signbit(w).any()
