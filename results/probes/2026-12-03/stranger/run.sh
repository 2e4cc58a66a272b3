#!/usr/bin/env bash
# A stranger's model (mypkg.TinyNet, registered as tiny_net) on a generated image folder:
# a dense teacher on 2 threads, then a 1-thread student started from it (model.init),
# pruned to 90% by GMP and taught by it (distill.teacher), exported; then hostile inputs.
# Run from the repository root: bash results/probes/2026-12-03/stranger/run.sh > .../stranger.txt
set -u
here=$(cd "$(dirname "$0")" && pwd); S=$(pwd)/.venv/bin/sparsify; w=$(mktemp -d)
mkdir -p "$w/mypkg" && cp "$here/mypkg_init.py" "$w/mypkg/__init__.py" && cp "$here"/*.yaml "$w"
cd "$w" && export PYTHONPATH="$w"
"$(dirname "$S")/python" "$here/make_images.py" imgs
step() { echo "\$ $*"; "$@" 2>&1 | tail -n 4; echo "exit ${PIPESTATUS[0]}"; }
step "$S" --plugin mypkg train teacher.yaml --out runs/teacher_0 --data-dir imgs -q
step "$S" --plugin mypkg train student.yaml --out runs/student --data-dir imgs -q
python3 -c "import json; m = json.load(open('runs/student/metrics.json')); print('distill', m['distill'], 'exact', m['sparsity']['exact'], 'threads', m['threads'])"
step "$S" --plugin mypkg export runs/student --format all --out runs/student_export
echo "# hostile: a damaged teacher file, a 3-channel teacher for 1-channel MNIST, a missing init"
mkdir -p runs/badrun && printf garbage > runs/badrun/model.safetensors
sed 's#runs/teacher_{seed}", weight#runs/badrun", weight#' student.yaml > s_bad.yaml
step "$S" --plugin mypkg train s_bad.yaml --out runs/s_bad --data-dir imgs -q
step "$S" --plugin mypkg train gray.yaml --out runs/gray --data-dir "$here/../../../../../shared/data/mnist" -q
sed 's#init: "runs/teacher_{seed}"#init: "runs/nowhere"#' student.yaml > s_noinit.yaml
step "$S" --plugin mypkg train s_noinit.yaml --out runs/s_noinit --data-dir imgs -q
echo "# runs written (the refused ones must be absent):"; ls runs
rm -rf "$w"
