"""Magnitude pruning (one-shot, gradual) and exact sparsity targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sparsify import GradualPruning, magnitude_prune_, prune_to_sparsity_
from sparsify.errors import SparsifyError
from sparsify.penalties import magnitude_masks


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(), nn.Linear(10, 3)
    )


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("granularity", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.33, 0.9, 1.0])
def test_masks_have_the_exact_count_even_with_ties(granularity: str, sparsity: float) -> None:
    params = [torch.ones(7, 3), torch.zeros(5), torch.full((4, 4), -2.0)]  # all ties
    masks = magnitude_masks(params, sparsity, granularity)
    if granularity == "global":
        assert sum(int((~m).sum()) for m in masks) == round(sparsity * 42)
    else:
        assert [int((~m).sum()) for m in masks] == [round(sparsity * p.numel()) for p in params]


def test_global_masks_equal_torch_prune_global_unstructured() -> None:
    ours, theirs = _mlp(), _mlp()
    prune_to_sparsity_(_weights(ours), 0.8)
    prune.global_unstructured(
        [(m, "weight") for m in theirs if isinstance(m, nn.Linear)],
        pruning_method=prune.L1Unstructured,
        amount=0.8,
    )
    for a, b in zip(_weights(ours), _weights(theirs)):
        assert torch.equal(a == 0, b == 0)
    zeros = [w for w in _weights(ours) if (w == 0).any()]
    assert zeros and not any(torch.signbit(w[w == 0]).any() for w in zeros)  # +0.0


X = torch.randn(64, 20, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(2))


def _steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[int]:
    zeros = []
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()
        zeros.append(sum(int((w == 0).sum()) for w in _weights(model)))
    return zeros


def _train(model: nn.Module, handle_fn, steps: int):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    handle = handle_fn(model, opt)
    return handle, _steps(model, opt, steps)


def test_gradual_pruning_follows_the_cubic_schedule_and_pruned_weights_stay_zero() -> None:
    cfg = GradualPruning(sparsity=0.9, start=2, end=10, every=2)
    model = _mlp()
    n = sum(w.numel() for w in _weights(model))
    handle, zeros = _train(model, lambda m, o: magnitude_prune_(m, o, cfg), 16)
    for step, count in enumerate(zeros):
        if step < 2:
            assert count == 0
        elif cfg.is_pruning_step(step) or step > 10:
            assert count == round(cfg.sparsity_at(step) * n), step
    assert zeros[-1] == round(0.9 * n)
    assert cfg.sparsity_at(2) == 0.0 and cfg.sparsity_at(10) == 0.9
    assert cfg.sparsity_at(6) == pytest.approx(0.9 * (1 - 0.5**3))
    # the momentum buffer of a pruned weight is zero too: it cannot revive the weight
    opt_state = handle.optimizer.state[_weights(model)[0]]["momentum_buffer"]
    assert (opt_state[_weights(model)[0] == 0] == 0).all()
    handle.remove()


def test_one_shot_and_a_resumed_run_are_bit_identical_to_an_uninterrupted_one() -> None:
    cfg = GradualPruning(sparsity=0.5, start=3, end=3)  # one-shot at step 3
    a, b = _mlp(), _mlp()
    ha, zeros = _train(a, lambda m, o: magnitude_prune_(m, o, cfg), 8)
    n = sum(w.numel() for w in _weights(a))
    assert zeros[:3] == [0, 0, 0] and set(zeros[3:]) == {round(0.5 * n)}
    hb, _ = _train(b, lambda m, o: magnitude_prune_(m, o, cfg), 5)
    state, opt = hb.state_dict(), hb.optimizer
    hb.remove()
    hc = magnitude_prune_(b, opt, cfg)  # a resumed run attaches a new handle...
    hc.load_state_dict(state)  # ...and restores step and masks
    _steps(b, opt, 3)
    assert hc.step == ha.step == 8
    for wa, wb in zip(a.parameters(), b.parameters()):
        assert torch.equal(wa, wb)


def test_resumed_masks_go_to_their_weights_device() -> None:
    # a resume state is read onto the CPU; on a GPU run masked_fill_ met CUDA weights with
    # CPU masks ("mask on cpu and self on cuda:0"). "meta" stands in for the GPU.
    cfg = GradualPruning(sparsity=0.5, start=0, end=0)
    model = _mlp()
    h, _ = _train(model, lambda m, o: magnitude_prune_(m, o, cfg), 2)
    state = h.state_dict()
    h.remove()
    model.to("meta")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    resumed = magnitude_prune_(model, opt, cfg)
    resumed.load_state_dict(state)
    assert {m.device.type for m in resumed.masks} == {"meta"}
    resumed.remove()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sparsity": 1.5}, "sparsity <= 1"),
        ({"sparsity": 0.5, "initial_sparsity": 0.7}, "initial_sparsity <= sparsity"),
        ({"sparsity": 0.5, "start": 5, "end": 2}, "start <= end"),
        ({"sparsity": 0.5, "every": 0}, "every > 0"),
        ({"sparsity": 0.5, "granularity": "row"}, "granularity"),
    ],
)
def test_bad_configs_are_refused_in_one_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(SparsifyError, match=needle) as err:
        GradualPruning(**kwargs)
    assert "\n" not in str(err.value)


def test_epochs_need_steps_per_epoch() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SparsifyError, match="steps_per_epoch"):
        magnitude_prune_(model, opt, GradualPruning(sparsity=0.5, end=2, unit="epochs"))
