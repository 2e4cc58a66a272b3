"""Bring your own model: a class from the user's own package, registered by ``--plugin``,
saved with ``checkpoint_from_module`` at 3x64x64, through the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sparsify
from sparsify.errors import SparsifyError
from sparsify.pipeline import zoo
from sparsify.pipeline.checkpoint import checkpoint_from_module, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PKG = "sparsify_test_plugin_rgb"
NAME = "tiny_rgb"

PLUGIN = textwrap.dedent(
    f'''
    """A user's package: importing it registers its model with sparsify."""
    import torch
    from torch import nn

    import sparsify


    class TinyRGBNet(nn.Module):
        """conv3(8, stride 2)-relu-pool4, fc 512 -> classes: the Linear fixes a 64x64 input."""

        def __init__(self, num_classes: int = 5, in_channels: int = 3) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
            self.pool = nn.MaxPool2d(4)
            self.fc = nn.Linear(8 * 8 * 8, 64)
            self.out = nn.Linear(64, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 64, 64)
            x = self.pool(torch.relu(self.conv(x)))  # (B, 8, 8, 8)
            x = torch.relu(self.fc(x.flatten(1)))  # (B, 64)
            return self.out(x)


    def build(num_classes: int = 5, in_channels: int = 3) -> nn.Module:
        return TinyRGBNet(num_classes, in_channels)


    sparsify.register_model({NAME!r}, build)
    '''
)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real importable package folder; imported here too (as the user's script would)."""
    root = tmp_path_factory.mktemp("plugin")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text(PLUGIN)
    sys.path.insert(0, str(root))
    try:
        __import__(PKG)
    finally:
        sys.path.remove(str(root))
    return root


def _model(plugin: Path) -> nn.Module:
    """The user's model, trained elsewhere: 80% of each weight zero, dead units in fc."""
    torch.manual_seed(0)
    model = zoo.MODELS[NAME]().eval()
    with torch.no_grad():
        for p in (model.conv.weight, model.fc.weight, model.out.weight):
            p.mul_(torch.rand_like(p) > 0.8)  # leaves -0.0 where p < 0: still zeros
        model.fc.weight[:16] = 0.0  # 16 dead units for shrink
        model.fc.bias[:16] = 0.0
    return model


def _cli(plugin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin)])}
    env.pop("SPARSIFY_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "sparsify", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def ckpt(plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("own") / "ckpt"
    sparsify.checkpoint_from_module(out, _model(plugin), input_shape=(3, 64, 64), name=NAME)
    return out


def test_checkpoint_of_an_own_module_records_name_and_shape(plugin: Path, ckpt: Path) -> None:
    c = load_checkpoint(ckpt)
    assert c.recipe is None and c.model_name == NAME and c.input_shape == (3, 64, 64)
    assert c.example_input(batch=2).shape == (2, 3, 64, 64)
    model = _model(plugin)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(c.build_model()(x), model(x), rtol=0, atol=0)
    # or into a module the user built, without the registry
    mine = sparsify.load_checkpoint(ckpt, model=zoo.MODELS[NAME]())
    torch.testing.assert_close(mine(x), model(x), rtol=0, atol=0)
    with pytest.raises(SparsifyError, match="weights do not fit"):
        load_checkpoint(ckpt, model=zoo.MODELS[NAME](num_classes=7))


def test_cli_export_stats_footprint_bench_shrink_with_a_plugin(
    plugin: Path, ckpt: Path, tmp_path: Path
) -> None:
    model = _model(plugin)
    out = tmp_path / "export"
    r = _cli(
        plugin,
        "--plugin",
        PKG,
        "export",
        str(ckpt),
        "--format",
        "all",
        "--out",
        str(out),
        "--check",
    )
    assert r.returncode == 0, r.stderr
    assert "input shape [3, 64, 64], dynamic: batch" in r.stdout
    assert "vs float64 (fp32's own noise" in r.stdout and ": ok)" in r.stdout, r.stdout
    assert r.stderr == ""  # torch's exporter log is silenced
    import onnxruntime as ort

    from sparsify.export.onnx import COMPACT_FILE, INPUT_NAME, ort_session
    from sparsify.runtime import load

    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        want = model(x).numpy()
    session = ort_session(out / "onnx" / COMPACT_FILE, threads=1)
    assert isinstance(session, ort.InferenceSession)
    np.testing.assert_allclose(session.run(None, {INPUT_NAME: x.numpy()})[0], want, atol=1e-5)
    runtime = load(out / "scipy")
    np.testing.assert_allclose(runtime(x.numpy()), want, atol=1e-5)
    manifest = json.loads((out / "scipy" / "manifest.json").read_text())
    assert manifest["source"]["model"] == NAME and manifest["source"]["input_shape"] == [3, 64, 64]

    r = _cli(plugin, "--plugin", PKG, "stats", str(ckpt), "--json")
    assert r.returncode == 0, r.stderr
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert json.loads(r.stdout)["zeros"] == zeros

    r = _cli(plugin, "footprint", str(ckpt), "--out", str(tmp_path / "fp"), "--plugin", PKG)
    assert r.returncode == 0, r.stderr
    fp = json.loads((tmp_path / "fp" / "footprint.json").read_text())
    assert fp["total"]["params"] == sum(t.numel() for t in model.state_dict().values())
    assert fp["total"]["onnx_compact_bytes"] < fp["total"]["onnx_dense_bytes"]

    bench = tmp_path / "bench"
    r = _cli(
        plugin,
        "--plugin",
        PKG,
        "bench",
        str(ckpt),
        str(out / "scipy"),  # the exported bundle: rebuilt through the recorded model name
        "--quick",
        "--backends",
        "dense",
        "scipy_runtime",
        "ort_compact",
        "--batch",
        "2",
        "--reps",
        "2",
        "--out",
        str(bench),
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((bench / "bench.json").read_text())
    assert len(result["sources"]) == 2

    small = tmp_path / "small"
    r = _cli(plugin, "--plugin", PKG, "shrink", str(ckpt), "--out", str(small), "--repeats", "2")
    assert r.returncode == 0, r.stderr
    shrunk = load_checkpoint(small)
    assert shrunk.model_name == NAME and shrunk.input_shape == (3, 64, 64) and shrunk.shrunk
    assert shrunk.state_dict["fc.weight"].shape[0] == 64 - 16
    torch.testing.assert_close(shrunk.build_model()(x), model(x), rtol=1e-5, atol=1e-5)


def test_without_the_plugin_the_cli_says_how(plugin: Path, ckpt: Path, tmp_path: Path) -> None:
    r = _cli(plugin, "export", str(ckpt), "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "--plugin" in r.stderr and NAME in r.stderr
    r = _cli(plugin, "--plugin", "no_such_pkg_xyz", "stats", str(ckpt))
    assert r.returncode == 2 and "cannot import" in r.stderr and r.stderr.count("\n") == 1


def test_an_unnamed_checkpoint_works_where_no_model_is_needed(plugin: Path, tmp_path: Path) -> None:
    model = _model(plugin)
    checkpoint_from_module(tmp_path / "c", model, (3, 64, 64))  # no name
    r = _cli(plugin, "stats", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    r = _cli(plugin, "export", str(tmp_path / "c"), "--no-graph", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    r = _cli(
        plugin, "export", str(tmp_path / "c"), "--format", "onnx", "--out", str(tmp_path / "o")
    )
    assert r.returncode == 2 and "names no model" in r.stderr


def test_registry_rules() -> None:
    with pytest.raises(SparsifyError, match="built-in"):
        sparsify.register_model("lenet5", nn.Linear)
    with pytest.raises(SparsifyError, match="must be 1-100 letters"):
        sparsify.register_model("torchvision:x", nn.Linear)
    with pytest.raises(SparsifyError, match="unknown model 'nope'.*register_model"):
        checkpoint_from_module("unused", nn.Linear(2, 2), (2,), name="nope")
    sparsify.register_model("test_registry_linear", lambda **kw: nn.Linear(4, 2), input_shape=(4,))
    assert zoo.declared_input_shape("test_registry_linear") == (4,)
    with pytest.raises(SparsifyError, match="already registered"):
        sparsify.register_model("test_registry_linear", nn.Linear)
    with pytest.raises(SparsifyError, match="Unknown torchvision classifier 'resnet19'"):
        sparsify.build_model("torchvision:resnet19")


def test_entry_points_register_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package's ``[project.entry-points."sparsify.models"]`` is found on the
    first unknown name; a broken one is skipped with a warning, not a crash."""
    (tmp_path / "ep_pkg").mkdir()
    (tmp_path / "ep_pkg" / "__init__.py").write_text(
        "from torch import nn\n\ndef build(num_classes=10, in_channels=1):\n"
        "    return nn.Linear(4, num_classes)\n"
    )
    info = tmp_path / "ep_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[sparsify.models]\nep_linear = ep_pkg:build\nep_broken = ep_pkg:missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(zoo, "_entry_points_loaded", False)
    monkeypatch.setattr(zoo, "MODELS", dict(zoo.MODELS))
    with pytest.warns(UserWarning, match="ep_broken"):
        assert zoo.is_known("ep_linear")
    assert zoo.build_model("ep_linear", num_classes=3)(torch.zeros(2, 4)).shape == (2, 3)
    assert not zoo.is_known("ep_broken")


def test_readme_own_module_snippet_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's "Your own module through ONNX" block, extracted and run as a user would: an
    nn.Module -> export_onnx (dynamic H and W) -> the torch-free runtime at another size."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Your own module through ONNX", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "sparsify.export_onnx(" in snippet and "sparsify.runtime.load(" in snippet
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    model, logits = scope["model"], scope["logits"]
    assert isinstance(model, nn.Module) and isinstance(logits, np.ndarray)
    assert logits.shape == (4, 10)
    x = torch.from_numpy(np.random.default_rng(0).random((4, 3, 96, 80), dtype=np.float32))
    got = scope["run"](x.numpy())
    from sparsify.export.onnx import fidelity

    assert fidelity(model, x, got).ok  # within fp32's own noise of a float64 run
    weights = [model[0].weight, model[5].weight]  # 90% zeros over both (global threshold)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.9 * sum(w.numel() for w in weights))


def test_cli_dynamic_dims_refused_in_one_line_where_the_model_fixes_them(
    plugin: Path, ckpt: Path, tmp_path: Path
) -> None:
    """TinyRGBNet's fc reads 8*8*8 features: its H and W cannot change (one line, exit 2);
    a name that is no dimension of the input is refused before any work."""
    out = tmp_path / "o"
    r = _cli(
        plugin,
        "--plugin",
        PKG,
        "export",
        str(ckpt),
        "--format",
        "onnx",
        "--out",
        str(out),
        "--dynamic",
        "height,width",
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "dynamic height" in r.stderr and "\x1b" not in r.stderr and not out.exists()
    r = _cli(
        plugin,
        "--plugin",
        PKG,
        "export",
        str(ckpt),
        "--format",
        "onnx",
        "--out",
        str(out),
        "--dynamic",
        "sequence",
    )
    assert r.returncode == 2 and "unknown dynamic dimension 'sequence'" in r.stderr, r.stderr
