#!/bin/bash
# A stranger runs this session's recipes from a fresh folder without the dense teacher, with a
# damaged teacher, and with a recipe whose distill weight is out of range: each must be one
# line on stderr, exit 2, and no run folder written.
#   bash results/probes/2026-12-03-pm/stranger/hostile_recipes.sh
set -u
ROOT=$(pwd)
W=$(mktemp -d)
cd "$W"
S="$ROOT/.venv/bin/sparsify"
DATA="$ROOT/../shared/data/mnist"
check() {  # name, then the command
    local name=$1; shift
    "$@" > out.txt 2> err.txt
    local rc=$?
    echo "== $name: exit $rc, stderr lines $(wc -l < err.txt), run folder written: $([ -e run ] && echo yes || echo no)"
    cat err.txt
    rm -rf run
}
check "teacher never trained" "$S" train "$ROOT/recipes/compare/lenet300_gmp_aug_kd_t98.yaml" --out run --data-dir "$DATA" -q
mkdir -p results/compare/lenet300_dense_aug_seed0
head -c 300 /dev/urandom > results/compare/lenet300_dense_aug_seed0/model.safetensors
check "damaged teacher file" "$S" train "$ROOT/recipes/compare/lenet300_gmp_aug_kd_t98.yaml" --out run --data-dir "$DATA" -q
sed 's/  weight: 0.9 .*/  weight: 1.5/' "$ROOT/recipes/compare/lenet300ft_gmp_aug_kd90_t95.yaml" > bad.yaml
check "distill weight 1.5" "$S" train bad.yaml --out run --data-dir "$DATA" -q
cd / && rm -rf "$W"
