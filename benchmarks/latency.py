"""Decoding latency of MIST vs Fairseq's own AR transformer, NAT, CMLM and LevT. All figures come
from one run on one machine; speedups are computed pair by pair (same batch, same run). The
training-step benchmark (fp32 vs the CPU fast path) is benchmarks.train_step; its section of
BENCHMARK.md is kept when this script rewrites the file.

    python -m benchmarks.latency --data DATA_DIR [--n 200] [--batch-sizes 1 16] [--threads 2]
    python -m benchmarks.latency --quick            # tiny check that the script works (tests run it)

DATA_DIR is a ``python -m mist_fairseq.prepare`` output folder (its ``bin/`` test split is used;
default: the shipped quora_small, prepared on the fly into a temp folder).

Floors: "one bare model forward" is ``model(src, masks of the gold length)`` -- the source pass and
the cached target pass, with no generator around them -- so generator / floor is what the generator
adds. "fused single pass" runs ``[CLS] X [SEP] [MASK]..`` as one sequence: a generator cannot do
that, because the length must be predicted from the source before the masks exist.

MIST's semi-NAR (blocks of 4 and 2) and AR (greedy, beam 4) modes are timed on ``--modes-checkpoint``
(a model trained with the two-stream loss; default the MIST model), an AR-only model on the same
encoder on ``--ar-checkpoint``; pinned, semi-NAR gets the reference length and AR decodes exactly the
batch's longest reference length.

Method: the same N test sources go through every system; a warm-up round first; torch threads
fixed; systems interleaved batch by batch (A B C A B C ...) so that machine drift hits all alike.
Untrained weights make random length guesses, so unless every system is trained (``--mist-checkpoint``
and ``--baselines RUNS``, the folder of ``examples/baselines/run_baselines.sh``), **every system's
output length is pinned to the reference length** (AR: min = max length; NAR: the length
prediction is replaced) and the timing compares decoding algorithms. LevT's insertions and
deletions cannot be pinned: its row reports the length it actually produced. With trained
checkpoints every system decodes as it would in fairseq-generate, predicting its own length.
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.report_io import get_section, prepare_shipped_data, write_atomic

import mist_fairseq  # noqa: F401  (registers task/model/criterion)
from benchmarks.latency_report import chart, write_report
from benchmarks.latency_systems import make_systems
from mist_fairseq.generators.precision import PRECISIONS


def produced_length(result):
    if isinstance(result, torch.Tensor):
        return None
    return float(np.mean([len(h[0]["tokens"]) for h in result]))


def time_decoding(mtask, systems, args):
    ds = mtask.dataset("test")
    n = min(args.n, len(ds))
    rows = {}
    for bs in args.batch_sizes:
        batches = []
        for i in range(0, n, bs):
            sample = ds.collater([ds[j] for j in range(i, min(i + bs, n))])
            gold_len = sample["target"].ne(mtask.target_dictionary.pad()).sum(1)
            batches.append((sample, gold_len))
        with torch.no_grad():
            for sample, gold in batches[: args.warmup]:  # warm-up, untimed
                for s in systems:
                    s.fn(sample, gold)
            for sample, gold in batches:
                for s in systems:  # interleaved: A B C A B C ...
                    t = time.perf_counter()
                    out = s.fn(sample, gold)
                    dt = time.perf_counter() - t
                    s.ms.setdefault(bs, []).append(1000.0 * dt / len(gold))
                    L = produced_length(out)
                    if L is not None:
                        s.out_len.setdefault(bs, []).append(L)
        ref = systems[0].ms[bs]  # AR beam 4
        for s in systems:
            ratios = [a / b for a, b in zip(ref, s.ms[bs])]
            rows.setdefault(s.name, {})[bs] = {
                "median_ms": statistics.median(s.ms[bs]),
                "p25_ms": float(np.percentile(s.ms[bs], 25)),
                "p75_ms": float(np.percentile(s.ms[bs], 75)),
                "speedup_vs_ar_beam4": statistics.median(ratios),
                "out_len": statistics.mean(s.out_len[bs]) if s.out_len.get(bs) else None,
            }
    return rows, n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="prepare output folder (default: shipped quora_small, prepared into a temp dir)")
    p.add_argument("--n", type=int, default=200, help="test sources to decode")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--threads", type=int, default=2, help="torch threads (fixed for all systems)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up batches")
    p.add_argument("--mist-arch", default="mist_minilm_l6")
    p.add_argument("--pretrained", default="minilm", help="MIST weights: --pretrained-encoder value ('' = random)")
    p.add_argument("--mist-checkpoint", help="trained mist_nar checkpoint (its own architecture is used)")
    p.add_argument("--modes-checkpoint", help="mist_nar checkpoint trained with the two-stream loss whose semi-NAR "
                   "and AR rows are timed (default: the MIST model: the same computation; with unpinned lengths "
                   "each model's own outputs set how many steps run)")
    p.add_argument("--ctc-checkpoint", nargs="+", help="mist_nar checkpoints trained with --ctc: adds each one's "
                   "single-pass rows, named by its slot ratio (slots from the source length, never pinned)")
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(PRECISIONS),
                   help="decode the MIST single pass, the length-beam, CTC and same-encoder AR greedy and beam-4 rows in each "
                   "(--decode-precision); rows other than fp32 are named with it")
    p.add_argument("--ar-checkpoint", help="an AR-only mist_nar checkpoint (same encoder): adds its greedy and beam-4 rows")
    p.add_argument("--baselines", help="folder of trained baselines (RUNS of run_baselines.sh: ar/ nat/ cmlm/ levt/)")
    p.add_argument("--baseline-checkpoint", default="checkpoint_best.pt", help="checkpoint file name in each baseline folder")
    p.add_argument("--out", default=os.path.join(REPO, "docs"), help="where BENCHMARK.md/.json/.png go")
    p.add_argument("--name", default="BENCHMARK", help="file name (no extension) of the report in --out")
    p.add_argument("--quick", action="store_true", help="tiny models, few sentences: checks that it runs")
    p.add_argument("--only", metavar="REGEX", help="time only the systems whose name matches (Python regex); the "
                   "first system, the reference of the speedup column, is always kept")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    # untrained systems guess lengths at random: pin them unless every system is trained
    args.pin_lengths = not (args.mist_checkpoint and args.baselines)
    if args.quick:
        args.n, args.batch_sizes, args.warmup = 6, [1, 4], 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            args.data = prepare_shipped_data(os.path.join(tmp, "quora_small"))
        args.bin = os.path.join(args.data, "bin")
        if args.data.startswith(tmp):
            args.data = "the shipped quora_small (prepared into a temp folder)"
        mtask, systems = make_systems(args, tmp)
        if args.only:
            systems = systems[:1] + [s for s in systems[1:] if re.search(args.only, s.name)]
        mtask.load_dataset("test")
        rows, n = time_decoding(mtask, systems, args)
    report = write_report(rows, n, args, time.time() - t0)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    name = args.name + "_quick" if args.quick else args.name
    md = os.path.join(args.out, name + ".md")
    kept = get_section(md, "Training step")  # benchmarks.train_step's section
    write_atomic(md, report + "\n" + ("\n" + kept if kept else ""))
    write_atomic(os.path.join(args.out, name + ".json"), json.dumps({"decoding": rows}, indent=2) + "\n")
    chart(rows, args, os.path.join(args.out, name + ".png"))


if __name__ == "__main__":
    main()
