"""Probes whether a trained ``mist_nar`` checkpoint reads its pseudo target Y_p (why MIST helps or not).

    python -m mist_fairseq.probe CKPT [CKPT ...] --data-bin DATA/bin [--subset valid] [--json OUT]

On the dev split (never test: this is for analysis), with gold target lengths, for each checkpoint.
The first pass over an all-[MASK] target is the draft (one-pass decoding); the mixed pass reads
``[CLS] Y_p [SEP] X [SEP] [MASK]...`` and is run with four pseudo targets Y_p:

- ``own``: the model's own draft -- MIST's second decoding step (``--mist-decode-iters 2``);
- ``gold``: the gold target. The **oracle gap** = gold - own, in accuracy points and in BLEU-4 of
  the decoded text: how much better the mixed pass gets when its draft is right. A model that
  ignores Y_p has a gap near 0;
- ``shuffled``: another dev example's draft (same target length where the batch has one): the
  control that tells whether Y_p is read as *this* example's draft. Own clearly above shuffled =
  the model reads its draft; shuffled near masked = an unrelated draft is no worse than none;
- ``masked``: Y_p all [MASK] (no draft at all).

Also: ``fix_rate`` (Y_p wrong -> mixed pass right), ``keep_rate`` (Y_p right -> still right),
``copy_rate`` (mixed output equals Y_p); BLEU-4 of decoding with *predicted* lengths, one pass and
MIST iterative with one feed-back step (``decode_1pass_bleu``, ``decode_mist2_bleu``), so the
mechanism and the decoding agree; and the training terms under one glancing draw (``--glat-ratio``,
seeded), scored at its [MASK] positions: the plain pass (L_NAT's input) and the mixed pass over the
glanced pass's own argmax as Y_p (L_MIST's input, as ``--pseudo-from glanced`` trains it).
BLEU-4 here is single-reference corpus BLEU on the lowercased words (the scorer's normalisation).

Prints one line per checkpoint and writes all numbers as JSON with ``--json``.
"""

import argparse
import os
import sys
from typing import Dict, List, Tuple

import numpy as np
import torch

from mist_fairseq import score as scorer
from mist_fairseq.generators.mist_generator import MistGenerator, dedup_consecutive

CONDITIONS = ("own", "gold", "shuffled", "masked")


def shuffle_partners(lengths: torch.Tensor) -> torch.Tensor:
    """(B,) target lengths -> (B,) index of another example whose draft stands in for each one's:
    the next example of the same length (a rotation within each length group), or, for a length
    seen once, its neighbour in length order. A batch of one keeps itself."""
    order = sorted(range(len(lengths)), key=lambda i: (int(lengths[i]), i))
    partner = list(range(len(lengths)))
    groups: Dict[int, List[int]] = {}
    for i in order:
        groups.setdefault(int(lengths[i]), []).append(i)
    for members in groups.values():
        if len(members) > 1:
            for k, i in enumerate(members):
                partner[i] = members[(k + 1) % len(members)]
    if len(order) > 1:
        for k, i in enumerate(order):
            if len(groups[int(lengths[i])]) == 1:
                partner[i] = order[k + 1] if k + 1 < len(order) else order[k - 1]
    return torch.tensor(partner, dtype=torch.long, device=lengths.device)


@torch.no_grad()
def probe_batch(model, src: torch.Tensor, gold: torch.Tensor, glat_ratio: float,
                gen: MistGenerator) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
    """src: (B, S) source tokens; gold: (B, T) padded gold targets (final [SEP] included).
    Returns summed counts for :func:`finish` and the decoded tokens (B, T) of the draft and of each
    mixed-pass condition, for BLEU."""
    from mist_fairseq.criterions.mist import glance, scatter_argmax

    real = gold.ne(model.pad)
    lengths, width = real.sum(1), gold.size(1)
    all_mask = model.masked_target(lengths, width, src_tokens=src)  # the copied source under --target-input copy
    plain = model.encode_source(src)
    draft, _ = gen.predict_pass(model, plain, all_mask, src)  # Y_p: one-pass decoding, gold lengths
    partner = shuffle_partners(lengths)
    pseudos = {
        "own": draft,
        "gold": gold,
        "shuffled": draft.index_select(0, partner),
        "masked": all_mask,
    }
    tokens = {"draft": draft}
    out = {"tokens": int(real.sum()), "pseudo_right": int(((draft == gold) & real).sum()),
           "shuffled_same_length": int((lengths.index_select(0, partner) == lengths).sum()),
           "shuffled_self": int((partner == torch.arange(len(partner), device=partner.device)).sum())}
    for name, pseudo in pseudos.items():
        mixed_src = model.mix_source(pseudo, src)
        tokens[name], _ = gen.predict_pass(model, model.encode_source(mixed_src), all_mask, mixed_src)
        out[f"{name}_correct"] = int(((tokens[name] == gold) & real).sum())
    right = (draft == gold) & real
    own = tokens["own"]
    out.update(
        fixed=int(((own == gold) & real & ~right).sum()),
        kept_right=int(((own == gold) & right).sum()),
        copied=int(((own == draft) & real).sum()),
    )

    # the two training terms under one glancing draw (Hamming of the draft, as --glat-hamming first)
    y_in = glance(gold, draft, glat_ratio, model.pad, model.mask_idx)
    scored = y_in.eq(model.mask_idx)
    plain_logits = model.decode_target(plain, y_in, real)
    glanced_pseudo = scatter_argmax(plain_logits, real, model.pad)
    mixed = model.encode_source(model.mix_source(glanced_pseudo, src))
    for name, logits in (("plain", plain_logits[scored[real]]),
                         ("mixed", model.decode_target(mixed, y_in, scored))):
        lprobs = torch.log_softmax(logits.float(), -1)
        out[f"glanced_{name}_correct"] = int((lprobs.argmax(-1) == gold[scored]).sum())
        out[f"glanced_{name}_nll_sum"] = float(-lprobs.gather(1, gold[scored].unsqueeze(1)).sum())
    out["scored"] = int(scored.sum())
    return out, tokens


def finish(c: Dict[str, float]) -> Dict[str, float]:
    pct = lambda a, b: 100.0 * a / b if b else float("nan")  # noqa: E731
    wrong = c["tokens"] - c["pseudo_right"]
    r = {"tokens": c["tokens"], "first_pass_acc": pct(c["pseudo_right"], c["tokens"])}
    for name in CONDITIONS:
        r[f"mixed_acc_{name}"] = pct(c[f"{name}_correct"], c["tokens"])
    r.update(
        oracle_gap_acc=r["mixed_acc_gold"] - r["mixed_acc_own"],
        shuffled_drop_acc=r["mixed_acc_own"] - r["mixed_acc_shuffled"],
        fix_rate=pct(c["fixed"], wrong),
        keep_rate=pct(c["kept_right"], c["pseudo_right"]),
        copy_rate=pct(c["copied"], c["tokens"]),
        glanced_scored=c["scored"],
        glanced_plain_acc=pct(c["glanced_plain_correct"], c["scored"]),
        glanced_mixed_acc=pct(c["glanced_mixed_correct"], c["scored"]),
        glanced_plain_nll=c["glanced_plain_nll_sum"] / c["scored"] if c["scored"] else float("nan"),
        glanced_mixed_nll=c["glanced_mixed_nll_sum"] / c["scored"] if c["scored"] else float("nan"),
    )
    return r


def corpus_bleu4(hyps: List[str], refs: List[str]) -> float:
    """Single-reference corpus BLEU-4 (0..100) after the scorer's normalisation."""
    stats = sum(scorer.bleu_stats(scorer.normalize(h), [scorer.normalize(r)]) for h, r in zip(hyps, refs))
    return 100.0 * scorer.bleu_from_stats(np.asarray(stats))[3]


def to_text(tgt_dict, tokens: torch.Tensor, pad: int) -> List[str]:
    """(B, T) ids -> WordPiece strings, consecutive duplicates merged as the generator does."""
    scores = torch.zeros(tokens.shape)
    tokens, _ = dedup_consecutive(tokens, scores, pad)
    return [tgt_dict.string(t[t.ne(pad)]) for t in tokens]


def probe_checkpoint(path: str, data_bin: str, subset: str, batch_size: int, max_sentences: int,
                     glat_ratio: float, seed: int, shards: int = 1, raw_dir: str = None) -> Dict[str, float]:
    from fairseq import checkpoint_utils  # the mist_fairseq package, imported above, registers the task/model

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data_bin})
    model = models[0].eval()
    if not hasattr(model, "mix_source"):
        raise ValueError(f"{path}: not a mist_nar checkpoint (arch {type(model).__name__})")
    tgt_dict = task.target_dictionary
    gens = {"probe": MistGenerator(tgt_dict, dedup=False), "decode_1pass": MistGenerator(tgt_dict),
            "decode_mist2": MistGenerator(tgt_dict, decode_iters=2)}
    task.load_dataset(subset)
    itr = task.get_batch_iterator(dataset=task.dataset(subset), max_sentences=batch_size,
                                  max_positions=model.max_positions(), num_shards=shards,
                                  shard_id=0).next_epoch_itr(shuffle=False)
    torch.manual_seed(seed)  # the glancing positions
    counts, seen, texts, ids = {}, 0, {}, []
    for sample in itr:
        if max_sentences and seen >= max_sentences:
            break
        seen += sample["nsentences"]
        c, toks = probe_batch(model, sample["net_input"]["src_tokens"], sample["target"], glat_ratio, gens["probe"])
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
        ids += sample["id"].tolist()
        for name, t in toks.items():
            texts.setdefault(name, []).extend(to_text(tgt_dict, t, model.pad))
        for name in ("decode_1pass", "decode_mist2"):  # predicted lengths, as fairseq-generate decodes
            hyps = gens[name].generate([model], sample)
            texts.setdefault(name, []).extend(tgt_dict.string(h[0]["tokens"]) for h in hyps)
    if not counts:
        raise ValueError(f"{data_bin}: no {subset} sentences")
    result = dict(finish(counts), sentences=seen,
                  shuffled_same_length=100.0 * counts["shuffled_same_length"] / seen,
                  shuffled_self=counts["shuffled_self"])
    ref_path = os.path.join(raw_dir, f"{subset}.tgt") if raw_dir else None
    if ref_path and os.path.exists(ref_path):
        refs_all = scorer.read_lines(ref_path)
        refs = [refs_all[i] for i in ids]
        bleu = {name: corpus_bleu4(hyps, refs) for name, hyps in texts.items()}
        result["first_pass_bleu"] = bleu.pop("draft")
        for name in CONDITIONS:
            result[f"mixed_bleu_{name}"] = bleu[name]
        result["oracle_gap_bleu"] = bleu["gold"] - bleu["own"]
        result["decode_1pass_bleu"], result["decode_mist2_bleu"] = bleu["decode_1pass"], bleu["decode_mist2"]
    return result


def summary_line(ck: str, r: Dict[str, float]) -> str:
    line = (f"{ck}\tdraft {r['first_pass_acc']:.1f}%\tmixed given own Y_p {r['mixed_acc_own']:.1f}%, "
            f"gold {r['mixed_acc_gold']:.1f}% (oracle gap {r['oracle_gap_acc']:+.1f}), shuffled "
            f"{r['mixed_acc_shuffled']:.1f}%, masked {r['mixed_acc_masked']:.1f}%\tfix {r['fix_rate']:.1f}% "
            f"keep {r['keep_rate']:.1f}%")
    if "oracle_gap_bleu" in r:
        line += (f"\tBLEU-4 own {r['mixed_bleu_own']:.2f} gold {r['mixed_bleu_gold']:.2f} (oracle gap "
                 f"{r['oracle_gap_bleu']:+.2f}); decoding 1 pass {r['decode_1pass_bleu']:.2f}, "
                 f"MIST 2 passes {r['decode_mist2_bleu']:.2f}")
    return line


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="mist_nar checkpoints (any mix mode)")
    p.add_argument("--data-bin", required=True, help="binarized data (a `prepare` output's bin/)")
    p.add_argument("--data", help="the `prepare` output folder whose raw/SUBSET.tgt holds the references for "
                                  "the BLEU figures (default: the folder above --data-bin; no BLEU if absent)")
    p.add_argument("--subset", default="valid", help="split to probe (never the test split)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    p.add_argument("--max-sentences", type=int, default=0,
                   help="stop after about this many sentences (0: all); batches come shortest first, so this "
                        "probes short sentences only: for a subset over all lengths use --shards")
    p.add_argument("--shards", type=int, default=1,
                   help="probe only the first of this many Fairseq batch shards (every N-th length-sorted batch), "
                        "like dev_select --dev-shards")
    p.add_argument("--glat-ratio", type=float, default=0.5, help="glancing ratio of the probed training terms")
    p.add_argument("--seed", type=int, default=1, help="seed of the glancing positions")
    p.add_argument("--json", help="write {checkpoint: numbers} here")
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error(f"--shards {args.shards}: give 1 (all of the split) or more")
    if args.subset == "test":
        p.error("--subset test: probe on dev data; the test set is scored once, for the tables")
    raw_dir = os.path.join(args.data or os.path.dirname(os.path.abspath(args.data_bin)), "raw")
    results = {}
    for ck in args.checkpoints:
        if not os.path.exists(ck):
            sys.exit(f"error: {ck}: no such checkpoint")
        try:
            r = probe_checkpoint(ck, args.data_bin, args.subset, args.batch_size, args.max_sentences,
                                 args.glat_ratio, args.seed, args.shards, raw_dir)
        except (ValueError, FileNotFoundError, scorer.ScoreError) as e:
            sys.exit(f"error: {e}")
        results[ck] = r
        print(summary_line(ck, r), flush=True)
    if args.json:
        scorer.write_json(args.json, results)


if __name__ == "__main__":
    main()
