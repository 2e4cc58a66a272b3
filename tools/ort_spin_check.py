"""Does an onnxruntime session slow down torch when both run interleaved on the same cores?

    .venv/bin/python tools/ort_spin_check.py --out results/bench/ort_spin

Linear 4096x4096 at batch 64 with all threads: torch dense and an ORT session on the same
model are timed interleaved (sparsify.timing), once with ORT's default spinning pool
threads and once with ``session.intra_op.allow_spinning = 0`` (what ``sparsify bench``
uses), then torch alone. Medians go to ``ort_spin.json`` and ``ort_spin.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from sparsify.bench.backends import _ort_options, cpu_threads_all
from sparsify.export.onnx import export_dense_model
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.timing import loadavg, machine_info, time_interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/ort_spin")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    threads = cpu_threads_all()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lin = nn.Linear(4096, 4096).eval()
    x = torch.randn(64, 4096)
    data = export_dense_model(lin, x).SerializeToString()
    xn = x.numpy()
    out = {"command": f"python tools/ort_spin_check.py --out {args.out}", "threads": threads}
    out["machine"], out["loadavg_start"] = machine_info(), loadavg()
    with torch.inference_mode():
        for spin in ("1", "0"):
            opts = _ort_options(threads)
            opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
            sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            t = time_interleaved(
                {"torch": lambda: lin(x), "ort": lambda s=sess, n=name: s.run(None, {n: xn})},
                reps=args.reps,
            )
            out[f"spinning_{spin}"] = {k: v.median * 1e3 for k, v in t.items()}
            del sess
        out["torch_alone_ms"] = (
            time_interleaved({"torch": lambda: lin(x)}, reps=args.reps)["torch"].median * 1e3
        )
    out["loadavg_end"] = loadavg()
    md = [
        "# onnxruntime spinning vs torch, interleaved (Linear 4096x4096, batch 64)",
        "",
        f"Command: `{out['command']}`; {threads} threads; torch {out['machine']['torch']}, "
        f"onnxruntime {out['machine']['onnxruntime']}; load {out['loadavg_start']} -> "
        f"{out['loadavg_end']}. Medians of {args.reps} interleaved samples, ms per call.",
        "",
        "| ORT allow_spinning | torch dense | ORT dense |",
        "|---|---:|---:|",
        f"| 1 (default) | {out['spinning_1']['torch']:.2f} | {out['spinning_1']['ort']:.2f} |",
        f"| 0 (sparsify bench) | {out['spinning_0']['torch']:.2f} | {out['spinning_0']['ort']:.2f} |",
        f"| no ORT session | {out['torch_alone_ms']:.2f} | – |",
        "",
    ]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out) / "ort_spin.json", out)
    atomic_write_text(Path(args.out) / "ort_spin.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
