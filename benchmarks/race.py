"""The serving race: our generator (PyTorch, ONNX fp32, ONNX int8) against what a user would deploy
instead -- a Fairseq AR transformer of about the same size, trained on the same data, converted to
CTranslate2 int8 (greedy and beam 4). Text in, text out for every system (WordPiece tokenization and
detokenization included), the same N test sources, one run on one machine, systems interleaved
batch by batch in a rotating order after a warm-up round. BLEU-4 / iBLEU of each system's outputs on
those N sources beside its latency.

    python -m benchmarks.race --data DATA --mist RUN/checkpoint_dev_best.pt --export EXPORT_DIR \
        --fairseq-ar AR_RUN/checkpoint_dev_best.pt --fairseq-data AR_RUNS/bin [--n 200] [--threads 2]

DATA is the ``python -m mist_fairseq.prepare`` folder (bin/ for the MIST model, raw/test.* for the
sources and references). Several ``--mist`` checkpoints (with as many ``--export`` folders, in the
same order) race side by side, their rows named by checkpoint file. The AR checkpoint is converted once with CTranslate2's Fairseq converter
(int8 weights) into ct2_int8/ beside it unless --ct2 names a converted folder. Writes OUT/RACE.md,
RACE.json and RACE.png.
"""

import argparse
import json
import os
import statistics
import sys
import time
from argparse import Namespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.report_io import platform_line, write_atomic


def convert_ar(checkpoint, fairseq_data, out):
    """A Fairseq transformer checkpoint -> a CTranslate2 folder with int8 weights."""
    from ctranslate2.converters import FairseqConverter

    if not os.path.exists(os.path.join(out, "model.bin")):
        FairseqConverter(checkpoint, fairseq_data, source_lang="src", target_lang="tgt",
                         user_dir=os.path.join(REPO, "mist_fairseq")).convert(out, quantization="int8", force=True)
    return out


class CT2System:
    """CTranslate2 Translator behind generate(list[str]) -> list[str], with the same BERT WordPiece
    tokenizer as the MIST models (the AR model was trained on those WordPieces)."""

    def __init__(self, path, vocab, beam, threads, max_len):
        import ctranslate2
        from fairseq.data.encoders.hf_bert_bpe import BertBPE

        self.tr = ctranslate2.Translator(path, device="cpu", compute_type="int8", intra_threads=threads or 0,
                                         inter_threads=1)
        self.bpe = BertBPE(Namespace(bpe_cased=False, bpe_vocab_file=vocab))
        self.beam, self.max_len = beam, max_len

    def generate(self, sentences):
        batch = [self.bpe.encode(s).split() for s in sentences]
        res = self.tr.translate_batch(batch, beam_size=self.beam, max_decoding_length=self.max_len,
                                      length_penalty=1.0, return_scores=False)
        return [self.bpe.decode(" ".join(r.hypotheses[0])) for r in res]


def build_systems(args):
    from mist_fairseq import MistModel
    from mist_fairseq.export import OnnxMistModel

    bs = max(args.batch_sizes)
    systems = {}
    for ckpt, export in zip(args.mist, args.export):
        # one checkpoint: the plain names; several: each named by its file
        tag = f" [{os.path.basename(ckpt)}]" if len(args.mist) > 1 else ""
        mist = MistModel.from_pretrained(os.path.dirname(os.path.abspath(ckpt)), checkpoint_file=os.path.basename(ckpt),
                                         data_name_or_path=os.path.join(args.data, "bin"), threads=args.threads,
                                         batch_size=bs)
        systems[f"MIST, PyTorch fp32{tag}"] = mist.generate
        for p in ("fp32", "int8"):
            systems[f"MIST, ONNX Runtime {p}{tag}"] = OnnxMistModel(export, precision=p, threads=args.threads,
                                                                    batch_size=bs).generate
        # int8 decodes one input a pass by default (its activation scales depend on the batch); what
        # batching it would gain, at the price of answers that change with their batch mates
        systems[f"MIST, ONNX Runtime int8, batched (batch-dependent){tag}"] = OnnxMistModel(
            export, precision="int8", threads=args.threads, batch_size=bs, batch_invariant=False).generate
    if args.fairseq_ar or args.ct2:
        ct2 = args.ct2 or convert_ar(args.fairseq_ar, args.fairseq_data,
                                     os.path.join(os.path.dirname(os.path.abspath(args.fairseq_ar)), "ct2_int8"))
        vocab = os.path.join(args.data, "bin", "vocab.txt")
        for beam, name in ((1, "greedy"), (4, "beam 4")):
            systems[f"AR transformer, CTranslate2 int8 {name}"] = CT2System(ct2, vocab, beam, args.threads,
                                                                           args.max_len).generate
    return systems


def race(systems, sources, batch_sizes, warmup, pause_s=0.0):
    """Per batch size: per system, the ms per sentence of every batch, and the outputs. pause_s: idle
    time before each timed call, so that the previous system's idle threads have stopped spinning
    (OpenMP runtimes busy-wait ~200 ms after a parallel region by default) and do not eat into the
    next system's time."""
    names = list(systems)
    times = {bs: {n: [] for n in names} for bs in batch_sizes}
    outputs = {bs: {n: [None] * len(sources) for n in names} for bs in batch_sizes}
    for n in names:  # warm-up: allocators, thread pools, lazy initialisation
        for b in range(warmup):
            systems[n](sources[b:b + 1])
            systems[n](sources[:max(batch_sizes)])
    for bs in batch_sizes:
        for k, start in enumerate(range(0, len(sources), bs)):
            chunk = sources[start:start + bs]
            for j in range(len(names)):
                n = names[(j + k) % len(names)]  # rotating order: drift and cache effects hit all alike
                if pause_s:
                    time.sleep(pause_s)
                t = time.perf_counter()
                res = systems[n](chunk)
                times[bs][n].append((time.perf_counter() - t) * 1000 / len(chunk))
                outputs[bs][n][start:start + len(chunk)] = res
    return times, outputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="python -m mist_fairseq.prepare folder (bin/, raw/)")
    p.add_argument("--mist", required=True, nargs="+", help="MIST checkpoint file(s)")
    p.add_argument("--export", required=True, nargs="+",
                   help="their export folders, in the same order (python -m mist_fairseq.export ... --int8)")
    p.add_argument("--fairseq-ar", help="Fairseq transformer checkpoint to convert with CTranslate2")
    p.add_argument("--fairseq-data", help="its fairseq-preprocess folder (dict.src.txt, dict.tgt.txt)")
    p.add_argument("--ct2", help="an already converted CTranslate2 folder (instead of --fairseq-ar)")
    p.add_argument("--n", type=int, default=200, help="test sources (the first N)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--threads", type=int, default=2, help="compute threads of every system")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--pause-ms", type=float, default=250,
                   help="idle time before each timed call (default 250: longer than OpenMP's ~200 ms spin-wait)")
    p.add_argument("--max-len", type=int, default=48, help="AR: longest output in tokens (MIST: its length head)")
    p.add_argument("--out", default="docs")
    args = p.parse_args(argv)
    if len(args.mist) != len(args.export):
        p.error(f"{len(args.mist)} --mist checkpoints but {len(args.export)} --export folders: give one folder each")
    if args.fairseq_ar and not args.fairseq_data:
        p.error("--fairseq-ar needs --fairseq-data (its dict.src.txt / dict.tgt.txt folder)")
    import torch

    torch.set_num_threads(args.threads)
    from mist_fairseq.score import score

    with open(os.path.join(args.data, "raw", "test.src"), encoding="utf-8") as f:
        sources = [ln.rstrip("\n") for _, ln in zip(range(args.n), f)]
    with open(os.path.join(args.data, "raw", "test.tgt"), encoding="utf-8") as f:
        refs = [ln.rstrip("\n") for _, ln in zip(range(args.n), f)]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    systems = build_systems(args)
    times, outputs = race(systems, sources, args.batch_sizes, args.warmup, args.pause_ms / 1000)
    rows = []
    for n in systems:
        s = score("quora", outputs[args.batch_sizes[0]][n], refs, sources, meteor=False)
        row = {"system": n, "BLEU-4": round(s["BLEU-4"], 2), "iBLEU": round(s["iBLEU"], 2)}
        for bs in args.batch_sizes:
            ms = times[bs][n]
            row[f"ms_b{bs}"] = round(statistics.median(ms), 2)
            row[f"ms_b{bs}_p25_p75"] = [round(x, 2) for x in statistics.quantiles(ms, n=4)[::2]] if len(ms) > 1 else []
        rows.append(row)
    copy = score("quora", sources, refs, sources, meteor=False)
    report = {"platform": platform_line(), "cpus": os.cpu_count(), "threads": args.threads, "n": len(sources),
              "batch_sizes": args.batch_sizes, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "wall_s": round(time.time() - t0, 1), "pause_ms": args.pause_ms,
              "command": "python -m benchmarks.race " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows, "copy_source": {"BLEU-4": round(copy["BLEU-4"], 2), "iBLEU": round(copy["iBLEU"], 2)},
              "outputs_agree": agreement(outputs, args.batch_sizes)}
    write_atomic(os.path.join(args.out, "RACE.json"), json.dumps(report, indent=1) + "\n")
    write_atomic(os.path.join(args.out, "RACE.md"), render(report))
    chart(report, os.path.join(args.out, "RACE.png"))
    print(render(report))
    return report


def agreement(outputs, batch_sizes):
    """Share of sources whose output is the same at every batch size, per system (padding effects)."""
    names = outputs[batch_sizes[0]]
    return {n: sum(len({outputs[bs][n][i] for bs in batch_sizes}) == 1 for i in range(len(names[n]))) / len(names[n])
            for n in names}


def render(r):
    bss = r["batch_sizes"]
    ref = next((x for x in r["rows"] if x["system"].endswith("beam 4")), None)
    head = "| system | BLEU-4 | iBLEU | " + " | ".join(f"ms/sentence, batch {b} [p25, p75]" for b in bss)
    head += " | " + " | ".join(f"speedup vs CTranslate2 beam 4, batch {b}" for b in bss) + " |" if ref else " |"
    lines = ["# Serving race: MIST (PyTorch, ONNX Runtime) vs a Fairseq AR transformer on CTranslate2", "",
             f"`{r['command']}`", "",
             f"{r['date']}, {r['platform']}, {r['cpus']} CPUs, {r['threads']} compute threads per system; the first "
             f"{r['n']} Quora test sources, text in and text out; median over batches of the milliseconds per "
             f"sentence; systems interleaved batch by batch, {r.get('pause_ms', 0):g} ms idle before each timed call. Copy-the-source on these {r['n']}: BLEU-4 "
             f"{r['copy_source']['BLEU-4']}, iBLEU {r['copy_source']['iBLEU']}. BLEU of the batch-{bss[0]} outputs.", "",
             head, "|---|" + "---:|" * (2 + len(bss) + (len(bss) if ref else 0))]
    for x in r["rows"]:
        cells = [x["system"], x["BLEU-4"], x["iBLEU"]]
        cells += [f"{x[f'ms_b{b}']} {x[f'ms_b{b}_p25_p75']}" for b in bss]
        if ref:
            cells += [f"{ref[f'ms_b{b}'] / x[f'ms_b{b}']:.1f}x" for b in bss]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Same output at every batch size (share of sources): " +
              ", ".join(f"{n} {v:.3f}" for n, v in r["outputs_agree"].items()), ""]
    return "\n".join(lines)


def chart(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bss = r["batch_sizes"]
    fig, axes = plt.subplots(1, len(bss), figsize=(5.5 * len(bss), 3.2))
    axes = axes if len(bss) > 1 else [axes]
    for ax, b in zip(axes, bss):
        for x in r["rows"]:
            ax.scatter(x[f"ms_b{b}"], x["BLEU-4"], s=30)
            ax.annotate(x["system"].replace("AR transformer, ", "AR ").replace("MIST, ", "MIST "), (x[f"ms_b{b}"], x["BLEU-4"]),
                        fontsize=7, xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per sentence, batch {b} (log)")
        ax.set_ylabel(f"BLEU-4 on {r['n']} Quora test pairs")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Serving race, {r['platform']}, {r['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
