#!/usr/bin/env bash
# Issue 22 on Quora: the same-encoder AR teacher, its distilled train set, NAR students on raw and on
# distilled targets at equal wall-time budgets, and each student's length-beam candidates self-scored
# or rescored by the teacher. Every step is idempotent (a finished one is skipped, training resumes).
# Run from the repository root. The students and their test decodings are declared in
# examples/specs/quora_kd.yaml (which examples/collect_kd.py reads too): a step named after a row trains it;
# the teacher and the raw-data no-mixing student (row none_raw) are quora_table.sh's ar_same and none rows
# in the same ROOT.
#   STEPS: teacher distill rescore table, or a row: none_raw none_kd dynamic_kd
set -euo pipefail
ROOT=${ROOT:-$HOME/kd}
DATA=${DATA:-$ROOT/data/quora}
KD=${KD:-$ROOT/data/quora_kd}
BUDGET_HOURS=${BUDGET_HOURS:-1}
INTERVAL=${INTERVAL:-500}
THREADS=${THREADS:-1}
SHARDS=${SHARDS:-1}                          # distill: processes sharing the chunks (THREADS each)
PRECISION=${PRECISION:-fp32}                 # distill: the teacher's --decode-precision (bf16: CPUs with bf16 units)
DOCS=${DOCS:-docs/quora_kd}
STEPS=${STEPS:-"teacher none_raw distill none_kd dynamic_kd rescore table"}
here=$(dirname "$0")
spec() { python "$here/spec.py" quora_kd "$@"; }
RESCORE_RUNS=${RESCORE_RUNS:-$(spec runs)}  # rescore: the student runs (quora_NAME), e.g. one per process
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
source "$here/common.sh"  # spec_student decode_modes
TEACHER=$ROOT/quora_ar_same/checkpoint_dev_best.pt
for step in $STEPS; do
  case $step in
    teacher) ROOT=$ROOT DATA=$DATA BUDGET_HOURS=$BUDGET_HOURS INTERVAL=$INTERVAL STEPS="prep ar_same" \
               bash "$here/quora_table.sh" ;;
    distill)
      # greedy, outputs capped at 1.5 x source + 10 tokens (a looping teacher output stops there)
      [ -e "$KD/manifest.json" ] || {
        for i in $(seq 0 $((SHARDS - 1))); do
          python -m mist_fairseq.distill "$TEACHER" --data "$DATA" --out "$KD" --decode-mode ar --beam 1 \
            --max-len-a 1.5 --max-len-b 10 --batch-size 64 --threads "$THREADS" --shard "$i/$SHARDS" \
            --decode-precision "$PRECISION" &
        done
        wait
        # a shard that finished first left the assembly to the last; if two finished together, assemble now
        [ -e "$KD/manifest.json" ] || python -m mist_fairseq.distill "$TEACHER" --data "$DATA" --out "$KD" \
          --decode-mode ar --beam 1 --max-len-a 1.5 --max-len-b 10 --batch-size 64 --threads "$THREADS" \
          --decode-precision "$PRECISION"
      } ;;
    rescore)
      # each student's dev-chosen checkpoint on test with the spec's decodings (length beam 3 and 5,
      # self-scored or rescored by the teacher in one teacher-forced pass)
      mapfile -t modes < <(spec decodings | sed "s|{teacher}|$TEACHER|g")
      for run in $RESCORE_RUNS; do
        [ -e "$ROOT/quora_$run/checkpoint_dev_best.pt" ] || continue
        decode_modes quora "$ROOT/quora_$run" "${modes[@]}"
      done ;;
    table) python "$here/collect_kd.py" --root "$ROOT" --data "$DATA" ${BENCH:+--bench "$BENCH"} --out "$DOCS" ;;
    *)
      if [[ " $(spec rows) " == *" $step "* ]]; then spec_student quora_kd "$step"
      else echo "unknown step $step (steps: teacher distill rescore table, or a row: $(spec rows))" >&2; exit 2
      fi ;;
  esac
done
