#!/usr/bin/env bash
# Issue 12 (recipes and quality): the CIFAR-10-LT protocol. Per config and seed: cross-entropy (CE), the
# logit-adjusted loss (LA, tau = 1) and LDAM-DRW (no class weights before DRW; effective-number weights,
# beta 0.9999, from 80% of training: epoch 160 of 200), a 4 x 4 VS grid (gamma x tau, no class weights) and one
# LCT model over VS (tau and gamma drawn per batch). Every method is chosen on the validation half of
# CIFAR-10's test set (val_from: test) and scored once on the test half, with `lossdial compare`:
#   ce        CE alone (t = 0)                       ce_posthoc  CE + post-hoc logit adjustment, t on validation
#   la        LA loss alone (t = 0)                  ldam_drw    LDAM-DRW alone (t = 0)
#   vs        the VS grid (best member and t per metric on validation) and the LCT model (lambda and t)
# Then: python benchmarks/cifar10_lt/summary.py OUT > benchmarks/results/cifar10_lt_<mode>.md
#
# Usage: bash benchmarks/cifar10_lt/run.sh full|quick [OUT]
#   full   configs/cifar10_lt_exp100.yaml and configs/cifar10_lt_exp10.yaml, the 200-epoch recipe, seeds 0 1 2,
#          every method's seeds (and the whole VS grid) trained as one stack (--stacked): meant for a GPU.
#   quick  the same protocol, scripts and 4 x 4 grid on the bundled digits with an exponential long tail
#          (configs/demo_digits_lt.yaml, ratio 20, small CNN, its own 60-epoch recipe), 3 seeds,
#          sequential, one torch thread, CPU: a check of the pipeline and of the methods' order, not a CIFAR
#          number. The CIFAR-10-LT part of the CPU results is a 2-epoch, 1-seed check without the VS grid:
#            CONFIGS=configs/cifar10_lt_exp100.yaml EPOCHS=2 SEEDS=1 WARMUP=0.05 GRID="" run.sh quick OUT
#          (one ResNet-32 epoch at ratio 100 costs about 65 CPU-seconds; on a CPU shared with other jobs that
#          is 4-5 min of wall clock, so the CIFAR grid and 3 seeds do not fit a short CPU run).
# Environment (optional): PY (python; default the repo's .venv), CONFIGS (space-separated), EPOCHS, SEEDS
#   (a count), WARMUP (warm-up epochs; default the config's), GRID ("" for no VS grid), LCT, LAMBDA (the LCT
#   model's validation grid), STACKED=0|1, DEVICE (e.g. cuda), NICE (a prefix such as "nice -n 10").
#   Runs are resumable: the same command reuses finished runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODE=${1:?usage: run.sh full|quick [OUT]}
OUT=${2:-/tmp/cifar10_lt_$MODE}
PY=${PY:-$ROOT/.venv/bin/python}
case $MODE in
  full)  CONFIGS=${CONFIGS:-"configs/cifar10_lt_exp100.yaml configs/cifar10_lt_exp10.yaml"}; EPOCHS=${EPOCHS:-200}
         STACKED=${STACKED:-1} ;;
  quick) CONFIGS=${CONFIGS:-"configs/demo_digits_lt.yaml"}; EPOCHS=${EPOCHS:-60}; STACKED=${STACKED:-0}
         NICE=${NICE:-"nice -n 10"}
         # one torch thread per process: on a CPU shared with other jobs, 2 threads made a 30-epoch digits run
         # 13x slower (145 s vs 11 s) and a CIFAR-10-LT epoch 3x slower (767 s vs 255 s), measured 2026-11-30
         export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  *) echo "run.sh: MODE must be full or quick, got '$MODE'" >&2; exit 2 ;;
esac
SEEDS=${SEEDS:-3}
GRID=${GRID-"gamma=0,0.1,0.2,0.3 tau=0,1,2,3"}   # set but empty: no VS grid
LCT=${LCT:-"tau~L(0,3,0.33) gamma~U(0,0.3)"}
LAMBDA=${LAMBDA:-"tau=0:3:7 gamma=0:0.3:4"}
DRW=$(( EPOCHS * 8 / 10 ))   # DRW from the first lr milestone (0.8 of training: epoch 160 of 200)
NICE=${NICE:-}
EXTRA=(--set train.epochs=$EPOCHS --seeds $SEEDS -q)
[ -n "${WARMUP:-}" ] && EXTRA+=(--set schedule.warmup_epochs=$WARMUP)   # default: the config's (5 for CIFAR)
[ "$STACKED" = 1 ] && EXTRA+=(--stacked --set train.channels_last=false)   # stacks refuse channels_last
[ -n "${DEVICE:-}" ] && EXTRA+=(--device "$DEVICE")
mkdir -p "$OUT"
cd "$ROOT"
{ echo "date: $(date -u +%FT%TZ)"; echo "mode: $MODE"; echo "commit: $(git rev-parse --short HEAD)"
  echo "configs: $CONFIGS"; echo "epochs: $EPOCHS (DRW from epoch $DRW); warm-up epochs: ${WARMUP:-config}"; echo "seeds: $SEEDS"; echo "grid: $GRID"
  echo "lct: $LCT"; echo "lct lambda grid: $LAMBDA"; echo "stacked: $STACKED"; echo "device: ${DEVICE:-config}"
  echo "OMP_NUM_THREADS: ${OMP_NUM_THREADS:-unset}"
  echo "machine: $(uname -m), $(nproc --all) cores; $("$PY" -c 'import platform, torch; print(platform.platform(), "python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")')"
} > "$OUT/settings.txt"
cmp() {  # cmp NAME CONFIG ARGS...: one `lossdial compare` into OUT/<config name>/NAME, timed, logged
  local name=$1 cfg=$2; shift 2
  local dir="$OUT/$(basename "$cfg" .yaml)/$name"
  mkdir -p "$dir"
  echo "$name: lossdial compare $cfg $* ${EXTRA[*]} --out $dir" >> "$OUT/commands.txt"
  local t0=$SECONDS
  $NICE env PYTHONPATH="$ROOT/src" "$PY" -m lossdial compare "$cfg" "$@" "${EXTRA[@]}" --out "$dir" \
    > "$dir.log" 2>&1 || { echo "run.sh: $name on $cfg failed; see $dir.log" >&2; tail -20 "$dir.log" >&2; exit 1; }
  echo "$name $cfg wall_s=$(( SECONDS - t0 ))" >> "$OUT/wall.txt"
}
for cfg in $CONFIGS; do
  cmp ce "$cfg" --baseline-grid "gamma=0 tau=0" --set "loss.params={class_weights: none}" --adjustment 0
  # the same CE runs with the post-hoc adjustment t chosen on validation: links to the CE run directories,
  # which compare reuses (COMPLETE, same config) instead of retraining
  d="$OUT/$(basename "$cfg" .yaml)"; mkdir -p "$d/ce_posthoc"
  for r in "$d"/ce/baseline_*; do ln -sfn "../ce/$(basename "$r")" "$d/ce_posthoc/$(basename "$r")"; done
  cmp ce_posthoc "$cfg" --baseline-grid "gamma=0 tau=0" --set "loss.params={class_weights: none}"
  cmp la "$cfg" --baseline-grid "tau=1" --set loss.family=logit_adjust --set "loss.params={}" --set lct.enabled=false --adjustment 0
  cmp ldam_drw "$cfg" --baseline-grid "max_margin=0.5" --set loss.family=ldam --set lct.enabled=false \
    --set "loss.params={scale: 30.0, drw_epoch: $DRW, drw_beta: 0.9999}" --adjustment 0
  VSGRID=(); [ -n "$GRID" ] && VSGRID=(--baseline-grid "$GRID")   # GRID="": the LCT model alone
  cmp vs "$cfg" "${VSGRID[@]}" --lct "$LCT" --lambda "$LAMBDA" --set "loss.params={class_weights: none}"
done
echo "done: $OUT (python benchmarks/cifar10_lt/summary.py $OUT)"
