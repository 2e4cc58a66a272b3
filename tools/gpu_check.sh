#!/usr/bin/env bash
# Every GPU check in one run (under 10 minutes on one H200), for a machine with a CUDA GPU:
#
#   bash tools/gpu_check.sh OUT_DIR [MNIST_DIR]
#
# 1. the CUDA tests (tests/test_gpu.py, the prox on CUDA, the GPU bench and 2:4 tests);
# 2. the GPU table (python -m sparsify.bench.gpu): Linear 1024-8192 at 50-99% zeros and 2:4,
#    batch 1-256, cuBLAS fp32/bf16 vs cuSPARSE CSR vs 2:4, time and memory;
# 3. resnet18 and mobilenet_v2 at 90% zeros on the GPU (sparsify bench --device cuda);
# 4. the quickstart pipeline with the training on the GPU (train -> stats -> export -> footprint);
# 5. the whole test suite with the GPU visible (device "auto" picks it), in parallel.
#
# Each step has its own time limit, so the script always finishes and says what ran; OUT_DIR
# gets one folder per step and log.txt. Uses the python3 on PATH (PY= to override) with
# sparsify importable (installed, or PYTHONPATH at this checkout). STEPS="gpu_table models"
# runs only the steps named. Exits 1 if any step failed or ran out of its time.
set -uo pipefail
out=${1:?usage: bash tools/gpu_check.sh OUT_DIR [MNIST_DIR]}
data=${2:-}
py=${PY:-python3}
steps=" ${STEPS:-info gpu_tests gpu_table models quickstart suite} "
for name in $steps; do
  case $name in
    info | gpu_tests | gpu_table | models | quickstart | suite) ;;
    *) echo "gpu_check.sh: unknown step '$name' in STEPS; choose from info gpu_tests gpu_table models quickstart suite" >&2; exit 2 ;;
  esac
done
if [ -n "$data" ] && [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "gpu_check.sh: MNIST_DIR '$data' has no train-images-idx3-ubyte.gz; give the folder with the four IDX .gz files" >&2
  exit 2
fi
mkdir -p "$out"  # after the checks: a refused run leaves nothing behind
out=$(cd "$out" && pwd)
log=$out/log.txt
if [ -n "$data" ]; then
  data=$(cd "$data" && pwd)
  export SPARSIFY_TEST_DATA=$data
fi
export py out data
cd "$(dirname "$0")/.." || exit 2  # recipes/ and tests/ are read from the checkout's root
failed=""

step() {  # step NAME LIMIT_S COMMAND...: run it with a time limit, log its output and rc
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  [[ $steps == *" $name "* ]] || return 0
  echo "== $name (limit ${limit} s) $(date -u +%H:%M:%S)" | tee -a "$log"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$out/$name.txt" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || failed="$failed $name"
  tail -n 25 "$out/$name.txt" >>"$log"
  echo "== $name: rc $rc, $((SECONDS - t0)) s" | tee -a "$log"
}

info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nproc
  "$py" -c "import sys, torch, numpy, onnxruntime, scipy; print(sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'cap', torch.cuda.get_device_capability(), \
'numpy', numpy.__version__, 'onnxruntime', onnxruntime.__version__, 'scipy', scipy.__version__)"
  "$py" -c "from sparsify import kernels; print('spk', kernels.available(), kernels.info())"
}

quickstart() {
  local q=$out/quickstart
  "$py" -m sparsify train recipes/quickstart.yaml --device cuda --out "$q/run" \
    ${data:+--data-dir "$data"} &&
    "$py" -m sparsify stats "$q/run" &&
    "$py" -m sparsify export "$q/run" --format all --out "$q/export" &&
    "$py" -m sparsify footprint "$q/run" --out "$q/footprint"
}

# pytest-xdist and pytest-timeout are optional here (not in sparsify's dev extras)
par() { "$py" -c "import xdist" 2>/dev/null && echo "-n $1"; }
tmo() { "$py" -c "import pytest_timeout" 2>/dev/null && echo "--timeout $1"; }

export -f info quickstart
step info 60 bash -c info
# shellcheck disable=SC2046  # $(par N) and $(tmo N) expand to two words or none
step gpu_tests 110 "$py" -m pytest -q -p no:cacheprovider $(par 4) -rs \
  tests/test_gpu.py tests/test_prox_metric.py tests/test_bench.py tests/test_nm.py
step gpu_table 150 "$py" -m sparsify.bench.gpu --out "$out/table" --deadline 100
step models 90 "$py" -m sparsify bench --device cuda --model torchvision:resnet18 \
  --model torchvision:mobilenet_v2 --input-shape 3 224 224 --density 0.1 --batch 1 8 64 \
  --reps 20 --out "$out/models"
step quickstart 80 bash -c quickstart
step suite 220 env OMP_NUM_THREADS=1 "$py" -m pytest -p no:cacheprovider $(par 14) -v --tb=line \
  $(tmo 120)
if [[ $steps == *" suite "* ]]; then
  grep -E "FAILED|ERROR" "$out/suite.txt" | sort -u | head -60 >>"$log"
fi
echo "== done $(date -u +%H:%M:%S); steps that failed or ran out of time:${failed:- none}" | tee -a "$log"
[ -z "$failed" ]
