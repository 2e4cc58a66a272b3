"""Each new test must be able to fail: break the new code one way at a time, run its tests
(tests/test_distill.py; the report.check count: the whole-model revert test), restore. Run from the repository root with the project's venv."""

import subprocess
import sys
from pathlib import Path

MUTATIONS = [
    ("sparsify/pipeline/distill.py", "a * t * t * soft", "a * soft"),
    ("sparsify/pipeline/distill.py", "return (1 - a) * hard", "return hard"),
    (
        "sparsify/pipeline/distill.py",
        "return None if self.teacher is None or self._given else",
        "return None if self.teacher is None else",
    ),
    (
        "sparsify/pipeline/stages.py",
        "epoch + 1 == distill.from_epoch",
        "epoch == distill.from_epoch",
    ),
    (
        "sparsify/pipeline/stages.py",
        '**({"teacher": distill.state_dict()} if distill is not None else {}),',
        "",
    ),
    ("sparsify/pipeline/stages.py", "load_checkpoint(init, model=model).train()", "pass"),
    (
        "sparsify/pipeline/stages.py",
        "out = check_input_shape(teacher, sample, path, fix)",
        "out = teacher(sample)",
    ),
    (
        "sparsify/pipeline/stages.py",
        "        distill=distill,\n    )\n    seconds",
        "    )\n    seconds",
    ),
    (
        "sparsify/accel/convert.py",
        'report.check += f" ({len(sparse)} layer(s) sparse)"',
        'report.check += " (1 layer(s) sparse)"',
    ),
]
TESTS = {"sparsify/accel/convert.py": ["tests/test_accel.py", "-k", "slower_as_a_whole"]}

for path, old, new in MUTATIONS:
    src = Path(path).read_text()
    assert src.count(old) >= 1, (path, old)
    Path(path).write_text(src.replace(old, new, 1))
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *TESTS.get(path, ["tests/test_distill.py"])],
            capture_output=True,
            text=True,
        )
    finally:
        Path(path).write_text(src)
    verdict = "CAUGHT" if r.returncode else "MISSED"
    print(f"{verdict}  {path}: {old.strip()[:60]!r}  ->  {r.stdout.strip().splitlines()[-1]}")
