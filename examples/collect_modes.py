"""Issue 15's table: NAR-only MIST, the same-encoder AR model and the jointly trained model in each
decoding mode, at equal CPU budgets, with paired bootstrap against NAR-only MIST, copy-the-source and
iBLEU, batch-1 latency from the benchmark, and a quality-versus-latency plot.

    python examples/collect_modes.py --root ~/mist_runs_1h_fast --data ~/mist_runs/data/quora \\
        --bench docs/quora_modes/BENCHMARK_modes.json --out docs/quora_modes

Reads ROOT/quora_{dynamic,joint,ar_same}/{generate-test.txt,dev_curve.json,modes/*.txt} (written by
examples/quora_table.sh STEPS="dynamic joint ar_same modes"); a missing output is listed as missing.
"""

import argparse
import os
import sys

import spec
from collect_rows import load, scored_rows, test_split

from mist_fairseq import score as scorer

SPEC = spec.load("table")  # modes_table: (label, run, output in the run, benchmark row timed at batch 1)
ROWS = [tuple(r) for r in SPEC["modes_table"]]
REFERENCE, REFERENCE_RUN, REFERENCE_OUTPUT = spec.reference(SPEC, ROWS, "modes_reference")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="run folders quora_{dynamic,joint,ar_same}")
    p.add_argument("--data", required=True, help="the prepared Quora folder (raw/test.src, raw/test.tgt)")
    p.add_argument("--bench", help="benchmarks.latency JSON with the modes rows (batch 1)")
    p.add_argument("--out", required=True, help="folder for modes_table.md, modes.json, modes.png")
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    args = p.parse_args(argv)
    refs, srcs = test_split(args.data)
    bench = (load(args.bench) or {}).get("decoding", {}) if args.bench else {}
    base_path = os.path.join(args.root, f"quora_{REFERENCE_RUN}", REFERENCE_OUTPUT)
    if not os.path.exists(base_path):
        sys.exit(f"error: {base_path} missing: the NAR-only MIST row is the reference of every comparison")
    base = scorer.read_hypotheses(base_path)
    out = scored_rows(ROWS, args.root, refs, srcs, base, "vs_nar_mist", lambda label, run: label == REFERENCE, bench,
                      args.bootstrap_samples, batch_sizes=("1",))
    os.makedirs(args.out, exist_ok=True)
    scorer.write_json(os.path.join(args.out, "modes.json"), out)
    lines = ["| system (Quora test, 4,000) | updates (chosen / trained) | BLEU-4 | vs NAR-only MIST [95% CI] | "
             "self-BLEU | iBLEU | batch-1 ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, row in out.items():
        if "missing" in row:
            lines.append(f"| {label} | missing: {row['missing']} | | | | | |")
            continue
        cmp = row.get("vs_nar_mist")
        diff = f"{cmp['diff']:+.2f} [{cmp['ci95'][0]:+.2f}, {cmp['ci95'][1]:+.2f}]" if cmp else "-"
        upd = f"{row['chosen_updates']} / {row['last_updates']}" if row.get("chosen_updates") else "-"
        ms = f"{row['batch1_ms']:.1f}" if row.get("batch1_ms") else "-"
        lines.append(f"| {label} | {upd} | {row['BLEU-4']:.2f} | {diff} | {row['self-BLEU']:.2f} | "
                     f"{row['iBLEU']:.2f} | {ms} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "modes_table.md"), "w") as f:
        f.write(table)
    print(table)
    plot(out, os.path.join(args.out, "modes.png"))


def plot(out, path):
    pts = [(label, row["batch1_ms"], row["BLEU-4"]) for label, row in out.items() if row.get("batch1_ms")]
    if not pts:
        return
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # it logs its set-up at DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, ms, bleu in pts:
        color = "#c44" if label.startswith("same-encoder") else "#2a7" if label.startswith("MIST") else "#36c"
        ax.scatter(ms, bleu, color=color)
        ax.annotate(label, (ms, bleu), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("ms per sentence, batch 1 (median, log scale)")
    ax.set_ylabel("test BLEU-4")
    ax.set_title("Quora, one CPU-hour per model: quality vs latency per (model, mode)")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)


if __name__ == "__main__":
    main()
