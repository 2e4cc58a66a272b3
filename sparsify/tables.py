"""One Markdown table writer for every report, bench and results table.

    md_table(["batch", "dense"], [[1, "2 ms"]], align="rr")
    -> "| batch | dense |\n|---:|---:|\n| 1 | 2 ms |"

Cells are written with ``str``; a ``|`` inside a cell is escaped so it cannot split the row.
``align`` gives one letter per column, ``l`` (``---``) or ``r`` (``---:``); default all ``l``.
Pure Python: usable from the core and from tools alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["md_table"]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def md_table(
    head: Sequence[object], rows: Iterable[Sequence[object]], align: str | None = None
) -> str:
    """A GitHub Markdown table: header row, alignment row, one line per row (no final newline).

    Raises:
        ValueError: ``align`` or a row does not have one entry per column, or ``align`` holds a
            letter other than ``l``/``r``.
    """
    n = len(head)
    align = "l" * n if align is None else align
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align must be {n} letters 'l' or 'r'; got {align!r}")
    lines = [
        "| " + " | ".join(_cell(h) for h in head) + " |",
        "|" + "".join("---:|" if a == "r" else "---|" for a in align),
    ]
    for row in rows:
        if len(row) != n:
            raise ValueError(f"a row has {len(row)} cells for {n} columns: {list(row)!r}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)
