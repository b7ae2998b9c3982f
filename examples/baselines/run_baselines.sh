#!/usr/bin/env bash
# Fairseq's own baselines on the same data and vocabulary as MIST: AR transformer (beam 4, lenpen 1.0),
# NAT (single pass), CMLM (10 iterations), LevT. Each is scored by mist_fairseq.score, like MIST.
#   DATA: a `python -m mist_fairseq.prepare ...` output folder (uses its tok/ WordPieces)
#   SYSTEMS: which to run; SIZE=base (Fairseq's defaults: 6+6 layers, 512), small (CPU: 3+3, 256),
#   matched (3+3, 384: MiniLM-L6's parameter count; the serving race's AR model) or tiny (tests only)
set -euo pipefail
DATA=${DATA:-$HOME/mist_runs/data/quora}
TASK=${TASK:-quora}                            # scorer task: quora | squad-qg | xsum
RUNS=${RUNS:-$HOME/mist_runs/baselines_$(basename "$DATA")}
SYSTEMS=${SYSTEMS:-"ar nat cmlm levt"}
SIZE=${SIZE:-small}
UPDATES=${UPDATES:-20000}
MAX_TOKENS=${MAX_TOKENS:-4096}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-1000}
INTERVAL=${INTERVAL:-1000}                     # updates between checkpoints
BUDGET_HOURS=${BUDGET_HOURS:-0}                # > 0: stop after that much cumulative training wall time; keep
                                               # every checkpoint and test the one with the best dev BLEU-4
SCORE_ARGS=${SCORE_ARGS:-}                     # e.g. --no-meteor

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# --user-dir: Fairseq's legacy (argparse) architectures store an argparse.Namespace in their
# checkpoints, which torch >= 2.6 refuses to load; importing the plugin allow-lists exactly that class
PLUGIN="--user-dir $REPO/mist_fairseq"
FDATA="$RUNS/bin"                              # the same WordPieces, Fairseq's standard dictionary
if [ ! -e "$FDATA/test.src-tgt.tgt.bin" ]; then
  # dict.src.txt of the MIST data lists BERT's vocabulary in order: Fairseq's Dictionary adds its own
  # 4 specials in front, so every system sees the same token inventory
  fairseq-preprocess --source-lang src --target-lang tgt --trainpref "$DATA/tok/train" \
    --validpref "$DATA/tok/valid" --testpref "$DATA/tok/test" --srcdict "$DATA/bin/dict.src.txt" \
    --joined-dictionary --destdir "$FDATA" --workers 2
fi
if [ "$SIZE" = small ]; then
  SIZE_ARGS="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256
             --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4"
elif [ "$SIZE" = matched ]; then
  # about MiniLM-L6's parameter count (22.7M): 3+3 layers of 384, shared 30.5K-WordPiece embeddings (24M)
  SIZE_ARGS="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 384 --decoder-embed-dim 384
             --encoder-ffn-embed-dim 1536 --decoder-ffn-embed-dim 1536 --encoder-attention-heads 6 --decoder-attention-heads 6"
elif [ "$SIZE" = tiny ]; then
  SIZE_ARGS="--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32
             --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2"
else
  SIZE_ARGS=""
fi
COMMON="--share-all-embeddings --optimizer adam --adam-betas (0.9,0.98) --lr $LR --lr-scheduler inverse_sqrt
        --warmup-updates $WARMUP --warmup-init-lr 1e-07 --dropout 0.3 --weight-decay 0.01 --max-tokens $MAX_TOKENS
        --max-update $UPDATES --save-interval-updates $INTERVAL --no-epoch-checkpoints
        --log-format simple --log-interval 50 --num-workers 0 --required-batch-size-multiple 1"
if [ "$BUDGET_HOURS" != 0 ]; then
  COMMON="$COMMON --stop-time-hours $BUDGET_HOURS --disable-validation --keep-interval-updates -1"
  CKPT=checkpoint_dev_best.pt
else
  COMMON="$COMMON --validate-interval-updates $INTERVAL --keep-interval-updates 2"
  CKPT=checkpoint_best.pt
fi
NAT_COMMON="--task translation_lev --criterion nat_loss --label-smoothing 0.1 --decoder-learned-pos
            --encoder-learned-pos --apply-bert-init --fixed-validation-seed 7"

for sys in $SYSTEMS; do
  run="$RUNS/$sys"; mkdir -p "$run"
  case $sys in
    ar)   train_args="--task translation --arch transformer --criterion label_smoothed_cross_entropy --label-smoothing 0.1"
          gen_args="--task translation --beam 4 --lenpen 1.0" ;;
    nat)  train_args="$NAT_COMMON --arch nonautoregressive_transformer --noise full_mask --pred-length-offset --length-loss-factor 0.1"
          gen_args="--task translation_lev --iter-decode-max-iter 0 --iter-decode-eos-penalty 0 --beam 1" ;;
    cmlm) train_args="$NAT_COMMON --arch cmlm_transformer --noise random_mask"
          gen_args="--task translation_lev --iter-decode-max-iter 9 --iter-decode-force-max-iter --iter-decode-eos-penalty 0 --beam 1" ;;
    levt) train_args="$NAT_COMMON --arch levenshtein_transformer --noise random_delete"
          gen_args="--task translation_lev --iter-decode-max-iter 9 --iter-decode-eos-penalty 0 --beam 1" ;;
    *) echo "unknown system $sys" >&2; exit 2 ;;
  esac
  if [ ! -e "$run/train.done" ]; then
    # shellcheck disable=SC2086
    fairseq-train "$FDATA" $PLUGIN $train_args $SIZE_ARGS $COMMON --save-dir "$run" 2>&1 | tee -a "$run/train.log"
    # a finished budgeted run is not resumed again (resuming would add an update past the budget)
    [ "$BUDGET_HOURS" = 0 ] || touch "$run/train.done"
  fi
  if [ "$BUDGET_HOURS" != 0 ]; then
    # shellcheck disable=SC2086
    python -m mist_fairseq.dev_select "$run" --data "$DATA" --data-bin "$FDATA" --task "$TASK" -- $gen_args
  fi
  # shellcheck disable=SC2086
  fairseq-generate "$FDATA" $PLUGIN $gen_args --path "$run/$CKPT" --gen-subset test --batch-size 64 \
    --required-batch-size-multiple 1 --bpe bert --bpe-vocab-file "$DATA/bin/vocab.txt" > "$run/generate-test.txt.tmp"
  mv "$run/generate-test.txt.tmp" "$run/generate-test.txt"
  n=$(grep -c '^D-' "$run/generate-test.txt"); want=$(wc -l < "$DATA/raw/test.tgt")
  [ "$n" -eq "$want" ] || { echo "$sys: $n of $want test sentences generated" >&2; exit 1; }
  python -m mist_fairseq.score --task "$TASK" "$run/generate-test.txt" --ref "$DATA/raw/test.tgt" \
    --src "$DATA/raw/test.src" --json "$run/scores.json" $SCORE_ARGS
done
