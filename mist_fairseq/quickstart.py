"""The built-in default job: fine-tune the real all-MiniLM-L6-v2 as a single-pass NAR generator on a
small real paraphrase set (3,000 Quora pairs shipped in mist_fairseq/resources/quora_small), then
generate on 500 held-out pairs and print samples, scores and decoding speed.

    python -m mist_fairseq.quickstart [--workdir DIR] [--budget-minutes 10] [--targets kd|raw]
        [--mix-mode none|dynamic] [--ctc [auto|on|off]] [--target-input mask|copy] [--output-shortlist 2000]
        [--train-args "--dropout 0"]

The whole job is budgeted by wall time: training gets what is left of ``--budget-minutes`` after the
steps before it and a reserve for the steps after it (measured on the machine at hand), capped at
``--max-update``. ``--targets kd`` (default) trains on the shipped distilled targets of the 3,000
pairs (``train.kd.tgt``: the same-encoder AR teacher's greedy outputs, remade by
``examples/quickstart_kd.sh``); the 500 test pairs are always scored against their real references.
The defaults (distilled targets, no mixing) won on the 300 dev pairs at this budget (docs/RESULTS.md,
"Quickstart"): a MIST update costs about twice a plain one, and at ten minutes the extra updates
are worth more; ``--mix-mode dynamic`` trains MIST. Every step is a real CLI call (prepare,
fairseq-train, fairseq-generate), printed before it runs, so
the same commands work on your own data. Training resumes from
DIR/checkpoints-TARGETS-MIXMODE[-ctc]/checkpoint_last.pt. ``--ctc`` (``on``) trains a CTC output instead
of the length head, ``--ctc off`` the length head; the default, ``auto``, takes CTC where the CPU has
AMX units and the fast path is on (ten minutes there buy the ~900 CTC updates at which it won on dev)
and the length head elsewhere (a CTC update costs about 1.4x a length-head one; at the 210 CTC updates
of a CPU with avx512_bf16 only, the length head won). ``--target-input copy`` fills the target slots
with the uniformly copied source instead of [MASK]s (checkpoints in DIR/...-copy). ``--output-shortlist
2000`` (default; ``0`` = the whole vocabulary, checkpoints without the -sl suffix) projects onto the 2,000
most frequent train target WordPieces plus each batch's source WordPieces and their neighbours: about
1.4x the updates in the budget, +3.8 dev BLEU-4 on a CPU without bf16 units. ``--train-args``
appends fairseq-train options (they win over the recipe's); a changed option does not change the
checkpoint folder, so give such a run its own ``--workdir``.
"""

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from mist_fairseq.models.fast_path import amx_supported
from mist_fairseq.recipes import flags as recipe_flags

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "resources", "quora_small")


def run(cmd, log_path=None):
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if log_path is None:
        return subprocess.run(cmd, check=True, capture_output=True, text=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: command failed, see {log_path}")
    return proc


PROGRESS = re.compile(r"\bloss=([\d.]+).*?\bnum_updates=(\d+)")
RESUMED = re.compile(r"Loaded checkpoint .*\(epoch \d+ @ (\d+) updates\)")  # fairseq.trainer's words


def progress_line(line, total, elapsed, start_update=0, budget_s=None):
    """A fairseq train_inner log line -> 'update   40/400 | loss   7.12 | 0.45 updates/s | 12:30 left',
    or None for any other line. elapsed: seconds since this run started; start_update: where it
    resumed from (the speed counts this run's updates only); budget_s: the training time budget
    (the time left is then the smaller of the budget's and the update cap's, and the line says so)."""
    m = PROGRESS.search(line) if "num_updates=" in line else None
    if m is None:
        return None
    loss, done = float(m.group(1)), int(m.group(2))
    rate = (done - start_update) / max(elapsed, 1e-6)
    left = int((total - done) / rate) if rate > 0 else 0
    shown = f"  update {done:>4}/{total} | loss {loss:6.2f} | {rate:.2f} updates/s | "
    if budget_s is None:
        return shown + f"{left // 60}:{left % 60:02d} left"
    left = max(0, min(left, int(budget_s - elapsed)))
    return shown + f"{left // 60}:{left % 60:02d} left of a {int(budget_s) // 60}:{int(budget_s) % 60:02d} budget"


def run_with_progress(cmd, log_path, total, budget_s=None):
    """Runs fairseq-train, its whole output in log_path, one progress line on the terminal per
    log interval (updates done/total, loss, updates/s, time left; of budget_s seconds if given)."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t_start, start_update = time.time(), 0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            resumed = RESUMED.search(line)
            if resumed:
                start_update, t_start = int(resumed.group(1)), time.time()
                print(f"  resumed at update {start_update}", flush=True)
            shown = progress_line(line, total, time.time() - t_start, start_update, budget_s)
            if shown:
                print(shown, flush=True)
        proc.wait()
    if proc.returncode != 0:
        sys.exit(f"error: command failed, see {log_path}")
    return proc


def train_command(args, data_bin, ckpt_dir, budget_s=None):
    """The quickstart's fairseq-train command line; budget_s: training wall-time budget in seconds
    (Fairseq's --stop-time-hours), None for none."""
    return (["fairseq-train", data_bin, "--user-dir", HERE, "--task", "mist_nar", "--arch", "mist_minilm_l6",
         "--criterion", "mist", "--mix-mode", args.mix_mode, "--pretrained-encoder", "minilm",
         "--batch-size", str(args.batch_size), "--max-update", str(args.max_update),
         "--save-dir", ckpt_dir, "--no-epoch-checkpoints", "--save-interval-updates", "50",
         "--keep-interval-updates", "1", "--log-format", "simple", "--log-interval", "10",
         "--num-workers", "0", "--seed", "1", "--disable-validation"]
            + (["--ctc"] if args.ctc else [])
            + ["--target-input", args.target_input]
            + (["--output-shortlist", str(args.output_shortlist)] if args.output_shortlist else [])
            + (["--stop-time-hours", f"{budget_s / 3600:.5f}"] if budget_s else [])
            # the plugin recipe (mist_fairseq/recipes/plugin.yaml: it won on dev at CPU budgets) at this job's lr
            + recipe_flags("plugin", [f"optimization.lr=[{args.lr}]", f"lr_scheduler.warmup_updates={args.warmup_updates}"],
                           fast_path=args.fast_path)
            + shlex.split(args.train_args))


def untrained_hypotheses(data_bin, split="test", batch_size=32, ctc=False, target_input="mask"):
    """Generates with the pretrained encoder and fresh heads, before any update (in-process)."""
    import mist_fairseq  # noqa: F401  (registers the task/model)
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data_bin, "--user-dir", HERE, "--task", "mist_nar", "--arch", "mist_minilm_l6",
        "--criterion", "mist", "--pretrained-encoder", "minilm", "--seed", "1", "--tie-output-embeddings",
        "--target-input", target_input,
    ] + (["--ctc"] if ctc else []))
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    task.load_dataset(split)
    model = task.build_model(cfg.model).eval()
    gen = task.build_generator([model], cfg.generation)
    itr = task.get_batch_iterator(task.dataset(split), max_sentences=batch_size).next_epoch_itr(shuffle=False)
    hyps = {}
    for sample in itr:
        for sid, h in zip(sample["id"].tolist(), gen.generate([model], sample)):
            hyps[sid] = task.target_dictionary.string(h[0]["tokens"]).replace(" ##", "")
    return [hyps[i] for i in range(len(hyps))]


def resolve_ctc(choice: str, fast_path: bool, amx: bool = None) -> bool:
    """--ctc auto|on|off -> whether the quickstart trains the CTC output (module docstring)."""
    if choice != "auto":
        return choice == "on"
    return bool(fast_path and (amx_supported() if amx is None else amx))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "mist_quickstart"),
                   help="where data, checkpoints and outputs go (outside the repo)")
    p.add_argument("--budget-minutes", type=float, default=10.0,
                   help="wall time of the whole job; training gets what the other steps leave (0 = no budget)")
    p.add_argument("--max-update", type=int, default=5000,
                   help="training updates at most (with a budget, the budget ends training first on 2 cores)")
    p.add_argument("--targets", choices=["kd", "raw"], default="kd",
                   help="train targets: the shipped distilled ones (train.kd.tgt) or the original references")
    p.add_argument("--mix-mode", choices=["dynamic", "none"], default="none",
                   help="'none': plain NAT with glancing (the dev winner at this budget); 'dynamic': MIST "
                   "(about twice the cost of an update)")
    p.add_argument("--ctc", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="'on' (or --ctc alone): a CTC output (slots at twice the source length, no length to "
                   "predict); 'off': the length head; 'auto': CTC where the CPU has AMX units and the fast path "
                   "is on, the length head elsewhere (each won on dev at the updates such a CPU affords)")
    p.add_argument("--target-input", choices=["mask", "copy"], default="mask",
                   help="what the target slots hold before the pass: [MASK] or the source, uniformly copied")
    p.add_argument("--output-shortlist", type=int, default=2000,
                   help="project onto the 2,000 most frequent train target WordPieces plus each batch's source "
                   "WordPieces and their neighbours instead of all 30,522 (1.4x the updates in the budget on a "
                   "CPU without bf16 units; 0 = the whole vocabulary)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per update")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--warmup-updates", type=int, default=60, help="updates of linear learning-rate warm-up")
    p.add_argument("--train-args", default="",
                   help="more fairseq-train options, appended last so that they win (e.g. \"--dropout 0\")")
    p.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                   help="train in plain fp32 with Fairseq's adam (default: --cpu-fast-path --optimizer fused_adamw)")
    args = p.parse_args(argv)
    args.ctc_choice, args.ctc = args.ctc, resolve_ctc(args.ctc, args.fast_path)  # ctc: bool from here on
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    # the in-process step below goes through Fairseq's config machinery, which logs at INFO and warns
    # about Hydra deprecations; the CLI steps keep their own logs in the work folder
    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from mist_fairseq.score import read_hypotheses, read_lines, score

    train_tgt = os.path.join(DATA, "train.kd.tgt" if args.targets == "kd" else "train.tgt")
    if not os.path.exists(train_tgt):
        sys.exit(f"error: {train_tgt} is missing; remake it with examples/quickstart_kd.sh or pass --targets raw")
    os.makedirs(args.workdir, exist_ok=True)
    prep = os.path.join(args.workdir, f"data-{args.targets}")
    data_bin = os.path.join(prep, "bin")
    ckpt_dir = os.path.join(args.workdir, f"checkpoints-{args.targets}-{args.mix_mode}{'-ctc' if args.ctc else ''}"
                            f"{'-copy' if args.target_input == 'copy' else ''}"
                            f"{f'-sl{args.output_shortlist}' if args.output_shortlist else ''}")
    py = sys.executable

    print(f"== 1. prepare: WordPiece with the MiniLM vocab, binarize (fairseq-preprocess); train targets: "
          f"{'distilled (train.kd.tgt)' if args.targets == 'kd' else 'the references'}", flush=True)
    if not os.path.exists(os.path.join(data_bin, "test.src-tgt.tgt.bin")):
        files = {(s, side): os.path.join(DATA, f"{s}.{side}") for s in ("train", "valid", "test") for side in ("src", "tgt")}
        files[("train", "tgt")] = train_tgt
        run([py, "-m", "mist_fairseq.prepare", "parallel", "--out", prep]
            + [a for (s, side), path in files.items() for a in (f"--{s}-{side}", path)])
    refs = read_lines(os.path.join(prep, "raw", "test.tgt"))
    srcs = read_lines(os.path.join(prep, "raw", "test.src"))

    print("== 2. the untrained model (MiniLM encoder, fresh MLM/length heads)", flush=True)
    t_untrained = time.time()
    untrained = untrained_hypotheses(data_bin, ctc=args.ctc, target_input=args.target_input)
    untrained_s = time.time() - t_untrained

    budget_s = None
    if args.budget_minutes > 0:
        # steps 4-5 start two fairseq-generate processes (each loads the model) and decode 500 + 100
        # sentences: measured at 2.5x step 2 plus 40 s on a 2-core machine without bf16 units
        reserve = 2.5 * untrained_s + 45
        budget_s = max(30.0, 60 * args.budget_minutes - (time.time() - t0) - reserve)
    mode = ("MIST" if args.mix_mode == "dynamic" else "plain NAT (no mixing)") + (
        " with a CTC output" if args.ctc else " with the length head") + (
        f" (--ctc auto: {'AMX units found' if args.ctc else 'no AMX units or no fast path'})"
        if args.ctc_choice == "auto" else "")
    limit = f"{budget_s / 60:.1f} minutes or {args.max_update} updates" if budget_s else f"{args.max_update} updates"
    print(f"== 3. fine-tune with {mode} for {limit}, whichever comes first (resumes from checkpoint_last.pt)",
          flush=True)
    t_train = time.time()
    train_log = os.path.join(args.workdir, "train.log")
    run_with_progress(train_command(args, data_bin, ckpt_dir, budget_s), train_log, args.max_update, budget_s)
    train_s = time.time() - t_train
    updates = max((int(u) for u in re.findall(r"num_updates=(\d+)", open(train_log).read())), default=0)

    print("== 4. generate the 500 held-out pairs (fairseq-generate, batch 32; batch 1 on the first 100)", flush=True)
    ckpt = os.path.join(ckpt_dir, "checkpoint_last.pt")
    gen_path = os.path.join(args.workdir, "generate-test.txt")
    gen_cmd = ["fairseq-generate", data_bin, "--user-dir", HERE, "--task", "mist_nar", "--path", ckpt,
               "--gen-subset", "test", "--bpe", "bert", "--bpe-vocab-file", os.path.join(data_bin, "vocab.txt")]
    run(gen_cmd + ["--batch-size", "32"], log_path=gen_path)
    log1 = os.path.join(args.workdir, "generate-test-batch1.txt")
    run(gen_cmd + ["--batch-size", "1", "--num-shards", "5", "--shard-id", "0"], log_path=log1)
    speed = {}
    for name, path in (("batch 32", gen_path), ("batch 1", log1)):
        m = re.search(r"Translated ([\d,]+) sentences \([\d,]+ tokens\) in ([\d.]+)s", open(path).read())
        if m:
            n, secs = int(m.group(1).replace(",", "")), float(m.group(2))
            speed[name] = 1000.0 * secs / n
    hyps = read_hypotheses(gen_path)

    print("== 5. scores on the 500 held-out pairs (BLEU-4 of pycocoevalcap, BERT-normalized text)", flush=True)
    name = (f"{'MIST' if args.mix_mode == 'dynamic' else 'NAT'}{', CTC' if args.ctc else ''}"
            f"{', KD' if args.targets == 'kd' else ''}, {updates} updates")
    rows = {
        "untrained model": score("quora", untrained, refs, srcs, meteor=False),
        "copy the source": score("quora", srcs, refs, srcs, meteor=False),
        name: score("quora", hyps, refs, srcs, meteor=False),
    }
    print("\nsamples:")
    for i in range(5):
        print(f"  source : {srcs[i]}\n  output : {hyps[i]}\n  gold   : {refs[i]}\n")
    print(f"{'system':<26} {'BLEU-1':>7} {'BLEU-4':>7} {'self-BLEU':>9} {'iBLEU':>7} {'= source':>9}")
    for row, r in rows.items():
        same = round(r["identical-to-source %"] * r["n"] / 100)
        print(f"{row:<26} {r['BLEU-1']:7.2f} {r['BLEU-4']:7.2f} {r['self-BLEU']:9.2f} {r['iBLEU']:7.2f} "
              f"{same:5d}/{r['n']}")
    print("\ndecoding (fairseq-generate, single pass, 2 CPU threads): "
          + ", ".join(f"{k}: {v:.1f} ms/sentence" for k, v in speed.items()))
    print(f"training: {train_s:.0f} s, {updates} updates; whole quickstart: {time.time() - t0:.0f} s; "
          f"outputs in {args.workdir}")
    mist = rows[name]
    n_equal = round(mist["identical-to-source %"] * mist["n"] / 100)
    print(f"{n_equal} of {mist['n']} outputs equal their source (copying flatters paraphrase BLEU)")


if __name__ == "__main__":
    main()
