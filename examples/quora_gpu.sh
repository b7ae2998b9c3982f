#!/usr/bin/env bash
# Quora on one CUDA GPU: Fairseq's fp16 path checked for each output (length head, CTC, AR), then four
# systems trained side by side on the same GPU for the same wall time, each dev-chosen and decoded on
# test once, and the NAR students' candidates rescored by the AR model trained beside them.
# Run from the repository root on a machine with a GPU and fairseq-train on PATH.
#   STEPS: smoke train rescore parity distill
#   Runs: ROOT/quora_NAME (the names below)
#   smoke: SMOKE_UPDATES (60) updates of each output with PREC, its dev decode, its test decode on the GPU in fp32,
#          and parity (RUN/parity.json: how many test outputs differ in GPU fp16 and on the CPU)
#   train: ar (the same-encoder AR model, raw targets), ctc_none_kd and ctc_dynamic_kd (CTC, distilled
#          targets of KD, no mixing / MIST), dynamic (length head, MIST, raw targets: the paper's set-up),
#          BUDGET_HOURS of training each, all four at once; a checkpoint every INTERVAL updates, the last
#          KEEP_CHECKPOINTS (all where unset) kept for dev selection; a run that leaves no checkpoint in PREC
#          (an fp16 failure) is trained again in fp32 for the budget left
#   rescore: CTC prefix beam 5 and length beam 5, self-scored and rescored by the ar run
#   parity:  the smoke step's parity check on the four trained runs
#   distill: the ar run distils DATA's train split into ROOT/data_kd_gpu (beam DISTILL_BEAM, 1, and the length
#            limits of examples/quora_kd.sh)
set -euo pipefail
ROOT=${ROOT:-$HOME/mist_gpu}
DATA=${DATA:-$HOME/kd/data/quora}            # prepared Quora (python -m mist_fairseq.prepare quora)
KD=${KD:-$HOME/kd/data/quora_kd}             # its distilled twin (examples/quora_kd.sh, step distill)
BUDGET_HOURS=${BUDGET_HOURS:-0.07}
INTERVAL=${INTERVAL:-}                       # empty: about four checkpoints per run, from the smoke rate
PREC=${PREC---fp16}                           # --fp16 | --amp | "" (fp32)
SMOKE_UPDATES=${SMOKE_UPDATES:-60}
STEPS=${STEPS:-"smoke train rescore"}
export FAST_PATH=0 GEN_BATCH=${GEN_BATCH:-256} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
here=$(dirname "$0")
source "$here/common.sh"  # generate_test decode_modes
mkdir -p "$ROOT"
AR_FLAGS="--nar-loss-factor 0 --block-loss-factor 1 --block-sizes 1"
stamp() { echo "$(date +%s) $*" | tee -a "$ROOT/timeline.txt"; }

system() {  # NAME MODE DATA EXTRA GEN_ARGS [UPDATES]: one quora.sh run in ROOT/quora_NAME
  local name=$1 mode=$2 data=$3 extra=$4 gen=$5 updates=${6:-} budget rc=0 t0 left
  local run=$ROOT/quora_$name
  if [ -n "$updates" ]; then  # a fixed number of updates, its one checkpoint dev-selected
    budget=(BUDGET_HOURS=0 UPDATES="$updates" DEV_SELECT=1 INTERVAL="$updates" LOG_INTERVAL=10)
  else
    budget=(BUDGET_HOURS="$BUDGET_HOURS" INTERVAL="$INTERVAL")
  fi
  t0=$(date +%s)
  env MODE="$mode" RUN="$run" DATA="$data" EXTRA="$extra $PREC" GEN_ARGS="$gen" "${budget[@]}" \
    bash "$here/quora.sh" || rc=$?
  if [ -z "$updates" ] && [ -n "$PREC" ] && ! ls "$run"/checkpoint_*.pt > /dev/null 2>&1; then
    left=$(python -c "print(round(float('$BUDGET_HOURS') - ($(date +%s) - $t0) / 3600, 4))")
    stamp "$name: no checkpoint in $PREC (rc $rc); fp32 for the $left h left"
    python -c "import sys; sys.exit(float('$left') < 0.01)" || return "$rc"
    mv "$run" "$run.failed_${PREC#--}"
    env MODE="$mode" RUN="$run" DATA="$data" EXTRA="$extra" GEN_ARGS="$gen" BUDGET_HOURS="$left" \
      INTERVAL="$INTERVAL" bash "$here/quora.sh" || rc=$?
  fi
  return "$rc"
}

parity() {  # RUN GEN_ARGS DATA: RUN's dev-chosen checkpoint decoded on test in fp16 on the GPU and in fp32 on
  # the CPU (one sixteenth of test: Fairseq's first batch shard), each compared with RUN/generate-test.txt
  local run=$1 gen=$2
  # shellcheck disable=SC2086
  DATA=$3 generate_test "$run/checkpoint_dev_best.pt" "$run/test-fp16.txt" $gen --fp16 2>> "$run/parity.log"
  # shellcheck disable=SC2086
  DATA=$3 generate_test "$run/checkpoint_dev_best.pt" "$run/test-cpu.txt" $gen --cpu \
    --distributed-world-size 16 --distributed-rank 0 2>> "$run/parity.log"
  python "$here/steps.py" parity "$run"
}

for step in $STEPS; do
  case $step in
    smoke)
      stamp smoke start
      system smoke_len dynamic "$DATA" "" "" "$SMOKE_UPDATES" > "$ROOT/smoke_len.out" 2>&1 &
      system smoke_ctc dynamic "$KD" "--ctc" "" "$SMOKE_UPDATES" > "$ROOT/smoke_ctc.out" 2>&1 &
      system smoke_ar none "$DATA" "$AR_FLAGS" "--decode-mode ar --beam 1" "$SMOKE_UPDATES" > "$ROOT/smoke_ar.out" 2>&1 &
      wait || true
      for s in len ctc ar; do
        [ -e "$ROOT/quora_smoke_$s/generate-test.txt" ] || { stamp "smoke $s failed"; tail -n 30 "$ROOT/smoke_$s.out"; exit 1; }
      done
      parity "$ROOT/quora_smoke_len" "" "$DATA" &
      parity "$ROOT/quora_smoke_ctc" "" "$KD" &
      parity "$ROOT/quora_smoke_ar" "--decode-mode ar --beam 1" "$DATA" &
      wait
      stamp smoke done ;;
    train)
      if [ -z "$INTERVAL" ]; then  # about four checkpoints a run at the rate three smoke runs side by side had
        INTERVAL=$(python "$here/steps.py" interval "$ROOT/quora_smoke_len/train.log" "$BUDGET_HOURS")
      fi
      stamp "train start interval=$INTERVAL"
      system ar none "$DATA" "$AR_FLAGS" "--decode-mode ar --beam 1" > "$ROOT/ar.out" 2>&1 &
      system ctc_none_kd none "$KD" "--ctc" "" > "$ROOT/ctc_none_kd.out" 2>&1 &
      system ctc_dynamic_kd dynamic "$KD" "--ctc" "" > "$ROOT/ctc_dynamic_kd.out" 2>&1 &
      system dynamic dynamic "$DATA" "" "" > "$ROOT/dynamic.out" 2>&1 &
      wait || true
      stamp train done ;;
    parity)
      for run in ar:"--decode-mode ar --beam 1":$DATA ctc_none_kd::$KD ctc_dynamic_kd::$KD dynamic::$DATA; do
        IFS=: read -r name gen data <<< "$run"
        [ -e "$ROOT/quora_$name/checkpoint_dev_best.pt" ] && parity "$ROOT/quora_$name" "$gen" "$data" &
      done
      wait || true
      stamp parity done ;;
    distill)
      python -m mist_fairseq.distill "$ROOT/quora_ar/checkpoint_dev_best.pt" --data "$DATA" \
        --out "$ROOT/data_kd_gpu" --decode-mode ar --beam "${DISTILL_BEAM:-1}" --max-len-a 1.5 --max-len-b 10 \
        --batch-size "$GEN_BATCH" --chunk-size 10000
      stamp distill done ;;
    rescore)
      AR=$ROOT/quora_ar/checkpoint_dev_best.pt
      for run in ctc_none_kd ctc_dynamic_kd; do
        [ -e "$ROOT/quora_$run/checkpoint_dev_best.pt" ] &&
          DATA=$KD decode_modes quora "$ROOT/quora_$run" "cb5:--ctc-beam 5" "cb5ar:--ctc-beam 5 --rerank-path $AR" &
      done
      [ -e "$ROOT/quora_dynamic/checkpoint_dev_best.pt" ] &&
        decode_modes quora "$ROOT/quora_dynamic" "lb5:--length-beam 5" "lb5ar:--length-beam 5 --rerank-path $AR" &
      [ -e "$AR" ] && decode_modes quora "$ROOT/quora_ar" "ar4:--decode-mode ar --beam 4" &
      wait || true
      stamp rescore done ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
