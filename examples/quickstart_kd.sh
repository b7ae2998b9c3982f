#!/usr/bin/env bash
# Remakes the quickstart's distilled targets (mist_fairseq/resources/quora_small/train.kd.tgt and its
# manifest): the teacher -- a same-encoder AR checkpoint, trained e.g. by
#   ROOT=$HOME/kd DATA=$HOME/kd/data/quora BUDGET_HOURS=1 STEPS="prep ar_same" bash examples/quora_table.sh
# -- decodes the 3,000 shipped train sources greedily (python -m mist_fairseq.distill). The teacher
# never saw the quickstart's 500 test pairs (lines 1-500 of Quora's 4K test set). Run from the repository root.
#   TEACHER=$HOME/kd/quora_ar_same/checkpoint_dev_best.pt bash examples/quickstart_kd.sh
set -euo pipefail
: "${TEACHER:?set TEACHER to the teacher checkpoint}"
RES=mist_fairseq/resources/quora_small
WORK=${WORK:-$(mktemp -d)}
args=()
for s in train valid test; do for side in src tgt; do args+=("--$s-$side" "$RES/$s.$side"); done; done
[ -e "$WORK/prep/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare parallel "${args[@]}" --out "$WORK/prep"
python -m mist_fairseq.distill "$TEACHER" --data "$WORK/prep" --out "$WORK/kd" --decode-mode ar --beam 1 \
  --batch-size 64 --overwrite
cp "$WORK/kd/raw/train.tgt" "$RES/train.kd.tgt.tmp" && mv "$RES/train.kd.tgt.tmp" "$RES/train.kd.tgt"
python - "$WORK/kd/manifest.json" "$RES/train.kd.manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["data"] = "mist_fairseq/resources/quora_small (prepared)"  # no machine-specific paths in the shipped copy
m["teacher"]["checkpoint"] = m["teacher"]["checkpoint"].split("/")[-2:]
json.dump(m, open(sys.argv[2], "w"), indent=2)
PY
echo "wrote $RES/train.kd.tgt and $RES/train.kd.manifest.json"
