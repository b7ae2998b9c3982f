#!/usr/bin/env bash
# Quora paraphrase table at CPU scale (paper Table 3 + Table 6 + Figure 2): every system trains for the
# same wall-time budget on THREADS threads, the checkpoint is chosen by dev BLEU-4, the test set is
# scored once. Steps are idempotent (a finished step is skipped; an interrupted one resumes from
# checkpoint_last.pt), so STEPS can be split over several processes. Run from the repository root.
#   STEPS: prep none dynamic static ar nat cmlm levt decode bench table probe (in that order when run alone);
#   not in the default list: joint ar_same modes. The plugin's rows (none dynamic static joint ar_same) are
#   declared in examples/specs/table.yaml, which examples/collect_table.py reads too.
set -euo pipefail
RAW=${RAW:-../shared/data/quora}
ROOT=${ROOT:-$HOME/mist_runs}                 # run folders (outside the repo)
DATA=${DATA:-$ROOT/data/quora}
BUDGET_HOURS=${BUDGET_HOURS:-0.3333}          # training wall time per system
INTERVAL=${INTERVAL:-100}                     # checkpoint (and dev-curve) every INTERVAL updates
THREADS=${THREADS:-1}                         # torch threads per system (2 systems at a time on 2 cores)
STEPS=${STEPS:-"prep none dynamic static ar nat cmlm levt decode bench table probe"}
BASE_SIZE=${BASE_SIZE:-small}                 # baselines: small (3+3 layers, 256) | base
DOCS=${DOCS:-docs}                            # where the table, plot and comparisons go
BENCH=${BENCH:-$DOCS/BENCHMARK_quora_trained.json}  # the speedup column's benchmark (the bench step writes it)
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
here=$(dirname "$0")
source "$here/common.sh"  # table_run, static_pseudo_targets, iterative_decoding, compare_at_equal_updates
for step in $STEPS; do
  case $step in
    prep) [ -e "$DATA/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare quora --raw "$RAW" --out "$DATA" ;;
    none|dynamic|joint|ar_same) table_run quora.sh "$ROOT/quora" "$step" ;;
    static)
      # the static ablation's fixed pseudo targets: the no-mix model's (dev-chosen) output on the train set
      static_pseudo_targets "$ROOT/quora_none"
      table_run quora.sh "$ROOT/quora" static ;;
    ar|nat|cmlm|levt)
      [ -e "$ROOT/baselines_quora/$step/scores.json" ] && continue
      DATA=$DATA RUNS=$ROOT/baselines_quora SYSTEMS=$step SIZE=$BASE_SIZE BUDGET_HOURS=$BUDGET_HOURS MAX_TOKENS=1024 \
        WARMUP=200 INTERVAL=$INTERVAL bash "$here/baselines/run_baselines.sh" ;;
    modes)
      # every decoding mode of the joint model (NAR is its scores.json) and AR beam 4 of the AR-only one
      for run in $(python "$here/spec.py" table modes); do
        mapfile -t modes < <(python "$here/spec.py" table modes "$run")
        decode_modes quora "$ROOT/quora_$run" "${modes[@]}"
      done ;;
    decode)
      # Table 6: MIST iterative decoding vs Mask-Predict, 1/3/6 iterations, on both trained models
      iterative_decoding quora "$ROOT/quora_dynamic" "$ROOT/quora_none" ;;
    bench)
      # latency of the trained systems, each predicting its own length (the speedup column)
      python -m benchmarks.latency --data "$DATA" --n 200 --batch-sizes 1 16 --threads "$THREADS" \
        --mist-checkpoint "$ROOT/quora_dynamic/checkpoint_dev_best.pt" --baselines "$ROOT/baselines_quora" \
        --baseline-checkpoint checkpoint_dev_best.pt --name BENCHMARK_quora_trained --out "$DOCS" ;;
    table)
      python -m mist_fairseq.score --task quora "$DATA/raw/test.src" --ref "$DATA/raw/test.tgt" \
        --src "$DATA/raw/test.src" --json "$ROOT/quora_copy_source.json"
      python -m mist_fairseq.score --task quora "$ROOT/quora_dynamic/generate-test.txt" --ref "$DATA/raw/test.tgt" \
        --src "$DATA/raw/test.src" --compare "$ROOT/quora_none/generate-test.txt" --json "$DOCS/quora_mist_vs_none.json"
      compare_at_equal_updates quora "$ROOT/quora_dynamic" "$ROOT/quora_none" "$DOCS/quora_mist_vs_none"
      python -m mist_fairseq.dev_select "$ROOT/quora_dynamic" "$ROOT/quora_none" --data "$DATA" --task quora \
        --labels "MIST" "no mixing" --plot "$DOCS/quora_convergence.png"
      python "$here/collect_table.py" --root "$ROOT" --dataset quora \
        --bench "$BENCH" --out "$DOCS/quora_table.md" ;;
    probe)
      # what each dev-chosen model does with a pseudo target, on dev (why MIST helps or not)
      ckpts=()
      for m in none dynamic static; do
        [ -e "$ROOT/quora_$m/checkpoint_dev_best.pt" ] && ckpts+=("$ROOT/quora_$m/checkpoint_dev_best.pt")
      done
      python -m mist_fairseq.probe "${ckpts[@]}" --data-bin "$DATA/bin" --json "$DOCS/quora_probe.json" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
