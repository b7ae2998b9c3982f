#!/usr/bin/env bash
# Quora paraphrase generation (50K/4K setup): prepare -> train (MIST or a variant) -> generate -> score.
# Resumable: rerunning continues from $RUN/checkpoint_last.pt. Run from the repository root.
set -euo pipefail
RAW=${RAW:-../shared/data/quora}             # train.src/tgt (50K), test.src/tgt (4K)
DATA=${DATA:-$HOME/mist_runs/data/quora}     # prepared data (outside the repo)
MODE=${MODE:-dynamic}                        # dynamic (MIST) | none (encoder init) | static
RUN=${RUN:-$HOME/mist_runs/quora_$MODE}      # checkpoints and outputs
UPDATES=${UPDATES:-20000}
BATCH=${BATCH:-64}
LR=${LR:-5e-4}
PRETRAINED=${PRETRAINED:-minilm}             # or a Hugging Face BERT directory
ARCH=${ARCH:-mist_minilm_l6}
EXTRA=${EXTRA:-}                             # e.g. "--static-pseudo-targets FILE" for MODE=static
WARMUP=${WARMUP:-500}
INTERVAL=${INTERVAL:-1000}
GEN_BATCH=${GEN_BATCH:-64}
SCORE_TASK=quora

source "$(dirname "$0")/common.sh"
[ -e "$DATA/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare quora --raw "$RAW" --out "$DATA"
train_generate_score
