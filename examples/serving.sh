#!/usr/bin/env bash
# Serving figures (issue 14): export a trained Quora MIST checkpoint to ONNX (fp32 + int8), measure how
# closely it follows PyTorch on the whole test set, train the AR side of the race (a Fairseq transformer
# of MiniLM-L6's size on the same data, fixed updates), race them, and load-test the service.
# Steps are idempotent; figures go to $DOCS. Run from the repository root on a quiet machine
# (race and load are timed).
#   STEPS: export parity ar race load
set -euo pipefail
ROOT=${ROOT:-$HOME/mist_runs}
DATA=${DATA:-$ROOT/data/quora}
MIST=${MIST:-$ROOT/quora_dynamic/checkpoint_dev_best.pt}   # the MIST checkpoint served
EXPORT=${EXPORT:-$ROOT/export_quora}
AR_RUNS=${AR_RUNS:-$ROOT/race_ar}
AR_UPDATES=${AR_UPDATES:-800}
THREADS=${THREADS:-2}
DOCS=${DOCS:-docs/serving}
STEPS=${STEPS:-"export parity ar race load"}
here=$(dirname "$0")
mkdir -p "$DOCS"
for step in $STEPS; do
  case $step in
    export)
      [ -e "$EXPORT/mist_export.json" ] || python -m mist_fairseq.export "$MIST" --data "$DATA/bin" --out "$EXPORT" --int8 ;;
    parity)  # every test source through PyTorch, ONNX fp32 and ONNX int8: agreement, BLEU, bootstrap
      python -m mist_fairseq.export.parity "$EXPORT" --data "$DATA/bin" --src "$DATA/raw/test.src" \
        --ref "$DATA/raw/test.tgt" --threads "$THREADS" --json "$DOCS/parity.json" ;;
    ar)  # size-matched AR transformer, best checkpoint by validation loss (Fairseq's default)
      [ -e "$AR_RUNS/ar/scores.json" ] || DATA=$DATA RUNS=$AR_RUNS SYSTEMS=ar SIZE=matched UPDATES=$AR_UPDATES \
        MAX_TOKENS=1024 WARMUP=200 INTERVAL=200 OMP_NUM_THREADS=$THREADS bash "$here/baselines/run_baselines.sh"
      cp "$AR_RUNS/ar/scores.json" "$DOCS/ar_matched_scores.json" ;;
    race)
      python -m benchmarks.race --data "$DATA" --mist "$MIST" --export "$EXPORT" \
        --fairseq-ar "$AR_RUNS/ar/checkpoint_best.pt" --fairseq-data "$AR_RUNS/bin" --n 200 --batch-sizes 1 16 \
        --threads "$THREADS" --out "$DOCS" ;;
    load)
      for prec in int8 fp32; do
        python -m benchmarks.serve_load --model "$EXPORT" --precision "$prec" --sources "$DATA/raw/test.src" \
          --threads "$THREADS" --clients 16 --requests 800 --rounds 5 --out "$DOCS" --name "SERVE_LOAD_onnx_$prec"
      done ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
