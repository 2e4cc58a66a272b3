"""Run a fresh Python process that prints its result as one JSON line (memory probes).

A fresh process is how resident memory is measured without this process's imports and
caches; both the export stage (onnxruntime session memory) and the bench (peak RSS per
backend) use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


class ChildFailed(Exception):
    """The child timed out or exited non-zero; the message is its last stderr line."""


def run_json_child(args: Sequence[str], timeout: float, single_thread: bool = True) -> Any:
    """``json.loads`` of the last stdout line of ``python *args`` (this interpreter).

    ``single_thread`` sets OMP_NUM_THREADS=1 (and drops other OMP_* settings) in the child.

    Raises:
        ChildFailed: timeout (``"timed out after N s"``) or non-zero exit (its last stderr line).
    """
    env = dict(os.environ)
    if single_thread:
        env = {k: v for k, v in env.items() if not k.startswith("OMP_")}
        env["OMP_NUM_THREADS"] = "1"
    try:
        proc = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ChildFailed((proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
    return json.loads(proc.stdout.strip().splitlines()[-1])
