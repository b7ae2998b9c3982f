"""Collects the faithful-MIST ablation (examples/quora_ablation.sh) into one markdown file.

    python examples/collect_ablation.py --docs docs/ablation [--out docs/ablation/ablation_table.md]

Reads DOCS/{copy_source,scores_<row>,dev_curve_<row>,probe}.json and the paired-bootstrap files
DOCS/<a>_vs_<b>_at_<u>_updates.json and D_vs_E_time_equal_time.json. Rows whose files are missing are
listed as not finished, never invented.
"""

import argparse
import glob
import json
import os
import re

import spec

ROWS = spec.labels(spec.load("quora_ablation"))  # (row, label), declared in examples/specs/quora_ablation.yaml
SCORE_COLS = ["BLEU-4", "iBLEU", "self-BLEU", "identical-to-source %"]
PROBE_COLS = [("first_pass_acc", "draft acc"), ("mixed_acc_own", "mixed, own Y_p"),
              ("mixed_acc_gold", "mixed, gold Y_p"), ("oracle_gap_acc", "oracle gap (acc)"),
              ("mixed_acc_shuffled", "mixed, shuffled Y_p"), ("mixed_acc_masked", "mixed, [MASK] Y_p"),
              ("fix_rate", "fix rate"), ("keep_rate", "keep rate"), ("oracle_gap_bleu", "oracle gap (BLEU-4)"),
              ("decode_1pass_bleu", "dev BLEU 1 pass"), ("decode_mist2_bleu", "dev BLEU MIST 2 passes")]


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def probe_for(probe, row):
    """The probe entry of a row's checkpoint (keys are checkpoint paths .../ablation_<row>/...)."""
    for ck, numbers in (probe or {}).items():
        if f"ablation_{row}{os.sep}" in ck:
            return numbers
    return None


def tables(docs):
    copy = load(os.path.join(docs, "copy_source.json"))
    probe = load(os.path.join(docs, "probe.json"))
    head = "| row | system | updates (chosen / trained) | train h | " + " | ".join(f"test {c}" for c in SCORE_COLS) + " |"
    lines = [head, "|---|---|---:|---:|" + "---:|" * len(SCORE_COLS)]
    if copy:
        lines.append("| - | copy the source | - | - | " + " | ".join(fmt(copy["scores"].get(c)) for c in SCORE_COLS) + " |")
    probe_lines = ["| row | " + " | ".join(n for _, n in PROBE_COLS) + " |", "|---|" + "---:|" * len(PROBE_COLS)]
    for key, name in ROWS:
        scores = load(os.path.join(docs, f"scores_{key}.json"))
        curve = load(os.path.join(docs, f"dev_curve_{key}.json"))
        if scores is None:
            lines.append(f"| {key} | {name} | (not run or not finished) | | " + " | ".join("" for _ in SCORE_COLS) + " |")
            continue
        chosen = last = hours = None
        if curve:
            end = max(curve["points"], key=lambda p: p["updates"])
            chosen, last, hours = curve["best"]["updates"], end["updates"], end["train_hours"]
        s = scores["scores"]
        lines.append(f"| {key} | {name} | {chosen} / {last} | {fmt(hours)} | "
                     + " | ".join(fmt(s.get(c)) for c in SCORE_COLS) + " |")
        p = probe_for(probe, key)
        if p:
            probe_lines.append(f"| {key} | " + " | ".join(fmt(p.get(k), 1) for k, _ in PROBE_COLS) + " |")
    pair_lines = ["| comparison | test BLEU-4 a | b | a − b | 95% CI | p (a ≤ b) |", "|---|---:|---:|---:|---|---:|"]
    pairs = []
    for path in sorted(glob.glob(os.path.join(docs, "*_vs_*.json"))):
        m = re.match(r"(\w+?)_vs_(\w+?)_(?:at_(\d+)_updates|equal_time)\.json$", os.path.basename(path))
        if m:
            what = f"at {m.group(3)} updates" if m.group(3) else "equal wall time"
            note = path[: -len(".json")] + ".txt"  # which checkpoints the equal-time pair compares
            if not m.group(3) and os.path.exists(note):
                with open(note) as f:
                    what += f" ({f.read().strip()})"
            pairs.append((f"{m.group(1)} vs {m.group(2)}, {what}", load(path)["compare"]))
    for label, c in pairs:
        lo, hi = c["ci95"]
        pair_lines.append(f"| {label} | {fmt(c['a'])} | {fmt(c['b'])} | {c['diff']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | "
                          f"{fmt(c['p_value'], 3)} |")
    out = ["\n".join(lines)]
    if len(probe_lines) > 2:
        out.append("Probe on dev (dev-chosen checkpoints; accuracies in %, gold target lengths):\n\n" + "\n".join(probe_lines))
    if pairs:
        out.append("Paired bootstrap (1,000 resamples of the 4,000 test pairs):\n\n" + "\n".join(pair_lines))
    return "\n\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", required=True, help="the ablation's docs folder (quora_ablation.sh DOCS)")
    p.add_argument("--out", help="also write the tables here")
    args = p.parse_args()
    text = tables(args.docs)
    print(text)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
