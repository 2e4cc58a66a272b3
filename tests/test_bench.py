"""sparsify bench: JSON/Markdown with the dense baseline and ratios; curves; GPU logic on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsify.accel.semi_structured import (
    is_2to4,
    prune_2to4_,
    semi_structured_fits,
    semi_structured_ok,
)
from sparsify.bench.backends import (
    SPARSE_MM_FILE,
    BackendUnavailable,
    linear_chain,
    ort_sparse_mm_runner,
    sparse_mm_model,
)
from sparsify.bench.curves import (
    bandwidth_bound,
    break_even,
    break_even_text,
    curves_markdown,
    run_curves,
)
from sparsify.bench.gpu import build_case, cases, gpu_table_markdown
from sparsify.bench.sources import impose_density_, load_source
from sparsify.cli import main
from sparsify.export.onnx import ort_session
from sparsify.pipeline.zoo import build_model


def test_bench_quick_cli_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    backends = ["dense", "torch_csr", "converter", "scipy_runtime", "ort_sparse_mm"]
    rc = main(
        ["bench", "--model", "lenet300_100", "--density", "0.05", "--quick", "--batch", "4",
         "--reps", "2", "--backends", *backends, "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    result = json.loads((out / "bench.json").read_text())
    assert result["machine"]["torch"] == torch.__version__ and result["loadavg_start"] is not None
    (src,) = result["sources"]
    (point,) = src["points"]
    assert point["batch"] == 4 and point["threads"] == 1
    assert point["other_busy_cores"] >= 0 and result["other_busy_cores_max"] >= 0
    assert set(point["backends"]) == set(backends)
    dense = point["backends"]["dense"]
    assert dense["speedup_vs_dense"] == pytest.approx(1.0) and dense["median_s"] > 0
    for name, e in point["backends"].items():
        assert e["available"], (name, e.get("reason"))
        assert e["speedup_vs_dense"] > 0 and e["reps"] == 2
        assert e["max_abs_diff"] < 1e-4 and e["same_predictions"], name
    assert src["layers"]["fc1.weight"] == pytest.approx(0.05, abs=1e-3)
    md = (out / "bench.md").read_text()
    assert "| batch | dense | torch_csr |" in md and "x ±" in md
    assert "cores kept busy by other processes while timing, worst point:" in md


def test_bench_cli_refuses_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--out", str(tmp_path / "b")]) == 2
    assert "nothing to benchmark" in capsys.readouterr().err


def test_impose_density_keeps_largest() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(100, 50)
    big = lin.weight.detach().abs().flatten().topk(500).values.min()
    impose_density_(lin, 0.1)
    w = lin.weight.detach()
    assert int((w != 0).sum()) == 500
    assert float(w[w != 0].abs().min()) >= float(big) - 1e-7
    assert not torch.signbit(w[w == 0]).any()  # +0.0 only


def test_sparse_to_dense_matmul_matches_torch(tmp_path: Path) -> None:
    model = load_source({"kind": "model", "name": "lenet300_100", "density": 0.1}).model
    data, weights = sparse_mm_model(model, 4)
    assert len(weights) == 3
    (tmp_path / SPARSE_MM_FILE).write_bytes(data)
    r = ort_sparse_mm_runner(str(tmp_path / SPARSE_MM_FILE), model, 1)
    x = torch.randn(5, 1, 28, 28)
    with torch.inference_mode():
        np.testing.assert_allclose(r.fn(r.prepare(x)), model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_linear_chain_refuses_convnets() -> None:
    with pytest.raises(BackendUnavailable, match="Linear chains only"):
        linear_chain(build_model("lecture_convnet"))


def test_bound_and_break_even() -> None:
    assert bandwidth_bound(0.1, idx_bytes=2) == pytest.approx(1 / 0.15)
    assert bandwidth_bound(0.1, idx_bytes=4) == pytest.approx(5.0)
    # speedup 2 at d=0.1, 0.5 at d=0.3: crossing at 0.1 + (2-1)/(2-0.5)*0.2
    assert break_even([0.3, 0.1], [0.5, 2.0]) == pytest.approx(0.1 + 0.2 / 1.5)
    assert break_even([0.3, 0.1], [1.5, 2.0]) is None
    assert break_even([0.3, 0.1], [0.5, 0.8]) is None


def test_curves_small_run() -> None:
    res = run_curves(
        sizes=(64,), batches=(2,), densities=(0.5, 0.05), reps=2, kernels=("torch_csr", "converter")
    )
    (c,) = res["curves"]
    assert [p["density"] for p in c["points"]] == [0.5, 0.05]
    assert all(p["max_abs_diff"]["torch_csr"] < 1e-4 for p in c["points"])
    assert set(c["break_even_density"]) == {"torch_csr", "converter"}
    assert "Break-even density" in curves_markdown(res)


def test_two_four_logic_on_cpu() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    assert not is_2to4(w)
    prune_2to4_(w)
    assert is_2to4(w) and int((w == 0).sum()) == w.numel() // 2
    ok, why = semi_structured_ok(nn.Sequential(nn.Linear(128, 64)))
    assert not ok and "2:4" in why
    # (32, 64) bf16 is a valid semi-structured shape for torch (CUTLASS and cuSPARSELt);
    # the bench once refused anything but multiples of (64, 128)
    assert semi_structured_fits((32, 64), torch.bfloat16) is None
    lin = nn.Sequential(nn.Linear(64, 32))
    prune_2to4_(lin[0].weight.data)
    ok, why = semi_structured_ok(lin)
    assert ok or "CUDA" in why or "capability" in why, why


def test_gpu_table_markdown_and_cases() -> None:
    cs = cases(sizes=(256,), densities=(0.1,))
    assert [c["pattern"] for c in cs] == ["unstructured", "2:4"]
    model = build_case(cs[1])
    assert is_2to4(model[0].weight)
    assert float((build_case(cs[0])[0].weight != 0).float().mean()) == pytest.approx(0.1, abs=1e-3)
    row = {
        "case": "x",
        "batch": 1,
        "backends": {
            "cuda_dense_fp32": {"available": True, "median_s": 1e-5, "speedup_vs_dense": 1.0}
        },
    }
    md = gpu_table_markdown([row], "Test GPU")
    assert "Test GPU" in md and "10.0 µs (1.00x)" in md


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_point_runs() -> None:
    from sparsify.bench.gpu import bench_gpu_point

    lin = nn.Sequential(nn.Linear(256, 128))
    prune_2to4_(lin[0].weight.data)
    res = bench_gpu_point(lin, (256,), 16, reps=3)
    assert res["backends"]["cuda_dense_fp32"]["available"]
    assert res["backends"]["cuda_csr"]["max_abs_diff"] < 1e-3


def test_rss_probe_reports_memory() -> None:
    from sparsify.bench.rss import measure

    res = measure(
        {"kind": "linear", "in": 256, "out": 256, "density": 0.1}, "torch_csr", {}, (256,), batch=4
    )
    assert res["available"] and res["torch_imported"]
    assert res["peak_rss"] >= res["rss_steady"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_bench_without_gpu_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["bench", "--linear", "64x64", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_ort_sessions_do_not_spin(tmp_path: Path) -> None:
    # spinning ORT pool threads halve torch's multi-thread speed in an interleaved run
    model = nn.Sequential(nn.Linear(8, 4))
    data, _ = sparse_mm_model(model, 2)
    (tmp_path / SPARSE_MM_FILE).write_bytes(data)
    sess = ort_session(tmp_path / SPARSE_MM_FILE, threads=2, verify=False)
    opts = sess.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2
    spin = ort_session(tmp_path / SPARSE_MM_FILE, verify=False, allow_spinning=True)
    assert (
        spin.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        == "1"
    )


def test_unmeasured_kernel_is_not_called_a_loser() -> None:
    assert break_even_text(None, [None, None]) == "not measured here"
    assert break_even_text(None, [0.5, 0.8]).endswith("(never faster than dense)")
    assert break_even_text(None, [1.5, 2.0]).endswith("(never slower than dense)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_gpu_table_without_gpu_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sparsify.bench.gpu import main as gpu_main

    assert gpu_main(["--out", str(tmp_path / "gpu")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err and not (tmp_path / "gpu").exists()


def test_bench_model_input_shape_sets_the_channels(tmp_path: Path) -> None:
    # --input-shape C H W builds the zoo model for C channels (it was built for 1 and failed)
    out = tmp_path / "b"
    rc = main(
        ["bench", "--model", "lecture_convnet", "--input-shape", "3", "28", "28", "--quick",
         "--batch", "2", "--reps", "1", "--backends", "dense", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    (src,) = json.loads((out / "bench.json").read_text())["sources"]
    assert src["spec"]["input_shape"] == [3, 28, 28]
    assert src["points"][0]["backends"]["dense"]["available"]
    source = load_source(src["spec"])
    assert source.model.conv1.in_channels == 3 and source.input_shape == (3, 28, 28)
    tv = load_source(
        {"kind": "model", "name": "torchvision:squeezenet1_1", "density": 0.5,
         "input_shape": [2, 32, 32]}
    )  # fmt: skip
    assert next(m for m in tv.model.modules() if isinstance(m, nn.Conv2d)).in_channels == 2


def test_bench_model_that_cannot_take_the_channels_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparsify.pipeline import zoo

    def gray_only(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)
        )

    monkeypatch.setitem(zoo.MODELS, "gray_only", gray_only)
    out = tmp_path / "b"
    rc = main(
        ["bench", "--model", "gray_only", "--input-shape", "3", "8", "8", "--quick", "--batch",
         "1", "--reps", "1", "--backends", "dense", "--out", str(out)]
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "gray_only" in err and "3 channels" in err and "--input-shape" in err
    assert "unexpected" not in err


def test_bench_unknown_model_name_is_refused_as_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # it said "records no input shape", sending a user with a typo after the wrong fix
    out = tmp_path / "b"
    rc = main(["bench", "--model", "lenet6", "--quick", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Unknown model 'lenet6'" in err[0] and "lenet300_100" in err[0]
    assert "input shape" not in err[0] and not out.exists()


def test_bench_reports_effective_gflops_against_the_runs_dense_peak(tmp_path: Path) -> None:
    out = tmp_path / "b"
    rc = main(
        ["bench", "--linear", "96x40", "--density", "0.25", "--quick", "--batch", "3", "5",
         "--reps", "2", "--backends", "dense", "torch_csr", "ort_dense", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    result = json.loads((out / "bench.json").read_text())
    (src,) = result["sources"]
    nnz = round(0.25 * 96 * 40)
    assert src["work"]["nnz_flops_per_sample"] == 2 * nnz  # 2 * nnz * batch per call
    assert src["work"]["dense_flops_per_sample"] == 2 * 96 * 40
    rates = []
    for p in src["points"]:
        b = p["batch"]
        for name, e in p["backends"].items():
            assert e["available"], (name, e.get("reason"))
            t = e["median_s"]
            assert e["gflops_nnz"] * 1e9 * t == pytest.approx(2 * nnz * b, rel=1e-6), name
            if name in ("dense", "ort_dense"):  # dense backends: also on the full weight
                assert e["gflops_dense"] * 1e9 * t == pytest.approx(2 * 96 * 40 * b, rel=1e-6)
                rates.append((e["gflops_dense"], name, b))
            else:
                assert "gflops_dense" not in e
    peak = result["dense_peak"]["1"]  # per thread count: the best dense rate of the run
    best = max(rates)
    assert (peak["gflops"], peak["backend"], peak["batch"]) == best
    for p in src["points"]:
        e = p["backends"]["torch_csr"]
        assert e["pct_of_dense_peak"] == pytest.approx(100 * e["gflops_nnz"] / best[0])
        assert "pct_of_dense_peak" not in p["backends"]["dense"]
    assert p["backends"]["dense"]["speedup_vs_dense"] == pytest.approx(1.0)  # old keys stay
    md = (out / "bench.md").read_text()
    assert "Effective GFLOP/s" in md and "dense peak of this run" in md.lower()
    assert "| batch | dense | torch_csr | ort_dense |" in md  # the latency table, as before


def test_bench_mlp_without_the_zoo(tmp_path: Path) -> None:
    out = tmp_path / "b"
    rc = main(
        ["bench", "--mlp", "8x16x4", "--density", "0.5", "--quick", "--batch", "2", "--reps",
         "1", "--backends", "dense", "torch_csr", "ort_sparse_mm", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    (src,) = json.loads((out / "bench.json").read_text())["sources"]
    assert src["spec"] == {"kind": "mlp", "sizes": [8, 16, 4], "density": 0.5, "seed": 0}
    assert src["label"] == "MLP 8-16-4 @ 50% zeros"
    assert src["layers"] == {"0.weight": 0.5, "2.weight": 0.5}  # Linear, ReLU, Linear
    assert src["work"]["nnz_flops_per_sample"] == 2 * (64 + 32)
    for name, e in src["points"][0]["backends"].items():
        assert e["available"] and e["max_abs_diff"] < 1e-5, (name, e)
    model = load_source(src["spec"]).model
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("sizes", ["8", "8x0x4", "8xax4", "65536x65536x2"])
def test_bench_refuses_a_bad_mlp(tmp_path: Path, capsys: pytest.CaptureFixture, sizes: str) -> None:
    assert main(["bench", "--mlp", sizes, "--quick", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mlp" in err and "1024x4096x4096x1024" in err
