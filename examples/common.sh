# Sourced by the per-dataset scripts: train (resumable), generate the test set, score it.
# Reads DATA RUN MODE ARCH PRETRAINED LR BATCH UPDATES WARMUP INTERVAL GEN_BATCH SCORE_TASK EXTRA.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

train_generate_score() {
  mkdir -p "$RUN"
  # shellcheck disable=SC2086
  fairseq-train "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --arch "$ARCH" \
    --criterion mist --mix-mode "$MODE" --pretrained-encoder "$PRETRAINED" $EXTRA \
    --optimizer adam --adam-betas '(0.9, 0.999)' --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" \
    --clip-norm 1.0 --attention-dropout 0 --batch-size "$BATCH" --max-update "$UPDATES" \
    --save-dir "$RUN" --save-interval-updates "$INTERVAL" --keep-interval-updates 2 --no-epoch-checkpoints \
    --validate-interval-updates "$INTERVAL" --best-checkpoint-metric loss \
    --log-format simple --log-interval 50 --num-workers 0 2>&1 | tee -a "$RUN/train.log"
  fairseq-generate "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --path "$RUN/checkpoint_best.pt" \
    --gen-subset test --batch-size "$GEN_BATCH" --bpe bert --bpe-vocab-file "$DATA/bin/vocab.txt" \
    > "$RUN/generate-test.txt"
  local src_arg=()
  [ "$SCORE_TASK" = xsum ] || src_arg=(--src "$DATA/raw/test.src")
  python -m mist_fairseq.score --task "$SCORE_TASK" "$RUN/generate-test.txt" --ref "$DATA/raw/test.tgt" \
    "${src_arg[@]}" --json "$RUN/scores.json"
}
