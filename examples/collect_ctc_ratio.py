"""Slots per source token at equal updates (examples/quora_ctc.sh, STEPS=ratio): CTC no-mixing students on
distilled targets with R = 2 and 1.5, each trained U updates side by side; dev BLEU-4 at every saved
checkpoint, the dev-chosen checkpoint's test scores (copy-the-source and iBLEU beside them, paired bootstrap
of each ratio against R = 2), and training speed from the two logs.

    python examples/collect_ctc_ratio.py --root ~/kd --data ~/kd/data/quora [--updates 750] --out docs/quora_ctc

Reads ROOT/quora_ctc_none_kd_r{2,15}_uU/{generate-test.txt,dev_curve.json,train.log}.
"""

import argparse
import os
import re

from collect_kd import format_table
from collect_rows import load, scored_rows, test_split

from mist_fairseq import score as scorer

RATIOS = {"2": "r2", "1.5": "r15"}  # --upsample-ratio -> run name suffix


def train_speed(log_path):
    """From fairseq's log: mean updates/s over the train_inner lines, the last update count, and the
    wall seconds at every 250th update (the lanes ran side by side: compare them at the same update)."""
    ups, last, wall_at = [], None, {}
    with open(log_path) as f:
        for line in f:
            m = re.search(r"\| train_inner \|.* ups=([0-9.]+)", line)
            if m:
                ups.append(float(m.group(1)))
            n = re.search(r"num_updates=(\d+)", line)
            if n:
                last = int(n.group(1))
                w = re.search(r"[ ,]wall=(\d+)", line)
                if w and last % 250 == 0:
                    wall_at[last] = int(w.group(1))
    return {"mean_updates_per_s": round(sum(ups) / len(ups), 4) if ups else None, "updates": last,
            "wall_s_at": wall_at}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--data", required=True, help="the prepared Quora folder (raw/test.src, raw/test.tgt)")
    p.add_argument("--out", required=True, help="folder for ratio_table.md and ratio.json")
    p.add_argument("--updates", type=int, default=750, help="U: the updates each student trained")
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    args = p.parse_args(argv)
    refs, srcs = test_split(args.data)
    rows = [(f"CTC, no mixing, KD, {r} x source slots: greedy", f"ctc_none_kd_{s}_u{args.updates}", "generate-test.txt", "")
            for r, s in RATIOS.items()]
    base = scorer.read_hypotheses(os.path.join(args.root, f"quora_ctc_none_kd_r2_u{args.updates}", "generate-test.txt"))
    out = scored_rows(rows, args.root, refs, srcs, base, "vs_r2", lambda label, run: "_r2_" in run,
                      {}, args.bootstrap_samples)
    for label, run, _, _ in rows:
        run_dir = os.path.join(args.root, f"quora_{run}")
        curve = load(os.path.join(run_dir, "dev_curve.json")) or {}
        out[label]["dev_curve"] = {q["updates"]: q["score"] for q in curve.get("points", [])}
        out[label]["training"] = train_speed(os.path.join(run_dir, "train.log"))
    os.makedirs(args.out, exist_ok=True)
    scorer.write_json(os.path.join(args.out, "ratio.json"), out)
    table = format_table(out, reference="CTC, no mixing, KD, 2 x source slots", key="vs_r2")
    lines = ["", "| slots per source token | dev BLEU-4 by updates | training wall s by updates | mean updates/s |",
             "|---|---|---|---:|"]
    for label, _, _, _ in rows:
        curve, training = out[label]["dev_curve"], out[label]["training"]
        lines.append(f"| {label.split(', ')[3]} | " + " / ".join(f"{u}: {b:.2f}" for u, b in sorted(curve.items()))
                     + " | " + " / ".join(f"{u}: {w}" for u, w in sorted(training["wall_s_at"].items()))
                     + f" | {training['mean_updates_per_s']} |")
    table += "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "ratio_table.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
