"""Decoding latency of MIST vs Fairseq's own AR transformer, NAT, CMLM and LevT. All figures come
from one run on one machine; speedups are computed pair by pair (same batch, same run). The
training-step benchmark (fp32 vs the CPU fast path) is benchmarks/train_step.py; its section of
BENCHMARK.md is kept when this script rewrites the file.

    python benchmarks/latency.py --data DATA_DIR [--n 200] [--batch-sizes 1 16] [--threads 2]
    python benchmarks/latency.py --quick            # tiny check that the script works (tests run it)

DATA_DIR is a ``python -m mist_fairseq.prepare`` output folder (its ``bin/`` test split is used;
default: the shipped quora_small, prepared on the fly into a temp folder).

Floors: "one bare model forward" is ``model(src, masks of the gold length)`` -- the source pass and
the cached target pass, with no generator around them -- so generator / floor is what the generator
adds. "fused single pass" runs ``[CLS] X [SEP] [MASK]..`` as one sequence: a generator cannot do
that, because the length must be predicted from the source before the masks exist.

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
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report_io import get_section, platform_line, prepare_shipped_data, write_atomic  # noqa: E402

import mist_fairseq  # noqa: E402,F401  (registers task/model/criterion)
from fairseq import options, tasks  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator  # noqa: E402

from mist_fairseq.generators.mist_generator import MistGenerator  # noqa: E402


def build(argv):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).eval()
    return task, model


def baseline_dir(mist_bin, tmp):
    """A data folder whose dict files Fairseq's standard Dictionary reads: BERT's tokens after
    Fairseq's 4 specials, so a BERT id i is id i + 4 there."""
    d = os.path.join(tmp, "fairseq_dict")
    os.makedirs(d, exist_ok=True)
    for lang in ("src", "tgt"):
        with open(os.path.join(mist_bin, f"dict.{lang}.txt")) as f, open(os.path.join(d, f"dict.{lang}.txt"), "w") as g:
            g.write(f.read())
    return d


class System:
    """A timed row: fn(sample, gold_len) decodes one batch; ms and produced lengths are collected."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn
        self.ms = {}  # batch size -> list of per-sentence ms
        self.out_len = {}


def build_mist(args):
    """The MIST model the benchmark times: the preset with MiniLM weights (tiny in --quick)."""
    argv = [args.bin, "--task", "mist_nar", "--arch", args.mist_arch, "--criterion", "mist"]
    if args.quick:
        argv += ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
                 "--encoder-attention-heads", "4"]
    elif args.pretrained:
        argv += ["--pretrained-encoder", args.pretrained]
    return build(argv)


def make_systems(args, tmp):
    if args.mist_checkpoint:  # a trained model, built from its own configuration
        from fairseq import checkpoint_utils

        models, _, mtask = checkpoint_utils.load_model_ensemble_and_task(
            [args.mist_checkpoint], arg_overrides={"data": args.bin})
        mist = models[0].eval()
    else:
        mtask, mist = build_mist(args)
    d = mtask.target_dictionary

    def pinned(gen):
        def fn(sample, gold_len):
            if args.pin_lengths:
                gen.predict_lengths = lambda model, state: gold_len.view(-1, 1)
            return gen.generate([mist], sample)
        return fn

    def floor(sample, gold_len):  # the model's own forward: source pass + target pass, no generator
        return mist(sample["net_input"]["src_tokens"], None, mist.masked_target(gold_len))[0]

    def fused(sample, gold_len):  # one pass over [CLS] X [SEP] [MASK]..: only possible if L is known
        src = sample["net_input"]["src_tokens"]
        h = mist.encoder.forward_full(mist.add_cls(src), mist.masked_target(gold_len))
        return mist.mlm_head(h[:, -int(gold_len.max()):])

    systems = [
        System("MIST single pass", pinned(MistGenerator(d))),
        System("MIST single pass, no K/V cache", pinned(MistGenerator(d, use_cache=False))),
        System("MIST 3 iterations", pinned(MistGenerator(d, decode_iters=3))),
        System("Mask-Predict 3 iterations (MIST model)", pinned(MistGenerator(d, decode_iters=3, strategy="mask-predict"))),
        System("floor: one bare model forward", floor),
        System("fused single pass, gold length given", fused),
    ]

    bdir = baseline_dir(args.bin, tmp)
    size = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
            "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128"] if args.quick else []
    common = [bdir, "--source-lang", "src", "--target-lang", "tgt", "--share-all-embeddings"] + size

    def to_fairseq(sample, fdict):
        src = sample["net_input"]["src_tokens"]
        pad = d.pad()
        ids = torch.where(src.eq(d.eos()), torch.full_like(src, fdict.eos()), src + fdict.nspecial)
        ids = ids.masked_fill(src.eq(pad), fdict.pad())
        return {"net_input": {"src_tokens": ids, "src_lengths": src.ne(pad).sum(1)}, "id": sample["id"]}

    def baseline(name, argv):
        """A trained baseline from RUNS/<name>/ (its own sizes), else an untrained one from argv."""
        if not args.baselines:
            return build(common + argv)
        from fairseq import checkpoint_utils

        path = os.path.join(args.baselines, name, args.baseline_checkpoint)
        if not os.path.exists(path):
            sys.exit(f"error: {path} not found: train it with examples/baselines/run_baselines.sh (SYSTEMS={name})")
        models, _, btask = checkpoint_utils.load_model_ensemble_and_task(
            [path], arg_overrides={"data": bdir, "source_lang": "src", "target_lang": "tgt"})
        return btask, models[0].eval()

    atask, ar = baseline("ar", ["--task", "translation", "--arch", "transformer"])
    fdict = atask.target_dictionary

    def ar_fn(beam):
        def fn(sample, gold_len):
            if args.pin_lengths:
                L = int(gold_len.max()) - 1  # + the EOS step = the reference length (which counts [SEP])
                lengths = dict(max_len_a=0, max_len_b=L, min_len=L)
            else:  # fairseq-generate's defaults
                lengths = dict(max_len_a=0, max_len_b=200, min_len=1)
            gen = SequenceGenerator([ar], fdict, beam_size=beam, len_penalty=1.0, **lengths)
            return gen.generate([ar], to_fairseq(sample, fdict))
        return fn

    systems.insert(0, System("AR transformer, beam 4", ar_fn(4)))
    systems.insert(1, System("AR transformer, greedy", ar_fn(1)))

    def nar(name, arch, max_iter, adaptive, extra=()):
        ntask, model = baseline(name, ["--task", "translation_lev", "--arch", arch, "--criterion", "nat_loss",
                                       "--noise", "full_mask", *extra])
        gen = IterativeRefinementGenerator(ntask.target_dictionary, max_iter=max_iter, adaptive=adaptive, beam_size=1)
        pin = {}
        if args.pin_lengths and hasattr(model.decoder, "forward_length_prediction"):
            orig = model.decoder.forward_length_prediction

            def fixed(length_out, encoder_out, tgt_tokens=None):
                orig(length_out, encoder_out, tgt_tokens)
                return pin["len"]

            model.decoder.forward_length_prediction = fixed

        def fn(sample, gold_len):
            pin["len"] = gold_len + 1  # Fairseq NAR targets hold <s> ... </s>; ours end in [SEP]
            return gen.generate([model], to_fairseq(sample, ntask.target_dictionary))
        return fn

    systems.append(System("NAT (single pass)", nar("nat", "nonautoregressive_transformer", 0, False,
                                                   ["--pred-length-offset", "--length-loss-factor", "0.1"])))
    systems.append(System("CMLM, 10 iterations", nar("cmlm", "cmlm_transformer", 9, False)))
    levt = "LevT (up to 10 iterations" + (", length not pinned)" if args.pin_lengths else ")")
    systems.append(System(levt, nar("levt", "levenshtein_transformer", 9, True)))
    return mtask, systems


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


def write_report(rows, n, args, wall):
    lines = [
        "# Benchmark: decoding latency and training step",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPU cores "
        f"({platform_line()}), torch {torch.__version__}, {args.threads} threads, one run ({wall:.0f} s).",
        "",
        f"Command: `python benchmarks/latency.py {' '.join(args.argv)}`",
        "",
        f"{n} test sources of `{args.data}`; milliseconds per sentence (median, [p25, p75] over batches); "
        "speedup = AR beam-4 ms / system ms, median over the same batches. "
        + ("Output lengths pinned to the reference (see the script's docstring)" if args.pin_lengths
           else "Every system predicts its own output length, as in fairseq-generate")
        + "; MIST weights: "
        + (args.mist_checkpoint or (f"{args.pretrained} + fresh heads" if args.pretrained and not args.quick else "random"))
        + "; baselines: "
        + (f"trained, {args.baselines}/*/{args.baseline_checkpoint}" if args.baselines
           else "untrained, Fairseq default (base) sizes") + ".",
        "",
    ]
    for bs in args.batch_sizes:
        lines += [f"## Batch size {bs}", "", "| system | ms/sentence | [p25, p75] | speedup vs AR beam 4 | output tokens (MIST: after dedup) |",
                  "|---|---:|---:|---:|---:|"]
        for name, r in rows.items():
            x = r[bs]
            out = f"{x['out_len']:.1f}" if x["out_len"] is not None else "-"
            lines.append(f"| {name} | {x['median_ms']:.2f} | [{x['p25_ms']:.2f}, {x['p75_ms']:.2f}] | "
                         f"{x['speedup_vs_ar_beam4']:.1f}x | {out} |")
        lines.append("")
    return "\n".join(lines)


def chart(rows, args, path):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # it logs its set-up at DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, len(args.batch_sizes), figsize=(6 * len(args.batch_sizes), 0.45 * len(names) + 1.5))
    axes = np.atleast_1d(axes)
    for ax, bs in zip(axes, args.batch_sizes):
        vals = [rows[n][bs]["median_ms"] for n in names]
        ax.barh(range(len(names)), vals, color=["#888" if n.startswith(("AR", "NAT", "CMLM", "LevT")) else "#2a7" for n in names])
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.1f}", va="center", fontsize=7)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if ax is axes[0] else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(vals) * 1.15)
        ax.set_xlabel("ms / sentence (median)")
        ax.set_title(f"batch {bs}")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


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
    p.add_argument("--baselines", help="folder of trained baselines (RUNS of run_baselines.sh: ar/ nat/ cmlm/ levt/)")
    p.add_argument("--baseline-checkpoint", default="checkpoint_best.pt", help="checkpoint file name in each baseline folder")
    p.add_argument("--out", default=os.path.join(REPO, "docs"), help="where BENCHMARK.md/.json/.png go")
    p.add_argument("--name", default="BENCHMARK", help="file name (no extension) of the report in --out")
    p.add_argument("--quick", action="store_true", help="tiny models, few sentences: checks that it runs")
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
        mtask.load_dataset("test")
        rows, n = time_decoding(mtask, systems, args)
    report = write_report(rows, n, args, time.time() - t0)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    name = args.name + "_quick" if args.quick else args.name
    md = os.path.join(args.out, name + ".md")
    kept = get_section(md, "Training step")  # benchmarks/train_step.py's section
    write_atomic(md, report + "\n" + ("\n" + kept if kept else ""))
    write_atomic(os.path.join(args.out, name + ".json"), json.dumps({"decoding": rows}, indent=2) + "\n")
    chart(rows, args, os.path.join(args.out, name + ".png"))


if __name__ == "__main__":
    main()
