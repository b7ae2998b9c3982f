"""Probes what a trained ``mist_nar`` checkpoint does with a pseudo target (why MIST helps or not).

    python -m mist_fairseq.probe CKPT [CKPT ...] --data-bin DATA/bin [--subset valid] [--json OUT]

On the dev split (never test: this is for analysis), with gold target lengths, for each checkpoint:

- ``first_pass_acc``: token accuracy of one pass over an all-[MASK] target -- the pseudo target Y_p
  that MIST training mixes into the source (the ``pred_acc`` of the training log, on dev).
- ``mixed_acc``: accuracy of a pass over ``[CLS] Y_p [SEP] X [SEP] [MASK]...``, overall and split by
  whether Y_p was right at that position (``..._where_pseudo_right`` / ``..._where_pseudo_wrong``),
  and ``mixed_kept_pseudo``: the share of positions where the mixed pass outputs Y_p's token.
  A model that only copies Y_p has ~100% where Y_p is right and ~0% where it is wrong.
- ``oracle_mixed_acc``: the same pass with the gold target as Y_p (how much the model reads Y_p).
- Glancing: one GLAT input (``--glat-ratio`` of the first pass's Hamming distance revealed, seeded)
  scored at its [MASK] positions, by the plain pass (the NAT loss term's input) and by the mixed pass
  (MIST's term): ``glanced_{plain,mixed}_acc`` and ``..._nll`` (mean negative log-likelihood, nats).
  A mixed term much easier than the plain one gives the shared weights little extra signal.

Prints one line per checkpoint and writes all numbers as JSON with ``--json``.
"""

import argparse
import os
import sys
from typing import Dict

import torch

from mist_fairseq import score as scorer


@torch.no_grad()
def probe_batch(model, src: torch.Tensor, gold: torch.Tensor, glat_ratio: float) -> Dict[str, float]:
    """src: (B, S) source tokens; gold: (B, T) padded gold targets (final [SEP] included).
    Returns summed counts (accuracy numerators/denominators and NLL sums) for :func:`finish`."""
    from mist_fairseq.criterions.mist import glance

    real = gold.ne(model.pad)
    lengths, width = real.sum(1), gold.size(1)
    all_mask = model.masked_target(lengths, width)
    plain = model.encode_source(src)
    pred = model.decode_target(plain, all_mask).argmax(-1).masked_fill(~real, model.pad)  # Y_p, (B, T)
    mixed = model.encode_source(model.mix_source(pred, src))
    mixed_pred = model.decode_target(mixed, all_mask).argmax(-1)
    oracle = model.encode_source(model.mix_source(gold, src))
    oracle_pred = model.decode_target(oracle, all_mask).argmax(-1)
    right = (pred == gold) & real

    y_in = glance(gold, pred, glat_ratio, model.pad, model.mask_idx)
    scored = y_in.eq(model.mask_idx)
    out = {}
    for name, state in (("plain", plain), ("mixed", mixed)):
        lprobs = torch.log_softmax(model.decode_target(state, y_in, scored).float(), -1)
        out[f"glanced_{name}_correct"] = int((lprobs.argmax(-1) == gold[scored]).sum())
        out[f"glanced_{name}_nll_sum"] = float(-lprobs.gather(1, gold[scored].unsqueeze(1)).sum())
    out.update(
        tokens=int(real.sum()), scored=int(scored.sum()), pseudo_right=int(right.sum()),  # = first pass correct
        mixed_correct=int(((mixed_pred == gold) & real).sum()),
        mixed_correct_where_right=int(((mixed_pred == gold) & right).sum()),
        mixed_correct_where_wrong=int(((mixed_pred == gold) & real & ~right).sum()),
        mixed_kept=int(((mixed_pred == pred) & real).sum()),
        oracle_correct=int(((oracle_pred == gold) & real).sum()),
    )
    return out


def finish(c: Dict[str, float]) -> Dict[str, float]:
    pct = lambda a, b: 100.0 * a / b if b else float("nan")  # noqa: E731
    wrong = c["tokens"] - c["pseudo_right"]
    return {
        "tokens": c["tokens"],
        "first_pass_acc": pct(c["pseudo_right"], c["tokens"]),
        "mixed_acc": pct(c["mixed_correct"], c["tokens"]),
        "mixed_acc_where_pseudo_right": pct(c["mixed_correct_where_right"], c["pseudo_right"]),
        "mixed_acc_where_pseudo_wrong": pct(c["mixed_correct_where_wrong"], wrong),
        "mixed_kept_pseudo": pct(c["mixed_kept"], c["tokens"]),
        "oracle_mixed_acc": pct(c["oracle_correct"], c["tokens"]),
        "glanced_scored": c["scored"],
        "glanced_plain_acc": pct(c["glanced_plain_correct"], c["scored"]),
        "glanced_mixed_acc": pct(c["glanced_mixed_correct"], c["scored"]),
        "glanced_plain_nll": c["glanced_plain_nll_sum"] / c["scored"] if c["scored"] else float("nan"),
        "glanced_mixed_nll": c["glanced_mixed_nll_sum"] / c["scored"] if c["scored"] else float("nan"),
    }


def probe_checkpoint(path: str, data_bin: str, subset: str, batch_size: int, max_sentences: int,
                     glat_ratio: float, seed: int, shards: int = 1) -> Dict[str, float]:
    from fairseq import checkpoint_utils  # the mist_fairseq package, imported above, registers the task/model

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data_bin})
    model = models[0].eval()
    if not hasattr(model, "mix_source"):
        raise ValueError(f"{path}: not a mist_nar checkpoint (arch {type(model).__name__})")
    task.load_dataset(subset)
    itr = task.get_batch_iterator(dataset=task.dataset(subset), max_sentences=batch_size,
                                  max_positions=model.max_positions(), num_shards=shards,
                                  shard_id=0).next_epoch_itr(shuffle=False)
    torch.manual_seed(seed)  # the glancing positions
    counts, seen = {}, 0
    for sample in itr:
        if max_sentences and seen >= max_sentences:
            break
        seen += sample["nsentences"]
        for k, v in probe_batch(model, sample["net_input"]["src_tokens"], sample["target"], glat_ratio).items():
            counts[k] = counts.get(k, 0) + v
    if not counts:
        raise ValueError(f"{data_bin}: no {subset} sentences")
    return dict(finish(counts), sentences=seen)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="mist_nar checkpoints (any mix mode)")
    p.add_argument("--data-bin", required=True, help="binarized data (a `prepare` output's bin/)")
    p.add_argument("--subset", default="valid", help="split to probe (never the test split)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    p.add_argument("--max-sentences", type=int, default=0,
                   help="stop after about this many sentences (0: all); batches come shortest first, so this "
                        "probes short sentences only: for a subset over all lengths use --shards")
    p.add_argument("--shards", type=int, default=1,
                   help="probe only the first of this many Fairseq batch shards (every N-th length-sorted batch), "
                        "like dev_select --dev-shards")
    p.add_argument("--glat-ratio", type=float, default=0.5, help="glancing ratio of the probed GLAT input")
    p.add_argument("--seed", type=int, default=1, help="seed of the glancing positions")
    p.add_argument("--json", help="write {checkpoint: numbers} here")
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error(f"--shards {args.shards}: give 1 (all of the split) or more")
    if args.subset == "test":
        p.error("--subset test: probe on dev data; the test set is scored once, for the tables")
    results = {}
    for ck in args.checkpoints:
        if not os.path.exists(ck):
            sys.exit(f"error: {ck}: no such checkpoint")
        try:
            r = probe_checkpoint(ck, args.data_bin, args.subset, args.batch_size, args.max_sentences,
                                 args.glat_ratio, args.seed, args.shards)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: {e}")
        results[ck] = r
        print(f"{ck}\tfirst pass {r['first_pass_acc']:.1f}%\tmixed {r['mixed_acc']:.1f}% "
              f"(Y_p right {r['mixed_acc_where_pseudo_right']:.1f}%, wrong {r['mixed_acc_where_pseudo_wrong']:.1f}%, "
              f"kept Y_p {r['mixed_kept_pseudo']:.1f}%)\toracle Y_p {r['oracle_mixed_acc']:.1f}%\t"
              f"glanced plain {r['glanced_plain_acc']:.1f}% / {r['glanced_plain_nll']:.2f} nats, "
              f"mixed {r['glanced_mixed_acc']:.1f}% / {r['glanced_mixed_nll']:.2f}", flush=True)
    if args.json:
        scorer.write_json(args.json, results)


if __name__ == "__main__":
    main()
