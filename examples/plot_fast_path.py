"""Does the CPU fast path change what training learns? fp32 (row C, and C_s2 with seed 2 when it was
run) vs the fast path (C_fast, C_fast_s2 with seeds 1 and 2); the seed pairs are the run-to-run
noise yardstick.

    python examples/plot_fast_path.py --root RUNS --docs docs/ablation

Reads RUNS/ablation_{C,C_s2,C_fast,C_fast_s2}/ (C_s2 optional): train.log (training loss every 10 updates),
dev_curve.json (dev BLEU-4 per saved checkpoint), valid-N.log (fairseq-validate's dev loss of the
checkpoint at N updates), scores.json (test, dev-chosen checkpoint, decoded once). Writes
DOCS/fast_path_quality.json and DOCS/fast_path_quality.png (training loss, dev loss and dev BLEU-4
against updates, every run on each panel).
"""

import argparse
import json
import os
import re

RUNS = {"C": "fp32 (seed 1)", "C_s2": "fp32 (seed 2)", "C_fast": "fast path (seed 1)",
        "C_fast_s2": "fast path (seed 2)"}
OPTIONAL = {"C_s2"}
TRAIN = re.compile(r"\bloss=([\d.]+).*?\bnum_updates=(\d+).*?\bwall=([\d.]+)")
VALID = re.compile(r"valid on 'valid' subset \| loss ([\d.]+) \| nll_loss ([\d.]+)")


def read_run(run):
    out = {"train_loss": [], "dev_loss": {}, "dev_bleu": {}, "test": None, "train_wall_s": None}
    for ln in open(os.path.join(run, "train.log")):
        m = TRAIN.search(ln) if "train_inner" in ln else None
        if m:
            out["train_loss"].append((int(m.group(2)), float(m.group(1))))
            out["train_wall_s"] = float(m.group(3))
    for name in os.listdir(run):
        m = re.fullmatch(r"valid-(\d+)\.log", name)
        if m:
            v = VALID.search(open(os.path.join(run, name)).read())
            if v:
                out["dev_loss"][int(m.group(1))] = float(v.group(1))
    curve = json.load(open(os.path.join(run, "dev_curve.json")))
    out["dev_bleu"] = {p["updates"]: p["score"] for p in curve["points"]}
    out["dev_best_updates"] = curve["best"]["updates"]
    scores = os.path.join(run, "scores.json")
    if os.path.exists(scores):
        out["test"] = json.load(open(scores))["scores"]
    return out


def largest_gap(a, b):
    """Largest |a[n] - b[n]| over the update counts both have (None if none)."""
    common = sorted(set(a) & set(b))
    return max(abs(a[n] - b[n]) for n in common) if common else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder with ablation_C, ablation_C_fast, ablation_C_fast_s2")
    p.add_argument("--docs", required=True, help="where fast_path_quality.json/.png go")
    args = p.parse_args(argv)
    runs = {k: read_run(os.path.join(args.root, f"ablation_{k}")) for k in RUNS
            if k not in OPTIONAL or os.path.exists(os.path.join(args.root, f"ablation_{k}", "scores.json"))}
    pairs = {"fast_vs_fp32_seed1": ("C_fast", "C"), "fast_vs_fp32_seed2": ("C_fast_s2", "C_s2"),
             "fast_seed1_vs_seed2": ("C_fast", "C_fast_s2"), "fp32_seed1_vs_seed2": ("C", "C_s2")}
    summary = {}
    for key in ("dev_loss", "dev_bleu"):
        summary[key] = {name: largest_gap(runs[a][key], runs[b][key])
                        for name, (a, b) in pairs.items() if a in runs and b in runs}
    train32 = dict(runs["C"]["train_loss"])
    fast = dict(runs["C_fast"]["train_loss"])
    summary["train_loss_mean_abs_gap_last_100"] = (
        sum(abs(fast[n] - train32[n]) for n in sorted(set(fast) & set(train32))[-10:]) / 10
        if len(set(fast) & set(train32)) >= 10 else None)
    summary["train_wall_s"] = {k: r["train_wall_s"] for k, r in runs.items()}
    os.makedirs(args.docs, exist_ok=True)
    with open(os.path.join(args.docs, "fast_path_quality.json"), "w") as f:
        json.dump({"runs": {k: dict(r, label=RUNS[k]) for k, r in runs.items()}, "summary": summary}, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    style = {"C": ("#333", "-"), "C_s2": ("#888", "-."), "C_fast": ("#2a7", "--"), "C_fast_s2": ("#e80", ":")}
    for k, r in runs.items():
        color, ls = style[k]
        xs, ys = zip(*r["train_loss"])
        axes[0].plot(xs, ys, ls, color=color, label=RUNS[k])
        for ax, key in ((axes[1], "dev_loss"), (axes[2], "dev_bleu")):
            pts = sorted(r[key].items())
            if pts:
                ax.plot(*zip(*pts), ls, marker="o", color=color, label=RUNS[k])
    for ax, title in zip(axes, ("training loss (every 10 updates)", "dev loss (fairseq-validate)",
                                "dev BLEU-4 (single pass, predicted length)")):
        ax.set_xlabel("updates (batch 64, Quora, MiniLM-L6, row C's configuration)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.docs, "fast_path_quality.png"), dpi=100)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
