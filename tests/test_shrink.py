"""Shrink: same outputs with dead units removed, constants folded, residual sets kept consistent."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from sparsify import SparsifyError
from sparsify.cli import main
from sparsify.pipeline.checkpoint import load_checkpoint, save_checkpoint
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.zoo import build_model
from sparsify.structure.shrink import (
    count_macs,
    resize_to_state_dict_,
    shrink_,
)

ZOO = ["lecture_convnet", "lenet300_100", "lenet5"]
OUTPUT_LAYERS = {"fc2", "fc3", "fc"}


@torch.no_grad()
def _kill(model: nn.Module, frac: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Zero a random ``frac`` of the output units of every hidden Linear/Conv; give them a bias
    of either sign (so some emit relu(b) > 0 and must be folded, others emit 0)."""
    g = torch.Generator().manual_seed(seed)
    dead = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)) and name not in OUTPUT_LAYERS:
            d = torch.rand(mod.weight.shape[0], generator=g) < frac
            mod.weight[d] = 0
            if mod.bias is not None:
                mod.bias[d] = torch.randn(int(d.sum()), generator=g)
            dead[name] = d
        if isinstance(mod, nn.BatchNorm2d):  # non-trivial statistics: BN's shift is a constant too
            mod.running_mean.normal_(0, 0.2, generator=g)
            mod.running_var.uniform_(0.5, 1.5, generator=g)
            mod.weight.uniform_(0.5, 1.5, generator=g)
            mod.bias.normal_(0, 0.2, generator=g)
    return dead


@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_same_outputs_and_every_dead_unit_removed(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    dead = _kill(model, 0.4)
    reference = copy.deepcopy(model)
    report = shrink_(model, torch.randn(4, 1, 28, 28))
    x = torch.randn(16, 1, 28, 28)  # not the example shrink_ saw
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    for layer, d in dead.items():  # no padding in these models: every dead unit can go
        mod = model.get_submodule(layer)
        assert mod.weight.shape[0] == int((~d).sum()), layer
        assert not (mod.weight.flatten(1) == 0).all(dim=1).any(), layer
    groups = [g for g in report.groups if not g["pinned"]]
    assert sum(g["folded"] for g in groups) > 0, "random biases must exercise the fold"
    assert sum(g["removed"] for g in groups) == sum(int(d.sum()) for d in dead.values())
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    assert report.params_after == sum(p.numel() for p in model.parameters())
    assert report.macs_after == sum(count_macs(model, x).values())
    assert report.max_abs_diff <= 1e-5 and "params" in report.table()


def test_dead_neuron_with_bias_is_folded_not_dropped() -> None:
    torch.manual_seed(0)
    model = build_model("lenet300_100").eval()
    with torch.no_grad():
        model.fc1.weight[:5] = 0
        model.fc1.bias[:5] = torch.tensor([0.7, 1.3, -0.4, 0.0, 2.0])  # relu: 0.7, 1.3, 0, 0, 2
    x = torch.randn(8, 1, 28, 28)
    ref = model(x)
    naive = copy.deepcopy(model)  # what silently dropping them would compute
    with torch.no_grad():
        naive.fc2.weight[:, :5] = 0
    assert (naive(x) - ref).abs().max() > 1e-3, "the constants must matter in this test"
    fc2_bias = model.fc2.bias.detach().clone()
    w_cols = model.fc2.weight.detach()[:, :5].clone()
    shrink_(model, x)
    assert model.fc1.out_features == 295 and model.fc2.in_features == 295
    const = torch.tensor([0.7, 1.3, 0.0, 0.0, 2.0])
    torch.testing.assert_close(model.fc2.bias.detach(), fc2_bias + w_cols @ const)
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


class _Padded(nn.Module):
    """conv -> relu -> maxpool -> conv (padding 1) -> flatten -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3)
        self.c2 = nn.Conv2d(6, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 12, 12)
        h = self.pool(torch.relu(self.c1(x)))  # (B, 6, 6, 6)
        return self.fc(torch.relu(self.c2(h)).flatten(1))


def test_padded_consumer_keeps_nonzero_constants_and_drops_zero_ones() -> None:
    torch.manual_seed(0)
    model = _Padded().eval()
    with torch.no_grad():
        model.c1.weight[:3] = 0
        model.c1.bias[:3] = torch.tensor([0.5, -0.5, 0.0])  # constants relu(b): 0.5, 0, 0
        model.c2.weight[:2] = 0
        model.c2.bias[:2] = torch.tensor([0.8, -1.0])  # 0.8 folds into fc (no padding there)
    x = torch.randn(4, 1, 12, 12)
    ref = model(x)
    report = shrink_(model, x)
    first = next(g for g in report.groups if g["producers"] == ["c1"])
    assert (first["dead"], first["removed"], first["kept_constant"]) == (3, 2, 1)
    assert model.c1.out_channels == 4 and model.c2.in_channels == 4
    assert model.c2.out_channels == 2 and model.fc.in_features == 2 * 36
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_resnet18_random_dead_channels_tied_sets_stay_consistent() -> None:
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18").eval()
    _kill(model, 0.5)
    with torch.no_grad():  # a channel dead in every producer of layer1's tied set
        for conv in (model.conv1, model.layer1[0].conv2, model.layer1[1].conv2):
            conv.weight[:3] = 0
    reference = copy.deepcopy(model)
    report = shrink_(model, torch.randn(2, 1, 28, 28))
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    tied = {c.out_channels for c in (model.conv1, model.layer1[0].conv2, model.layer1[1].conv2)}
    assert len(tied) == 1 and model.layer2[0].downsample[0].in_channels in tied
    assert model.bn1.num_features in tied and model.layer1[0].conv1.in_channels in tied
    stem = next(g for g in report.groups if "conv1" in g["producers"])
    assert set(stem["producers"]) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert stem["dead"] >= 3 and stem["kept"] + stem["removed"] == 64
    assert report.params_after < report.params_before
    for g in report.groups:
        if g["pinned"]:
            assert g["producers"] == ["fc"]


def test_shrunk_checkpoint_saves_and_loads(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    _kill(model, 0.5)
    x = torch.randn(4, 1, 28, 28)
    shrink_(model, x)
    recipe = Recipe.from_dict({"model": {"name": "lenet5"}})
    save_checkpoint(tmp_path / "run", model, recipe)
    ckpt = load_checkpoint(tmp_path / "run")
    with pytest.raises(SparsifyError, match="do not fit"):
        ckpt.build_model()  # the dense architecture: the strict loader refuses the widths
    loaded = ckpt.build_model(resize=True)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    fresh = build_model("lenet5")
    assert set(resize_to_state_dict_(fresh, model.state_dict())) == {"conv1", "conv2", "fc1", "fc2"}


def test_cli_shrink_writes_checkpoint_and_report(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = build_model("lecture_convnet").eval()
    _kill(model, 0.5)
    recipe = Recipe.from_dict({"model": {"name": "lecture_convnet"}})
    save_checkpoint(tmp_path / "run", model, recipe, {"test_error": 0.5})
    out = tmp_path / "small"
    assert main(["shrink", str(tmp_path / "run"), "--out", str(out), "--repeats", "3"]) == 0
    text = capsys.readouterr().out
    assert "conv1" in text and "dense latency" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_error"] == 0.5
    assert metrics["shrink"]["params_after"] < metrics["shrink"]["params_before"]
    assert set(metrics["shrink"]["latency_ms"]) == {"before", "after"}
    loaded = load_checkpoint(out).build_model()
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert main(["shrink", str(tmp_path / "nothing"), "--out", str(out)]) == 2


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(4, 6)
        self.out = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.a(x), self.b(x)], dim=1))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.out(self.a(x))
        return self.out(self.a(-x))


def test_unknown_ops_pin_and_untraceable_models_are_refused() -> None:
    model = _Concat().eval()
    with torch.no_grad():
        model.a.weight[:3] = 0
    report = shrink_(model, torch.randn(2, 4))
    assert model.a.out_features == 6  # concat is not understood: its inputs are kept whole
    assert any("cat" in reason for g in report.groups for reason in g["pinned"])
    with pytest.raises(SparsifyError, match="cannot trace _Branchy"):
        shrink_(_Branchy(), torch.randn(2, 4))


class _ViewResidual(nn.Module):
    """Functional ops, ``x.view(x.size(0), -1)`` and a residual add between Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.a = nn.Linear(4 * 4 * 4, 8)
        self.b = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 6, 6)
        h = torch.relu(self.conv(x))  # (B, 4, 4, 4)
        h = torch.relu(self.a(h.view(h.size(0), -1)))  # (B, 8)
        return self.out(torch.relu(self.b(h) + h))


def test_functional_view_and_linear_residual() -> None:
    torch.manual_seed(0)
    model = _ViewResidual().eval()
    with torch.no_grad():
        model.conv.weight[1] = 0
        model.a.weight[:3] = 0
        model.b.weight[1:3] = 0  # rows 1, 2 dead in both producers of the tied set; 0 only in a
    x = torch.randn(5, 1, 6, 6)
    ref = model(x)
    shrink_(model, x)
    assert model.conv.out_channels == 3 and model.a.in_features == 48
    assert model.a.out_features == model.b.out_features == model.b.in_features == 6
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def _hook_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """The former forward-hook count: Linear in*out per row, Conv weight[0].numel() per output."""
    macs: dict[str, int] = {}

    def hook(name: str):
        def fn(mod: nn.Module, _args: object, out: torch.Tensor) -> None:
            if isinstance(mod, nn.Linear):
                per = mod.in_features * mod.out_features * (out[0].numel() // mod.out_features)
            else:
                per = mod.weight[0].numel() * out[0].numel()
            macs[name] = macs.get(name, 0) + per

        return fn

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    with torch.no_grad():
        model.eval()(example[:1])
    for h in handles:
        h.remove()
    return macs


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        self.conv1d = nn.Conv1d(8, 6, 3, bias=False)
        self.tok = nn.Linear(6, 5)  # applied to a (B, T, 6) tensor: T rows per sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).flatten(2)  # (B, 8, 16)
        return self.tok(self.conv1d(h).transpose(1, 2))


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("lenet300_100", (2, 1, 28, 28)),
        ("lecture_convnet", (2, 1, 28, 28)),
        ("mixed", (2, 4, 8, 8)),
    ],
)
def test_count_macs_by_flop_counter_equals_the_layer_formula(name: str, shape: tuple) -> None:
    torch.manual_seed(0)
    model = _Mixed() if name == "mixed" else build_model(name)
    x = torch.randn(shape)
    got = count_macs(model, x)
    assert got == _hook_macs(model, x) and all(v > 0 for v in got.values())
    if name == "lenet300_100":
        assert got == {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}


def test_a_layer_with_every_unit_dead_keeps_one_and_the_cli_shrinks_it(tmp_path) -> None:
    """Documented behaviour: shrink never makes a 0-unit layer; it keeps one dead unit."""
    import subprocess
    import sys

    from sparsify.pipeline.checkpoint import checkpoint_from_module

    torch.manual_seed(0)
    model = build_model("lenet300_100").eval()
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.zero_()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    shrink_(model, x)
    assert model.fc1.out_features == 1 and model.fc2.in_features == 1
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)

    dead = build_model("lenet300_100")
    with torch.no_grad():
        dead.fc1.weight.zero_()
        dead.fc1.bias.zero_()
    checkpoint_from_module(tmp_path / "dead", dead, (1, 28, 28), "lenet300_100")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsify",
            "shrink",
            str(tmp_path / "dead"),
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    shrunk = load_checkpoint(tmp_path / "s")
    assert tuple(shrunk.state_dict["fc1.weight"].shape) == (1, 784)
    shrunk.build_model()


def test_a_checkpoint_with_a_zero_unit_layer_is_refused_in_one_line(tmp_path) -> None:
    import subprocess
    import sys

    state = build_model("lenet300_100").state_dict()
    state["fc1.weight"], state["fc1.bias"] = state["fc1.weight"][:0], state["fc1.bias"][:0]
    state["fc2.weight"] = state["fc2.weight"][:, :0]
    save_checkpoint(
        tmp_path / "zero",
        state,
        model_name="lenet300_100",
        model_args={},
        input_shape=(1, 28, 28),
        extra_metadata={"shrunk": json.dumps({"fc1": [0, 784], "fc2": [100, 0]})},
    )
    with pytest.raises(SparsifyError, match=r"'fc1.bias' has shape \(0,\): a layer with 0 units"):
        load_checkpoint(tmp_path / "zero")
    for command in ("shrink", "bench"):
        extra = ["--quick", "--no-rss"] if command == "bench" else []
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sparsify",
                command,
                str(tmp_path / "zero"),
                *extra,
                "--out",
                str(tmp_path / command),
            ],
            capture_output=True,
            text=True,
        )
        err = proc.stderr.strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1, proc.stderr
        assert "a layer with 0 units" in err and not (tmp_path / command).exists()
