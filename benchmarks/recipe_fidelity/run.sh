#!/usr/bin/env bash
# Issue 11 (recipe fidelity) before/after on the demo: validation split, 3 seeds, sequential, CPU.
# "before" = the commit before the change (default cf1beec), checked out as a detached worktree;
# "after" = this checkout. Then: python benchmarks/recipe_fidelity/summary.py OUT > benchmarks/results/...
# Usage: bash benchmarks/recipe_fidelity/run.sh [OUT=/tmp/recipe_fidelity] [BEFORE=cf1beec]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/recipe_fidelity}; BEFORE_REF=${2:-cf1beec}
PY=${PY:-$ROOT/.venv/bin/python}
mkdir -p "$OUT"
[ -d "$OUT/before_src" ] || git -C "$ROOT" worktree add --detach "$OUT/before_src" "$BEFORE_REF"
B=(env PYTHONPATH="$OUT/before_src/src" "$PY" -m lossdial train "$OUT/before_src/configs/demo_digits.yaml")
A=(env PYTHONPATH="$ROOT/src" "$PY" -m lossdial train "$ROOT/configs/demo_digits.yaml")
run() { name=$1; shift; echo "$name: $*" >> "$OUT/commands.txt"; "$@" --out "$OUT/$name" --force -q > "$OUT/$name.log" 2>&1; }
LDAM=(--set loss.family=ldam --set "loss.params={}" --set lct.enabled=false)
FOCAL=(--set loss.family=focal --set "loss.params={alpha: 0.5, phi: 2.0}" --set "lct.lambda={alpha: 'L(0.25,0.75,2)'}"
       --set "evaluate.lambda=alpha=0.25:0.75:5")
for s in 0 1 2; do
  run ldam_before_s$s "${B[@]}" --set seed=$s "${LDAM[@]}"
  run ldam_after_s$s  "${A[@]}" --set seed=$s "${LDAM[@]}"
  run decay_before_s$s "${B[@]}" --set seed=$s
  run decay_after_s$s  "${A[@]}" --set seed=$s --set optim.decay_norm_and_bias=true
  run focal_before_s$s "${B[@]}" --set seed=$s "${FOCAL[@]}"
  run focal_after_s$s  "${A[@]}" --set seed=$s "${FOCAL[@]}"
done
