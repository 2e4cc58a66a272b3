"""Report stage: one self-contained HTML page (+ Markdown) from sweep/export/bench output."""

from sparsify.report.html import build_report

__all__ = ["build_report"]
