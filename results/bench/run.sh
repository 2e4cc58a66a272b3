#!/usr/bin/env bash
# The committed benchmark of issue 4, in one go on a quiet machine (run from the repo root):
#   bash results/bench/run.sh
# 1. trains the prox model if absent (recipes/bench_lenet300_prox.yaml),
# 2. waits until the 1-minute load average is <= 1.3 (60 s steps, at most 25 minutes),
# 3. speedup-vs-density curves (tools/bench_curves.py -> curves.{json,md,png}),
# 4. sparsify bench, every backend, 1 and all threads: the prox-trained LeNet-300-100 at
#    batch 1/16/64/256 (-> lenet300_prox_bench/), Linear 4096x4096 at 90% and 50% zeros at
#    batch 1/64 (-> linear4096/),
# 5. sparsify footprint of the prox model (-> footprint/), then
#    sparsify report results/bench (-> report.html, report.md, report_*.png).
set -euo pipefail
PY=.venv/bin/python
OUT=results/bench
[ -f $OUT/lenet300_prox/model.safetensors ] || \
  .venv/bin/sparsify train recipes/bench_lenet300_prox.yaml --out $OUT/lenet300_prox --data-dir /work/shared/data/mnist -q
for _ in $(seq "${WAIT_MINUTES:-25}"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  awk -v l="$load" 'BEGIN{exit !(l <= 1.3)}' && break
  echo "load $load > 1.3: waiting 60 s" >&2; sleep 60
done
$PY tools/bench_curves.py --out $OUT
.venv/bin/sparsify bench $OUT/lenet300_prox --out $OUT/lenet300_prox_bench
.venv/bin/sparsify bench --linear 4096x4096 --density 0.1 0.5 --batch 1 64 --reps 9 --out $OUT/linear4096
.venv/bin/sparsify footprint $OUT/lenet300_prox --out $OUT/footprint > /dev/null
.venv/bin/sparsify report $OUT
