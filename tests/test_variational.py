"""Sparse variational dropout (sparsify.penalties.variational): the method on a problem with a
known answer, its step against the penalised loss by hand, the noise's variance, the
detach contract, refusals, and a recipe through the real stages (exact target, resume)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_sparsity_target import _data, _recipe, kill_then_resume
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.penalties import VariationalDropout, penalize_
from sparsify.penalties.variational import LOG_SIGMA2, VariationalHandle, kl_approx, log_alpha
from sparsify.pipeline.stages import train


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float, steps: int = 1500):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    handle = penalize_(model, opt, VariationalDropout(lam=lam))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (100,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return handle, opt


def _problem(n: int = 2000, d: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels from the sign of 3 of ``d`` inputs: the other 17 carry nothing."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, :3] @ torch.tensor([2.0, -1.5, 1.0]) > 0).long()


def test_it_drops_the_inputs_that_carry_nothing_and_keeps_the_rest() -> None:
    torch.manual_seed(0)
    x, y = _problem()
    model = nn.Sequential(nn.Linear(20, 2))
    handle, _ = _fit(model, x, y, lam=1.0 / len(x))
    la = handle.log_alphas()["0.weight"]
    assert (la[:, :3] < 0).all()  # the signal: far inside the kept region
    assert (la[:, 3:] >= 3).float().mean() >= 0.8  # most noise inputs dropped
    assert handle.dropped() == pytest.approx(float((la >= 3).float().mean()))
    model.eval()
    before = model(x)
    handle.remove()
    w = model[0].weight
    assert torch.equal(model(x), before)  # remove() hardens to what eval computed
    assert (w[:, :3] != 0).all() and (w[:, 3:] == 0).float().mean() >= 0.8
    assert not torch.signbit(w[w == 0]).any()  # +0.0, not -0.0
    assert (model(x).argmax(1) == y).float().mean() > 0.97


def test_a_step_minimises_the_loss_plus_lam_times_kl() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.tensor([0, 1] * 4)
    model = nn.Linear(5, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    penalize_(model, opt, VariationalDropout(lam=0.3))
    ref = [p.detach().clone() for p in (model.weight, getattr(model, LOG_SIGMA2), model.bias)]
    torch.manual_seed(1)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    # by hand: the same noise draw, the penalised loss, one SGD step
    w, s2 = (r.clone().requires_grad_() for r in ref[:2])
    torch.manual_seed(1)
    mu = F.linear(x, w, ref[2])
    out = mu + (F.linear(x * x, s2.exp()) + 1e-8).sqrt() * torch.randn_like(mu)
    total = F.cross_entropy(out, y) + 0.3 * kl_approx(log_alpha(w, s2))
    gw, gs = torch.autograd.grad(total, (w, s2))
    assert torch.allclose(model.weight, ref[0] - 0.1 * gw, atol=1e-7)
    assert torch.allclose(getattr(model, LOG_SIGMA2), ref[1] - 0.1 * gs, atol=1e-7)


def test_conv2d_noise_has_the_local_reparameterisation_variance() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2, groups=1)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    penalize_(conv, opt, VariationalDropout(lam=1e-3))
    with torch.no_grad():
        getattr(conv, LOG_SIGMA2).fill_(math.log(0.05))
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        draws = torch.stack([conv(x) for _ in range(4000)])
        mean = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
        var = F.conv2d(x * x, torch.full_like(conv.weight, 0.05), None, stride=2, padding=1)
    assert torch.allclose(draws.mean(0), mean, atol=4 * (var.max() / 4000) ** 0.5)
    assert torch.allclose(draws.var(0), var, rtol=0.12)
    conv.eval()
    keep = log_alpha(conv.weight, getattr(conv, LOG_SIGMA2)) < 3
    assert torch.equal(conv(x), F.conv2d(x, conv.weight * keep, conv.bias, stride=2, padding=1))


def test_remove_gives_back_the_model_and_optimizer_it_found() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    keys = list(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    handle = penalize_(model, opt, VariationalDropout(lam=1e-3))
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["weight_decay"] == 0.0
    assert {k for k in model.state_dict() if k.endswith(LOG_SIGMA2)} == {
        "0." + LOG_SIGMA2, "2." + LOG_SIGMA2,
    }  # fmt: skip
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    sched.step()
    assert opt.param_groups[1]["lr"] == opt.param_groups[0]["lr"] < 1e-3  # scheduled too
    handle.remove()
    assert list(model.state_dict()) == keys and len(opt.param_groups) == 1
    assert len(opt.state) == 4  # the weights' and biases' Adam moments, none of the variances
    assert not model._forward_hooks and not model[0]._forward_hooks


@pytest.mark.parametrize(
    "make,config,expected",
    [
        (lambda: nn.Conv1d(2, 2, 3), VariationalDropout(lam=1e-3), "supports Linear and Conv2d"),
        (lambda: nn.Linear(3, 2), VariationalDropout(lam=1e-3, scope="all"), "not bias"),
        (lambda: nn.Linear(3, 2), VariationalDropout(lam=0.0), "with lam > 0"),
    ],
    ids=["conv1d", "bias", "lam0"],
)
def test_what_it_cannot_act_on_is_refused_in_one_line(make, config, expected: str) -> None:
    m = make()
    with pytest.raises(SparsifyError, match=expected) as info:
        penalize_(m, torch.optim.SGD(m.parameters(), lr=0.1), config)
    assert "\n" not in str(info.value)


def test_twice_on_one_layer_or_a_weight_outside_the_optimizer_is_refused() -> None:
    m = nn.Linear(3, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    penalize_(m, opt, VariationalDropout(lam=1e-3))
    with pytest.raises(SparsifyError, match="already has variational dropout"):
        penalize_(m, opt, VariationalDropout(lam=1e-3))
    other = nn.Linear(3, 2)
    with pytest.raises(SparsifyError, match="optimizer does not hold it"):
        penalize_(other, torch.optim.SGD([other.bias], lr=0.1), VariationalDropout(lam=1e-3))


def test_a_recipe_trains_to_the_exact_target_and_saves_no_variances(monkeypatch) -> None:
    lrs, real_remove = [], VariationalHandle.remove

    def remove(self: VariationalHandle) -> None:
        lrs.extend(g["lr"] for g in self.optimizer.param_groups)
        real_remove(self)

    monkeypatch.setattr(VariationalHandle, "remove", remove)
    pen = [{"kind": "variational_dropout", "lam": 1e-3}]
    adam = {"name": "adam", "lr": 1e-3, "lr_schedule": "cosine"}
    result = train(_recipe({"target": 0.9}, pen, optimizer=adam, epochs=3), _data(), progress=False)
    # the schedule stepped the variances' group with the weights' (made after it, it would not)
    assert len(lrs) == 2 and lrs[0] == lrs[1] < 1e-4
    sp = result.metrics["sparsity"]
    assert sp["exact"] and sp["zeros"] == round(0.9 * sp["selected"])
    assert not any(k.endswith(LOG_SIGMA2) for k in result.model.state_dict())
    # per epoch, the fraction the mask would drop; the last one is what remove() zeroed
    rows = sp["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["sparsity"] == 0 for r in rows)
    assert rows[-1]["dropped"] == sp["before_projection"] > 0


def test_a_killed_run_resumes_bit_for_bit_with_its_variances(tmp_path: Path, monkeypatch) -> None:
    pen = [{"kind": "variational_dropout", "lam": 1e-3}]
    r = _recipe({"target": 0.9}, pen, optimizer={"name": "adam", "lr": 1e-3}, epochs=3, stages=[])
    kill_then_resume(r, _data(), tmp_path, monkeypatch, saves=1)


def test_a_recipe_refuses_variational_dropout_on_biases() -> None:
    with pytest.raises(SparsifyError, match="variational_dropout needs scope 'prunable'"):
        _recipe({"target": 0.9}, [{"kind": "variational_dropout", "lam": 1e-3, "scope": "all"}])


def test_a_recipe_refuses_the_lambda_controller_with_variational_dropout() -> None:
    # the controller counts exact zeros per epoch; these weights only become 0 at the end
    with pytest.raises(SparsifyError, match="sparsity.control steers lambda") as info:
        _recipe({"target": 0.9, "control": True}, [{"kind": "variational_dropout", "lam": 1e-3}])
    assert "\n" not in str(info.value)


def test_a_weight_used_without_its_modules_forward_is_refused_before_it_changes() -> None:
    # nn.MultiheadAttention reads out_proj.weight directly: no hook, no noise, so the KL alone
    # would shrink it to 0; the first step refuses, naming it, and leaves the weights as they were
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    handle = penalize_(enc, opt, VariationalDropout(lam=1e-3))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc(torch.randn(4, 5, 16)).sum().backward()
    with pytest.raises(SparsifyError, match=r"self_attn\.out_proj\.weight did not run") as info:
        opt.step()
    assert "\n" not in str(info.value) and "exclude" in str(info.value)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())
    handle.remove()
    handle = penalize_(enc, opt, VariationalDropout(lam=1e-3, exclude=("out_proj",)))
    enc(torch.randn(4, 5, 16)).sum().backward()
    opt.step()  # the rest trains
    assert handle.step == 1


def test_remove_warns_in_one_line_when_a_layer_lost_every_weight() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = penalize_(model, opt, VariationalDropout(lam=1e-3))
    with torch.no_grad():  # every weight of the first layer deep inside its noise
        getattr(model[0], LOG_SIGMA2).fill_(5.0)
    with pytest.warns(UserWarning, match=r"dropped every weight of 0\.weight: the model") as rec:
        handle.remove()
    assert (
        len(rec) == 1 and "\n" not in str(rec[0].message) and "2.weight" not in str(rec[0].message)
    )
    assert not model[0].weight.any() and model[2].weight.any()
