#!/usr/bin/env bash
# Faithful-MIST ablation on Quora (issue 12): what each difference from the authors' method is worth.
#   A  this plugin's earlier criterion: Y_p from an all-[MASK] pass, loss on [MASK] positions only, plugin recipe
#   B  A with Y_p from the graded glanced pass (--pseudo-from glanced)
#   C  B with the loss on every real target position (--score-positions all)
#   D  C with the authors' glancing Hamming (--glat-hamming mixed) and recipe: faithful MIST (all defaults)
#   E  no mixing with D's recipe and loss
#   E_time  E trained for as many updates as fit in D's training wall time (the equal-time row)
#   F  D with the authors' recipe at the lr and warm-up of a CPU budget (RECIPE=authors-cpu: lr 3e-4,
#      100 warm-up updates, linear decay to 0): faithful MIST that trains in a few hundred updates
#   G  no mixing with F's recipe and loss
#   F_fast, G_fast  F and G on the CPU fast path (the controls of H and I)
#   H  F_fast with the authors' corrupted draft input Y_0 (10% gold kept, 10% random tokens, the rest [MASK]:
#      their loader's keep_prob/random_prob defaults; the criterion's defaults since): faithful MIST, complete
#   I  no mixing with H's recipe, loss and Y_0
#   J  C_fast (the plugin recipe) with the authors' corrupted Y_0: does the default recipe gain from it?
#   C_fast2  C_fast again (same flags and seed), J's control, run beside it
#   Rows A-G were run before --target-keep-prob/--target-random-prob existed: they are pinned to 0 (all [MASK]).
#   C_fast, C_fast_s2  C on the CPU fast path (issue 13), seeds 1 and 2; C_s2  C in fp32 with seed 2: does the
#      fast path change quality? (fast_quality: dev loss and dev BLEU-4 of C, C_s2, C_fast and C_fast_s2 at
#      every saved checkpoint, one plot; the seed pairs measure run-to-run noise.) Rows A-G and C_s2 run in
#      fp32 (FAST_PATH=0, as A-G were run).
# Every system trains UPDATES updates at batch BATCH on THREADS threads, saves every INTERVAL updates, and is
# tested once at its dev-chosen checkpoint (dev BLEU-4); the equal-update comparisons use the checkpoints at
# UPDATES. Steps are idempotent and resume from checkpoint_last.pt, so STEPS can be split over processes:
#   STEPS="D C A" bash examples/quora_ablation.sh &  STEPS="E G F B" bash examples/quora_ablation.sh
# then STEPS="table equal_time probe collect" (equal_time compares the MIST:no-mix pairs EQUAL_TIME_PAIRS,
# default "F:G H:I", skipping pairs not run; probe probes PROBE_ROWS and merges into DOCS/probe.json; DEV_PLOT
# names the dev-curve plot; the optional E_time step needs D and E finished: it reads their training wall times).
set -euo pipefail
RAW=${RAW:-../shared/data/quora}
ROOT=${ROOT:-$HOME/mist_runs}                 # run folders (outside the repo)
DATA=${DATA:-$ROOT/data/quora}
UPDATES=${UPDATES:-300}                       # updates per system (equal updates)
BATCH=${BATCH:-64}
INTERVAL=${INTERVAL:-100}
THREADS=${THREADS:-1}
NOISE0="--target-keep-prob 0 --target-random-prob 0"  # an all-[MASK] draft input (rows A-G, F_fast, G_fast)
STEPS=${STEPS:-"prep A B C D E E_time F G table equal_time probe collect"}
DOCS=${DOCS:-docs/ablation}
PROBE_SHARDS=${PROBE_SHARDS:-1}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
here=$(dirname "$0")
source "$here/common.sh"  # train_generate_score, recipe_args, compare_at_equal_updates, generate_test
mkdir -p "$DOCS"

system() {  # NAME MODE RECIPE CRITERION_ARGS [UPDATES]
  local run=$ROOT/ablation_$1
  [ -e "$run/scores.json" ] && return 0
  MODE=$2 RECIPE=$3 EXTRA=$4 RUN=$run UPDATES=${5:-$UPDATES} DEV_SELECT=1 DATA=$DATA BATCH=$BATCH \
    INTERVAL=$INTERVAL LR=3e-4 WARMUP=100 LOG_INTERVAL=10 FAST_PATH=${FAST_PATH:-0} bash "$here/quora.sh"
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
    A) system A dynamic plugin "--pseudo-from masked --score-positions masked --glat-hamming first" ;;
    B) system B dynamic plugin "--pseudo-from glanced --score-positions masked --glat-hamming first" ;;
    C) system C dynamic plugin "--pseudo-from glanced --score-positions all --glat-hamming first" ;;
    C_fast) FAST_PATH=1 system C_fast dynamic plugin "--pseudo-from glanced --score-positions all --glat-hamming first" ;;
    C_fast_s2) FAST_PATH=1 system C_fast_s2 dynamic plugin "--pseudo-from glanced --score-positions all --glat-hamming first --seed 2" ;;
    C_s2) FAST_PATH=0 system C_s2 dynamic plugin "--pseudo-from glanced --score-positions all --glat-hamming first --seed 2" ;;
    fast_quality)
      for s in C C_s2 C_fast C_fast_s2; do
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
      for pair in "C_fast C" "C_fast_s2 C_s2" "C_s2 C" "C_fast_s2 C_fast"; do
        set -- $pair
        [ -e "$ROOT/ablation_$1/scores.json" ] && [ -e "$ROOT/ablation_$2/scores.json" ] || continue
        python -m mist_fairseq.score --task quora "$ROOT/ablation_$1/generate-test.txt" --ref "$DATA/raw/test.tgt" \
          --src "$DATA/raw/test.src" --compare "$ROOT/ablation_$2/generate-test.txt" --no-meteor \
          --json "$DOCS/${1}_vs_${2}_test.json"
      done
      python "$here/plot_fast_path.py" --root "$ROOT" --docs "$DOCS" ;;
    D) system D dynamic authors "$NOISE0" ;;
    E) system E none authors "$NOISE0" ;;
    F) system F dynamic authors-cpu "$NOISE0" ;;
    G) system G none authors-cpu "$NOISE0" ;;
    F_fast) FAST_PATH=1 system F_fast dynamic authors-cpu "$NOISE0" ;;
    G_fast) FAST_PATH=1 system G_fast none authors-cpu "$NOISE0" ;;
    H) FAST_PATH=1 system H dynamic authors-cpu "" ;;
    I) FAST_PATH=1 system I none authors-cpu "" ;;
    C_fast2) FAST_PATH=1 system C_fast2 dynamic plugin "--pseudo-from glanced --score-positions all --glat-hamming first" ;;
    J) FAST_PATH=1 system J dynamic plugin "--pseudo-from glanced --score-positions all --glat-hamming first --target-keep-prob 0.1 --target-random-prob 0.1" ;;
    E_time)
      # E's updates in D's wall time: D's training wall time over E's time per update
      d=$(train_wall "$ROOT/ablation_D") e=$(train_wall "$ROOT/ablation_E")
      n=$(python -c "print(int($UPDATES * $d / $e))")
      echo "E_time: $n updates (D trained $UPDATES in ${d}s, E in ${e}s)"
      system E_time none authors "$NOISE0" "$n" ;;
    table)
      python -m mist_fairseq.score --task quora "$DATA/raw/test.src" --ref "$DATA/raw/test.tgt" \
        --src "$DATA/raw/test.src" --json "$DOCS/copy_source.json"
      for s in A B C D E E_time F G C_fast2 F_fast G_fast H I J; do
        [ -e "$ROOT/ablation_$s/scores.json" ] && collect_run "$s"
      done
      # equal updates: each pair at the last checkpoint both saved, paired bootstrap
      for pair in "D E" "F G" "F C" "D C" "C B" "B A" "C A" "F A" "H F_fast" "I G_fast" "H I" "F_fast G_fast" "J C_fast2" "H C_fast2"; do
        set -- $pair
        compare_at_equal_updates quora "$ROOT/ablation_$1" "$ROOT/ablation_$2" "$DOCS/${1}_vs_${2}"
      done
      # equal time: faithful MIST's dev-chosen test output against E_time's
      if [ -e "$ROOT/ablation_E_time/generate-test.txt" ]; then
        python -m mist_fairseq.score --task quora "$ROOT/ablation_D/generate-test.txt" --ref "$DATA/raw/test.tgt" \
          --src "$DATA/raw/test.src" --compare "$ROOT/ablation_E_time/generate-test.txt" --no-meteor \
          --json "$DOCS/D_vs_E_time_equal_time.json"
      fi
      runs=() labels=()
      for s in A B C D E F G C_fast2 F_fast G_fast H I J; do
        [ -e "$ROOT/ablation_$s/dev_curve.json" ] && runs+=("$ROOT/ablation_$s") && labels+=("$s")
      done
      python -m mist_fairseq.dev_select "${runs[@]}" --data "$DATA" --task quora --labels "${labels[@]}" \
        --plot "$DOCS/${DEV_PLOT:-ablation_dev_curves.png}" ;;  # DEV_PLOT: another name when earlier rows' folders are gone
    probe)
      ckpts=()
      for s in ${PROBE_ROWS:-A B C D E F G C_fast2 F_fast G_fast H I J}; do
        [ -e "$ROOT/ablation_$s/checkpoint_dev_best.pt" ] && ckpts+=("$ROOT/ablation_$s/checkpoint_dev_best.pt")
      done
      # rows probed in earlier sessions keep their entries: this run's are merged into probe.json
      part=$DOCS/probe.part.$$.json
      python -m mist_fairseq.probe "${ckpts[@]}" --data-bin "$DATA/bin" --data "$DATA" --shards "$PROBE_SHARDS" \
        --json "$part"
      python - "$DOCS/probe.json" "$part" <<'PY'
import json, os, sys
out, part = sys.argv[1:3]
merged = json.load(open(out)) if os.path.exists(out) else {}
merged.update(json.load(open(part)))
with open(out + ".tmp", "w") as f:
    json.dump(merged, f, indent=1)
os.replace(out + ".tmp", out)
os.remove(part)
PY
      ;;
    equal_time)
      # MIST vs no mixing at the no-mix row's training wall time: the MIST row's dev-best checkpoint among
      # those saved within it (its schedule was set for UPDATES, so early checkpoints are mid-schedule: a
      # caveat, not a fix)
      for pair in ${EQUAL_TIME_PAIRS:-F:G H:I}; do
        a=${pair%:*} b=${pair#*:}
        [ -e "$ROOT/ablation_$a/dev_curve.json" ] && [ -e "$ROOT/ablation_$b/generate-test.txt" ] || continue
        pick=$(python - "$ROOT/ablation_$a/dev_curve.json" "$ROOT/ablation_$b/dev_curve.json" <<'PY'
import json, sys
f, g = (json.load(open(p)) for p in sys.argv[1:3])
budget = max(p["train_hours"] for p in g["points"])
inside = [p for p in f["points"] if p["train_hours"] <= budget * 1.02] or [min(f["points"], key=lambda p: p["train_hours"])]
best = max(inside, key=lambda p: p["score"])
print(best["checkpoint"], best["updates"], f"{best['train_hours']:.3f}", f"{budget:.3f}")
PY
)
        set -- $pick
        echo "equal time: $a's $1 ($2 updates, $3 h) vs $b's dev-chosen checkpoint ($b trained $4 h)"
        out=$ROOT/ablation_$a/generate-test-$2.txt
        [ -e "$out" ] || generate_test "$ROOT/ablation_$a/$1" "$out"
        python -m mist_fairseq.score --task quora "$out" --ref "$DATA/raw/test.tgt" --src "$DATA/raw/test.src" \
          --compare "$ROOT/ablation_$b/generate-test.txt" --no-meteor --json "$DOCS/${a}_vs_${b}_equal_time.json"
        echo "$a at $2 updates ($3 h) vs $b dev-chosen, $b trained $4 h" > "$DOCS/${a}_vs_${b}_equal_time.txt"
      done ;;
    collect) python "$here/collect_ablation.py" --docs "$DOCS" --out "$DOCS/ablation_table.md" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
