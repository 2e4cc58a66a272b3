"""Command line: ``sparsify <command>``. This module only wires the subcommand modules.

User errors (SparsifyError) print one line on stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sparsify.errors import SparsifyError

COMMANDS = (
    "train",
    "sweep",
    "stats",
    "validate",
    "shrink",
    "export",
    "footprint",
    "bench",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per module in :data:`COMMANDS`."""
    import importlib

    import sparsify

    parser = argparse.ArgumentParser(
        prog="sparsify", description="Make neural networks sparse for real."
    )
    parser.add_argument("--version", action="version", version=f"sparsify {sparsify.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"sparsify.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsify`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SparsifyError as exc:
        print(f"sparsify {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparsify {args.command}: interrupted", file=sys.stderr)
        return 130
