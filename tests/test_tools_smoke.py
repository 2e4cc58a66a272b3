"""Every script in tools/ still starts (``--help``) against the current package.

The suite imports nothing from tools/; this runs each script as a user would, so a renamed
or moved library function breaks the build instead of the next reproduction run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "tools").glob("*.py")))
def test_tool_starts(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_bench_kernels_refuses_a_noise_threshold_that_cannot_work(value: str, tmp_path) -> None:
    """A NaN threshold would make every run pass as quiet: one line, exit 2, nothing written."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_kernels.py"), "--max-other", value,
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--max-other must be a finite number >= 0" in proc.stderr.strip().splitlines()[-1]
    assert not out.exists()
