#!/usr/bin/env bash
# Issue 24 on Quora: CTC students (--ctc, 2 x source slots, glancing at the best alignment) at one CPU-hour
# each, beside the length-head students of examples/quora_kd.sh in the same ROOT; each decoded greedy, with
# CTC prefix beam 5, and prefix beam 5 rescored by the AR teacher; CTC vs length head at equal updates.
# Every step is idempotent (a finished one is skipped, training resumes). Run from the repository root.
# The students and their test decodings are declared in examples/specs/quora_ctc.yaml (which
# examples/collect_ctc.py reads too): a step named after a row trains it.
#   STEPS: ratio decode equal table, or a row of the spec (none_kd dynamic_kd none_kd2 none_kd2_cf none_kd2_noglat none_raw none_kd_ds)
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
here=$(dirname "$0")
spec() { python "$here/spec.py" quora_ctc "$@"; }
RUNS=${RUNS:-$(spec runs)}  # decode: the CTC runs (quora_NAME) that exist
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
source "$here/common.sh"  # spec_student decode_modes compare_at_equal_updates
TEACHER=$ROOT/quora_ar_same/checkpoint_dev_best.pt
for step in $STEPS; do
  case $step in
    ratio)
      R=${R:-2} U=${RATIO_UPDATES:-750}
      [ -e "$ROOT/quora_ctc_none_kd_r${R/./}_u$U/scores.json" ] ||
        MODE=none RUN=$ROOT/quora_ctc_none_kd_r${R/./}_u$U DATA=$KD BUDGET_HOURS=0 UPDATES=$U DEV_SELECT=1 \
          WARMUP=100 INTERVAL=250 BATCH=32 EXTRA="--ctc --upsample-ratio $R" bash "$here/quora.sh" ;;
    decode)
      mapfile -t modes < <(spec decodings | sed "s|{teacher}|$TEACHER|g")
      for run in $RUNS; do
        [ -e "$ROOT/quora_$run/checkpoint_dev_best.pt" ] || continue
        decode_modes quora "$ROOT/quora_$run" "${modes[@]}"
      done ;;
    equal)
      mkdir -p "$DOCS"
      compare_at_equal_updates quora "$ROOT/quora_ctc_none_kd" "$ROOT/quora_none_kd" "$DOCS/ctc_vs_length_none_kd"
      compare_at_equal_updates quora "$ROOT/quora_ctc_dynamic_kd" "$ROOT/quora_dynamic_kd" "$DOCS/ctc_vs_length_mist_kd" ;;
    table) python "$here/collect_ctc.py" --root "$ROOT" --data "$DATA" ${BENCH:+--bench "$BENCH"} --out "$DOCS" ;;
    *)
      if [[ " $(spec rows) " == *" $step "* ]]; then spec_student quora_ctc "$step"
      else echo "unknown step $step (steps: ratio decode equal table, or a row: $(spec rows))" >&2; exit 2
      fi ;;
  esac
done
