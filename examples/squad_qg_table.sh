#!/usr/bin/env bash
# SQuAD 1.1 QG table at CPU scale (paper Tables 1 and 4, sentence-level sources): no mixing vs MIST vs
# static mixing, each trained for the same wall-time budget on THREADS threads, checkpoint chosen by dev
# BLEU-4, test scored once. Idempotent steps, as in quora_table.sh. Run from the repository root.
#   STEPS: prep none dynamic static decode table probe (rows: examples/specs/table.yaml)
set -euo pipefail
SQUAD=${SQUAD:-../shared/data/squad}
LEVEL=${LEVEL:-sentence}
ROOT=${ROOT:-$HOME/mist_runs}
DATA=${DATA:-$ROOT/data/squad_$LEVEL}
BUDGET_HOURS=${BUDGET_HOURS:-0.1667}
DEV_SHARDS=${DEV_SHARDS:-5}                   # checkpoint choice on 1/5 of the 10,570 dev questions (speed)
INTERVAL=${INTERVAL:-100}                     # checkpoint (and dev-curve) every INTERVAL updates
THREADS=${THREADS:-1}
STEPS=${STEPS:-"prep none dynamic static decode table probe"}
DOCS=${DOCS:-docs}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS LEVEL DEV_SHARDS  # squad_qg.sh reads both
here=$(dirname "$0")
source "$here/common.sh"  # table_run, static_pseudo_targets, iterative_decoding, compare_at_equal_updates
name=squad_$LEVEL
for step in $STEPS; do
  case $step in
    prep) [ -e "$DATA/bin/test.src-tgt.tgt.bin" ] ||
            python -m mist_fairseq.prepare squad-qg --squad-dir "$SQUAD" --level "$LEVEL" --out "$DATA" ;;
    none|dynamic) table_run squad_qg.sh "$ROOT/$name" "$step" ;;
    static)
      # the static ablation's fixed pseudo targets: the no-mix model's (dev-chosen) output on the train set
      static_pseudo_targets "$ROOT/${name}_none"
      table_run squad_qg.sh "$ROOT/$name" static ;;
    decode)
      # Table 6: MIST iterative decoding vs Mask-Predict, 1/3/6 iterations, on both trained models
      iterative_decoding squad-qg "$ROOT/${name}_dynamic" "$ROOT/${name}_none" ;;
    table)
      python -m mist_fairseq.score --task squad-qg "$ROOT/${name}_dynamic/generate-test.txt" --ref "$DATA/raw/test.tgt" \
        --src "$DATA/raw/test.src" --compare "$ROOT/${name}_none/generate-test.txt" --json "$DOCS/${name}_mist_vs_none.json"
      compare_at_equal_updates squad-qg "$ROOT/${name}_dynamic" "$ROOT/${name}_none" "$DOCS/${name}_mist_vs_none"
      python -m mist_fairseq.dev_select "$ROOT/${name}_dynamic" "$ROOT/${name}_none" --data "$DATA" --task squad-qg \
        --dev-shards "$DEV_SHARDS" --labels "MIST" "no mixing" --plot "$DOCS/${name}_convergence.png"
      python "$here/collect_table.py" --root "$ROOT" --dataset "$name" --out "$DOCS/${name}_table.md" ;;
    probe)
      # what each dev-chosen model does with a pseudo target, on a fifth of dev (DEV_SHARDS) over all lengths
      ckpts=()
      for m in none dynamic static; do
        [ -e "$ROOT/${name}_$m/checkpoint_dev_best.pt" ] && ckpts+=("$ROOT/${name}_$m/checkpoint_dev_best.pt")
      done
      python -m mist_fairseq.probe "${ckpts[@]}" --data-bin "$DATA/bin" --shards "$DEV_SHARDS" \
        --json "$DOCS/${name}_probe.json" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
