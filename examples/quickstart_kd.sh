#!/usr/bin/env bash
# Remakes the quickstart's distilled targets (mist_fairseq/resources/quora_small/train.kd.tgt and its
# manifest), one of two ways. Run from the repository root.
#
# 1. From the kept distilled Quora train set (docs/quora_kd/train.kd.tgt.gz: line i is the teacher's
#    output for train pair i of `prepare quora`, whose first 3,000 pairs are the quickstart's train):
#      KD_SET=docs/quora_kd/train.kd.tgt.gz bash examples/quickstart_kd.sh
# 2. From a teacher -- a same-encoder AR checkpoint, trained e.g. by
#      ROOT=$HOME/kd DATA=$HOME/kd/data/quora BUDGET_HOURS=1 STEPS="prep ar_same" bash examples/quora_table.sh
#    -- decoding the 3,000 shipped train sources greedily (python -m mist_fairseq.distill):
#      TEACHER=$HOME/kd/quora_ar_same/checkpoint_dev_best.pt bash examples/quickstart_kd.sh
# Either teacher never saw the quickstart's 500 test pairs (lines 1-500 of Quora's 4K test set).
set -euo pipefail
RES=mist_fairseq/resources/quora_small
QUORA=${QUORA:-../shared/data/quora}     # the 50K train pairs (for the check of the line alignment)
WORK=${WORK:-$(mktemp -d)}
here=$(dirname "$0")
n=$(wc -l < "$RES/train.src")
if [ -n "${KD_SET:-}" ]; then
  cmp -s <(head -n "$n" "$QUORA/train.src") "$RES/train.src" || {
    echo "error: the first $n lines of $QUORA/train.src are not $RES/train.src; KD_SET lines would not align" >&2
    exit 1; }
  { zcat -f "$KD_SET" || true; } | head -n "$n" > "$WORK/train.kd.tgt"  # zcat stops early on a closed pipe
  [ "$(wc -l < "$WORK/train.kd.tgt")" = "$n" ] || { echo "error: $KD_SET has fewer than $n lines" >&2; exit 1; }
  python -m mist_fairseq.score --task quora "$WORK/train.kd.tgt" --ref "$RES/train.tgt" --src "$RES/train.src" \
    --no-meteor --json "$WORK/scores.json" > /dev/null
  manifest=$(dirname "$KD_SET")/distill_manifest.json
  python "$here/steps.py" kd-manifest "$WORK/scores.json" "$manifest" "$KD_SET" "$n" "$WORK/manifest.json"
else
  : "${TEACHER:?set KD_SET to a kept distilled set or TEACHER to a teacher checkpoint}"
  args=()
  for s in train valid test; do for side in src tgt; do args+=("--$s-$side" "$RES/$s.$side"); done; done
  [ -e "$WORK/prep/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare parallel "${args[@]}" --out "$WORK/prep"
  python -m mist_fairseq.distill "$TEACHER" --data "$WORK/prep" --out "$WORK/kd" --decode-mode ar --beam 1 \
    --max-len-a 1.5 --max-len-b 10 --batch-size 64 --overwrite
  cp "$WORK/kd/raw/train.tgt" "$WORK/train.kd.tgt"
  cp "$WORK/kd/manifest.json" "$WORK/manifest.json"
fi
python "$here/steps.py" ship-manifest "$WORK/manifest.json"  # no machine-specific paths in the shipped copy
cp "$WORK/train.kd.tgt" "$RES/train.kd.tgt.tmp" && mv "$RES/train.kd.tgt.tmp" "$RES/train.kd.tgt"
cp "$WORK/manifest.json" "$RES/train.kd.manifest.json.tmp" && mv "$RES/train.kd.manifest.json.tmp" "$RES/train.kd.manifest.json"
echo "wrote $RES/train.kd.tgt and $RES/train.kd.manifest.json"
