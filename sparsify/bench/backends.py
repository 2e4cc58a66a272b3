"""Inference backends ``sparsify bench`` compares, each against torch dense eager.

    dense          torch eager, the baseline every ratio divides by
    compiled       torch.compile(model) (inductor; CPU needs a C++ compiler)
    torch_csr      every Linear/Conv2d (groups=1) as torch CSR, whatever its density
    converter      sparsify_inference_ calibrated for this batch size and thread count, run
                   through accel.replay.Replay (its kernel calls recorded once per shape)
    scipy_runtime  sparsify.runtime on the exported scipy bundle (numpy + scipy, 1 thread)
    ort_dense      onnxruntime on model.dense.onnx
    ort_compact    onnxruntime on model.compact.onnx (decoded to dense at session creation)
    ort_sparse_mm  onnxruntime com.microsoft::SparseToDenseMatMul: Linear chains only
                   (Flatten/Linear/ReLU); the sparse weights are fed at run time, as the
                   op requires, built once as OrtValues
    spk            every Linear and groups=1 Conv2d on sparsify.kernels, swapped by the
                   converter (bench/spk.py); grouped and depthwise convolutions stay torch
                   dense; unavailable where the kernels cannot be compiled
    deepsparse     DeepSparse 1.8 on a static-batch opset-13 ONNX export, in its own
                   virtualenv's process (bench/deepsparse_peer.py); optional

A backend that cannot run here is reported with its reason, never dropped silently.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsify.bench.sources import Source
from sparsify.errors import SparsifyError

BACKENDS = (
    "dense",
    "compiled",
    "torch_csr",
    "converter",
    "scipy_runtime",
    "ort_dense",
    "ort_compact",
    "ort_sparse_mm",
    "spk",
    "deepsparse",
)
SPARSE_MM_FILE = "model.sparse_mm.onnx"


def quick_backends() -> tuple[str, ...]:
    """``--quick``: every backend but ``compiled`` and ``deepsparse`` (their compile times
    dominate a short run)."""
    return tuple(b for b in BACKENDS if b not in ("compiled", "deepsparse"))


class BackendUnavailable(Exception):
    """A backend that does not apply or cannot run here; its message says why."""


@dataclass
class Runner:
    """``fn(prepare(x))`` computes the model's output; ``info`` is reported alongside.

    A runner whose model runs in another process gives ``timed``: one timed call, which runs
    the model ``runs_per_timed()`` times on the last prepared input and returns the seconds
    per run measured where it ran. The harness uses those as the samples (the pipe round trip
    and the scheduling of a second process are not the model's cost; in-process backends
    do not pay them) and records the wall time seen from the harness as ``wall_s_per_run``.
    ``close()`` releases what the runner holds; the harness calls it once timing is done
    (it may still add to ``info``).
    """

    fn: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any] = lambda x: x
    info: dict[str, Any] = field(default_factory=dict)
    timed: Callable[[], float] | None = None
    runs_per_timed: Callable[[], int] = lambda: 1
    close: Callable[[], None] = lambda: None
    pids: tuple[int, ...] = ()  # other processes it runs the model in (not "other load")


def to_numpy(out: Any) -> np.ndarray:
    """A backend's output as a float32 numpy array."""
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().float().numpy()
    if isinstance(out, (list, tuple)):
        return to_numpy(out[0])
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- artifacts


def linear_chain(model: nn.Module) -> list[tuple[str, Any]]:
    """``model``'s forward as ``[("flatten"|"linear"|"relu", module or None)]``, or raise
    BackendUnavailable if it is anything but a chain of Flatten, Linear and ReLU."""
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on untraceable code
        raise BackendUnavailable(f"not traceable by torch.fx ({type(exc).__name__})") from None
    modules = dict(gm.named_modules())
    chain: list[tuple[str, Any]] = []
    prev = None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            prev = node if node.op == "placeholder" else prev
            continue
        if not node.args or node.args[0] is not prev:
            raise BackendUnavailable("the forward is not a single chain")
        target = modules.get(node.target) if node.op == "call_module" else node.target
        if isinstance(target, nn.Linear):
            chain.append(("linear", target))
        elif isinstance(target, nn.ReLU) or target in (torch.relu, torch.nn.functional.relu):
            chain.append(("relu", None))
        elif isinstance(target, nn.Flatten) or target is torch.flatten:
            chain.append(("flatten", None))
        else:
            raise BackendUnavailable(
                f"op {node.target!s} is not Flatten/Linear/ReLU: SparseToDenseMatMul covers Linear chains only"
            )
        prev = node
    if not any(k == "linear" for k, _ in chain):
        raise BackendUnavailable("no Linear layer")
    return chain


def sparse_mm_model(model: nn.Module, input_rank: int) -> tuple[bytes, list[np.ndarray]]:
    """An ONNX model computing a Linear chain with com.microsoft::SparseToDenseMatMul.

    Activations flow transposed, h^T (features, B): each Linear is
    h'^T = SparseToDenseMatMul(W_sparse, h^T) + b[:, None]. Weight i is graph input
    ``W{i}`` (a sparse tensor fed at run time). Returns the serialized model and the dense
    weights (for building the sparse inputs).
    """
    from onnx import TensorProto, helper, numpy_helper

    chain = linear_chain(model)
    nodes, inits, inputs, weights = [], [], [], []
    x_info = helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, ["batch"] + [None] * (input_rank - 1)
    )
    cur = "input"
    if input_rank > 2 or chain[0][0] == "flatten":
        nodes.append(helper.make_node("Flatten", [cur], ["flat"], axis=1))
        cur = "flat"
    nodes.append(helper.make_node("Transpose", [cur], ["h_t0"], perm=[1, 0]))
    cur = "h_t0"
    for i, (kind, mod) in enumerate(chain):
        if kind == "flatten":
            continue  # already 2-D
        if kind == "relu":
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
            continue
        w = mod.weight.detach().cpu().numpy().astype(np.float32)
        weights.append(w)
        name = f"W{len(weights) - 1}"
        inputs.append(helper.make_sparse_tensor_value_info(name, TensorProto.FLOAT, list(w.shape)))
        nodes.append(
            helper.make_node("SparseToDenseMatMul", [name, cur], [f"mm{i}"], domain="com.microsoft")
        )
        cur = f"mm{i}"
        if mod.bias is not None:
            b = mod.bias.detach().cpu().numpy().astype(np.float32).reshape(-1, 1)
            inits.append(numpy_helper.from_array(b, f"b{i}"))
            nodes.append(helper.make_node("Add", [cur, f"b{i}"], [f"a{i}"]))
            cur = f"a{i}"
    nodes.append(helper.make_node("Transpose", [cur], ["logits"], perm=[1, 0]))
    out_info = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", None])
    graph = helper.make_graph(nodes, "sparse_mm", [x_info, *inputs], [out_info], inits)
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    m.ir_version = 8
    return m.SerializeToString(), weights


def prepare_artifacts(
    source: Source,
    workdir: Path,
    backends: tuple[str, ...],
    log: Callable[[str], None],
    deepsparse_python: str | None = None,
) -> dict[str, Any]:
    """Export what the chosen backends load (ONNX files, scipy bundle) into ``workdir``.

    Returns ``{"paths": {...}, "unavailable": {backend: reason}, "workdir": str,
    "versions": {...}}``; ``paths["deepsparse"]`` is the DeepSparse python (see
    :func:`sparsify.bench.deepsparse_peer.find_python` for where it is looked for).
    """
    paths: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    versions: dict[str, str] = {}
    if "deepsparse" in backends:
        from sparsify.bench import deepsparse_peer

        try:
            python = deepsparse_peer.find_python(deepsparse_python)
            versions["deepsparse"] = deepsparse_peer.probe(python)
            paths["deepsparse"] = python
        except deepsparse_peer.DeepSparseUnavailable as exc:
            unavailable["deepsparse"] = str(exc)
    example = torch.zeros(1, *source.input_shape)
    if {"ort_dense", "ort_compact"} & set(backends):
        from sparsify.export.onnx import (
            COMPACT_FILE,
            DENSE_FILE,
            compact_model,
            export_dense_model,
            save_onnx,
        )

        t0 = time.perf_counter()
        try:
            # the source's own input shape, not export_onnx's default guess
            (workdir / "onnx").mkdir(parents=True, exist_ok=True)
            dense = export_dense_model(source.model, example)
            save_onnx(dense, workdir / "onnx" / DENSE_FILE)
            save_onnx(compact_model(dense)[0], workdir / "onnx" / COMPACT_FILE)
            paths["ort_dense"] = str(workdir / "onnx" / DENSE_FILE)
            paths["ort_compact"] = str(workdir / "onnx" / COMPACT_FILE)
            log(f"  exported ONNX in {time.perf_counter() - t0:.1f} s")
        except Exception as exc:  # the exporter raises many types
            for b in ("ort_dense", "ort_compact"):
                unavailable[b] = f"ONNX export failed ({type(exc).__name__}: {str(exc)[:120]})"
    if "scipy_runtime" in backends:
        if source.bundle_dir is not None:
            paths["scipy_runtime"] = str(source.bundle_dir)
        else:
            from sparsify.export.scipy_bundle import export_scipy_bundle

            try:
                export_scipy_bundle(source.model, workdir / "bundle")
                paths["scipy_runtime"] = str(workdir / "bundle")
            except SparsifyError as exc:
                unavailable["scipy_runtime"] = f"bundle export refused: {exc}"
    if "ort_sparse_mm" in backends:
        try:
            data, _ = sparse_mm_model(source.model, 1 + len(source.input_shape))
            (workdir / SPARSE_MM_FILE).write_bytes(data)
            paths["ort_sparse_mm"] = str(workdir / SPARSE_MM_FILE)
        except BackendUnavailable as exc:
            unavailable["ort_sparse_mm"] = str(exc)
    return {
        "paths": paths,
        "unavailable": unavailable,
        "workdir": str(workdir),
        "versions": versions,
    }


# --------------------------------------------------------------------------- runners


def ort_runner(path: str, threads: int) -> Runner:
    """A runner on the ONNX file ``path``: :func:`sparsify.export.onnx.ort_session` with
    ``threads`` intra-op threads and spinning off (spinning ORT threads halve torch's speed in
    an interleaved run); unverified, the bench's own files carry no need for provenance."""
    from sparsify.export.onnx import ort_session

    sess = ort_session(path, threads=threads, allow_spinning=False, verify=False)
    name = sess.get_inputs()[0].name
    return Runner(
        fn=lambda x: sess.run(None, {name: x})[0],
        prepare=lambda x: np.ascontiguousarray(x.numpy(), dtype=np.float32),
        info={"threads": threads},
    )


def ort_sparse_mm_runner(path: str, model: nn.Module, threads: int) -> Runner:
    """A runner on the :func:`sparse_mm_model` file ``path`` for the Linear chain ``model``:
    the sparse weights are built once as CSR OrtValues and fed with every call."""
    import onnxruntime as ort
    import scipy.sparse as sp

    from sparsify.export.onnx import ort_session

    chain = linear_chain(model)
    device = ort.OrtDevice.make("cpu", 0)
    feeds: dict[str, Any] = {}
    keep: list[Any] = []  # the numpy arrays back the OrtValues: keep them alive
    for i, (_, mod) in enumerate([c for c in chain if c[0] == "linear"]):
        m = sp.csr_matrix(mod.weight.detach().cpu().numpy().astype(np.float32))
        m.eliminate_zeros()
        data = np.ascontiguousarray(m.data, dtype=np.float32)
        inner = np.ascontiguousarray(m.indices, dtype=np.int64)
        outer = np.ascontiguousarray(m.indptr, dtype=np.int64)
        keep += [data, inner, outer]
        st = ort.SparseTensor.sparse_csr_from_numpy(
            np.array(m.shape, dtype=np.int64), data, inner, outer, device
        )
        feeds[f"W{i}"] = ort.OrtValue.ort_value_from_sparse_tensor(st)
    sess = ort_session(path, threads=threads, allow_spinning=False, verify=False)

    def fn(x: Any) -> Any:
        return sess.run_with_ort_values(["logits"], {**feeds, "input": x})[0].numpy()

    return Runner(
        fn=fn,
        prepare=lambda x: ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(x.numpy(), dtype=np.float32)
        ),
        info={"threads": threads, "note": "op is single-threaded Eigen", "_keep": keep},
    )


def build_runner(
    name: str,
    source: Source,
    artifacts: dict[str, Any],
    batch: int,
    threads: int,
    log: Callable[[str], None] = lambda _m: None,
    copy_model: bool = True,
) -> Runner:
    """The runner of backend ``name`` for ``source`` at (batch, threads).

    ``copy_model=False`` converts ``source.model`` in place (the RSS probe does, so the dense
    weights are freed rather than kept beside the sparse ones).

    Raises:
        BackendUnavailable: the backend does not apply or cannot run here.
    """
    if name in artifacts["unavailable"]:
        raise BackendUnavailable(artifacts["unavailable"][name])
    model = source.model
    if name == "dense":
        return Runner(fn=model)
    if name == "compiled":
        compiled = torch.compile(model, dynamic=False)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                compiled(torch.zeros(batch, *source.input_shape))
        except Exception as exc:  # inductor raises many types (missing compiler, ...)
            raise BackendUnavailable(
                f"torch.compile failed on CPU ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
        return Runner(fn=compiled, info={"compile_s": round(time.perf_counter() - t0, 2)})
    if name == "torch_csr":
        from sparsify.accel.convert import candidate_layers
        from sparsify.accel.layers import conv_supported, make_sparse

        m = copy.deepcopy(model) if copy_model else model
        n = 0
        for fqn, mod in candidate_layers(m):
            if isinstance(mod, nn.Linear) or conv_supported(mod):
                m.set_submodule(fqn, make_sparse(mod, "torch_csr"))
                n += 1
        return Runner(fn=m, info={"layers_sparse": n})
    if name == "converter":
        from sparsify.accel import Replay, sparsify_inference_

        m = copy.deepcopy(model) if copy_model else model
        example = torch.randn(batch, *source.input_shape)
        report = sparsify_inference_(m, example, threads=threads)
        log("    " + report.summary().replace("\n", "\n    "))
        # run as a user should: replayed (accel/replay.py), recorded here on the example
        replay = Replay(m)
        with torch.inference_mode():
            replay(example)
        info = {"report": report.to_dict(), "replay": replay.summary(), "replay_why": replay.why}
        return Runner(fn=replay, info=info)
    if name == "scipy_runtime":
        import sparsify.runtime

        rt = sparsify.runtime.load(artifacts["paths"]["scipy_runtime"])
        return Runner(
            fn=rt,
            prepare=lambda x: np.ascontiguousarray(x.numpy(), dtype=np.float32),
            info={"threads": 1, "note": "scipy.sparse matmul is single-threaded"},
        )
    if name in ("ort_dense", "ort_compact"):
        return ort_runner(artifacts["paths"][name], threads)
    if name == "ort_sparse_mm":
        return ort_sparse_mm_runner(artifacts["paths"][name], model, threads)
    if name == "spk":
        from sparsify.bench.spk import swap_to_spk_

        m = copy.deepcopy(model) if copy_model else model
        info = swap_to_spk_(m, source.input_shape, batch, threads)
        why = info.pop("unavailable")
        if why is not None:
            raise BackendUnavailable(f"sparsify.kernels cannot run here: {why}")
        if info["layers_spk"] == 0:
            kept = "; ".join(info["kept_dense"].values())
            raise BackendUnavailable(
                "no Linear or groups=1 Conv2d layer for the kernels"
                + (f" (kept dense: {kept})" if kept else "")
            )
        from sparsify import kernels

        info["kernels"] = kernels.info()["isa"]
        return Runner(fn=m, info=info)
    if name == "deepsparse":
        from sparsify.bench import deepsparse_peer

        workdir = artifacts.get("workdir")
        if "deepsparse" not in artifacts["paths"] or workdir is None:
            raise BackendUnavailable("DeepSparse was not prepared for this run")
        # its failures (DeepSparseUnavailable) are BackendUnavailable: listed with the reason
        return deepsparse_peer.deepsparse_runner(
            artifacts["paths"]["deepsparse"],
            model,
            source.input_shape,
            batch,
            threads,
            Path(workdir),
        )
    raise SparsifyError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}.")


def clean_info(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` without private entries (those starting with ``_``)."""
    return {k: v for k, v in info.items() if not k.startswith("_")}


def cpu_threads_all() -> int:
    """Threads this process may use: its CPU affinity, else os.cpu_count()."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
