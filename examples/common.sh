# Sourced by the per-dataset scripts: train (resumable), generate the test set, score it.
# Reads DATA RUN MODE ARCH PRETRAINED LR BATCH UPDATES WARMUP INTERVAL GEN_BATCH SCORE_TASK EXTRA RECIPE FAST_PATH
# GEN_ARGS (fairseq-generate options of dev selection and the test decode, e.g. "--decode-mode ar --beam 1"), and
# BUDGET_HOURS (> 0: stop after that much cumulative training wall time, kept across resumes) or
# DEV_SELECT=1: in both cases every INTERVAL-update checkpoint is kept (the last KEEP_CHECKPOINTS of them where
# that is set) and the test checkpoint is the one with the best dev BLEU-4 (otherwise: the best validation loss).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

recipe_flags() {  # NAME [OVERRIDE...]: sets RECIPE_ARGS to mist_fairseq/recipes/NAME.yaml's fairseq-train flags,
  # on the CPU fast path (bf16 matrix products, fused AdamW) unless FAST_PATH=0 (plain fp32)
  local out fast=()
  [ "${FAST_PATH:-1}" = 1 ] && fast=(--fast-path)
  out=$(python -m mist_fairseq.recipes "$@" "${fast[@]}") || return 2
  mapfile -t RECIPE_ARGS <<< "$out"
}

recipe_args() {  # sets the array RECIPE_ARGS: the optimisation recipe RECIPE (reads LR WARMUP UPDATES)
  # the recipes themselves, with why: mist_fairseq/recipes/*.yaml
  case ${RECIPE:-plugin} in
    # this plugin's CPU recipe (the default) at this run's peak lr and warm-up
    plugin) recipe_flags plugin "optimization.lr=[$LR]" "lr_scheduler.warmup_updates=$WARMUP" || return 2 ;;
    # the authors' recipe as they run it (lr 3e-5, 500 warm-up updates), decaying to 0 at UPDATES
    authors) recipe_flags authors "lr_scheduler.total_num_update=$UPDATES" || return 2 ;;
    # the same with the peak lr and warm-up of a CPU budget of a few hundred updates (LR, WARMUP): at
    # lr 3e-5 with 500 warm-up updates, 300 updates train nothing (docs/RESULTS.md, faithful-MIST ablation)
    authors-cpu) recipe_flags authors "optimization.lr=[$LR]" "lr_scheduler.warmup_updates=$WARMUP" \
                   "lr_scheduler.total_num_update=$UPDATES" || return 2 ;;
    *) echo "unknown RECIPE=$RECIPE (plugin | authors | authors-cpu)" >&2; return 2 ;;
  esac
}

train_generate_score() {
  mkdir -p "$RUN"
  recipe_args
  local budget=(--validate-interval-updates "$INTERVAL" --best-checkpoint-metric loss --keep-interval-updates 2)
  local dev_select=${DEV_SELECT:-0}
  if [ "${BUDGET_HOURS:-0}" != 0 ]; then
    # validation loss is not comparable across mix modes and costs budget: choose by dev BLEU afterwards
    budget=(--stop-time-hours "$BUDGET_HOURS" --disable-validation --keep-interval-updates "${KEEP_CHECKPOINTS:--1}")
    dev_select=1
  elif [ "$dev_select" = 1 ]; then
    budget=(--disable-validation --keep-interval-updates "${KEEP_CHECKPOINTS:--1}")
  fi
  # shellcheck disable=SC2086
  [ -e "$RUN/train.done" ] || fairseq-train "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --arch "$ARCH" \
    --criterion mist --mix-mode "$MODE" --pretrained-encoder "$PRETRAINED" "${RECIPE_ARGS[@]}" $EXTRA \
    --batch-size "$BATCH" --max-update "$UPDATES" \
    --save-dir "$RUN" --save-interval-updates "$INTERVAL" --no-epoch-checkpoints "${budget[@]}" \
    --log-format simple --log-interval "${LOG_INTERVAL:-50}" --num-workers 0 2>&1 | tee -a "$RUN/train.log"
  # a finished budgeted run is not resumed again (resuming would add an update past the budget)
  [ "${BUDGET_HOURS:-0}" = 0 ] || touch "$RUN/train.done"
  local ckpt="$RUN/checkpoint_best.pt"
  if [ "$dev_select" = 1 ]; then
    # shellcheck disable=SC2086
    python -m mist_fairseq.dev_select "$RUN" --data "$DATA" --task "$SCORE_TASK" --dev-shards "${DEV_SHARDS:-1}" \
      ${GEN_ARGS:+-- --task mist_nar $GEN_ARGS}
    ckpt="$RUN/checkpoint_dev_best.pt"
  fi
  # shellcheck disable=SC2086
  generate_test "$ckpt" "$RUN/generate-test.txt" ${GEN_ARGS:-}
  local src_arg=()
  [ "$SCORE_TASK" = xsum ] || src_arg=(--src "$DATA/raw/test.src")
  python -m mist_fairseq.score --task "$SCORE_TASK" "$RUN/generate-test.txt" --ref "$DATA/raw/test.tgt" \
    "${src_arg[@]}" --json "$RUN/scores.json"
}

spec_student() {  # SPEC ROW: examples/specs/SPEC.yaml's row trained by quora.sh in ROOT/quora_RUN with the
  # students' recipe (batch 32, 100 warm-up updates, a checkpoint every INTERVAL (500) updates, BUDGET_HOURS),
  # on DATA or, for data: kd, KD; a row with `by` is that script's step in the same ROOT instead
  local options MODE RECIPE FAST_PATH FLAGS DATA_KIND RUN_NAME BY data=$DATA
  options=$(python "$REPO/examples/spec.py" "$1" row "$2") || exit 2
  eval "$options"
  if [ -n "$BY" ]; then
    ROOT=$ROOT DATA=$DATA BUDGET_HOURS=$BUDGET_HOURS INTERVAL=${INTERVAL:-500} STEPS=${BY#* } \
      bash "$REPO/examples/${BY%% *}"
    return
  fi
  [ -e "$ROOT/quora_$RUN_NAME/scores.json" ] && return 0
  [ "$DATA_KIND" = kd ] && data=$KD
  MODE=$MODE RECIPE=$RECIPE FAST_PATH=$FAST_PATH EXTRA=$FLAGS RUN=$ROOT/quora_$RUN_NAME DATA=$data \
    BUDGET_HOURS=$BUDGET_HOURS WARMUP=100 INTERVAL=${INTERVAL:-500} BATCH=32 bash "$REPO/examples/quora.sh"
}

table_run() {  # RUNNER RUN_PREFIX ROW: examples/specs/table.yaml's row trained by examples/RUNNER (quora.sh,
  # squad_qg.sh) in RUN_PREFIX_ROW with the tables' recipe (batch 32, 100 warm-up updates, a checkpoint every
  # INTERVAL updates, BUDGET_HOURS of training); {pseudo} in its flags: RUN_PREFIX_none/pseudo-train.txt
  local options MODE RECIPE FAST_PATH FLAGS DATA_KIND RUN_NAME BY GEN run
  options=$(python "$REPO/examples/spec.py" table row "$3") || exit 2
  eval "$options"
  run=$2_$RUN_NAME
  [ -e "$run/scores.json" ] && return 0
  MODE=$MODE RECIPE=$RECIPE FAST_PATH=$FAST_PATH EXTRA=${FLAGS//\{pseudo\}/$2_none/pseudo-train.txt} GEN_ARGS=$GEN \
    RUN=$run DATA=$DATA BUDGET_HOURS=$BUDGET_HOURS WARMUP=100 INTERVAL=$INTERVAL BATCH=32 bash "$REPO/examples/$1"
}

static_pseudo_targets() {  # NONE_RUN: writes NONE_RUN/pseudo-train.txt, its dev-chosen model's train-set output
  local pseudo=$1/pseudo-train.txt
  if [ ! -e "$pseudo" ]; then
    fairseq-generate "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --gen-subset train \
      --batch-size 128 --path "$1/checkpoint_dev_best.pt" > "$pseudo.tmp"
    mv "$pseudo.tmp" "$pseudo"
  fi
}

iterative_decoding() {  # SCORE_TASK RUN...: MIST vs Mask-Predict at 1/3/6 iterations on each run's test set
  local task=$1 run s it out
  shift
  for run in "$@"; do
    mkdir -p "$run/iter"
    for s in mist mask-predict; do
      for it in 1 3 6; do
        [ "$s$it" = mask-predict1 ] && continue  # one pass is the same decoding for both strategies
        out=$run/iter/$s-$it.txt
        [ -e "$out.json" ] && continue
        generate_test "$run/checkpoint_dev_best.pt" "$out" --mist-decode-iters "$it" --decode-strategy "$s"
        python -m mist_fairseq.score --task "$task" "$out" --ref "$DATA/raw/test.tgt" --src "$DATA/raw/test.src" \
          --no-meteor --json "$out.json"
      done
    done
  done
}

decode_modes() {  # SCORE_TASK RUN NAME:OPTIONS...: the dev-chosen checkpoint of RUN decoded on test once per
  # decoding mode, e.g. "semi2:--decode-mode semi-nar --block-size 2"; RUN/modes/NAME.txt and .json
  local task=$1 run=$2 spec name out
  shift 2
  mkdir -p "$run/modes"
  for spec in "$@"; do
    name=${spec%%:*}
    out=$run/modes/$name.txt
    [ -e "$out.json" ] && continue
    # shellcheck disable=SC2086
    generate_test "$run/checkpoint_dev_best.pt" "$out" ${spec#*:}
    python -m mist_fairseq.score --task "$task" "$out" --ref "$DATA/raw/test.tgt" --src "$DATA/raw/test.src" \
      --no-meteor --json "$out.json"
  done
}

generate_test() {  # CKPT OUT [fairseq-generate options...]: OUT = its test-set output, never half-written
  local ckpt=$1 out=$2
  shift 2
  fairseq-generate "$DATA/bin" --user-dir "$REPO/mist_fairseq" --task mist_nar --path "$ckpt" --gen-subset test \
    --batch-size "${GEN_BATCH:-64}" --bpe bert --bpe-vocab-file "$DATA/bin/vocab.txt" "$@" > "$out.tmp"
  mv "$out.tmp" "$out"
}

compare_at_equal_updates() {  # SCORE_TASK MIST_RUN NONE_RUN JSON_PREFIX
  # test BLEU of both runs at the last interval checkpoint both saved, with the paired bootstrap
  # (equal updates, where the equal-time table gives MIST fewer): writes JSON_PREFIX_at_U_updates.json
  local task=$1 a=$2 b=$3 prefix=$4 u run out
  u=$(comm -12 <(ls "$a" | sed -n 's/^checkpoint_[0-9]*_\([0-9]*\)\.pt$/\1/p' | sort) \
               <(ls "$b" | sed -n 's/^checkpoint_[0-9]*_\([0-9]*\)\.pt$/\1/p' | sort) | sort -n | tail -n 1)
  if [ -z "$u" ]; then echo "no interval checkpoint common to $a and $b: no equal-update comparison" >&2; return 0; fi
  for run in "$a" "$b"; do
    out=$run/generate-test-at-$u.txt
    [ -e "$out" ] && continue
    if [ -e "$run/generate-test.txt" ] && [ "$run/checkpoint_dev_best.pt" -ef "$(ls "$run"/checkpoint_*_"$u".pt)" ]; then
      cp "$run/generate-test.txt" "$out"  # the dev-chosen checkpoint is this one: its test output exists
      continue
    fi
    generate_test "$(ls "$run"/checkpoint_*_"$u".pt)" "$out"
  done
  python -m mist_fairseq.score --task "$task" "$a/generate-test-at-$u.txt" --ref "$DATA/raw/test.tgt" \
    --src "$DATA/raw/test.src" --compare "$b/generate-test-at-$u.txt" --no-meteor --json "${prefix}_at_${u}_updates.json"
}
