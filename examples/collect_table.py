"""Collects the scores of finished runs into the markdown tables of docs/RESULTS.md.

    python examples/collect_table.py --root ~/mist_runs --dataset quora --out docs/quora_table.md
    python examples/collect_table.py --root ~/mist_runs --dataset squad_sentence --out docs/squad_table.md

Reads ROOT/<dataset>_<mode>/{scores.json,dev_curve.json,iter/*.json}, ROOT/baselines_<dataset>/*/
and, for the speedup column, docs/BENCHMARK.json (batch 1, the last benchmark run). Missing runs are
listed as such, never invented.
"""

import argparse
import os

import spec
from collect_rows import load

MIST_ROWS = spec.labels(spec.load("table"))  # (row, label): examples/specs/table.yaml's table rows
BASELINES = [("ar", "AR transformer (beam 4)"), ("nat", "Fairseq NAT"), ("cmlm", "Fairseq CMLM (10 it.)"),
             ("levt", "Fairseq LevT")]
BENCH_ROW = {"dynamic": "MIST single pass", "none": "MIST single pass", "static": "MIST single pass",
             "ar": "AR transformer, beam 4", "nat": "NAT (single pass)", "cmlm": "CMLM, 10 iterations",
             "levt": "LevT (up to 10 iterations)"}  # the trained-run names


def run_facts(run):
    """(scores, chosen updates, last updates, training hours of the last checkpoint)."""
    scores = load(os.path.join(run, "scores.json"))
    curve = load(os.path.join(run, "dev_curve.json"))
    if curve:
        last = max(curve["points"], key=lambda p: p["updates"])
        return scores, curve["best"]["updates"], last["updates"], last["train_hours"]
    return scores, None, None, None


def speedups(bench_path):
    bench = load(bench_path)
    if not bench:
        return {}
    out = {}
    for key, row in BENCH_ROW.items():
        for name, r in bench["decoding"].items():
            if name == row:  # pinned-length runs name LevT differently: no speedup from them
                out[key] = r.get("1", r.get(1, {})).get("speedup_vs_ar_beam4")
    return out


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder holding the run folders")
    p.add_argument("--dataset", required=True, help="run-folder prefix: quora | squad_sentence | ...")
    p.add_argument("--bench", default="docs/BENCHMARK.json", help="benchmark JSON for the speedup column")
    p.add_argument("--out", help="also write the tables here")
    args = p.parse_args()
    quora = args.dataset == "quora"
    cols = ["BLEU-1", "BLEU-4", "METEOR", "self-BLEU", "identical-to-source %", "iBLEU"] if quora \
        else ["BLEU-4", "METEOR", "ROUGE-L"]
    speed = speedups(args.bench) if quora else {}
    head = "| system | " + " | ".join(cols) + " | updates (chosen / trained) | train h | speedup vs AR (batch 1) |"
    lines = [head, "|---|" + "---:|" * (len(cols) + 3)]
    if quora:
        copy = load(os.path.join(args.root, "quora_copy_source.json"))
        if copy:
            lines.append("| copy the source | " + " | ".join(fmt(copy["scores"].get(c)) for c in cols) + " | - | - | - |")
    rows = [(k, n, os.path.join(args.root, f"{args.dataset}_{k}")) for k, n in MIST_ROWS]
    rows += [(k, n, os.path.join(args.root, f"baselines_{args.dataset}", k)) for k, n in BASELINES]
    for key, name, run in rows:
        scores, chosen, last, hours = run_facts(run)
        if scores is None:
            if os.path.isdir(run):
                lines.append(f"| {name} | " + " | ".join("-" for _ in cols) + " | (not finished) | | |")
            continue
        s = scores["scores"]
        lines.append(f"| {name} | " + " | ".join(fmt(s.get(c)) for c in cols)
                     + f" | {chosen} / {last} | {fmt(hours)} | {fmt(speed.get(key), 1)}{'x' if key in speed else ''} |")
    out = ["\n".join(lines)]
    # iterative decoding (paper Table 6)
    it_lines = ["| model | decoding | 1 iteration | 3 iterations | 6 iterations |", "|---|---|---:|---:|---:|"]
    found = False
    for key, name in MIST_ROWS[:2]:
        for strat, sname in (("mist", "MIST (prediction fed back as pseudo target)"), ("mask-predict", "Mask-Predict")):
            # one pass is the same decoding for both strategies: mist-1 stands for both
            vals = [load(os.path.join(args.root, f"{args.dataset}_{key}", "iter",
                                      f"{'mist' if it == 1 else strat}-{it}.txt.json")) for it in (1, 3, 6)]
            if any(vals):
                found = True
                metric = "BLEU-4"
                it_lines.append(f"| {name} | {sname} | " + " | ".join(
                    fmt(v["scores"][metric]) if v else "-" for v in vals) + " |")
    if found:
        out.append("Test BLEU-4 by decoding iterations:\n\n" + "\n".join(it_lines))
    text = "\n\n".join(out) + "\n"
    print(text)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
