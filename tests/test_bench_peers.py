"""Peers in ``sparsify bench``: DeepSparse in its own virtualenv's process, and the spk kernels."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sparsify import kernels as spk
from sparsify.accel import SparseConv2d, SparseLinear
from sparsify.bench import deepsparse_peer
from sparsify.bench.backends import BackendUnavailable, build_runner
from sparsify.bench.harness import _own_timing, run_bench
from sparsify.bench.sources import Source, impose_density_
from sparsify.cli import main
from sparsify.timing import Timing


def _deepsparse_python() -> str | None:
    for p in (os.environ.get(deepsparse_peer.ENV_VAR), "/work/ds-venv/bin/python"):
        if p and Path(p).is_file():
            return p
    p = deepsparse_peer.DEFAULT_VENV / "bin" / "python"
    return str(p) if p.is_file() else None


@pytest.fixture
def no_deepsparse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(deepsparse_peer.ENV_VAR, raising=False)
    monkeypatch.setattr(deepsparse_peer, "DEFAULT_VENV", tmp_path / "no-venv")


def test_deepsparse_absent_is_listed_with_how_to_install(
    tmp_path: Path, no_deepsparse: None
) -> None:
    out = tmp_path / "b"
    rc = main(
        ["bench", "--linear", "16x8", "--batch", "2", "--threads", "1", "--reps", "1", "--no-rss",
         "--backends", "dense", "deepsparse", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    (src,) = json.loads((out / "bench.json").read_text())["sources"]
    reason = src["points"][0]["backends"]["deepsparse"]["reason"]
    assert not src["points"][0]["backends"]["deepsparse"]["available"]
    assert reason.startswith("no DeepSparse python found") and "\n" not in reason
    assert "make deepsparse-venv" in reason and "--deepsparse-python" in reason
    assert deepsparse_peer.ENV_VAR in reason
    assert "- deepsparse: no DeepSparse python found" in (out / "bench.md").read_text()


def test_quick_leaves_out_the_slow_compilers() -> None:
    from sparsify.bench.backends import quick_backends

    assert "spk" in quick_backends() and "deepsparse" not in quick_backends()


def test_deepsparse_python_given_but_unusable(tmp_path: Path, no_deepsparse: None) -> None:
    with pytest.raises(deepsparse_peer.DeepSparseUnavailable, match="is not an executable"):
        deepsparse_peer.find_python(tmp_path / "missing" / "python")
    # an interpreter without deepsparse: the import error, then how to install
    with pytest.raises(
        deepsparse_peer.DeepSparseUnavailable,
        match="cannot import deepsparse.*make deepsparse-venv",
    ):
        deepsparse_peer.probe(sys.executable)


def test_deepsparse_worker_is_torch_free() -> None:
    tree = ast.parse(deepsparse_peer.WORKER.read_text())
    mods = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    mods |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert mods <= {
        "__future__",
        "contextlib",
        "json",
        "os",
        "sys",
        "time",
        "numpy",
        "deepsparse",
    }, mods


def test_own_timing_uses_the_runners_samples_per_repetition() -> None:
    runner = SimpleNamespace(runs_per_timed=lambda: 10, info={})
    # 3 warm-up/calibration calls, then 2 repetitions of 2 back-to-back calls each
    got = [9.0, 9.0, 9.0, 1.0, 3.0, 5.0, 7.0]
    t = _own_timing(Timing((0.08, 0.12), inner=2), got, runner)
    assert t.samples == (2.0, 6.0) and t.inner == 20
    assert runner.info["wall_s_per_run"] == pytest.approx(0.01)


@pytest.mark.skipif(_deepsparse_python() is None, reason="no DeepSparse virtualenv here")
def test_deepsparse_matches_torch_in_an_interleaved_run() -> None:
    python = _deepsparse_python()
    res = run_bench(
        [{"kind": "linear", "in": 64, "out": 32, "density": 0.2, "seed": 0}],
        backends=("dense", "deepsparse"),
        batches=(4,),
        threads=(1,),
        reps=2,
        rss=False,
        deepsparse_python=python,
        log=lambda _m: None,
    )
    assert res["machine"]["deepsparse"].startswith("1.")
    (point,) = res["sources"][0]["points"]
    e = point["backends"]["deepsparse"]
    assert e["available"], e.get("reason")
    assert e["max_abs_diff"] < 1e-4 and e["same_predictions"]
    assert e["static_batch"] == 4 and e["opset"] == 13 and e["threads"] == 1
    assert e["median_s"] > 0 and e["wall_s_per_run"] > 0 and e["worker_peak_rss"] > 0


class _TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise: stays dense
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.c3 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(self.dw(x)))
        return self.fc(torch.flatten(self.c3(x), 1))


needs_spk = pytest.mark.skipif(not spk.available(), reason="sparsify.kernels not compiled here")


def _source(model: nn.Module, shape: tuple[int, ...], density: float) -> Source:
    torch.manual_seed(0)
    impose_density_(model, density)
    return Source({"kind": "test"}, "test", model.eval(), shape)


@needs_spk
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "make, shape",
    [
        (
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 5)),
            (3, 4, 4),
        ),
        (_TinyConvNet, (3, 8, 8)),
    ],
    ids=["mlp", "convnet"],
)
def test_spk_matches_torch(make, shape, batch: int) -> None:
    torch.manual_seed(0)
    src = _source(make(), shape, 0.3)
    runner = build_runner("spk", src, {"paths": {}, "unavailable": {}}, batch, 1)
    assert runner.info["layout"] == ("csr" if batch == 1 else "auto")
    # the converter's own layers, on the kernel for this batch
    swapped = [m for m in runner.fn.modules() if isinstance(m, (SparseLinear, SparseConv2d))]
    assert len(swapped) == runner.info["layers_spk"] > 0
    assert {m.kernel for m in swapped} == {"spk_csr" if batch == 1 else "spk"}
    x = torch.randn(batch, *shape)
    with torch.inference_mode():
        ref = src.model(x).numpy()
        got = runner.fn(runner.prepare(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # the runner works on a copy: the source keeps its torch layers
    assert any(isinstance(m, nn.Linear) for m in src.model.modules())
    if make is _TinyConvNet:
        assert runner.info["layers_spk"] == 4
        assert "groups=8" in runner.info["kept_dense"]["dw"]


def test_spk_without_compiled_kernels_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSIFY_KERNELS", "off")  # as on a machine without a C compiler
    src = _source(nn.Sequential(nn.Linear(8, 4)), (8,), 0.5)
    with pytest.raises(BackendUnavailable, match="kernels cannot run here: SPARSIFY_KERNELS=off"):
        build_runner("spk", src, {"paths": {}, "unavailable": {}}, 2, 1)


@needs_spk
def test_spk_without_kernel_layers_is_unavailable() -> None:
    src = Source(
        {"kind": "test"}, "t", nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)).eval(), (4, 5, 5)
    )
    with pytest.raises(BackendUnavailable, match="no Linear or groups=1 Conv2d.*groups=4"):
        build_runner("spk", src, {"paths": {}, "unavailable": {}}, 2, 1)


def _linear_source() -> Source:
    return _source(nn.Sequential(nn.Linear(8, 4)), (8,), 0.5)


def test_deepsparse_worker_without_deepsparse_reports_the_import_error(tmp_path: Path) -> None:
    # the real worker script under an interpreter lacking deepsparse: its startup reply
    src = _linear_source()
    arts = {"paths": {"deepsparse": sys.executable}, "unavailable": {}, "workdir": str(tmp_path)}
    with pytest.raises(
        BackendUnavailable, match="DeepSparse failed: .*No module named 'deepsparse'"
    ):
        build_runner("deepsparse", src, arts, 2, 1)
    assert (tmp_path / "deepsparse_b2.onnx").is_file()  # exported with a static batch


def test_deepsparse_worker_dying_mid_run_is_listed_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake_worker.py"
    fake.write_text(
        "import sys\n"
        'print(\'{"ok": true, "version": "0.0"}\', flush=True)\n'
        "sys.stdin.readline()\n"
        'sys.exit("engine crashed")\n'
    )
    monkeypatch.setattr(deepsparse_peer, "WORKER", fake)
    from sparsify.bench.harness import bench_point

    arts = {"paths": {"deepsparse": sys.executable}, "unavailable": {}, "workdir": str(tmp_path)}
    res = bench_point(_linear_source(), arts, ["dense", "deepsparse"], 2, 1, 1, lambda _m: None)
    e = res["backends"]["deepsparse"]
    assert not e["available"]
    assert e["reason"] == "the DeepSparse worker exited (code 1): engine crashed"
    assert res["backends"]["dense"]["available"]


def test_deepsparse_worker_that_hangs_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake_worker.py"
    fake.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(deepsparse_peer, "WORKER", fake)
    monkeypatch.setattr(deepsparse_peer, "LOAD_TIMEOUT_S", 0.5)
    with pytest.raises(BackendUnavailable, match="did not answer within 0.5 s"):
        deepsparse_peer.start_worker(sys.executable, tmp_path / "m.onnx", 1, 1)
