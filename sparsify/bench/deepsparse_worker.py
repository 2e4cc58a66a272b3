"""A DeepSparse engine in its own process, answering requests over a pipe (stdlib + numpy only).

Run by the python of a separate virtualenv holding ``deepsparse==1.8.0`` (it pins an old
onnx and numpy, so it cannot share sparsify's environment); it imports neither torch nor
sparsify. The bench (:mod:`sparsify.bench.deepsparse`) starts it as

    PYTHON deepsparse_worker.py MODEL.onnx BATCH THREADS

and then talks one JSON object per line, request on stdin, reply on stdout:

    (startup)                     -> {"ok": true, "version": V, "isa": I, "load_s": s}
    {"op": "load", "path": P}     -> {"ok": true}         the input array, a .npy file
    {"op": "run", "n": N, "out": P or null}
                                  -> {"ok": true, "seconds": s}   N engine runs on the last
                                     input, s = their total wall time measured here; the
                                     first output is saved to P when given
    {"op": "mem"}                 -> {"ok": true, "vm_rss": b, "vm_hwm": b}   (bytes, -1 unknown)
    {"op": "quit"}                -> exits 0

Any failure answers {"ok": false, "error": ONE LINE}. Arrays travel as .npy files read with
``allow_pickle=False``. The protocol uses a private copy of the stdout descriptor; fd 1 is
pointed at stderr so a library printing to stdout cannot corrupt the replies.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time


def _status_bytes(key: str) -> int:
    """VmRSS/VmHWM of this process from /proc/self/status, in bytes (-1 where unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def main(argv: list[str]) -> int:
    """Serve requests for the engine on ``argv = [model, batch, threads]`` until quit/EOF."""
    # run as a script, this file's folder heads sys.path: its sibling modules must not
    # shadow real packages (the parent also passes -I where the interpreter knows it)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints on fd 1 now land on stderr

    def reply(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        model, batch, threads = argv[0], int(argv[1]), int(argv[2])
        t0 = time.perf_counter()
        import deepsparse
        import numpy as np
        from deepsparse import Engine

        rss_imports = _status_bytes("VmRSS")
        engine = Engine(model=model, batch_size=batch, num_cores=threads)
        isa = None
        with contextlib.suppress(Exception):  # an informative extra only
            isa = deepsparse.cpu.cpu_architecture().isa
        reply(
            {
                "ok": True,
                "version": deepsparse.__version__,
                "isa": isa,
                "load_s": round(time.perf_counter() - t0, 3),
                "rss_after_imports": rss_imports,
            }
        )
    except Exception as exc:  # report any startup failure as one line, then stop
        reply({"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
        return 1
    inputs: list = []
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                return 0
            if op == "load":
                inputs = [np.ascontiguousarray(np.load(req["path"], allow_pickle=False))]
                reply({"ok": True})
            elif op == "run":
                if not inputs:
                    raise ValueError("no input loaded")
                n = max(1, int(req.get("n", 1)))
                t0 = time.perf_counter()
                for _ in range(n):
                    outs = engine.run(inputs, val_inp=False)
                seconds = time.perf_counter() - t0
                if req.get("out"):
                    np.save(req["out"], np.asarray(outs[0]), allow_pickle=False)
                reply({"ok": True, "seconds": seconds})
            elif op == "mem":
                reply(
                    {"ok": True, "vm_rss": _status_bytes("VmRSS"), "vm_hwm": _status_bytes("VmHWM")}
                )
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # keep serving; the caller decides
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
