"""``sparsify report DIR``: one self-contained HTML page (and Markdown) from a results directory.

sparsify report results/lecture_l1            # writes results/lecture_l1/report.html, report.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsify.cli.paths import check_out_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="HTML + Markdown report (plots embedded) of a sweep/export/bench directory"
    )
    p.add_argument("directory", help="a sweep, export, footprint or bench output directory")
    p.add_argument(
        "--out", help="where report.html, report.md and the PNGs go (default: DIRECTORY)"
    )
    p.add_argument("--title", help="page title (default: the directory name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparsify.report import build_report

    if args.out:
        check_out_dir(Path(args.out))
    paths = build_report(args.directory, out_dir=args.out, title=args.title)
    for p in paths:
        print(f"wrote {p}")
    return 0
