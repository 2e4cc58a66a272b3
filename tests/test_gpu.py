"""On a CUDA GPU: converted layers and models move there with ``.cuda()``, training runs there
and exports on the CPU, the GPU bench reports memory, torchrun refuses more ranks than GPUs.

Skipped without CUDA (CI has none); ``tools/gpu_check.sh`` runs them on a GPU machine. The
CPU half of the moving contract (``.double()`` on every kernel) runs everywhere, in
``test_accel.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import sparse_layer_case, train_args
from torch import nn

from sparsify.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

KERNELS = ("torch_csr", "torch_csr_panels", "scipy_csr", "dense_compact", "spk", "spk_csr")


@pytest.fixture(autouse=True)
def _fp32_means_fp32():
    # TF32 would make the dense reference itself differ from fp32 by ~1e-3
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _sparse_(module: nn.Module, density: float, seed: int = 0) -> nn.Module:
    """Keep ``density`` of each weight, scaled by 1/sqrt(density) so a deep model's
    activations keep their size (else a 90%-zero mobilenet's logits are ~1e-22)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand(p.shape, generator=g) < density).float() / density**0.5)
    return module


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_a_sparse_layer_moves_to_cuda_and_back(kernel: str, kind: str) -> None:
    from sparsify.accel.layers import make_sparse
    from sparsify.errors import SparsifyError

    dense, x = sparse_layer_case(kind)
    try:
        layer = make_sparse(dense, kernel, rhs_cols=64).eval()
    except SparsifyError as exc:  # spk without a C compiler on this machine
        pytest.skip(str(exc))
    with torch.no_grad():
        ref = dense.cuda()(x.cuda())
        y = layer.cuda()(x.cuda())
        assert y.is_cuda
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        # a CPU input to the moved layer fails as nn.Linear's would; the C kernels must not
        # run with the bias's CUDA address (they did before the layer knew it had moved)
        with pytest.raises(RuntimeError):
            layer(x)
        back = layer.cpu()(x)  # spk: its own kernel again
        torch.testing.assert_close(back, ref.cpu(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [
        # untimed, so these layers for sure: spk convs, the depthwise stencil, a SparseLinear
        ("fixed", {"SparseConv2d", "DepthwiseConv2d", "SparseLinear"}),
        # timed: whatever wins here, usually the fused pairs too
        ("calibrate", {"SparseConv2d"}),
    ],
)
def test_a_converted_mobilenet_moves_to_cuda(mode: str, kinds: set[str]) -> None:
    # every accel layer the converter makes on CUDA takes its torch path
    from torchvision.models import mobilenet_v2

    from sparsify.accel.convert import sparsify_inference_

    torch.manual_seed(0)
    model = _sparse_(mobilenet_v2(num_classes=10), 0.1).eval()
    for m in model.modules():  # non-trivial batch-norm statistics to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    threads = torch.get_num_threads()
    # one thread: at 16 threads beside other xdist workers the timed calibration kept every
    # layer dense on the H200 host, leaving nothing to move
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            ref = model(x)
            kw = {"kernels": ("spk_depthwise", "spk")} if mode == "fixed" else {"reps": 3}
            report = sparsify_inference_(model, x, mode=mode, **kw)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        assert report.check.startswith("ok"), report.check
        on_cpu = model(x)
        y = model.cuda()(x.cuda())
    made = {type(m).__name__ for m in model.modules()}
    assert kinds <= made, made
    print(sorted(made))
    scale = ref.abs().max()
    assert scale > 1e-3  # a signal to compare, not vanished activations
    assert y.is_cuda and float((y.cpu() - ref).abs().max() / scale) < 1e-4
    with torch.no_grad():
        again = model.cpu()(x)
    torch.testing.assert_close(again, on_cpu, rtol=1e-5, atol=1e-5 * float(scale))


def _cuda_recipe(folder: Path, **over: object) -> Path:
    """A LeNet-300-100 recipe on 2,000 MNIST images trained on CUDA, as a file."""
    recipe = folder / "r.json"  # JSON is YAML
    body = {
        "name": "gpu",
        "seed": 0,
        "device": "cuda",
        "model": {"name": "lenet300_100"},
        "data": {"train_subset": 2000, "test_subset": 500},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "epochs": 2,
        "batch_size": 100,
        "penalties": [{"kind": "l1_prox", "lam": 2e-3}],
    }
    recipe.write_text(json.dumps({**body, **over}))
    return recipe


def test_train_on_cuda_export_and_report_on_cpu(tmp_path: Path, mnist_dir: Path) -> None:
    recipe = _cuda_recipe(tmp_path)
    out = tmp_path / "run"
    assert main(train_args(recipe, out, mnist_dir)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_error"] < 0.5  # it learned something in 40 steps
    from safetensors.torch import load_file

    state = load_file(str(out / "model.safetensors"))
    assert all(t.device.type == "cpu" for t in state.values())
    assert (state["fc1.weight"] == 0).float().mean() > 0.2, "the prox step made no zeros"
    assert main(["export", str(out), "--format", "all", "--out", str(tmp_path / "exp")]) == 0
    assert main(["footprint", str(out), "--out", str(tmp_path / "fp")]) == 0


def test_gpu_bench_reports_weights_memory(tmp_path: Path) -> None:
    out = tmp_path / "b"
    rc = main(
        ["bench", "--linear", "512x512", "--density", "0.1", "--device", "cuda",
         "--batch", "4", "--reps", "3", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    b = row["backends"]
    dense, csr = b["cuda_dense_fp32"], b["cuda_csr"]
    assert dense["model_bytes"] >= 512 * 512 * 4  # weights (+ bias, allocator rounding)
    # 10% of 512^2 nonzeros at 4 B value + 4 B int32 column, plus 513 row pointers
    assert 0 < csr["model_bytes"] < 0.3 * dense["model_bytes"]
    assert b["cuda_dense_bf16"]["model_bytes"] < 0.6 * dense["model_bytes"]
    assert csr["max_abs_diff"] < 1e-4 and csr["forward_peak_bytes"] > 0
    assert "GPU memory held by the model" in (out / "bench.md").read_text()


def test_torchrun_with_more_ranks_than_gpus_says_so(tmp_path: Path, mnist_dir: Path) -> None:
    gpus = torch.cuda.device_count()
    recipe = _cuda_recipe(tmp_path, epochs=1, data={"train_subset": 200, "test_subset": 100})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={gpus + 1}", "-m", "sparsify",
           *train_args(recipe, tmp_path / "out", mnist_dir)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"--nproc_per_node={gpus}" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_killed_run_resumes_on_cuda_with_its_teacher_and_masks(
    tmp_path: Path, monkeypatch
) -> None:
    # the resume state is read onto the CPU: the teacher and the pruning masks must follow
    # the model to the GPU (both crashed there on the first resume)
    from test_sparsity_target import _data

    from sparsify.pipeline import stages
    from sparsify.pipeline.recipe import Recipe
    from sparsify.pipeline.stages import train

    recipe = Recipe.from_dict(
        {
            "threads": 1,
            "device": "cuda",
            "model": {"name": "lenet300_100"},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "epochs": 3,
            "batch_size": 50,
            "distill": {"from_epoch": 1, "weight": 0.7},
            "sparsity": {"target": 0.9, "method": "magnitude", "schedule": "gradual",
                         "start": 0, "end": 2},
        }
    )  # fmt: skip
    ref = train(recipe, _data(), progress=False).model.state_dict()
    real_save, saved = stages.save_train_state, []

    def save_then_die(out: Path, state: dict) -> Path:
        path = real_save(out, state)
        saved.append(state["epoch"])
        if len(saved) == 2:  # after epoch 2: a teacher taken and masks mid-schedule
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(stages, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, _data(), progress=False, state_dir=tmp_path)
    monkeypatch.setattr(stages, "save_train_state", real_save)
    resumed = train(recipe, _data(), progress=False, state_dir=tmp_path, resume=True)
    got = resumed.model.state_dict()
    assert got["fc1.weight"].is_cuda
    for k, v in ref.items():  # cuBLAS need not be bit-reproducible across processes' runs
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert (got["fc1.weight"] == 0).float().mean() > 0.85  # the masks held after resume
