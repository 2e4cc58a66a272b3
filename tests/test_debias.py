"""Debiasing: with the support frozen, zeros stay exactly zero through SGD momentum and Adam."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsify import SparsifyError
from sparsify.penalties import freeze_support_

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _pruned(name: str) -> tuple[nn.Module, torch.optim.Optimizer, list[torch.Tensor]]:
    """A model after some training (optimizer state is warm), then half its weights zeroed."""
    model = _model()
    opt = OPTIMIZERS[name](model.parameters())
    torch.manual_seed(1)
    for _ in range(3):
        _step(model, opt)
    zeros = []
    with torch.no_grad():
        for layer in (model[0], model[2]):
            z = layer.weight.abs() < layer.weight.abs().median()
            layer.weight[z] = 0
            zeros.append(z)
    return model, opt, zeros


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_zeros_stay_exactly_zero(name: str) -> None:
    # control: without the freeze, warm momentum/Adam state revives the zeros
    model, opt, zeros = _pruned(name)
    _step(model, opt)
    assert (model[0].weight[zeros[0]] != 0).any(), "the control must show revival"

    model, opt, zeros = _pruned(name)
    before = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    handle = freeze_support_(model, opt)
    for p, z in zip((model[0].weight, model[2].weight), zeros):
        for key, state in opt.state[p].items():  # stale state at the zeros is cleared now
            if key != "step" and state.shape == p.shape:
                assert (state[z] == 0).all(), key
    torch.manual_seed(2)
    for _ in range(10):
        _step(model, opt)
        for layer, z in zip((model[0], model[2]), zeros):
            assert (layer.weight[z] == 0).all()
            assert not torch.signbit(layer.weight[z]).any()
            for key, state in opt.state[layer.weight].items():
                if key != "step" and state.shape == layer.weight.shape:
                    assert (state[z] == 0).all(), key
    for layer, z, b in zip((model[0], model[2]), zeros, before):
        assert (layer.weight[~z] != b[~z]).all(), "the support must keep training"
        assert (layer.weight[~z] != 0).all()
    assert handle.density() == pytest.approx(0.5, abs=0.02)
    assert "frozen support: 2 tensors" in handle.summary() and "2 tensors" in handle.summary()

    handle.remove()
    _step(model, opt)
    assert (model[0].weight[zeros[0]] != 0).any(), "removed: zeros may move again"


def test_gradient_hook_masks_grad() -> None:
    model, opt, zeros = _pruned("sgd_momentum")
    freeze_support_(model, opt)
    model(torch.randn(4, 8)).sum().backward()
    assert (model[0].weight.grad[zeros[0]] == 0).all()
    assert (model[0].weight.grad[~zeros[0]] != 0).any()
    assert model[0].bias.grad is not None and (model[0].bias.grad != 0).any()  # biases free


def test_errors() -> None:
    model = _model()
    with pytest.raises(SparsifyError, match="selects no parameter"):
        freeze_support_(model, torch.optim.SGD(model.parameters(), lr=0.1), include=["nothing"])
    with pytest.raises(SparsifyError, match=r"does not hold 2\.weight"):
        freeze_support_(model, torch.optim.SGD(model[0].parameters(), lr=0.1))
