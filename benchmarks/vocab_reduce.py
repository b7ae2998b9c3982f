"""The decoding-side reductions over the vocabulary, each timed against what it replaces, one run.

    python -m benchmarks.vocab_reduce [--threads 1] [--reps 5] [--scorer CKPT --data BIN] [--out FILE.md]
    python -m benchmarks.vocab_reduce --quick        # small shapes: checks that it runs (tests)

Shapes: one fairseq-generate batch of a length beam of 5 on Quora (64 sources x 5 candidates x 14
positions = 4,480 rows, a 30,522-word vocabulary).
- choose: the NAR pass's argmax and its log-prob (max logit - logsumexp, special tokens banned),
  one-shot over the (N, V) matrix vs :func:`~mist_fairseq.models.vocab_ops.choose_rows`' row chunks;
- score: the rescorer's log p(candidate token), ``log_softmax(-1).gather`` vs gather -
  :func:`~mist_fairseq.models.vocab_ops.row_logsumexp`;
- with ``--scorer``: the separate scorer's source pass over the 5 repeated copies of each source vs
  once per source (what :class:`~mist_fairseq.generators.rerank.ARRescorer` does with ``k``).
"""

import argparse
import sys

import torch

from benchmarks.report_io import platform_line, timed_pair, write_atomic
from mist_fairseq.models.vocab_ops import choose_rows, row_logsumexp


def one_shot_choose(x, banned, keep):
    x = x.float().clone()
    lse = x.logsumexp(-1)
    keep_lp = x[:, keep] - lse
    x.index_fill_(-1, banned, float("-inf"))
    best, tokens = x.max(-1)
    return best - lse, tokens, keep_lp


def rows(args):
    torch.manual_seed(0)
    n, v = (448, 3000) if args.quick else (4480, 30522)
    x = torch.randn(n, v) * 4
    tgt = torch.randint(5, v, (n,))
    banned = torch.tensor([0, 1, 2, 3])
    out = []
    ms = timed_pair(lambda: one_shot_choose(x, banned, 2), lambda: choose_rows(x, banned, 2), args.reps)
    out.append((f"choose: argmax + log-prob, ({n}, {v}) fp32", "one shot", "row chunks", ms))
    ms = timed_pair(lambda: x.log_softmax(-1).gather(1, tgt[:, None]),
                    lambda: x.gather(1, tgt[:, None]).squeeze(1) - row_logsumexp(x), args.reps)
    out.append((f"score: log p(token), ({n}, {v}) fp32", "log_softmax + gather", "gather - chunked lse", ms))
    if args.scorer:
        from fairseq import checkpoint_utils

        models, _, task = checkpoint_utils.load_model_ensemble_and_task([args.scorer], arg_overrides={"data": args.data})
        model = models[0].eval()
        task.load_dataset("test")
        ds = task.dataset("test")
        src = ds.collater([ds[i] for i in range(64)])["net_input"]["src_tokens"]
        order = torch.arange(src.size(0)).repeat_interleave(5)
        with torch.no_grad():
            ms = timed_pair(lambda: model.encode_source(src.index_select(0, order)),
                            lambda: model.encode_source(src).index_select(order), args.reps)
        out.append(("scorer source pass, 64 sources x 5 candidates", "per candidate", "per source", ms))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--scorer", help="a mist_nar checkpoint: adds the scorer source-pass row")
    p.add_argument("--data", help="its data folder (bin), for --scorer")
    p.add_argument("--quick", action="store_true", help="small shapes (tests)")
    p.add_argument("--out", help="write the table here (markdown)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cmd = " ".join(["python -m benchmarks.vocab_reduce", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"`{cmd}` on {platform_line()}, {args.threads} thread(s), median of {args.reps}", "",
             "| operation | before | after | before ms | after ms | speed-up |", "|---|---|---|---:|---:|---:|"]
    for name, a, b, (slow, fast) in rows(args):
        lines.append(f"| {name} | {a} | {b} | {slow:.1f} | {fast:.1f} | {slow / fast:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
