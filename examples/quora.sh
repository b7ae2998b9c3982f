#!/usr/bin/env bash
# Quora paraphrase generation (50K/4K setup): prepare -> train (MIST or a variant) -> generate -> score.
# Resumable: rerunning continues from $RUN/checkpoint_last.pt. Run from anywhere.
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

REPO=$(cd "$(dirname "$0")/.." && pwd)
[ -e "$DATA/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare quora --raw "$RAW" --out "$DATA"
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
python -m mist_fairseq.score --task quora "$RUN/generate-test.txt" --ref "$DATA/raw/test.tgt" \
  --src "$DATA/raw/test.src" --json "$RUN/scores.json"
