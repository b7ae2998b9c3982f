"""The report of benchmarks.latency: markdown table per batch size and a bar chart."""

import os
import time

import numpy as np
import torch

from benchmarks.report_io import platform_line


def write_report(rows, n, args, wall):
    lines = [
        "# Benchmark: decoding latency and training step",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPU cores "
        f"({platform_line()}), torch {torch.__version__}, {args.threads} threads, one run ({wall:.0f} s).",
        "",
        f"Command: `python -m benchmarks.latency {' '.join(args.argv)}`",
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
