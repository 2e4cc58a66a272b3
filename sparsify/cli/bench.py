"""``sparsify bench [SOURCE ...]``: how much faster the sparse model runs than dense, here.

sparsify bench runs/quickstart --out results/bench/quickstart
sparsify bench --linear 4096x4096 --density 0.1 --batch 1 64 --threads 1 all --out DIR
sparsify bench --model lenet300_100 --density 0.05 --quick --out DIR
sparsify bench --mlp 1024x4096x4096x1024 --density 0.1 0.05 --batch 1 64 --out DIR
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from sparsify.cli.paths import check_out_dir
from sparsify.cli.shapes import add_input_shape
from sparsify.errors import SparsifyError, check_input_shape

MAX_LINEAR_WEIGHTS = 1 << 28  # a benchmark layer, not an allocation the machine cannot make


def register(sub: argparse._SubParsersAction) -> None:
    from sparsify.bench.backends import BACKENDS

    p = sub.add_parser("bench", help="time sparse backends against torch dense; JSON + Markdown")
    p.add_argument("sources", nargs="*", help="checkpoint directories or exported scipy bundles")
    p.add_argument(
        "--linear",
        action="append",
        default=[],
        metavar="INxOUT",
        help="a single Linear layer, e.g. 4096x4096 (zeros imposed at --density)",
    )
    p.add_argument(
        "--mlp",
        action="append",
        default=[],
        metavar="AxBx...",
        help="an MLP of Linear layers with ReLU between, e.g. 1024x4096x4096x1024 (zeros "
        "imposed at --density)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="a registered model (e.g. lenet300_100) with zeros imposed at --density; "
        "--input-shape C H W builds it for C channels",
    )
    p.add_argument(
        "--density",
        type=float,
        nargs="+",
        default=[0.1],
        help="kept fraction of weights for --linear/--mlp/--model (default 0.1 = 90%% zeros)",
    )
    p.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        help="default: all (quick: all but compiled and deepsparse)",
    )
    p.add_argument(
        "--batch", type=int, nargs="+", help="batch sizes (default 1 16 64 256; quick 1 16)"
    )
    p.add_argument(
        "--threads", nargs="+", help="thread counts; 'all' = every CPU (default 1 all; quick 1)"
    )
    p.add_argument("--reps", type=int, help="timed repetitions (default 15; quick 5)")
    p.add_argument("--no-rss", action="store_true", help="skip the per-backend memory processes")
    p.add_argument("--quick", action="store_true", help="CI-sized run: fewer batches, reps, no RSS")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: every GPU backend (cuBLAS fp32/bf16, cuSPARSE CSR, 2:4) against cuBLAS "
        "fp32; the fixed GPU table: python -m sparsify.bench.gpu",
    )
    p.add_argument(
        "--deepsparse-python",
        metavar="PATH",
        help="python of a virtualenv with deepsparse==1.8.0 (make deepsparse-venv) for the "
        "deepsparse backend (default: $SPARSIFY_DEEPSPARSE_PYTHON, then .venv-deepsparse)",
    )
    p.add_argument("--out", required=True, help="directory for bench.json and bench.md")
    add_input_shape(p)
    p.set_defaults(func=run)


def _threads(values: list[str] | None, quick: bool) -> list[int]:
    from sparsify.bench.backends import cpu_threads_all

    values = values or (["1"] if quick else ["1", "all"])
    out: list[int] = []
    for v in values:
        if v == "all":
            n = cpu_threads_all()
        else:
            try:
                n = int(v)
            except ValueError:
                raise SparsifyError(f"--threads takes integers or 'all'; got {v!r}.") from None
        if n not in out:
            out.append(n)
    return out


def _specs(args: argparse.Namespace) -> list[dict]:
    from sparsify.bench.sources import spec_from_path

    specs = [spec_from_path(s) for s in args.sources]
    for shape in args.linear:
        try:
            n_in, n_out = (int(v) for v in shape.lower().split("x"))
        except ValueError:
            raise SparsifyError(
                f"--linear takes INxOUT such as 4096x4096; got {shape!r}."
            ) from None
        if not (n_in >= 1 and n_out >= 1 and n_in * n_out <= MAX_LINEAR_WEIGHTS):
            raise SparsifyError(
                f"--linear {shape}: IN and OUT must be >= 1 with IN*OUT at most "
                f"{MAX_LINEAR_WEIGHTS:,} weights (1 GiB of float32), e.g. 4096x4096."
            )
        specs += [
            {"kind": "linear", "in": n_in, "out": n_out, "density": d, "seed": 0}
            for d in args.density
        ]
    for sizes in args.mlp:
        widths = _mlp_sizes(sizes)
        specs += [{"kind": "mlp", "sizes": widths, "density": d, "seed": 0} for d in args.density]
    for name in args.model:
        specs += [{"kind": "model", "name": name, "density": d, "seed": 0} for d in args.density]
    if not specs:
        raise SparsifyError(
            "nothing to benchmark; give a checkpoint/bundle, --linear, --mlp or --model."
        )
    if args.input_shape is not None:  # for checkpoints, bundles and models (a Linear has its own)
        shape = list(check_input_shape("--input-shape", args.input_shape))
        specs = [
            s if s["kind"] in ("linear", "mlp") else {**s, "input_shape": shape} for s in specs
        ]
    return specs


def _mlp_sizes(text: str) -> list[int]:
    """``AxBx...`` (two or more widths, each >= 1, all weights together at most
    MAX_LINEAR_WEIGHTS) as a list of ints; else a one-line SparsifyError."""
    try:
        widths = [int(v) for v in text.lower().split("x")]
    except ValueError:
        widths = []
    weights = sum(a * b for a, b in zip(widths, widths[1:]))
    if len(widths) < 2 or min(widths) < 1 or weights > MAX_LINEAR_WEIGHTS:
        raise SparsifyError(
            f"--mlp takes two or more widths >= 1 joined by x, at most {MAX_LINEAR_WEIGHTS:,} "
            f"weights in all, such as 1024x4096x4096x1024; got {text!r}."
        )
    return widths


def run(args: argparse.Namespace) -> int:
    from sparsify.bench.backends import BACKENDS, quick_backends
    from sparsify.bench.harness import DEFAULT_BATCHES, run_bench
    from sparsify.bench.markdown import to_markdown
    from sparsify.fileio import atomic_write_json, atomic_write_text

    check_out_dir(Path(args.out))  # before any benchmark runs
    specs = _specs(args)
    command = "sparsify bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    if args.device == "cuda":
        from sparsify.bench.gpu import GPU_BACKENDS
        from sparsify.bench.gpu_harness import run_gpu_bench

        if args.backends:
            raise SparsifyError(
                "--backends picks CPU backends; --device cuda times every GPU backend "
                f"({', '.join(GPU_BACKENDS)}): drop --backends."
            )
        result = run_gpu_bench(
            specs,
            batches=args.batch or list(DEFAULT_BATCHES),
            reps=args.reps or 20,
            command=command,
        )
        from sparsify.bench.gpu import gpu_table_markdown

        md = gpu_table_markdown(result["rows"], result["machine"].get("gpu", "cuda"))
    else:
        result = run_bench(
            specs,
            backends=tuple(args.backends or (quick_backends() if args.quick else BACKENDS)),
            batches=args.batch or ([1, 16] if args.quick else list(DEFAULT_BATCHES)),
            threads=_threads(args.threads, args.quick),
            reps=args.reps or (5 if args.quick else 15),
            rss=not (args.no_rss or args.quick),
            command=command,
            deepsparse_python=args.deepsparse_python,
        )
        md = to_markdown(result, "sparsify bench")
    out = Path(args.out)
    atomic_write_json(out / "bench.json", result)
    atomic_write_text(out / "bench.md", md)
    print(md)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
