"""sparsify report: one self-contained HTML page with its images and tables, and Markdown."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import torch

from sparsify.bench.curves import run_curves
from sparsify.bench.harness import run_bench
from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.fileio import atomic_write_json
from sparsify.pipeline.zoo import build_model
from sparsify.report import build_report
from sparsify.stats import model_stats
from sparsify.tables import md_table

PNG = b"\x89PNG\r\n\x1a\n"


def _sweep_result() -> dict:
    """A sweep's results.json (the keys ``sparsify sweep`` writes), stats from real models."""
    rows = []
    for i, lam in enumerate((0.0, 1e-4, 1e-3)):
        torch.manual_seed(i)
        model = build_model("lenet300_100")
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(torch.rand_like(p) > 0.4 * i)  # more zeros at larger lambda
        st = model_stats(model)
        rows.append(
            {
                "kind": "l1_prox",
                "lam": lam,
                "run": f"l1_prox_lam_{lam:g}",
                "train_error": 0.01 * i,
                "test_error": 0.02 + 0.01 * i,
                "zero_fraction": st["zero_fraction"],
                "weight_zero_fraction": st["weight_zero_fraction"],
                "layers": st["layers"],
            }
        )
    return {"command": "sparsify sweep test.yaml", "rows": rows}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("results")
    atomic_write_json(d / "results.json", _sweep_result())
    bench = run_bench(
        [{"kind": "linear", "in": 64, "out": 32, "density": 0.1}],
        backends=("dense", "torch_csr"), batches=(1, 8), threads=(1,), reps=2, rss=False,
    )  # fmt: skip
    atomic_write_json(d / "bench" / "bench.json", bench)
    curves = run_curves(
        sizes=(64,), batches=(1,), densities=(0.5, 0.1), reps=2, kernels=("torch_csr",)
    )
    atomic_write_json(d / "bench" / "curves.json", curves)
    return d


def test_report_page_has_images_and_tables(results_dir: Path, tmp_path: Path) -> None:
    assert main(["report", str(results_dir), "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 4  # error vs lambda, zeros per layer, curves, latency
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert page.count("<table>") == 3
    for heading in ("Sweep", "Speedup vs density", "Latency per backend"):
        assert heading in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from outside
    md = (tmp_path / "report.md").read_text()
    links = re.findall(r"\]\((report_[\w.]+\.png)\)", md)
    assert len(links) == 4 and all((tmp_path / p).read_bytes().startswith(PNG) for p in links)
    assert "| lambda | train error |" in md


def test_report_refuses_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(SparsifyError, match="holds no"):
        build_report(tmp_path)
    with pytest.raises(SparsifyError, match="not a directory"):
        build_report(tmp_path / "missing")


def test_md_table() -> None:
    assert md_table(["a", "b"], [[1, "x|y"]], align="lr") == "| a | b |\n|---|---:|\n| 1 | x\\|y |"
    with pytest.raises(ValueError):
        md_table(["a"], [[1, 2]])
    with pytest.raises(ValueError):
        md_table(["a"], [], align="c")
