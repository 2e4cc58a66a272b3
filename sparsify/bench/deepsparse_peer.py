"""DeepSparse as a peer backend of ``sparsify bench``, run in its own virtualenv's process.

DeepSparse 1.8.0 pins an old onnx and numpy, so it lives in a separate virtualenv
(``make deepsparse-venv`` creates ``.venv-deepsparse`` with ``pip install deepsparse==1.8.0``).
The python of that environment is, in this order: ``--deepsparse-python PATH``, the
environment variable ``SPARSIFY_DEEPSPARSE_PYTHON``, ``.venv-deepsparse/bin/python`` beside
the sparsify checkout; none -> the backend is reported unavailable with how to install it.

Per (batch, threads) the model is exported to ONNX opset 13 with a STATIC batch (DeepSparse
compiles for one shape) and served by :mod:`sparsify.bench.deepsparse_worker`, a persistent
torch-free process, so its rounds interleave with torch dense's in the same timed run. One
timed call asks the worker for ``k`` engine runs (k chosen so they last >= 5 ms); the sample
is the worker's own time per run (perf_counter around the k runs, in the worker), what an
in-process caller of the engine would pay. The wall time seen from the harness, pipe round
trip and the scheduling of a second process included, is recorded as ``wall_s_per_run``
(on a loaded machine it can be several ms above).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsify.bench.backends import BackendUnavailable, Runner

ENV_VAR = "SPARSIFY_DEEPSPARSE_PYTHON"
# what `make deepsparse-venv` creates, beside the (editable) checkout
DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venv-deepsparse"
WORKER = Path(__file__).with_name("deepsparse_worker.py")
OPSET = 13
INSTALL_HINT = (
    "needs DeepSparse 1.8 in its own virtualenv: run `make deepsparse-venv` "
    f"(pip install deepsparse==1.8.0 into .venv-deepsparse), or pass --deepsparse-python "
    f"PATH or set {ENV_VAR}"
)
# a hung engine must not hang the bench: compiling a large model takes minutes at most
LOAD_TIMEOUT_S = 1800.0
REPLY_TIMEOUT_S = 600.0
MIN_CALL_S = 5e-3  # one timed call lasts >= this, as the harness asks of in-process samples


class DeepSparseUnavailable(BackendUnavailable):
    """DeepSparse cannot run here (or its worker failed); the message is one line saying why."""


def find_python(explicit: str | os.PathLike[str] | None = None) -> str:
    """The DeepSparse virtualenv's python: ``explicit``, else $SPARSIFY_DEEPSPARSE_PYTHON,
    else ``DEFAULT_VENV/bin/python`` if it exists.

    Raises:
        DeepSparseUnavailable: none given or found, or the one given is not an executable.
    """
    given = explicit or os.environ.get(ENV_VAR)
    if not given:
        default = DEFAULT_VENV / "bin" / "python"
        if default.is_file():
            return str(default)
        raise DeepSparseUnavailable(f"no DeepSparse python found; {INSTALL_HINT}.")
    path = Path(given)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise DeepSparseUnavailable(
            f"DeepSparse python {given} is not an executable; {INSTALL_HINT}."
        )
    return str(path)


@functools.lru_cache(maxsize=8)
def probe(python: str) -> str:
    """DeepSparse's version under ``python`` (cached per path).

    Raises:
        DeepSparseUnavailable: ``import deepsparse`` fails there (its last error line).
    """
    code = "import deepsparse, numpy; print(deepsparse.__version__)"
    try:
        proc = subprocess.run(
            [python, "-I", "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeepSparseUnavailable(
            f"{python} did not run ({type(exc).__name__}); {INSTALL_HINT}."
        ) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
        raise DeepSparseUnavailable(f"{python} cannot import deepsparse ({last}); {INSTALL_HINT}.")
    return proc.stdout.strip().splitlines()[-1]


def export_static_onnx(
    model: nn.Module, input_shape: tuple[int, ...], batch: int, path: Path
) -> None:
    """``model`` as ONNX opset 13 with the static input shape (batch, *input_shape).

    The TorchScript exporter (dynamo=False): DeepSparse 1.8 reads opset <= 13 graphs.
    """
    example = torch.zeros(batch, *input_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the legacy exporter is the point here: no nagging
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["output"],
        )


@dataclass
class Worker:
    """A running :mod:`deepsparse_worker` process and the files it exchanges."""

    proc: subprocess.Popen
    tmp: tempfile.TemporaryDirectory
    hello: dict[str, Any] = field(default_factory=dict)

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the reply.

        Raises:
            DeepSparseUnavailable: the worker died or answered an error.
        """
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.readline(REPLY_TIMEOUT_S)
        except (BrokenPipeError, OSError):
            line = ""
        return _reply(line, self)

    def readline(self, timeout: float) -> str:
        """The worker's next reply line ("" if it closed its end).

        Raises:
            DeepSparseUnavailable: no reply within ``timeout`` s (the worker is killed).
        """
        # one reply per request, so nothing waits in the reader's buffer: select on the fd
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise DeepSparseUnavailable(
                f"the DeepSparse worker did not answer within {timeout:g} s"
            )
        return self.proc.stdout.readline()

    def close(self) -> None:
        """Ask the worker to quit (kill it if it does not within 10 s); drop its files."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            # a dead worker: closing the pipe may flush a request it will never read
            with contextlib.suppress(OSError):
                f.close()
        self.tmp.cleanup()


def _reply(line: str, worker: Worker) -> dict[str, Any]:
    if not line:
        worker.proc.wait(timeout=10)
        err = Path(worker.tmp.name, "stderr.txt")
        last = (err.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise DeepSparseUnavailable(
            f"the DeepSparse worker exited (code {worker.proc.returncode}): {last[:200]}"
        )
    rep = json.loads(line)
    if not rep.get("ok"):
        raise DeepSparseUnavailable(f"DeepSparse failed: {rep.get('error')}")
    return rep


def start_worker(python: str, onnx_path: Path, batch: int, threads: int) -> Worker:
    """Start the worker on ``onnx_path`` for (batch, threads) and wait for its engine.

    Raises:
        DeepSparseUnavailable: the engine did not load (its error line).
    """
    tmp = tempfile.TemporaryDirectory(prefix="sparsify-deepsparse-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OMP_"))}
    with open(Path(tmp.name, "stderr.txt"), "w") as err:
        proc = subprocess.Popen(
            [python, "-I", str(WORKER), str(onnx_path), str(batch), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    w = Worker(proc, tmp)
    try:
        w.hello = _reply(w.readline(LOAD_TIMEOUT_S), w)
    except BaseException:
        w.close()
        raise
    return w


def deepsparse_runner(
    python: str,
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch: int,
    threads: int,
    workdir: Path,
) -> Runner:
    """The bench runner of DeepSparse at (batch, threads), its worker started.

    ``prepare(x)`` ships the input to the worker and calibrates k; ``fn(_)`` runs once and
    returns the output (for the correctness check); ``timed()`` runs k times (>= 5 ms in
    all) and returns the worker's own seconds per run; ``close()`` records the worker's
    memory and stops it.

    Raises:
        DeepSparseUnavailable: export or engine load failed.
    """
    onnx_path = workdir / f"deepsparse_b{batch}.onnx"
    if not onnx_path.is_file():
        try:
            export_static_onnx(model, input_shape, batch, onnx_path)
        except Exception as exc:  # the exporter raises many types
            raise DeepSparseUnavailable(
                f"ONNX opset {OPSET} export failed ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
    w = start_worker(python, onnx_path, batch, threads)
    tmp = Path(w.tmp.name)
    k = [1]
    worker_s: list[float] = []
    info: dict[str, Any] = {
        "deepsparse": w.hello.get("version"),
        "isa": w.hello.get("isa"),
        "threads": threads,
        "static_batch": batch,
        "opset": OPSET,
        "engine_load_s": w.hello.get("load_s"),
    }

    def prepare(x: torch.Tensor) -> str:
        path = tmp / "input.npy"
        np.save(path, np.ascontiguousarray(x.numpy(), dtype=np.float32), allow_pickle=False)
        w.ask({"op": "load", "path": str(path)})
        # calibrate k on this input: a few runs, then enough for MIN_CALL_S per call
        one = w.ask({"op": "run", "n": 3, "out": None})["seconds"] / 3
        k[0] = max(1, min(1000, int(MIN_CALL_S / max(one, 1e-7) + 0.999)))
        info["runs_per_call"] = k[0]
        return str(path)

    def fn(_x: Any) -> np.ndarray:
        out = tmp / "output.npy"
        w.ask({"op": "run", "n": 1, "out": str(out)})
        return np.load(out, allow_pickle=False)

    def timed() -> float:
        worker_s.append(w.ask({"op": "run", "n": k[0], "out": None})["seconds"] / k[0])
        return worker_s[-1]

    def close() -> None:
        try:  # the worker's memory: the RSS probe's fresh processes do not cover it
            mem = w.ask({"op": "mem"})
            info["worker_rss"], info["worker_peak_rss"] = mem["vm_rss"], mem["vm_hwm"]
            info["worker_rss_after_imports"] = w.hello.get("rss_after_imports")
        except DeepSparseUnavailable:
            pass
        w.close()

    return Runner(
        fn=fn,
        prepare=prepare,
        info=info,
        timed=timed,
        runs_per_timed=lambda: k[0],
        close=close,
        pids=(w.proc.pid,),
    )
