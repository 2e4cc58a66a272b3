"""Moved to :mod:`sparsify.footprint` (a measurement, not an export); kept for old imports."""

from sparsify.footprint import (  # noqa: F401 - re-exports
    BYTE_COLUMNS,
    OTHER,
    PRUNABLE,
    TOTAL,
    footprint,
    onnx_columns,
    to_markdown,
    write_footprint,
)
