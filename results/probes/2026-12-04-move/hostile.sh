#!/usr/bin/env bash
# Hostile inputs to what this session added, as a stranger on a machine without a GPU:
#   bash results/probes/2026-12-04-move/hostile.sh > results/probes/2026-12-04-move/hostile.txt
# Each line: the case, exit code, stderr line count, whether the --out folder exists after.
cd "$(dirname "$0")/../../.."
py=${PY:-.venv/bin/python}
t=$(mktemp -d)
run() {  # NAME OUT COMMAND...
  local name=$1 out=$2
  shift 2
  "$@" >/dev/null 2>"$t/err"
  local rc=$?
  printf '%s: rc %s, %s stderr line(s), out exists: %s\n  %s\n' "$name" "$rc" \
    "$(wc -l <"$t/err")" "$([ -e "$out" ] && echo yes || echo no)" "$(tail -n 1 "$t/err")"
}
run "bench --device cuda --backends dense" "$t/a" $py -m sparsify bench --linear 64x64 --device cuda --backends dense --out "$t/a"
run "bench --device cuda, no GPU" "$t/b" $py -m sparsify bench --linear 64x64 --device cuda --out "$t/b"
run "GPU table, no GPU" "$t/c" $py -m sparsify.bench.gpu --out "$t/c"
run "gpu_check.sh STEPS=bogus" "$t/d" env STEPS=bogus bash tools/gpu_check.sh "$t/d"
run "gpu_check.sh MNIST_DIR missing" "$t/f" bash tools/gpu_check.sh "$t/f" /nonexistent
run "to_semi_structured_ backend=cublas" "$t/e" $py -c "
import sys, torch
from sparsify.accel.semi_structured import to_semi_structured_
from sparsify.errors import SparsifyError
try:
    to_semi_structured_(torch.nn.Linear(64, 64), backend='cublas')
except SparsifyError as e:
    sys.exit(print(e, file=sys.stderr) or 2)"
rm -rf "$t"
