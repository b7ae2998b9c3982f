"""Training-step benchmark: today's fp32 step vs the CPU fast path and the output shortlist, MIST vs
no mixing.

    python -m benchmarks.train_step --data DATA_DIR [--batch-size 64] [--rounds 8] [--threads 2] [--only REGEX]
    python -m benchmarks.train_step --quick          # tiny model: checks that the script works (tests)

Each setting is a real ``fairseq.trainer.Trainer.train_step`` (forward, backward, gradient clipping,
optimizer step) on MiniLM-L6 with the configuration the quickstart and table scripts train
(``mist_fairseq/recipes/plugin.yaml``), in its own worker process so that its peak memory (peak RSS)
is its own. Timing is interleaved: round r sends the same batch r to every worker in turn, so drift
of the machine hits all settings alike, and each speed-up is the median over rounds of the paired
ratio (same batch, same round). A warm-up round is not timed. Finally one step of each MIST worker
runs under torch.profiler: the top operators by self CPU time, before and after.

Writes DOCS/BENCHMARK_train.md/.json and replaces the "Training step" section of DOCS/BENCHMARK.md.
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.report_io import platform_line, prepare_shipped_data, replace_section, write_atomic
from mist_fairseq.recipes import flags

# the plugin recipe (mist_fairseq/recipes/plugin.yaml: what the quickstart and the table scripts train)
# at this benchmark's lr and warm-up, in plain fp32 or on the CPU fast path
RECIPE = ["optimization.lr=[0.0003]", "lr_scheduler.warmup_updates=100"]
SETTINGS = {  # row -> (mix mode, recipe overrides, on the fast path)
    "MIST train step, fp32": ("dynamic", RECIPE, False),
    "MIST train step, fast path": ("dynamic", RECIPE, True),
    # the fast path with Fairseq's own adam: what the optimizer step alone is worth
    "MIST train step, fast path with Fairseq's adam": ("dynamic", RECIPE + ["model.cpu_fast_path=true"], False),
    "no-mix train step, fp32": ("none", RECIPE, False),
    "no-mix train step, fast path": ("none", RECIPE, True),
    # the projection onto 2,000 frequent target WordPieces + the batch's sources and their neighbours
    "MIST train step, fp32, output shortlist 2000": ("dynamic", RECIPE + ["model.output_shortlist=2000"], False),
    "no-mix train step, fp32, output shortlist 2000": ("none", RECIPE + ["model.output_shortlist=2000"], False),
}
PAIRS = {  # row -> its fp32 reference
    "MIST train step, fast path": "MIST train step, fp32",
    "MIST train step, fast path with Fairseq's adam": "MIST train step, fp32",
    "no-mix train step, fast path": "no-mix train step, fp32",
    "MIST train step, fp32, output shortlist 2000": "MIST train step, fp32",
    "no-mix train step, fp32, output shortlist 2000": "no-mix train step, fp32",
}


def chosen_settings(only=None):
    """SETTINGS whose name matches the regex ``only`` (all if None), with the fp32 row each is paired with."""
    import re

    names = [n for n in SETTINGS if only is None or re.search(only, n)]
    names += [PAIRS[n] for n in names if n in PAIRS and PAIRS[n] not in names]
    if not names:
        sys.exit(f"error: --only {only!r} matches no setting: {', '.join(SETTINGS)}")
    return {n: SETTINGS[n] for n in SETTINGS if n in names}


def worker(argv, batches, threads, conn):
    """Builds one trainer and answers ('step', k) / ('profile', k) / ('stop',) from the parent."""
    import torch

    torch.set_num_threads(threads)
    import mist_fairseq  # noqa: F401
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    ds = task.dataset("train")
    samples = [ds.collater([ds[i] for i in b]) for b in batches]
    conn.send(("ready", [int(s["ntokens"]) for s in samples]))
    while True:
        msg = conn.recv()
        if msg[0] == "step":
            t = time.perf_counter()
            trainer.train_step([samples[msg[1]]])
            conn.send(time.perf_counter() - t)
        elif msg[0] == "profile":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                trainer.train_step([samples[msg[1]]])
            ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in ops)
            conn.send([{"op": e.key, "self_ms": e.self_cpu_time_total / 1000.0, "calls": e.count,
                        "share": e.self_cpu_time_total / total} for e in ops[:12]])
        else:
            conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)  # peak RSS, MB
            return


def pick_batches(bin_dir, n_batches, batch_size, seed=1):
    """The same n_batches x batch_size training indices for every worker (a seeded sample)."""
    import numpy as np
    from fairseq.data import data_utils

    n = len(data_utils.load_indexed_dataset(os.path.join(bin_dir, "train.src-tgt.src"), None))
    if n < n_batches * batch_size:
        sys.exit(f"error: {bin_dir} has {n} training pairs; --rounds and --batch-size need {n_batches * batch_size}")
    idx = np.random.RandomState(seed).permutation(n)[: n_batches * batch_size]
    return [idx[i * batch_size:(i + 1) * batch_size].tolist() for i in range(n_batches)]


def run(args):
    common = [args.bin, "--user-dir", os.path.join(REPO, "mist_fairseq"), "--task", "mist_nar",
              "--arch", args.arch, "--criterion", "mist", "--batch-size", str(args.batch_size),
              "--max-update", "100000", "--num-workers", "0", "--seed", "1"]
    if args.pretrained:
        common += ["--pretrained-encoder", args.pretrained]
    batches = pick_batches(args.bin, args.rounds + 1, args.batch_size)
    ctx = mp.get_context("spawn")
    workers = {}
    for name, (mix_mode, overrides, fast_path) in chosen_settings(args.only).items():
        parent, child = ctx.Pipe()
        argv = common + ["--mix-mode", mix_mode] + flags("plugin", overrides, fast_path)
        proc = ctx.Process(target=worker, args=(argv, batches, args.threads, child), daemon=True)
        proc.start()
        workers[name] = (proc, parent)
    for _, conn in workers.values():  # wait until every worker has built its trainer (they build together)
        _, ntokens = conn.recv()
    times = {name: [] for name in workers}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, (_, conn) in workers.items():
            conn.send(("step", r))
            t = conn.recv()
            if r > 0:
                times[name].append(t)
        print(f"round {r}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in times if times[n]),
              flush=True)
    profiles = {}
    for name in [n for n in ("MIST train step, fp32", "MIST train step, fast path") if n in workers]:
        workers[name][1].send(("profile", 1))
        profiles[name] = workers[name][1].recv()
    peak = {}
    for name, (proc, conn) in workers.items():
        conn.send(("stop",))
        peak[name] = conn.recv()
        proc.join()
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"sec_per_step": med, "steps_per_s": 1.0 / med,
                      "tgt_tokens_per_s": statistics.median(n / t for n, t in zip(ntokens[1:], ts)),
                      "peak_rss_mb": peak[name], "times": ts}
    for fast, ref in PAIRS.items():
        if fast in times:
            rows[fast]["speedup_vs_fp32"] = statistics.median(a / b for a, b in zip(times[ref], times[fast]))
    for path in ("fp32", "fast path", "fp32, output shortlist 2000"):
        mist, nomix = f"MIST train step, {path}", f"no-mix train step, {path}"
        if mist in times and nomix in times:
            rows[mist]["cost_vs_nomix"] = statistics.median(a / b for a, b in zip(times[mist], times[nomix]))
    return rows, profiles, ntokens


def report(rows, profiles, ntokens, args, wall):
    lines = [
        "## Training step", "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPU cores "
        f"({platform_line()}), {args.threads} threads, one run ({wall:.0f} s). Command: "
        f"`python -m benchmarks.train_step {' '.join(args.argv)}`", "",
        f"One `Trainer.train_step` (forward, backward, clipping, optimizer) of `{args.arch}`"
        + (f" ({args.pretrained} weights)" if args.pretrained else " (random weights)")
        + f", batches of {args.batch_size} sentences from `{args.data}` "
        f"({statistics.median(ntokens[1:]):.0f} target tokens median), the plugin recipe "
        "(`--glat-hamming first --length-loss-factor 0.1 --tie-output-embeddings`, as the quickstart and "
        f"tables train); {args.rounds} timed rounds after a warm-up, settings interleaved per round. "
        "fp32 = `--optimizer adam` (Fairseq's); fast path = `--cpu-fast-path --optimizer fused_adamw`; "
        "fast path with Fairseq's adam = `--cpu-fast-path --optimizer adam` (what the optimizer alone is worth). "
        "output shortlist 2000 = fp32 with `--output-shortlist 2000` (the projection onto the 2,000 most frequent "
        "train target WordPieces, the batch's source WordPieces, their 8 neighbours each and its gold tokens). "
        "Speed-ups and costs are medians of per-round paired ratios; peak memory is each worker "
        "process's peak RSS (model, data and optimizer included).", "",
        "| setting | s/step (median) | steps/s | target tokens/s | peak RSS (MB) | speed-up vs fp32 | MIST cost vs no-mix |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        sp = f"{r['speedup_vs_fp32']:.1f}x" if "speedup_vs_fp32" in r else "1.0x"
        cost = f"{r['cost_vs_nomix']:.2f}x" if "cost_vs_nomix" in r else "-"
        lines.append(f"| {name} | {r['sec_per_step']:.3f} | {r['steps_per_s']:.2f} | {r['tgt_tokens_per_s']:.0f} "
                     f"| {r['peak_rss_mb']:.0f} | {sp} | {cost} |")
    for name, ops in profiles.items():
        lines += ["", f"Top operators, {name} (one profiled step, self CPU time):", "",
                  "| operator | self ms | calls | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{o['op'][:70]}` | {o['self_ms']:.1f} | {o['calls']} | {100 * o['share']:.1f}% |" for o in ops]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="prepare output folder (default: shipped quora_small, prepared into a temp dir)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per step")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (one step per setting each)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker (they run one at a time)")
    p.add_argument("--arch", default="mist_minilm_l6")
    p.add_argument("--pretrained", default="minilm", help="--pretrained-encoder value ('' = random)")
    p.add_argument("--out", default=os.path.join(REPO, "docs"), help="where the reports go")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 rounds: checks that it runs")
    p.add_argument("--only", metavar="REGEX", help="time only the settings whose name matches (Python regex), "
                   "each with the fp32 row it is compared with; the report then goes to --out only (no BENCHMARK.md)")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.arch, args.pretrained, args.batch_size, args.rounds = "mist_tiny", "", 8, 2
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            args.data = prepare_shipped_data(os.path.join(tmp, "quora_small"))
        args.bin = os.path.join(args.data, "bin")
        rows, profiles, ntokens = run(args)
        if args.data.startswith(tmp):
            args.data = "the shipped quora_small"
    text = report(rows, profiles, ntokens, args, time.time() - t0)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    name = "BENCHMARK_train_quick" if args.quick else "BENCHMARK_train"
    write_atomic(os.path.join(args.out, name + ".md"), "# Benchmark: training step\n\n" + text)
    write_atomic(os.path.join(args.out, name + ".json"),
                 json.dumps({"rows": rows, "profiles": profiles, "ntokens": ntokens}, indent=2) + "\n")
    if not args.quick and not args.only:
        replace_section(os.path.join(args.out, "BENCHMARK.md"), "Training step", text)


if __name__ == "__main__":
    main()
