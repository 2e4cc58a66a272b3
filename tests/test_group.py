"""Group-lasso and sparse-group-lasso prox: formula, exact zero rows, the hook, the exact SGL prox."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sparsify import SparsifyError, penalize_, soft_threshold
from sparsify.penalties import (
    GroupLassoProx,
    SparseGroupLassoProx,
    group_threshold_,
    penalty_from_dict,
)
from sparsify.penalties.group import group_threshold


def _reference(w: torch.Tensor, t: float) -> torch.Tensor:
    """Row by row in float64, straight from the formula max(0, 1 - t/||w_g||) * w_g."""
    out = torch.empty_like(w, dtype=torch.float64)
    for j in range(w.shape[0]):
        g = w[j].double()
        norm = float(g.norm())
        out[j] = max(0.0, 1 - t / norm) * g if norm > 0 else g * 0
    return out


@pytest.mark.parametrize("shape", [(7, 5), (6, 3, 3, 3), (4, 2, 5)])
@pytest.mark.parametrize("size_scaled", [False, True])
def test_group_prox_matches_reference(shape: tuple[int, ...], size_scaled: bool) -> None:
    torch.manual_seed(0)
    w = torch.randn(shape) * torch.linspace(0.05, 2.0, shape[0]).reshape(
        -1, *[1] * (len(shape) - 1)
    )
    per_group = math.prod(shape[1:])
    t = 0.8
    t_g = t * math.sqrt(per_group) if size_scaled else t
    expected = _reference(w, t_g)
    got = w.clone()
    group_threshold_([got], t, size_scaled=size_scaled)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(group_threshold(w, t_g).double(), expected, rtol=1e-6, atol=1e-7)
    norms = w.reshape(shape[0], -1).norm(dim=1)
    dead = norms <= t_g
    assert dead.any() and (~dead).any(), "the test must cover both sides of the threshold"
    rows = got.reshape(shape[0], -1)
    assert (rows[dead] == 0).all() and not torch.signbit(rows[dead]).any()  # exact +0.0 rows
    assert (rows[~dead] != 0).all()
    # survivors keep their direction and lose exactly t_g of norm
    torch.testing.assert_close(rows[~dead].norm(dim=1), norms[~dead] - t_g, rtol=1e-5, atol=1e-6)


def test_group_prox_zero_threshold_and_zero_rows_are_safe() -> None:
    w = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    group_threshold_([w], 0.0)
    assert torch.equal(w, torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    group_threshold_([w], 1.0)  # a row of norm 0 must not produce NaN
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0], [2.4, 3.2]]))


def test_group_prox_refuses_biases() -> None:
    with pytest.raises(SparsifyError, match="rank >= 2"):
        group_threshold_([torch.ones(3)], 0.1)
    with pytest.raises(
        SparsifyError, match="'scope' parameter of GroupLassoProx must be 'prunable'"
    ):
        GroupLassoProx(lam=0.1, scope="all")
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SparsifyError, match=r"1\.weight, of rank < 2"):
        penalize_(  # refused when attached, naming the layer
            model,
            opt,
            GroupLassoProx(lam=0.1),
            filter_fn=lambda m, _n: isinstance(m, nn.BatchNorm1d),
        )
    with pytest.raises(SparsifyError, match="rank >= 2"):
        GroupLassoProx(lam=0.1).apply_([model[1].weight], 0.1)  # the step itself refuses too


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 16)
        self.conv = nn.Conv1d(1, 4, 3)
        self.out = nn.Linear(56, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x)).unsqueeze(1)  # (B, 1, 16)
        return self.out(torch.relu(self.conv(h)).flatten(1))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("threshold", ["lambda", "lr_lambda"])
@pytest.mark.parametrize("cls", [GroupLassoProx, SparseGroupLassoProx])
def test_hook_equals_step_then_prox(threshold: str, cls: type) -> None:
    model, twin = _Model(), _Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    t = 0.15  # per-step group threshold both conventions must give
    lam = t if threshold == "lambda" else t / 0.1
    extra = {"lam_l1": lam / 5} if cls is SparseGroupLassoProx else {}
    penalize_(model, opt, cls(lam=lam, threshold=threshold, **extra))
    for _ in range(4):
        _step(model, opt)
        _step(twin, twin_opt)
        with torch.no_grad():
            for name, p in twin.named_parameters():
                if name.endswith("weight"):
                    v = soft_threshold(p, t / 5) if extra else p
                    p.copy_(group_threshold(v, t))
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    rows = model.fc.weight
    assert (rows == 0).all(dim=1).any(), "a large lambda must zero whole rows"
    assert not (model.fc.bias == 0).any(), "biases are outside the scope"


def test_sparse_group_lasso_is_the_exact_prox_of_the_sum() -> None:
    """KKT of min_z 1/2||z - v||^2 + t1||z||_1 + t||z||_2, for the composed operator's z."""
    torch.manual_seed(0)
    v = (
        torch.randn(40, 6, dtype=torch.float64)
        * torch.linspace(0.1, 2, 40, dtype=torch.float64)[:, None]
    )
    t1, t = 0.3, 0.7
    z = v.clone()
    SparseGroupLassoProx(lam=t, lam_l1=t1).apply_([z], t)
    assert (z == 0).all(dim=1).any() and (z != 0).all(dim=1).any() and ((z == 0) & (v != 0)).any()
    for j in range(v.shape[0]):
        zj, vj = z[j], v[j]
        if (zj == 0).all():  # 0 is optimal iff the L1-shrunk vector fits in the t-ball
            assert float(soft_threshold(vj, t1).norm()) <= t + 1e-12
            continue
        nz = zj != 0
        grad = zj - vj + t1 * torch.sign(zj) + t * zj / zj.norm()
        torch.testing.assert_close(grad[nz], torch.zeros_like(grad[nz]), atol=1e-12, rtol=0)
        assert (vj[~nz].abs() <= t1 + 1e-12).all()
    # the other order is not the prox: it must disagree somewhere
    other = v.clone()
    group_threshold_([other], t)
    other = soft_threshold(other, t1)
    assert not torch.allclose(other, z)


def test_orthonormal_group_lasso_converges_to_block_soft_threshold() -> None:
    """With X^T X = I the one-group lasso solution is max(0, 1 - lam/||X^T y||) X^T y."""
    g = torch.Generator().manual_seed(0)
    x, _ = torch.linalg.qr(torch.randn(50, 8, generator=g, dtype=torch.float64))
    y = torch.randn(50, generator=g, dtype=torch.float64)
    xty = x.T @ y
    for lam, dead in ((0.5 * float(xty.norm()), False), (1.1 * float(xty.norm()), True)):
        model = nn.Linear(8, 1, bias=False).double()
        nn.init.zeros_(model.weight)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        penalize_(model, opt, GroupLassoProx(lam=lam, threshold="lr_lambda"))
        for _ in range(200):
            opt.zero_grad()
            (0.5 * ((model(x).squeeze(1) - y) ** 2).sum()).backward()
            opt.step()
        expected = max(0.0, 1 - lam / float(xty.norm())) * xty
        torch.testing.assert_close(model.weight.detach()[0], expected, atol=1e-9, rtol=0)
        assert bool((model.weight == 0).all()) == dead


def test_configs_value_and_round_trip() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert float(GroupLassoProx(lam=2.0).value([w], 2.0)) == pytest.approx(2 * (5 + 1))
    assert float(GroupLassoProx(lam=2.0, size_scaled=True).value([w], 2.0)) == pytest.approx(
        2 * math.sqrt(2) * 6
    )
    sgl = SparseGroupLassoProx(lam=2.0, lam_l1=1.0)
    assert float(sgl.value([w], 2.0)) == pytest.approx(2 * 6 + 1 * 8)
    for cfg in (GroupLassoProx(lam=0.1, threshold="lr_lambda", size_scaled=True), sgl):
        assert penalty_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(SparsifyError, match="'lam_l1' parameter"):
        SparseGroupLassoProx(lam=1.0, lam_l1=-1.0)
    with pytest.raises(SparsifyError, match="must be > 0 when lam_l1 > 0"):
        SparseGroupLassoProx(lam=0.0, lam_l1=1.0)
    with pytest.raises(SparsifyError, match="'size_scaled' parameter"):
        GroupLassoProx(lam=1.0, size_scaled="yes")
