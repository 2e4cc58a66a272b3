"""``--input-shape C H W``: the one option every command that traces or times a model takes."""

from __future__ import annotations

import argparse


def add_input_shape(p: argparse.ArgumentParser) -> None:
    """Add ``--input-shape`` (dest ``input_shape``: a list of ints, or None)."""
    p.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        metavar="DIM",
        help="one input without the batch, e.g. 3 64 64 (default: the shape the checkpoint "
        "records; nothing is guessed)",
    )
