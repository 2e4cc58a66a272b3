"""L2 coupled (in the loss) and decoupled (weight decay): what each equals, and no exact zeros."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsify import L2Coupled, Schedule, SparsifyError, WeightDecay, l2_penalty, penalize_


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 5, extra_loss=None) -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        loss.backward()
        opt.step()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=0.01),
    ],
)
def test_coupled_l2_equals_penalty_in_the_loss(make_opt) -> None:
    lam = 0.05
    a, b = _net(), _net()
    opt_a, opt_b = make_opt(a.parameters()), make_opt(b.parameters())
    penalize_(a, opt_a, L2Coupled(lam=lam, scope="all"))
    _train(a, opt_a)
    _train(b, opt_b, extra_loss=lambda m: l2_penalty(list(m.parameters()), lam))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert not any((p == 0).any() for p in a.parameters()), "L2 never makes exact zeros"


def test_coupled_l2_with_sgd_is_weight_decay_two_lambda() -> None:
    lam = 0.05
    a, b = _net(), _net()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    penalize_(a, opt_a, L2Coupled(lam=lam, scope="all"))
    _train(a, opt_a)
    _train(b, torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=2 * lam))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_decoupled_decay_lr_lambda_is_sgd_weight_decay() -> None:
    lam = 0.05
    a, b = _net(), _net()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    penalize_(a, opt_a, WeightDecay(lam=lam, threshold="lr_lambda", scope="all"))
    _train(a, opt_a)
    _train(b, torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=lam))
    # decay after the step vs inside it: equal to first order, not bit for bit
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=5e-3)


def test_linear_warmup_schedule() -> None:
    s = Schedule(kind="linear_warmup", length=2, unit="epochs")
    assert [s.factor(i, steps_per_epoch=5) for i in (0, 4, 9, 50)] == pytest.approx(
        [0.1, 0.5, 1.0, 1.0]
    )
    with pytest.raises(SparsifyError, match="steps_per_epoch"):
        s.factor(0)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SparsifyError, match="steps_per_epoch"):
        penalize_(model, opt, WeightDecay(lam=0.1, schedule=s))
    h = penalize_(
        model, opt, WeightDecay(lam=0.1, threshold="lambda", schedule=Schedule("linear_warmup", 4))
    )
    seen = []
    for _ in range(5):
        seen.append(h.coefficients()[0])
        _train(model, opt, steps=1)
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
