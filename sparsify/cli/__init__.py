"""Command line: ``sparsify <command>``. This module only wires the subcommand modules.

User errors (SparsifyError) print one line on stderr and exit with status 2; no traceback.
So do disk and permission errors, file-size limits, memory exhaustion, runaway recursion and
any unexpected library error (one line naming the file and the fix); ``--debug`` shows the
traceback instead.

``--plugin PKG`` (repeatable, before or after the command) imports PKG first: a package that
calls ``sparsify.register_model(name, fn)`` when imported makes ``name`` usable in recipes
and checkpoints. Child processes (bench's memory probes) import it too (``SPARSIFY_PLUGINS``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sparsify.errors import SparsifyError, describe_failure, one_line

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
    parser.add_argument("--plugin", **_PLUGIN_ARG, default=[])
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of one line"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"sparsify.cli.{name}").register(sub)
    for command in sub.choices.values():  # also accepted after the command
        command.add_argument("--plugin", **_PLUGIN_ARG, dest="plugins_after", default=[])
    return parser


_PLUGIN_ARG = {
    "action": "append",
    "metavar": "PKG",
    "help": "import PKG first (it registers its models with sparsify.register_model); repeatable",
}


def load_plugins(modules: Sequence[str]) -> None:
    """Import each ``--plugin`` module (see :func:`sparsify.pipeline.zoo.load_plugin`)."""
    if not modules:
        return
    from sparsify.pipeline.zoo import load_plugin

    for module in modules:
        load_plugin(module)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsify`` console script; returns the exit status."""
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # past `ulimit -f` a write fails with EFBIG, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        load_plugins([*args.plugin, *getattr(args, "plugins_after", [])])
        return int(args.func(args) or 0)
    except SparsifyError as exc:
        if args.debug:
            raise
        print(f"sparsify {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparsify {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure reaches the user as one line
        if args.debug:
            raise
        print(f"sparsify {args.command}: error: {describe_failure(exc)}", file=sys.stderr)
        return 2
