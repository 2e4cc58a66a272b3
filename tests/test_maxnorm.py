"""Max-norm projection: the caps hold, the direction is kept, the hook composes with L1 prox,
recipes validate it, and it takes away the rescaling that lets L1 kill whole units."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsify import L1Prox, MaxNorm, SparsifyError, penalize_, soft_threshold
from sparsify.penalties import max_norm_, penalty_from_dict
from sparsify.penalties.maxnorm import group_norms
from sparsify.pipeline.recipe import PenaltySpec


@pytest.mark.parametrize("per", ["in", "out"])
@pytest.mark.parametrize("shape", [(7, 5), (6, 4, 3, 3)])
def test_projection_caps_every_group_and_keeps_its_direction(
    per: str, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    w = torch.randn(shape)
    w[0 if per == "out" else slice(None), 0 if per == "in" else slice(None)] *= 1e-3  # one small
    norms = group_norms(w, per)
    assert norms.shape == (shape[0] if per == "out" else shape[1],)
    mid = norms.numel() // 2
    r = float(norms.sort().values[mid - 1 : mid + 1].mean())  # between two groups: no tie
    p = w.clone()
    max_norm_([p], r, per)
    after = group_norms(p, per)
    assert (after <= r * (1 + 1e-6)).all()
    big = norms > r
    torch.testing.assert_close(after[big], torch.full_like(after[big], r))  # the projection: onto
    # the sphere, not inside it; groups already inside are untouched, bit for bit
    dim = 0 if per == "out" else 1
    for g in range(norms.numel()):
        wg, pg = w.select(dim, g), p.select(dim, g)
        if big[g]:
            torch.testing.assert_close(pg, wg * (r / norms[g]))
        else:
            assert torch.equal(pg, wg)
    z = w.clone()
    z[z.abs() < 0.5] = 0
    max_norm_([z], 0.1, per)
    assert torch.equal(z == 0, w.abs() < 0.5), "a rescaling keeps exactly the zeros it was given"


def test_the_hook_runs_after_l1_prox_as_registered_and_keeps_its_zeros() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    twin = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    twin.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.5)
    penalize_(model, opt, L1Prox(lam=0.002, threshold="lambda"))
    handle = penalize_(model, opt, MaxNorm(radius=0.3, per="in", include=[r"^2\.weight$"]))
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    for _ in range(20):
        for m, o in ((model, opt), (twin, twin_opt)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
        # by hand, in the registered order: soft-threshold every weight, then cap fc2's columns
        with torch.no_grad():
            for w in (twin[0].weight, twin[2].weight):
                w.copy_(soft_threshold(w, 0.002))
        max_norm_([twin[2].weight], 0.3, "in")
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b)
        assert (group_norms(model[2].weight, "in") <= 0.3 + 1e-6).all()
    w2 = model[2].weight
    assert (w2 == 0).any(), "the prox made zeros and the cap, a rescaling, kept them"
    assert group_norms(model[0].weight, "in").max() > 0.3, "fc1 is outside the include: uncapped"
    handle.remove()


def test_config_and_recipe_refuse_bad_settings_in_one_line() -> None:
    with pytest.raises(SparsifyError, match="radius must be finite and > 0"):
        MaxNorm(radius=0.0)
    with pytest.raises(SparsifyError, match="'per' parameter of MaxNorm"):
        MaxNorm(per="rows")
    with pytest.raises(SparsifyError, match="'scope' parameter of MaxNorm"):
        MaxNorm(scope="all")
    with pytest.raises(SparsifyError, match=r"rank >= 2; got shape \(4,\)"):
        max_norm_([torch.ones(4)], 1.0)
    cfg = MaxNorm(radius=0.5, per="out", include=["fc"])
    assert penalty_from_dict(cfg.to_dict()) == cfg
    spec = PenaltySpec.model_validate({"kind": "max_norm", "radius": 2.0})
    assert spec.lam == 1.0 and penalty_from_dict(spec.to_config_dict()) == MaxNorm(radius=2.0)
    for bad, msg in (
        ({"kind": "max_norm", "radius": -1}, "greater than 0"),
        ({"kind": "l1_prox", "lam": 0.1, "radius": 1.0}, "'radius' applies to max_norm"),
        ({"kind": "max_norm", "per": "both"}, "'in' or 'out'"),
    ):
        with pytest.raises(ValueError, match=msg):
            PenaltySpec.model_validate(bad)


def _units_alive(model: nn.Sequential) -> int:
    fan_in = model[0].weight.abs().sum(dim=1)
    fan_out = model[2].weight.abs().sum(dim=0)
    return int(((fan_in > 0) & (fan_out > 0)).sum())


def test_max_norm_keeps_units_that_l1_collapses_through_rescaling() -> None:
    """The mechanism of results/compare/units_alive.txt on a toy: L1 prox on both layers of a
    ReLU net ends with fewer live hidden units than the same L1 with the next layer's fan-out
    capped, at the same lambda and steps (prox L1 alone can grow a unit's fan-out to shrink its
    fan-in for free; max-norm takes that direction away)."""
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    teacher = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        y = teacher(x)
    alive = {}
    for capped in (False, True):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        penalize_(model, opt, L1Prox(lam=1e-2, threshold="lr_lambda"))
        if capped:
            r = float(
                group_norms(model[2].weight.detach(), "in").max()
            )  # the init's largest fan-out
            penalize_(model, opt, MaxNorm(radius=r, per="in", include=[r"^2\.weight$"]))
        for _ in range(500):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        alive[capped] = _units_alive(model)
    assert alive[True] >= alive[False] + 5, alive
