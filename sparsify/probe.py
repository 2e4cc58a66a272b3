"""Memory probes: this process's resident memory (/proc), and a fresh child that reports as JSON.

A fresh process is how resident memory is measured without this process's imports and
caches; both the footprint measurement (onnxruntime session memory) and the bench (peak RSS
per backend) use :func:`run_json_child`, and the child reads itself with :func:`vm_rss` and
:func:`vm_hwm`. Importing this module imports no torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``...); -1 where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def vm_rss() -> int:
    """Resident memory of this process now, in bytes (-1 without /proc)."""
    return status_bytes("VmRSS")


def vm_hwm() -> int:
    """Peak resident memory of this process *since its exec*, in bytes (-1 without /proc).

    Not ``ru_maxrss``: Linux carries that over from the forking parent across exec, so a
    child of a 3 GB process would report 3 GB whatever it used itself.
    """
    return status_bytes("VmHWM")


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
