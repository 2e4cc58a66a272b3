"""Compile ``spk.c`` at first use, cache the shared library per user, load it with ctypes.

Why this toolchain: the kernels are one C file compiled on the user's machine with
``cc -O3 -march=native -fopenmp -shared -fPIC``, so they use the ISA of the CPU they run on
(AVX-512 where present, AVX2 elsewhere, 128-bit vectors or scalar code on anything else: the
source is written with GCC/Clang vector extensions, which every target lowers) and OpenMP for
all cores. Nothing is downloaded: a C compiler is part of every Linux build environment
(gcc 12 on Debian 12), and ``pip install`` stays a pure-Python install. The alternatives were
weighed: a setuptools C extension built at install time would fix the ISA at build time (a
wheel built for x86-64-v2 never uses AVX-512) and needs a compiler at install instead of at
first use; numba is a 30 MB dependency (llvmlite) whose compiled loops this project measured at
20-30 GFLOP/s at batch 64, no better than MKL's CSR (results in
shared/reference/cpu-sparse-facts.md), because the win comes from register tiling and
explicit vector code, which numba does not express. ctypes keeps the runtime free of torch.

Cache: ``$XDG_CACHE_HOME/sparsify/kernels/<key>/libspk.so`` (default ``~/.cache``), directory
mode 0700, key = sha256 of (source, flags, ``cc --version``, CPU flags). The library is
compiled to a temporary name in the same directory, then moved into place with
``os.replace``, so a concurrent process sees no library or a whole one. Without a compiler,
when compilation fails, or with ``SPARSIFY_KERNELS=off`` the package falls back to scipy's
CSR product (one warning line, never a crash).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("spk.c")
ABI = 9  # must equal SPK_ABI in spk.c
# flag sets tried in order: the first that compiles wins (clang on macOS lacks -fopenmp;
# some compilers lack -march=native)
FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"),
    ("-O3", "-march=native", "-shared", "-fPIC"),
    ("-O3", "-shared", "-fPIC"),
)
ENV_SWITCH = "SPARSIFY_KERNELS"


@dataclass(frozen=True)
class Library:
    """A loaded kernel library and how it was built."""

    lib: ctypes.CDLL
    path: Path
    compiler: str
    compiler_version: str
    flags: tuple[str, ...]
    isa: str
    vector_width: int
    openmp: bool


_lock = threading.Lock()
_MISSING = object()
_loaded: dict[tuple[str, tuple[str, ...] | None], Library | None] = {}
_failure: dict[tuple[str, tuple[str, ...] | None], str] = {}
_warned = False


def cache_root() -> Path:
    """Where compiled libraries live: $XDG_CACHE_HOME/sparsify/kernels (default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsify" / "kernels"


def find_compiler() -> str | None:
    """The C compiler: $CC if set, else the first of cc, gcc, clang on PATH (None if none)."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or None
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cpu_signature() -> str:
    """CPU identity for the cache key: -march=native code must not run on another CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            lines = [ln for ln in fh if ln.startswith(("flags", "model name", "vendor_id"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"


def _compile(cc: str, flags: tuple[str, ...], version: str) -> Path:
    """Compile SOURCE with ``flags`` into the cache (atomically); return the library path."""
    src = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([src, " ".join(flags).encode(), version.encode(), _cpu_signature().encode()])
    ).hexdigest()[:24]
    folder = cache_root() / key
    lib = folder / "libspk.so"
    if lib.exists():
        return lib
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask; the cache holds code
    fd, tmp = tempfile.mkstemp(prefix=".libspk.", suffix=".so", dir=folder)
    os.close(fd)
    try:
        proc = subprocess.run(
            [cc, *flags, "-o", tmp, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(err[0] if err else f"exit status {proc.returncode}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    """Set argument and return types of the exported functions."""
    i64, i32, vp = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.spk_isa.restype = ctypes.c_char_p
    lib.spk_vector_width.restype = i32
    lib.spk_abi.restype = i32
    lib.spk_openmp.restype = i32
    lib.spk_max_threads.restype = i32
    lib.spk_spmm.restype = i32
    spmm_args = [i64, i64, i32, i32, vp, vp, vp, vp, i64, vp, vp, vp, vp, i32, i32]
    lib.spk_spmm.argtypes = spmm_args
    lib.spk_spmm_t.restype = i32
    lib.spk_spmm_t.argtypes = spmm_args
    lib.spk_spmv.restype = i32
    lib.spk_spmv.argtypes = [i64, i64, i32, i32, vp, vp, vp, vp, vp, vp, vp, i32]
    lib.spk_conv2d.restype = i32
    lib.spk_conv2d.argtypes = (
        [i64, i64, i32, i32, i32, i32, vp, vp, vp, vp, i64, i64, i64]
        + [i32] * 6
        + [i64, i64, vp, vp, vp, vp, i64, i64, i64, vp, i32, i32]
    )
    lib.spk_dwconv2d.restype = i32
    lib.spk_dwconv2d.argtypes = [i64] * 5 + [i32] * 8 + [i64, i64, vp, vp, vp, vp, vp, i32]
    lib.spk_expand_dw.restype = i32
    lib.spk_expand_dw.argtypes = [i64] * 5 + [vp] * 5 + [i32] * 8 + [i64, i64] + [vp] * 5 + [i32]
    lib.spk_conv2d_plan.restype = i32
    lib.spk_conv2d_plan.argtypes = [vp] * 7 + [i32]
    lib.spk_maxpool2d.restype = i32
    lib.spk_maxpool2d.argtypes = [i64] * 4 + [i32] * 8 + [i64, i64, vp, vp, i32]
    lib.spk_stencil_plan.restype = i32
    lib.spk_stencil_plan.argtypes = [vp] * 10 + [i32]
    lib.spk_read_bandwidth_probe.restype = ctypes.c_float
    lib.spk_read_bandwidth_probe.argtypes = [vp, i64, i32]
    lib.spk_fma_peak_probe.restype = ctypes.c_float
    lib.spk_fma_peak_probe.argtypes = [i64]


def load(flags: tuple[str, ...] | None = None) -> Library | None:
    """The compiled kernel library, or None (kernels off, no compiler, compilation failed).

    ``flags`` pins one flag set (tests use it to build the portable variant); by default the
    sets in FLAG_SETS are tried in order. The result is memoised per process; the first
    failure prints one warning line.
    """
    global _warned
    if switched_off():
        return None
    key = (os.environ.get("CC", ""), flags)
    hit = _loaded.get(key, _MISSING)  # the per-call fast path: no PATH search, no lock
    if hit is not _MISSING:
        return hit  # type: ignore[return-value]
    with _lock:
        if key in _loaded:
            return _loaded[key]
        cc = find_compiler()
        result: Library | None = None
        reason = "no C compiler found (set CC or install gcc)"
        if cc is not None:
            version = _compiler_version(cc)
            for candidate in (flags,) if flags is not None else FLAG_SETS:
                try:
                    path = _compile(cc, candidate, version)
                    lib = ctypes.CDLL(str(path))
                    _declare(lib)
                    if lib.spk_abi() != ABI:
                        raise RuntimeError(f"ABI {lib.spk_abi()} != {ABI}")
                    result = Library(
                        lib=lib,
                        path=path,
                        compiler=cc,
                        compiler_version=version,
                        flags=candidate,
                        isa=lib.spk_isa().decode(),
                        vector_width=lib.spk_vector_width(),
                        openmp=bool(lib.spk_openmp()),
                    )
                    break
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    reason = f"compiling {SOURCE.name} failed: {exc}"
        _loaded[key] = result
        if result is None:
            _failure[key] = reason
            if not _warned:
                _warned = True
                warnings.warn(
                    f"sparsify.kernels: {reason}; using scipy's CSR product instead "
                    f"(slower; set {ENV_SWITCH}=off to silence this)",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return result


def switched_off() -> bool:
    """True when the environment variable SPARSIFY_KERNELS says off (off/0/false/no). Read on
    every functional call; a converted layer reads it once per input shape, when it packs
    that shape's call (``conv_plan``, ``stencil_plan``)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "false", "no")


def failure_reason(flags: tuple[str, ...] | None = None) -> str | None:
    """Why load() returns None for these flags (None if it does not)."""
    if switched_off():
        return f"{ENV_SWITCH}=off"
    return _failure.get((os.environ.get("CC", ""), flags))
