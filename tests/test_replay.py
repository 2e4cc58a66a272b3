"""Replay (sparsify.accel.replay): a converted model's recorded kernel calls give the model's
own output bitwise, for new inputs, across calls, shapes, threads, copies and moves; buffers
shared by lifetime never overwrite a value still to be read; what cannot be replayed runs as is.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from sparsify import kernels
from sparsify.accel import Replay, sparsify_inference_

pytestmark = pytest.mark.skipif(not kernels.available(), reason="needs the C kernels")


def _sparse_(model: nn.Module, density: float = 0.2, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand(p.shape, generator=g) < density).float())
    return model.eval()


class LongSkip(nn.Module):
    """A stranger's net: a stem whose output is read again three kernel layers later (its
    buffer must outlive theirs), a depthwise conv, a flatten view of a kernel output and a
    classifier, 7 classes on 2 x 20 x 17 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.b = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16 * 20 * 17, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        y = self.b(torch.relu(self.dw(self.a(s))))
        return self.head((y + s).flatten(1))


def _converted(model: nn.Module, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    # fixed: every layer on the C kernels, untimed (what the replay records)
    sparsify_inference_(model, x, mode="fixed", kernels=("spk", "spk_depthwise"), threads=1)
    return model


def test_replay_equals_the_model_bitwise_on_new_inputs_and_keeps_old_outputs() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 2, 20, 17)
    model = _converted(_sparse_(LongSkip()), x)
    replay = Replay(model)
    with torch.inference_mode():
        first = replay(x)
        assert replay.why is None, replay.why
        (summary,) = replay.summary().values()
        assert summary["kernels"] >= 4, summary  # stem, a, dw, b (and the head) replayed
        inputs = [torch.randn(3, 2, 20, 17) for _ in range(3)]
        outs = [replay(v) for v in inputs]
        for v, out in zip(inputs, outs):  # a later call did not overwrite an earlier result
            assert torch.equal(out, model(v))
        assert torch.equal(first, model(x))
        assert not torch.equal(outs[0], outs[1])


def test_shared_buffers_never_hold_two_live_values() -> None:
    # every kernel output a distinct buffer (no sharing) must give the same as shared ones
    from sparsify.accel import replay as mod

    torch.manual_seed(2)
    x = torch.randn(1, 2, 20, 17)
    model = _converted(_sparse_(LongSkip()), x)
    replay = Replay(model)
    with torch.inference_mode():
        replay(x)
        (program,) = replay._programs.values()
        bufs = [s.out for _, s in program.steps if isinstance(s, mod._Kernel)]
        storages = {b.untyped_storage().data_ptr() for b in bufs}
        assert len(storages) < len(bufs), "no buffer was shared: the test checks nothing"
        for _ in range(3):
            v = torch.randn(1, 2, 20, 17)
            assert torch.equal(replay(v), model(v))


def test_a_residual_network_and_two_threads() -> None:
    from torchvision.models import resnet18

    torch.manual_seed(3)
    x = torch.randn(2, 3, 40, 40)
    model = _converted(_sparse_(resnet18(num_classes=5), 0.1), x)
    replay = Replay(model)
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            replay(x)
            assert replay.why is None and next(iter(replay.summary().values()))["kernels"] >= 8
            torch.set_num_threads(2)
            v = torch.randn(2, 3, 40, 40)
            assert torch.equal(replay(v), model(v))
    finally:
        torch.set_num_threads(threads)


def test_each_shape_has_its_recording_and_the_oldest_goes() -> None:
    from sparsify.accel.replay import MAX_SHAPES

    model = _converted(_sparse_(nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 4))),
                       torch.randn(2, 12))  # fmt: skip
    replay = Replay(model)
    with torch.inference_mode():
        for b in range(1, MAX_SHAPES + 3):
            v = torch.randn(b, 12)
            assert torch.equal(replay(v), model(v))
            assert torch.equal(replay(v), model(v))  # the recorded path too
    assert len(replay._programs) == MAX_SHAPES


def test_what_cannot_be_replayed_runs_as_is() -> None:
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            y = y + torch.rand(y.shape[0], 8) * 0  # fx: a multi-line TypeError (Proxy size)
            return y if y.sum() > 0 else -y

    x = torch.randn(2, 8)
    model = _converted(_sparse_(Branchy()), x)
    replay = Replay(model)
    with torch.inference_mode():
        assert torch.equal(replay(x), model(x))
        assert "torch.fx cannot trace" in replay.why and "\n" not in replay.why
        assert torch.equal(replay(x), model(x))
    # gradients wanted, training mode, another dtype, a non-contiguous input: the model itself
    lin = _converted(_sparse_(nn.Sequential(nn.Linear(6, 5))), torch.randn(4, 6))
    r = Replay(lin)
    g = torch.randn(4, 6, requires_grad=True)
    assert torch.equal(r(g), lin(g)) and r._programs == {}
    wide = torch.randn(6, 4).t()
    with torch.inference_mode():
        assert torch.equal(r(wide), lin(wide)) and r._programs == {}
        lin.train()
        assert torch.equal(r(torch.ones(4, 6)), lin(torch.ones(4, 6))) and r._programs == {}


def test_copies_pickles_and_moves_drop_the_recordings() -> None:
    x = torch.randn(1, 2, 20, 17)
    model = _converted(_sparse_(LongSkip()), x)
    replay = Replay(model)
    with torch.inference_mode():
        want = replay(x)
        assert replay._programs
        twin = copy.deepcopy(replay)
        assert twin._programs == {}
        again = pickle.loads(pickle.dumps(replay))
        for r in (twin, again):
            assert torch.equal(r(x), want) and r._programs  # recorded anew, on its own arrays
        del replay, model  # the copies keep working on their own memory
        assert torch.equal(twin(x), want) and torch.equal(again(x), want)
        twin.double()
        assert twin._programs == {}
        y = twin(x.double())
        assert y.dtype == torch.float64 and torch.allclose(y.float(), want, atol=1e-4)


def test_threads_calling_one_replay_at_once_get_their_own_results() -> None:
    import threading

    x = torch.randn(1, 2, 20, 17)
    model = _converted(_sparse_(LongSkip()), x)
    replay = Replay(model)
    inputs = [torch.randn(1, 2, 20, 17) for _ in range(4)]
    with torch.inference_mode():
        replay(x)
        want = [model(v) for v in inputs]
    bad: list[int] = []

    def work(k: int) -> None:
        with torch.inference_mode():
            for _ in range(30):
                if not torch.equal(replay(inputs[k]), want[k]):
                    bad.append(k)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not bad, bad


def test_other_calls_pass_through_and_a_non_module_is_refused_in_one_line() -> None:
    from sparsify.errors import SparsifyError

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> dict:
            y = self.fc(a)
            return {"y": y, "z": y + (0 if b is None else b)}

    model = _converted(_sparse_(Two()), torch.randn(2, 5))
    r = Replay(model)
    a, b = torch.randn(2, 5), torch.randn(2, 3)
    with torch.inference_mode():
        for got, want in ((r(a, b), model(a, b)), (r(a, b=b), model(a, b=b)), (r(a), model(a))):
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)

    class Named(nn.Module):  # one input, a dict of outputs: replayed, each output fresh
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, a: torch.Tensor) -> dict:
            y = self.fc(a)
            return {"y": y, "flat": y.flatten()}

    named = _converted(_sparse_(Named()), torch.randn(2, 5))
    rn = Replay(named)
    with torch.inference_mode():
        first = rn(a)
        assert rn.why is None and next(iter(rn.summary().values()))["kernels"] == 1
        second = rn(a + 1)
        for k in first:
            assert torch.equal(first[k], named(a)[k]) and torch.equal(second[k], named(a + 1)[k])
    with pytest.raises(SparsifyError, match="Replay wraps an nn.Module") as err:
        Replay(lambda x: x)
    assert "\n" not in str(err.value)


def test_a_recording_that_does_not_reproduce_the_model_is_refused() -> None:
    class Noisy(nn.Module):  # a random op between kernels: no replay can equal the model
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            return y + torch.rand_like(y)

    x = torch.randn(3, 6)
    model = _converted(_sparse_(Noisy()), x)
    replay = Replay(model)
    with torch.inference_mode():
        assert replay(x).shape == (3, 6)
        assert "did not reproduce" in replay.why
        assert list(replay._programs.values()) == [None]  # the model runs as is from now on
        torch.manual_seed(5)
        got = replay(x)
        torch.manual_seed(5)
        assert torch.equal(got, model(x))
