#!/usr/bin/env bash
# XSum extreme summarization. Only ~1.3K real test articles are available offline here, so by default
# this trains on part of them and tests on the rest (a small, clearly labelled run, not the benchmark).
# With the official release, set TRAIN/VALID/TEST to its JSON-lines files instead.
set -euo pipefail
POOL=${POOL:-"../shared/data/xsum/test_subset_1000.jsonl ../shared/data/xsum/test_extracts_321.jsonl"}
TRAIN=${TRAIN:-}; VALID=${VALID:-}; TEST=${TEST:-}
DATA=${DATA:-$HOME/mist_runs/data/xsum}
MODE=${MODE:-dynamic}
RUN=${RUN:-$HOME/mist_runs/xsum_$MODE}
UPDATES=${UPDATES:-2000}
BATCH=${BATCH:-16}
LR=${LR:-3e-4}
PRETRAINED=${PRETRAINED:-minilm}
ARCH=${ARCH:-mist_minilm_l6}

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -e "$DATA/bin/test.src-tgt.tgt.bin" ]; then
  if [ -n "$TRAIN" ]; then
    python -m mist_fairseq.prepare xsum --train "$TRAIN" --valid "$VALID" --test "$TEST" --out "$DATA"
  else
    python -m mist_fairseq.prepare xsum --jsonl $POOL --valid-size 100 --test-size 300 --out "$DATA"
  fi
fi
mkdir -p "$RUN"
fairseq-train "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --arch "$ARCH" \
  --criterion mist --mix-mode "$MODE" --pretrained-encoder "$PRETRAINED" \
  --optimizer adam --adam-betas '(0.9, 0.999)' --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates 200 \
  --clip-norm 1.0 --attention-dropout 0 --batch-size "$BATCH" --max-update "$UPDATES" \
  --save-dir "$RUN" --save-interval-updates 500 --keep-interval-updates 2 --no-epoch-checkpoints \
  --validate-interval-updates 500 --best-checkpoint-metric loss \
  --log-format simple --log-interval 50 --num-workers 0 2>&1 | tee -a "$RUN/train.log"
fairseq-generate "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --path "$RUN/checkpoint_best.pt" \
  --gen-subset test --batch-size 32 --bpe bert --bpe-vocab-file "$DATA/bin/vocab.txt" > "$RUN/generate-test.txt"
python -m mist_fairseq.score --task xsum "$RUN/generate-test.txt" --ref "$DATA/raw/test.tgt" --json "$RUN/scores.json"
