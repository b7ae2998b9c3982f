#!/usr/bin/env bash
# SQuAD 1.1 answer-aware question generation (Du et al. split: 75,722 / 10,570 / 11,877).
# LEVEL=sentence (the answer's sentence: cheap on CPU) or paragraph (UniLM/MIST's setting).
set -euo pipefail
SQUAD=${SQUAD:-../shared/data/squad}         # train-v1.1.json, dev-v1.1.json, doclist-test.txt
LEVEL=${LEVEL:-sentence}
DATA=${DATA:-$HOME/mist_runs/data/squad_$LEVEL}
MODE=${MODE:-dynamic}
RUN=${RUN:-$HOME/mist_runs/squad_${LEVEL}_$MODE}
UPDATES=${UPDATES:-20000}
BATCH=${BATCH:-32}
LR=${LR:-5e-4}
PRETRAINED=${PRETRAINED:-minilm}
ARCH=${ARCH:-mist_minilm_l6}
EXTRA=${EXTRA:-}
WARMUP=${WARMUP:-500}
INTERVAL=${INTERVAL:-1000}
GEN_BATCH=${GEN_BATCH:-64}
SCORE_TASK=squad-qg

source "$(dirname "$0")/common.sh"
[ -e "$DATA/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare squad-qg --squad-dir "$SQUAD" --level "$LEVEL" --out "$DATA"
train_generate_score
