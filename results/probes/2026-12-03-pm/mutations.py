"""Break the register-transposed packing/write-back of spk.c one way at a time; each mutation
must make tests/test_kernels.py fail. Restores the source afterwards.

    python results/probes/2026-12-03-pm/mutations.py > results/probes/2026-12-03-pm/mutations.txt
"""

import subprocess
import sys
from pathlib import Path

SRC = Path("sparsify/kernels/spk.c")
MUTATIONS = [
    (
        "16-lane stage 8 takes a wrong lane",
        "r[i] = SHUF(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);",
        "r[i] = SHUF(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 23, 23);",
    ),
    (
        "16-lane stage 1 swapped",
        "r[i] = SHUF(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);",
        "r[i] = SHUF(a, b, 16, 0, 18, 2, 20, 4, 22, 6, 24, 8, 26, 10, 28, 12, 30, 14);",
    ),
    (
        "8-lane stage 2 takes a wrong lane",
        "r[i + 2] = SHUF(a, b, 2, 3, 10, 11, 6, 7, 14, 15);",
        "r[i + 2] = SHUF(a, b, 2, 3, 10, 11, 6, 7, 14, 14);",
    ),
    ("4-lane stage 1 swapped", "r[i] = SHUF(a, b, 0, 4, 2, 6);", "r[i] = SHUF(a, b, 4, 0, 6, 2);"),
    (
        "input: rows past the batch not zeroed",
        "r[i] = b + i < nb ? ldu(x + (b0 + b + i) * cols + c) : (vf){0};",
        "r[i] = b + i < nb ? ldu(x + (b0 + b + i) * cols + c) : r[0];",
    ),
    (
        "input: the last columns (cols % VW) skipped",
        "for (int64_t c = cv; c < c1; c++)\n                for (int i = 0; i < VW; i++)",
        "for (int64_t c = c1; c < c1; c++)\n                for (int i = 0; i < VW; i++)",
    ),
    (
        "output: bias left out of the register blocks",
        "const vf bv = bias ? ldu(bias + r0 + q0) : (vf){0};",
        "const vf bv = (vf){0};",
    ),
    (
        "output: the last rows (nr % VW) skipped",
        "for (int q = qv; q < nr; q++) {",
        "for (int q = nr; q < nr; q++) {",
    ),
    (
        "output: the last block's batch bound off by one",
        "const int64_t kn = nb - b < VW ? nb - b : VW;",
        "const int64_t kn = nb - b < VW ? nb - b - 1 : VW;",
    ),
]
TESTS = [
    "tests/test_kernels.py",
    "-q",
    "-x",
    "-p",
    "no:cacheprovider",
    "-k",
    "spmm or portable or thread or empty",
]

orig = SRC.read_text()
caught = 0
try:
    for name, old, new in MUTATIONS:
        assert orig.count(old) == 1, name
        SRC.write_text(orig.replace(old, new))
        r = subprocess.run([sys.executable, "-m", "pytest", *TESTS], capture_output=True, text=True)
        last = (r.stdout.strip().splitlines() or ["?"])[-1]
        ok = r.returncode != 0
        caught += ok
        print(f"{'CAUGHT' if ok else 'MISSED'}  {name}: {last}", flush=True)
finally:
    SRC.write_text(orig)
print(f"{caught} of {len(MUTATIONS)} mutations caught")
