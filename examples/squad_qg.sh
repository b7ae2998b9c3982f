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

REPO=$(cd "$(dirname "$0")/.." && pwd)
[ -e "$DATA/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare squad-qg --squad-dir "$SQUAD" --level "$LEVEL" --out "$DATA"
mkdir -p "$RUN"
fairseq-train "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --arch "$ARCH" \
  --criterion mist --mix-mode "$MODE" --pretrained-encoder "$PRETRAINED" $EXTRA \
  --optimizer adam --adam-betas '(0.9, 0.999)' --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates 500 \
  --clip-norm 1.0 --attention-dropout 0 --batch-size "$BATCH" --max-update "$UPDATES" \
  --save-dir "$RUN" --save-interval-updates 1000 --keep-interval-updates 2 --no-epoch-checkpoints \
  --validate-interval-updates 1000 --best-checkpoint-metric loss \
  --log-format simple --log-interval 50 --num-workers 0 2>&1 | tee -a "$RUN/train.log"
fairseq-generate "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --path "$RUN/checkpoint_best.pt" \
  --gen-subset test --batch-size 64 --bpe bert --bpe-vocab-file "$DATA/bin/vocab.txt" > "$RUN/generate-test.txt"
python -m mist_fairseq.score --task squad-qg "$RUN/generate-test.txt" --ref "$DATA/raw/test.tgt" \
  --src "$DATA/raw/test.src" --json "$RUN/scores.json"
