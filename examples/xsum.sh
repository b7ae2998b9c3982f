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
EXTRA=${EXTRA:-}
WARMUP=${WARMUP:-200}
INTERVAL=${INTERVAL:-500}
GEN_BATCH=${GEN_BATCH:-32}
SCORE_TASK=xsum

source "$(dirname "$0")/common.sh"
if [ ! -e "$DATA/bin/test.src-tgt.tgt.bin" ]; then
  if [ -n "$TRAIN" ]; then
    python -m mist_fairseq.prepare xsum --train "$TRAIN" --valid "$VALID" --test "$TEST" --out "$DATA"
  else
    python -m mist_fairseq.prepare xsum --jsonl $POOL --valid-size 100 --test-size 300 --out "$DATA"
  fi
fi
train_generate_score
