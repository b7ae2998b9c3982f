"""Scores every saved checkpoint of one or more runs on the dev set, picks each run's best, and
(optionally) plots the curves: checkpoint selection by dev score and the convergence figure.

    python -m mist_fairseq.dev_select RUN [RUN ...] --data DATA --task quora [--plot curve.png]
    python -m mist_fairseq.dev_select RUN --data DATA --data-bin BIN --task quora -- --task translation_lev ...

For each RUN the checkpoints ``checkpoint_<epoch>_<updates>.pt`` and ``checkpoint_last.pt`` are
decoded on ``--subset`` (default valid) with ``fairseq-generate`` (arguments after ``--`` are passed
on; default: this plugin's ``mist_nar`` task), scored against DATA/raw/<subset>.tgt by
``mist_fairseq.score`` (BLEU-4; ROUGE-L for xsum; no METEOR, for speed), and the best one is
hard-linked as ``RUN/checkpoint_dev_best.pt``. Results go to ``RUN/dev_curve.json`` (updates,
cumulative training hours from the checkpoint, score) and, when ``RUN/train.log`` holds Fairseq's
``simple`` training log, the logged first-pass token accuracy ``pred_acc`` by update (the quality of
MIST's pseudo target; plotted as a third panel); decoded files are cached in ``RUN/dev/``, so a
rerun after more training only decodes the new checkpoints. Test data is never read.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List

from mist_fairseq import score as scorer

_INTERVAL = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")
_TRAIN_INNER = re.compile(r"\| train_inner \|.*?pred_acc=([\d.]+).*?num_updates=(\d+)")
USER_DIR = os.path.dirname(os.path.abspath(__file__))


def checkpoint_info(path: str) -> Dict[str, float]:
    """Update count and cumulative training time (hours) stored by Fairseq's trainer."""
    import torch

    import mist_fairseq  # noqa: F401  (allow-lists what Fairseq checkpoints hold)

    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    extra = state.get("extra_state") or {}
    history = state.get("optimizer_history") or [{}]
    return {
        "updates": int(history[-1].get("num_updates", 0)),
        "train_hours": float(extra.get("previous_training_time", 0.0)) / 3600.0,
    }


def list_checkpoints(run: str) -> List[str]:
    """Interval checkpoints in update order, then checkpoint_last.pt (deduplicated later)."""
    names = sorted((n for n in os.listdir(run) if _INTERVAL.match(n)), key=lambda n: int(_INTERVAL.match(n).group(1)))
    if os.path.exists(os.path.join(run, "checkpoint_last.pt")):
        names.append("checkpoint_last.pt")
    return [os.path.join(run, n) for n in names]


def decode(ckpt: str, out_path: str, data_bin: str, vocab: str, subset: str, gen_args: List[str], batch_size: int,
           shards: int = 1):
    """fairseq-generate into out_path; written to a temporary name first, so a cached file is whole.
    shards > 1 decodes only Fairseq's first of that many (deterministic) batch shards."""
    cmd = ["fairseq-generate", data_bin, "--user-dir", USER_DIR, "--path", ckpt, "--gen-subset", subset,
           "--batch-size", str(batch_size), "--required-batch-size-multiple", "1",
           "--bpe", "bert", "--bpe-vocab-file", vocab]
    if shards > 1:
        cmd += ["--distributed-world-size", str(shards), "--distributed-rank", "0"]  # how fairseq-generate shards
    cmd += gen_args or ["--task", "mist_nar"]
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: fairseq-generate failed on {ckpt}:\n{proc.stderr[-2000:]}")
    os.replace(tmp, out_path)


def read_by_id(path: str) -> Dict[int, str]:
    """sample id -> hypothesis (D- lines, else H-) of a fairseq-generate output."""
    found: Dict[str, Dict[int, str]] = {"D": {}, "H": {}}
    for ln in scorer.read_lines(path):
        m = scorer._GEN_LINE.match(ln)
        if m:
            found[m.group(1)][int(m.group(2))] = m.group(3)
    if not (found["D"] or found["H"]):
        raise scorer.ScoreError(f"{path}: no D-/H- lines: is it fairseq-generate output?")
    return found["D"] or found["H"]


def train_curve(run: str) -> List[Dict]:
    """[{"updates", "pred_acc"}] from the ``train_inner`` lines of RUN/train.log (Fairseq's simple log
    format; the mean over each log interval), sorted by updates; [] without a log. A resumed run
    appends to the log: a later line for the same update replaces the earlier one."""
    path = os.path.join(run, "train.log")
    if not os.path.exists(path):
        return []
    points = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _TRAIN_INNER.search(line)
            if m:
                points[int(m.group(2))] = float(m.group(1))
    return [{"updates": u, "pred_acc": a} for u, a in sorted(points.items())]


def evaluate_run(run: str, args, gen_args: List[str]) -> List[Dict]:
    refs = scorer.read_lines(os.path.join(args.data, "raw", f"{args.subset}.tgt"))
    src_path = os.path.join(args.data, "raw", f"{args.subset}.src")
    srcs = scorer.read_lines(src_path) if args.task != "xsum" else None
    metric = "ROUGE-L" if args.task == "xsum" else "BLEU-4"
    os.makedirs(os.path.join(run, "dev"), exist_ok=True)
    rows, seen = [], set()
    for ckpt in list_checkpoints(run):
        info = checkpoint_info(ckpt)
        if info["updates"] in seen:  # checkpoint_last.pt is usually also the last interval checkpoint
            continue
        seen.add(info["updates"])
        shard = f"-shard1of{args.dev_shards}" if args.dev_shards > 1 else ""
        out = os.path.join(run, "dev", f"generate-{args.subset}{shard}-{info['updates']}.txt")
        if not os.path.exists(out):
            decode(ckpt, out, args.data_bin or os.path.join(args.data, "bin"), os.path.join(args.data, "bin", "vocab.txt"),
                   args.subset, gen_args, args.batch_size, args.dev_shards)
        if args.dev_shards > 1:  # score the decoded sentences against their own references
            hyp_by_id = read_by_id(out)
            ids = sorted(hyp_by_id)
            value = scorer.score(args.task, [hyp_by_id[i] for i in ids], [refs[i] for i in ids],
                                 [srcs[i] for i in ids] if srcs else None, meteor=False)[metric]
        else:
            value = scorer.score(args.task, scorer.read_hypotheses(out), refs, srcs, meteor=False)[metric]
        rows.append(dict(info, checkpoint=os.path.basename(ckpt), metric=metric, score=value))
        print(f"{os.path.basename(run)}\t{info['updates']} updates\t{info['train_hours']:.3f} h\t"
              f"{metric} {value:.2f}", flush=True)
    if not rows:
        sys.exit(f"error: no checkpoint_<epoch>_<updates>.pt or checkpoint_last.pt in {run}: train first")
    best = max(rows, key=lambda r: (r["score"], r["updates"]))
    link = os.path.join(run, "checkpoint_dev_best.pt")
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    if best["checkpoint"] == "checkpoint_last.pt":
        # Fairseq later rewrites checkpoint_last.pt in place (a copy onto it): take a copy, not a link
        shutil.copyfile(os.path.join(run, best["checkpoint"]), tmp)
    else:
        os.link(os.path.join(run, best["checkpoint"]), tmp)  # a hard link survives Fairseq's pruning
    os.replace(tmp, link)
    scorer.write_json(os.path.join(run, "dev_curve.json"),
                      {"subset": args.subset, "metric": metric, "best": best, "points": rows,
                        "train_pred_acc": train_curve(run)})
    return rows


def plot(curves: Dict[str, List[Dict]], path: str, train: Dict[str, List[Dict]] = None) -> None:
    """Dev score by updates and by training time; a third panel with the training log's first-pass
    token accuracy by updates when any run has one (``train``: name -> :func:`train_curve`)."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # it logs its font search at DEBUG
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = {k: v for k, v in (train or {}).items() if v}
    fig, axes = plt.subplots(1, 3 if train else 2, figsize=(15 if train else 10, 4))
    for name, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["updates"])
        axes[0].plot([r["updates"] for r in rows], [r["score"] for r in rows], marker="o", label=name)
        axes[1].plot([60 * r["train_hours"] for r in rows], [r["score"] for r in rows], marker="o", label=name)
    metric = next(iter(curves.values()))[0]["metric"]
    for ax, xlabel in zip(axes, ("updates", "training wall time (min)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"dev {metric}")
    if train:
        for name, points in train.items():
            axes[2].plot([p["updates"] for p in points], [p["pred_acc"] for p in points], label=name)
        axes[2].set_xlabel("updates")
        axes[2].set_ylabel("train first-pass token accuracy % (pseudo target)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    gen_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, gen_args = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.dev_select", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="save directories of fairseq-train")
    p.add_argument("--data", required=True, help="a `python -m mist_fairseq.prepare` output folder (raw/, bin/)")
    p.add_argument("--data-bin", help="binarized data to decode (default DATA/bin; the baselines' own bin/)")
    p.add_argument("--task", required=True, choices=["squad-qg", "xsum", "quora"], help="scorer task")
    p.add_argument("--subset", default="valid", help="dev split (never the test split)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch")
    p.add_argument("--dev-shards", type=int, default=1,
                   help="score only the first of this many Fairseq batch shards of the dev split (a large dev set)")
    p.add_argument("--plot", help="write the curves of all runs to this PNG")
    p.add_argument("--labels", nargs="+", help="legend names, one per run (default: folder names)")
    args = p.parse_args(argv)
    if args.subset == "test":
        p.error("--subset test: checkpoints are chosen on dev data; score the test set once, afterwards")
    if args.labels and len(args.labels) != len(args.runs):
        p.error(f"--labels: {len(args.labels)} names for {len(args.runs)} runs")
    curves, train = {}, {}
    for i, run in enumerate(args.runs):
        if not os.path.isdir(run):
            sys.exit(f"error: {run}: no such run folder")
        name = args.labels[i] if args.labels else os.path.basename(os.path.normpath(run))
        train[name] = train_curve(run)
        try:
            curves[name] = evaluate_run(run, args, gen_args)
        except scorer.ScoreError as e:
            sys.exit(f"error: {run}: {e}")
    if args.plot:
        plot(curves, args.plot, train)


if __name__ == "__main__":
    main()
