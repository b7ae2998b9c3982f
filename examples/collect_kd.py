"""Issue 22's Quora table: the AR teacher, NAR students on raw and distilled targets, each decoded with
length beam 1 / 3 / 5, self-scored or rescored by the teacher; paired bootstrap against the raw-data
no-mixing student's single pass, copy-the-source and iBLEU beside every row, batch-1 and batch-16 ms
from the benchmark, and the quality-vs-latency chart (BLEU-4 and iBLEU).

    python examples/collect_kd.py --root ~/kd --data ~/kd/data/quora [--bench BENCH.json] --out docs/quora_kd

Reads ROOT/quora_{ar_same,none,none_kd,dynamic_kd}/{generate-test.txt,dev_curve.json,modes/*.txt}
(the teacher's beam 4: ROOT/quora_ar_same/modes/ar4.txt)
(examples/quora_kd.sh); a missing output is listed as missing. Test outputs were decoded once each.
"""

import argparse
import os
import sys

import spec
from collect_rows import load, scored_rows, test_split

from mist_fairseq import score as scorer

SPEC = spec.load("quora_kd")  # the rows, decodings and reference: examples/specs/quora_kd.yaml
REFERENCE, REFERENCE_RUN, REFERENCE_OUTPUT = spec.reference(SPEC)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the run folders of examples/quora_kd.sh")
    p.add_argument("--data", required=True, help="the prepared Quora folder (raw/test.src, raw/test.tgt)")
    p.add_argument("--bench", help="benchmarks.latency JSON with the rescoring rows")
    p.add_argument("--out", required=True, help="folder for kd_table.md, kd.json, kd.png")
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    args = p.parse_args(argv)
    refs, srcs = test_split(args.data)
    bench = (load(args.bench) or {}).get("decoding", {}) if args.bench else {}
    base_path = os.path.join(args.root, f"quora_{REFERENCE_RUN}", REFERENCE_OUTPUT)
    if not os.path.exists(base_path):
        sys.exit(f"error: {base_path} missing: {REFERENCE} is the reference of every comparison")
    base = scorer.read_hypotheses(base_path)
    out = scored_rows(spec.table_rows(SPEC), args.root, refs, srcs, base, "vs_raw_nat",
                      lambda label, run: label == REFERENCE, bench, args.bootstrap_samples)
    os.makedirs(args.out, exist_ok=True)
    scorer.write_json(os.path.join(args.out, "kd.json"), out)
    table = format_table(out)
    with open(os.path.join(args.out, "kd_table.md"), "w") as f:
        f.write(table)
    print(table)
    plot(out, os.path.join(args.out, "kd.png"))


def format_table(out, reference="no mixing, raw, beam 1", key="vs_raw_nat", latency=True):
    """out: label -> scored row, the paired bootstrap against the reference under ``key``; latency: the
    batch-1 and batch-16 ms columns."""
    ms_head, ms_rule = (" batch-1 ms | batch-16 ms |", "---:|---:|") if latency else ("", "")
    lines = [f"| system (Quora test, 4,000) | updates (chosen / trained) | BLEU-4 | vs {reference} "
             f"[95% CI] | self-BLEU | iBLEU |{ms_head}", f"|---|---:|---:|---:|---:|---:|{ms_rule}"]
    for label, row in out.items():
        if "missing" in row:
            lines.append(f"| {label} | missing | | | | |" + (" | |" if latency else ""))
            continue
        cmp = row.get(key)
        diff = f"{cmp['diff']:+.2f} [{cmp['ci95'][0]:+.2f}, {cmp['ci95'][1]:+.2f}]" if cmp else "-"
        upd = f"{row['chosen_updates']} / {row['last_updates']}" if row.get("chosen_updates") else "-"
        ms = "".join(f" {row[k]:.1f} |" if row.get(k) else " - |" for k in ("batch1_ms", "batch16_ms")) if latency else ""
        lines.append(f"| {label} | {upd} | {row['BLEU-4']:.2f} | {diff} | {row['self-BLEU']:.2f} | "
                     f"{row['iBLEU']:.2f} |{ms}")
    return "\n".join(lines) + "\n"


def plot(out, path, title="Quora: distilled students, AR rescoring and the AR teacher, quality vs latency",
         green="KD"):
    pts = [(label, row["batch1_ms"], row["BLEU-4"], row["iBLEU"]) for label, row in out.items()
           if row.get("batch1_ms")]
    if not pts:
        return
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    copy = out["copy the source"]
    for ax, key, i in ((axes[0], "BLEU-4", 2), (axes[1], "iBLEU", 3)):
        for pt in pts:
            color = "#c44" if pt[0].startswith("same-encoder") else "#2a7" if green in pt[0] else "#36c"
            ax.scatter(pt[1], pt[i], color=color)
            ax.annotate(pt[0], (pt[1], pt[i]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axhline(copy[key], color="#999", linestyle="--", linewidth=1)
        ax.annotate("copy the source", (pts[0][1], copy[key]), fontsize=7, color="#777")
        ax.set_xscale("log")
        ax.set_xlabel("ms per sentence, batch 1 (median, log scale)")
        ax.set_ylabel(f"test {key}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)


if __name__ == "__main__":
    main()
