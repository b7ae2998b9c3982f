#!/usr/bin/env bash
# Faithful-MIST ablation on Quora (issue 12): what each difference from the authors' method is worth.
# The rows (A-J: criterion variants, recipes, the CPU fast path, the authors' draft input; C_fast, C_fast_s2,
# C_s2: the fast path's quality controls) and the pairs compared are declared once, in
# examples/specs/quora_ablation.yaml, which examples/collect_ablation.py reads too; a step named after a row
# trains it. fast_quality: dev loss and dev BLEU-4 of the fast_quality pairs at every saved checkpoint, one
# plot; the seed pairs measure run-to-run noise.
# Every system trains UPDATES updates at batch BATCH on THREADS threads, saves every INTERVAL updates, and is
# tested once at its dev-chosen checkpoint (dev BLEU-4); the equal-update comparisons use the checkpoints at
# UPDATES. Steps are idempotent and resume from checkpoint_last.pt, so STEPS can be split over processes:
#   STEPS="D C A" bash examples/quora_ablation.sh &  STEPS="E G F B" bash examples/quora_ablation.sh
# then STEPS="table equal_time probe collect" (equal_time compares the MIST:no-mix pairs EQUAL_TIME_PAIRS,
# default: the spec's equal_time pairs, skipping pairs not run; probe probes PROBE_ROWS and merges into DOCS/probe.json; DEV_PLOT
# names the dev-curve plot; the optional E_time step needs D and E finished: it reads their training wall times).
set -euo pipefail
RAW=${RAW:-../shared/data/quora}
ROOT=${ROOT:-$HOME/mist_runs}                 # run folders (outside the repo)
DATA=${DATA:-$ROOT/data/quora}
UPDATES=${UPDATES:-300}                       # updates per system (equal updates)
BATCH=${BATCH:-64}
INTERVAL=${INTERVAL:-100}
THREADS=${THREADS:-1}
STEPS=${STEPS:-"prep A B C D E E_time F G table equal_time probe collect"}
DOCS=${DOCS:-docs/ablation}
PROBE_SHARDS=${PROBE_SHARDS:-1}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
here=$(dirname "$0")
source "$here/common.sh"  # train_generate_score, recipe_args, compare_at_equal_updates, generate_test
mkdir -p "$DOCS"

spec() { python "$here/spec.py" quora_ablation "$@"; }

system() {  # ROW [UPDATES]: the spec's row trained by quora.sh in ROOT/ablation_ROW
  local run=$ROOT/ablation_$1 options MODE RECIPE FAST_PATH FLAGS DATA_KIND RUN_NAME BY
  [ -e "$run/scores.json" ] && return 0
  options=$(spec row "$1") || exit 2
  eval "$options"
  MODE=$MODE RECIPE=$RECIPE EXTRA=$FLAGS RUN=$run UPDATES=${2:-$UPDATES} DEV_SELECT=1 DATA=$DATA BATCH=$BATCH \
    INTERVAL=$INTERVAL LR=3e-4 WARMUP=100 LOG_INTERVAL=10 FAST_PATH=$FAST_PATH bash "$here/quora.sh"
}

collect_run() {  # NAME: its scores, dev curve and training log lines into DOCS
  cp "$ROOT/ablation_$1/scores.json" "$DOCS/scores_$1.json"
  cp "$ROOT/ablation_$1/dev_curve.json" "$DOCS/dev_curve_$1.json" 2>/dev/null || true
  grep -h "train_inner\|done training" "$ROOT/ablation_$1/train.log" > "$DOCS/train_log_$1.txt" || true
}

train_wall() {  # RUN -> seconds of training wall time in its log (the last 'wall=' Fairseq printed)
  sed -n 's/.*[ ,]wall=\([0-9.]*\).*/\1/p' "$1/train.log" | tail -n 1
}

for step in $STEPS; do
  case $step in
    prep) [ -e "$DATA/bin/test.src-tgt.tgt.bin" ] || python -m mist_fairseq.prepare quora --raw "$RAW" --out "$DATA" ;;
    fast_quality)
      for s in $(spec pairs fast_quality | tr ' ' '\n' | awk '!seen[$0]++'); do
        [ -e "$ROOT/ablation_$s/scores.json" ] || continue
        for ck in "$ROOT/ablation_$s"/checkpoint_1_*.pt; do
          n=${ck##*_}; n=${n%.pt} log=$ROOT/ablation_$s/valid-$n.log
          [ -e "$log" ] && continue
          fairseq-validate "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --path "$ck" \
            --valid-subset valid --batch-size 64 --num-workers 0 > "$log.tmp" 2>&1
          mv "$log.tmp" "$log"  # an interrupted run leaves no log that looks finished
        done
        collect_run "$s"
      done
      # test BLEU-4 at the dev-chosen checkpoints, paired bootstrap: fast vs fp32 per seed, seed vs seed per path
      while read -r a b; do
        set -- "$a" "$b"
        [ -e "$ROOT/ablation_$1/scores.json" ] && [ -e "$ROOT/ablation_$2/scores.json" ] || continue
        python -m mist_fairseq.score --task quora "$ROOT/ablation_$1/generate-test.txt" --ref "$DATA/raw/test.tgt" \
          --src "$DATA/raw/test.src" --compare "$ROOT/ablation_$2/generate-test.txt" --no-meteor \
          --json "$DOCS/${1}_vs_${2}_test.json"
      done < <(spec pairs fast_quality)
      python "$here/plot_fast_path.py" --root "$ROOT" --docs "$DOCS" ;;
    E_time)
      # E's updates in D's wall time: D's training wall time over E's time per update
      d=$(train_wall "$ROOT/ablation_D") e=$(train_wall "$ROOT/ablation_E")
      n=$(python -c "print(int($UPDATES * $d / $e))")
      echo "E_time: $n updates (D trained $UPDATES in ${d}s, E in ${e}s)"
      system E_time "$n" ;;
    table)
      python -m mist_fairseq.score --task quora "$DATA/raw/test.src" --ref "$DATA/raw/test.tgt" \
        --src "$DATA/raw/test.src" --json "$DOCS/copy_source.json"
      for s in $(spec rows --table); do
        [ -e "$ROOT/ablation_$s/scores.json" ] && collect_run "$s"
      done
      # equal updates: each pair at the last checkpoint both saved, paired bootstrap
      while read -r a b; do
        compare_at_equal_updates quora "$ROOT/ablation_$a" "$ROOT/ablation_$b" "$DOCS/${a}_vs_${b}"
      done < <(spec pairs equal_updates)
      # equal time: faithful MIST's dev-chosen test output against E_time's
      if [ -e "$ROOT/ablation_E_time/generate-test.txt" ]; then
        python -m mist_fairseq.score --task quora "$ROOT/ablation_D/generate-test.txt" --ref "$DATA/raw/test.tgt" \
          --src "$DATA/raw/test.src" --compare "$ROOT/ablation_E_time/generate-test.txt" --no-meteor \
          --json "$DOCS/D_vs_E_time_equal_time.json"
      fi
      runs=() labels=()
      for s in $(spec rows --table); do
        [ "$s" = E_time ] && continue  # its own dev curve repeats E's
        [ -e "$ROOT/ablation_$s/dev_curve.json" ] && runs+=("$ROOT/ablation_$s") && labels+=("$s")
      done
      python -m mist_fairseq.dev_select "${runs[@]}" --data "$DATA" --task quora --labels "${labels[@]}" \
        --plot "$DOCS/${DEV_PLOT:-ablation_dev_curves.png}" ;;  # DEV_PLOT: another name when earlier rows' folders are gone
    probe)
      ckpts=()
      for s in ${PROBE_ROWS:-$(spec rows --table)}; do
        [ -e "$ROOT/ablation_$s/checkpoint_dev_best.pt" ] && ckpts+=("$ROOT/ablation_$s/checkpoint_dev_best.pt")
      done
      # rows probed in earlier sessions keep their entries: this run's are merged into probe.json
      part=$DOCS/probe.part.$$.json
      python -m mist_fairseq.probe "${ckpts[@]}" --data-bin "$DATA/bin" --data "$DATA" --shards "$PROBE_SHARDS" \
        --json "$part"
      python "$here/steps.py" merge-json "$DOCS/probe.json" "$part"
      ;;
    equal_time)
      # MIST vs no mixing at the no-mix row's training wall time: the MIST row's dev-best checkpoint among
      # those saved within it (its schedule was set for UPDATES, so early checkpoints are mid-schedule: a
      # caveat, not a fix)
      for pair in ${EQUAL_TIME_PAIRS:-$(spec pairs equal_time | tr ' ' ':')}; do
        a=${pair%:*} b=${pair#*:}
        [ -e "$ROOT/ablation_$a/dev_curve.json" ] && [ -e "$ROOT/ablation_$b/generate-test.txt" ] || continue
        pick=$(python "$here/steps.py" equal-time-pick "$ROOT/ablation_$a/dev_curve.json" "$ROOT/ablation_$b/dev_curve.json")
        set -- $pick
        echo "equal time: $a's $1 ($2 updates, $3 h) vs $b's dev-chosen checkpoint ($b trained $4 h)"
        out=$ROOT/ablation_$a/generate-test-$2.txt
        [ -e "$out" ] || generate_test "$ROOT/ablation_$a/$1" "$out"
        python -m mist_fairseq.score --task quora "$out" --ref "$DATA/raw/test.tgt" --src "$DATA/raw/test.src" \
          --compare "$ROOT/ablation_$b/generate-test.txt" --no-meteor --json "$DOCS/${a}_vs_${b}_equal_time.json"
        echo "$a at $2 updates ($3 h) vs $b dev-chosen, $b trained $4 h" > "$DOCS/${a}_vs_${b}_equal_time.txt"
      done ;;
    collect) python "$here/collect_ablation.py" --docs "$DOCS" --out "$DOCS/ablation_table.md" ;;
    *)
      if [[ " $(spec rows) " == *" $step "* ]]; then system "$step"
      else echo "unknown step $step (steps: prep fast_quality E_time table probe equal_time collect, or a row: $(spec rows))" >&2; exit 2
      fi ;;
  esac
done
