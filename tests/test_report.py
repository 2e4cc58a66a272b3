"""sparsify report: one self-contained HTML page with its images and tables, and Markdown."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest

from sparsify.bench.curves import run_curves
from sparsify.bench.harness import run_bench
from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.fileio import atomic_write_json
from sparsify.report import build_report

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("results")
    shutil.copy(ROOT / "results" / "lecture_l1" / "results.json", d / "results.json")
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
