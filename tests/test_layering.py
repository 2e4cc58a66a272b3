"""Import layering, read from the source (function-local imports included).

core (errors, fileio, probe, timing, stats, tables, footprint, penalties, structure, accel,
kernels, export, runtime) <- pipeline <- bench <- report, cli. No ``from sparsify.X import _private`` across
top-level packages (in sparsify/ or tools/). runtime/ and the bundle readers never import torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = {"errors", "fileio", "probe", "timing", "stats", "tables", "penalties", "structure"}
CORE |= {"accel", "export", "runtime", "kernels", "footprint"}
BANNED = {"core": ("pipeline", "bench", "report", "cli"), "pipeline": ("bench", "report", "cli")}
BANNED["bench"] = ("report", "cli")
TORCH_FREE = ["sparsify/runtime/*.py", "sparsify/export/encoding.py"]
TORCH_FREE += ["sparsify/export/bundle_format.py", "sparsify/export/bundle_reader.py"]
# the ONNX loader the torch-free runtime uses, and the session builder memory probes use
TORCH_FREE += ["sparsify/export/onnx/integrity.py", "sparsify/export/onnx/ort.py"]
TORCH_FREE += ["sparsify/export/onnx/__init__.py", "sparsify/kernels/*.py"]
# inside the application: the definitions sit below the runner
PIPELINE_ORDER = {
    "sparsify/pipeline/zoo.py": ("checkpoint", "stages", "loop"),
    "sparsify/pipeline/recipe.py": ("checkpoint", "stages", "loop"),
    "sparsify/pipeline/checkpoint.py": ("stages", "loop"),
    # the loop takes built objects: it reads no recipe; the data readers know no loop
    "sparsify/pipeline/loop.py": ("recipe", "stages", "checkpoint"),
    "sparsify/pipeline/task.py": ("recipe", "loop", "stages", "checkpoint", "data"),
    # the distillation loss is a loop ingredient: built from numbers, not a recipe section
    "sparsify/pipeline/distill.py": ("recipe", "loop", "stages", "checkpoint", "data"),
}
PIPELINE_ORDER.update(
    {
        str(p.relative_to(ROOT)): ("recipe", "loop", "stages", "checkpoint")
        for p in (ROOT / "sparsify" / "pipeline" / "data").glob("*.py")
    }
)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import in the file, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.append((module, [a.name for a in node.names]))
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "sparsify" and len(parts) > 1 else parts[0]


def test_layers_import_only_downwards() -> None:
    bad = []
    for path in sorted((ROOT / "sparsify").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        top = _top(".".join(path.relative_to(ROOT).with_suffix("").parts))
        layer = "core" if top in CORE else top
        for module, _ in _imports(path):
            up = module.startswith("sparsify.") and _top(module) in BANNED.get(layer, ())
            if up:
                bad.append(f"{rel} imports {module}")
        for banned in PIPELINE_ORDER.get(rel, ()):
            bad += [
                f"{rel} imports {m}"
                for m, _ in _imports(path)
                if m.startswith(f"sparsify.pipeline.{banned}")
            ]
    assert not bad, "\n".join(bad)


def test_no_private_names_across_packages() -> None:
    bad = []
    for path in sorted([*(ROOT / "sparsify").rglob("*.py"), *(ROOT / "tools").rglob("*.py")]):
        rel = path.relative_to(ROOT)
        top = _top(".".join(rel.with_suffix("").parts))
        for module, names in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if module.startswith("sparsify") and private and _top(module) != top:
                bad.append(f"{rel}: from {module} import {', '.join(private)}")
    assert not bad, "\n".join(bad)


def test_runtime_and_bundle_readers_never_import_torch() -> None:
    files = sorted({p for pattern in TORCH_FREE for p in ROOT.glob(pattern)})
    assert len(files) >= 5
    bad = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in files
        for m, _ in _imports(p)
        if m == "torch" or m.startswith("torch.")
    ]
    assert not bad, "\n".join(bad)
