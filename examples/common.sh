# Sourced by the per-dataset scripts: train (resumable), generate the test set, score it.
# Reads DATA RUN MODE ARCH PRETRAINED LR BATCH UPDATES WARMUP INTERVAL GEN_BATCH SCORE_TASK EXTRA, and
# BUDGET_HOURS (> 0: stop after that much cumulative training wall time, kept across resumes; every
# INTERVAL-update checkpoint is kept and the test checkpoint is the one with the best dev BLEU-4).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

train_generate_score() {
  mkdir -p "$RUN"
  local budget=(--validate-interval-updates "$INTERVAL" --best-checkpoint-metric loss --keep-interval-updates 2)
  if [ "${BUDGET_HOURS:-0}" != 0 ]; then
    # validation loss is not comparable across mix modes and costs budget: choose by dev BLEU afterwards
    budget=(--stop-time-hours "$BUDGET_HOURS" --disable-validation --keep-interval-updates -1)
  fi
  # shellcheck disable=SC2086
  [ -e "$RUN/train.done" ] || fairseq-train "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --arch "$ARCH" \
    --criterion mist --mix-mode "$MODE" --pretrained-encoder "$PRETRAINED" $EXTRA \
    --optimizer adam --adam-betas '(0.9, 0.999)' --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" \
    --clip-norm 1.0 --attention-dropout 0 --batch-size "$BATCH" --max-update "$UPDATES" \
    --save-dir "$RUN" --save-interval-updates "$INTERVAL" --no-epoch-checkpoints "${budget[@]}" \
    --log-format simple --log-interval 50 --num-workers 0 2>&1 | tee -a "$RUN/train.log"
  # a finished budgeted run is not resumed again (resuming would add an update past the budget)
  [ "${BUDGET_HOURS:-0}" = 0 ] || touch "$RUN/train.done"
  local ckpt="$RUN/checkpoint_best.pt"
  if [ "${BUDGET_HOURS:-0}" != 0 ]; then
    python -m mist_fairseq.dev_select "$RUN" --data "$DATA" --task "$SCORE_TASK" --dev-shards "${DEV_SHARDS:-1}"
    ckpt="$RUN/checkpoint_dev_best.pt"
  fi
  fairseq-generate "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --path "$ckpt" \
    --gen-subset test --batch-size "$GEN_BATCH" --bpe bert --bpe-vocab-file "$DATA/bin/vocab.txt" \
    > "$RUN/generate-test.txt.tmp"
  mv "$RUN/generate-test.txt.tmp" "$RUN/generate-test.txt"  # never a half-written output over a good one
  local src_arg=()
  [ "$SCORE_TASK" = xsum ] || src_arg=(--src "$DATA/raw/test.src")
  python -m mist_fairseq.score --task "$SCORE_TASK" "$RUN/generate-test.txt" --ref "$DATA/raw/test.tgt" \
    "${src_arg[@]}" --json "$RUN/scores.json"
}
