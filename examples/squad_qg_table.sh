#!/usr/bin/env bash
# SQuAD 1.1 QG table at CPU scale (paper Tables 1 and 4, sentence-level sources): no mixing vs MIST vs
# static mixing, each trained for the same wall-time budget on THREADS threads, checkpoint chosen by dev
# BLEU-4, test scored once. Idempotent steps, as in quora_table.sh. Run from the repository root.
#   STEPS: prep none dynamic static decode table
set -euo pipefail
SQUAD=${SQUAD:-../shared/data/squad}
LEVEL=${LEVEL:-sentence}
ROOT=${ROOT:-$HOME/mist_runs}
DATA=${DATA:-$ROOT/data/squad_$LEVEL}
BUDGET_HOURS=${BUDGET_HOURS:-0.1667}
DEV_SHARDS=${DEV_SHARDS:-5}                   # checkpoint choice on 1/5 of the 10,570 dev questions (speed)
THREADS=${THREADS:-1}
STEPS=${STEPS:-"prep none dynamic static decode table"}
DOCS=${DOCS:-docs}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
here=$(dirname "$0")
name=squad_$LEVEL
mist_run() {  # MODE [EXTRA]
  [ -e "$ROOT/${name}_$1/scores.json" ] && return 0
  MODE=$1 EXTRA=${2:-} RUN=$ROOT/${name}_$1 DATA=$DATA LEVEL=$LEVEL BUDGET_HOURS=$BUDGET_HOURS DEV_SHARDS=$DEV_SHARDS WARMUP=100 \
    INTERVAL=100 BATCH=32 bash "$here/squad_qg.sh"
}
for step in $STEPS; do
  case $step in
    prep) [ -e "$DATA/bin/test.src-tgt.tgt.bin" ] ||
            python -m mist_fairseq.prepare squad-qg --squad-dir "$SQUAD" --level "$LEVEL" --out "$DATA" ;;
    none|dynamic) mist_run "$step" ;;
    static)
      pseudo=$ROOT/${name}_none/pseudo-train.txt
      if [ ! -e "$pseudo" ]; then
        fairseq-generate "$DATA/bin" --user-dir mist_fairseq --task mist_nar --gen-subset train --batch-size 128 \
          --path "$ROOT/${name}_none/checkpoint_dev_best.pt" > "$pseudo.tmp"
        mv "$pseudo.tmp" "$pseudo"
      fi
      mist_run static "--static-pseudo-targets $pseudo" ;;
    decode)
      for m in dynamic none; do
        mkdir -p "$ROOT/${name}_$m/iter"
        for s in mist mask-predict; do
          for it in 1 3 6; do
            [ "$s$it" = mask-predict1 ] && continue  # one pass is the same decoding for both strategies
            out=$ROOT/${name}_$m/iter/$s-$it.txt
            [ -e "$out.json" ] && continue
            fairseq-generate "$DATA/bin" --user-dir mist_fairseq --task mist_nar --gen-subset test --batch-size 64 \
              --path "$ROOT/${name}_$m/checkpoint_dev_best.pt" --mist-decode-iters "$it" --decode-strategy "$s" \
              --bpe bert --bpe-vocab-file "$DATA/bin/vocab.txt" > "$out.tmp"
            mv "$out.tmp" "$out"
            python -m mist_fairseq.score --task squad-qg "$out" --ref "$DATA/raw/test.tgt" --src "$DATA/raw/test.src" \
              --no-meteor --json "$out.json"
          done
        done
      done ;;
    table)
      python -m mist_fairseq.score --task squad-qg "$ROOT/${name}_dynamic/generate-test.txt" --ref "$DATA/raw/test.tgt" \
        --src "$DATA/raw/test.src" --compare "$ROOT/${name}_none/generate-test.txt" --json "$DOCS/${name}_mist_vs_none.json"
      python -m mist_fairseq.dev_select "$ROOT/${name}_dynamic" "$ROOT/${name}_none" --data "$DATA" --task squad-qg \
        --dev-shards "$DEV_SHARDS" --labels "MIST" "no mixing" --plot "$DOCS/${name}_convergence.png"
      python "$here/collect_table.py" --root "$ROOT" --dataset "$name" --out "$DOCS/${name}_table.md" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
