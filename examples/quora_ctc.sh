#!/usr/bin/env bash
# Issue 24 on Quora: CTC students (--ctc, 2 x source slots, glancing at the best alignment) at one CPU-hour
# each, beside the length-head students of examples/quora_kd.sh in the same ROOT; each decoded greedy, with
# CTC prefix beam 5, and prefix beam 5 rescored by the AR teacher; CTC vs length head at equal updates.
# Every step is idempotent (a finished one is skipped, training resumes). Run from the repository root.
#   STEPS: none_kd dynamic_kd none_raw ratio decode equal table
#   ratio: no mixing on distilled targets with R slots per source token (default 2) for RATIO_UPDATES
#   updates (default 750; checkpoints every 250), to compare slot ratios at equal updates; one R per
#   process, e.g. R=2 STEPS=ratio ... & R=1.5 STEPS=ratio ...
set -euo pipefail
ROOT=${ROOT:-$HOME/kd}
DATA=${DATA:-$ROOT/data/quora}
KD=${KD:-$ROOT/data/quora_kd}
BUDGET_HOURS=${BUDGET_HOURS:-1}
THREADS=${THREADS:-1}
DOCS=${DOCS:-docs/quora_ctc}
STEPS=${STEPS:-"none_kd dynamic_kd decode equal table"}
RUNS=${RUNS:-"ctc_none_kd ctc_dynamic_kd ctc_none"}  # decode: the CTC runs (quora_NAME) that exist
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
here=$(dirname "$0")
source "$here/common.sh"  # decode_modes compare_at_equal_updates
TEACHER=$ROOT/quora_ar_same/checkpoint_dev_best.pt
student() {  # NAME MIX_MODE DATA: the length-head students' recipe (quora_kd.sh) plus --ctc
  [ -e "$ROOT/quora_$1/scores.json" ] && return 0
  MODE=$2 RUN=$ROOT/quora_$1 DATA=$3 BUDGET_HOURS=$BUDGET_HOURS WARMUP=100 INTERVAL=500 BATCH=32 EXTRA="--ctc" \
    bash "$here/quora.sh"
}
for step in $STEPS; do
  case $step in
    none_kd) student ctc_none_kd none "$KD" ;;
    dynamic_kd) student ctc_dynamic_kd dynamic "$KD" ;;
    none_raw) student ctc_none none "$DATA" ;;
    ratio)
      R=${R:-2} U=${RATIO_UPDATES:-750}
      [ -e "$ROOT/quora_ctc_none_kd_r${R/./}_u$U/scores.json" ] ||
        MODE=none RUN=$ROOT/quora_ctc_none_kd_r${R/./}_u$U DATA=$KD BUDGET_HOURS=0 UPDATES=$U DEV_SELECT=1 \
          WARMUP=100 INTERVAL=250 BATCH=32 EXTRA="--ctc --upsample-ratio $R" bash "$here/quora.sh" ;;
    decode)
      for run in $RUNS; do
        [ -e "$ROOT/quora_$run/checkpoint_dev_best.pt" ] || continue
        decode_modes quora "$ROOT/quora_$run" "cb5:--ctc-beam 5" "cb5ar:--ctc-beam 5 --rerank-path $TEACHER"
      done ;;
    equal)
      mkdir -p "$DOCS"
      compare_at_equal_updates quora "$ROOT/quora_ctc_none_kd" "$ROOT/quora_none_kd" "$DOCS/ctc_vs_length_none_kd"
      compare_at_equal_updates quora "$ROOT/quora_ctc_dynamic_kd" "$ROOT/quora_dynamic_kd" "$DOCS/ctc_vs_length_mist_kd" ;;
    table) python "$here/collect_ctc.py" --root "$ROOT" --data "$DATA" ${BENCH:+--bench "$BENCH"} --out "$DOCS" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
