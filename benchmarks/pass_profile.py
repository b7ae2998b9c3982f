"""Where the exported single pass spends its time: each stage of ``OnnxMistModel.generate`` timed per
sentence at each batch size, and the target graph's operators from onnxruntime's own profiler.

    python -m benchmarks.pass_profile --model EXPORT_DIR --sources DATA/raw/test.src \
        [--precision fp32|int8] [--batch-sizes 1 16] [--n 160] [--threads 2] [--out docs/serving/PASS_PROFILE]
    python -m benchmarks.pass_profile --quick     # a tiny export made on the fly: checks that it runs (tests)

Stages (milliseconds per sentence, mean over the batches of the first --n sources after one warm-up
batch, so that they add up to the total): tokenization (WordPiece + ids), the source graph, the target graph, the generator's own work
between and after them (length choice, the slots, argmax or CTC collapse: everything of
``generator.generate`` that is not a graph), and detokenization; ``total`` is one ``generate`` call.
Then one more pass over the same batches with onnxruntime's profiler on the target graph: its time by
operator type, and the output projection (the MatMul/Gemm nodes that read the vocabulary-sized
weight) on its own. Writes OUT.md and OUT.json.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict

from benchmarks.report_io import platform_line, write_atomic


class TimedSession:
    """An onnxruntime session whose ``run`` adds its wall time to ``spent``."""

    def __init__(self, session):
        self.session, self.spent = session, 0.0

    def run(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.spent += time.perf_counter() - t


def stage_times(runner, sentences, batch_size):
    """ms per sentence of each stage for one batch of sentences (the runner's generate, taken apart)."""
    import torch
    from fairseq.data import data_utils

    model = runner.model
    src_s, tgt_s = TimedSession(model.source), TimedSession(model.target)
    model.source, model.target = src_s, tgt_s
    try:
        gen = runner.generator()
        t0 = time.perf_counter()
        tokens = [runner.encode(s) for s in sentences]
        t1 = time.perf_counter()
        hypos = []
        with torch.inference_mode():
            for b in range(0, len(tokens), batch_size):
                src = data_utils.collate_tokens(tokens[b:b + batch_size], runner.dict.pad(),
                                                left_pad=runner.config["left_pad_source"])
                hypos += gen.generate([model], {"net_input": {"src_tokens": src}})
        t2 = time.perf_counter()
        [runner.decode(h[0]["tokens"]) for h in hypos]
        t3 = time.perf_counter()
    finally:
        model.source, model.target = src_s.session, tgt_s.session
    n = len(sentences)
    ms = {"tokenize": t1 - t0, "source graph": src_s.spent, "target graph": tgt_s.spent,
          "generator (not graphs)": (t2 - t1) - src_s.spent - tgt_s.spent, "detokenize": t3 - t2, "total": t3 - t0}
    return {k: 1000.0 * v / n for k, v in ms.items()}


def projection_nodes(graph_path, vocab_size):
    """Names of the target graph's MatMul/Gemm nodes that read a vocabulary-sized initializer."""
    import onnx

    g = onnx.load(graph_path, load_external_data=False).graph
    big = {i.name for i in g.initializer if vocab_size in tuple(i.dims)}
    # quantized graphs read the weight through DequantizeLinear / MatMulInteger inputs
    produced_from_big = {o for n in g.node if set(n.input) & big for o in n.output}
    return {n.name for n in g.node if n.op_type in ("MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul",
                                                   "MatMulIntegerToFloat")
            and set(n.input) & (big | produced_from_big)}


def operator_profile(path, precision, threads, batches, vocab_size):
    """One pass over the batches with onnxruntime's profiler on, in sessions the runner builds with its own
    settings: ms per sentence of the target graph by operator type and for the output projection."""
    import onnxruntime as ort

    from mist_fairseq.export.runner import OnnxMistModel

    prefix = os.path.join(tempfile.mkdtemp(prefix="pass_profile_"), "ort")
    base = ort.SessionOptions

    class Profiled(base):  # the runner sets its options on top of these
        def __init__(self):
            super().__init__()
            self.enable_profiling, self.profile_file_prefix = True, prefix

    ort.SessionOptions = Profiled
    try:
        runner = OnnxMistModel(path, precision=precision, threads=threads)
    finally:
        ort.SessionOptions = base
    n = 0
    for sentences, batch_size in batches:
        runner.generate(sentences)
        n += len(sentences)
    runner.model.source.end_profiling()
    events = json.load(open(runner.model.target.end_profiling()))
    proj = projection_nodes(os.path.join(path, runner.config["graphs"][precision]["target"]), vocab_size)
    by_op, proj_us, total_us = defaultdict(float), 0.0, 0.0
    for e in events:
        args = e.get("args", {})
        if e.get("cat") != "Node" or "op_name" not in args or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        by_op[args["op_name"]] += e["dur"]
        total_us += e["dur"]
        if node in proj:
            proj_us += e["dur"]
    shutil.rmtree(os.path.dirname(prefix))  # onnxruntime's traces
    return {"sentences": n, "kernel_ms_per_sentence": total_us / 1000.0 / n,
            "projection_ms_per_sentence": proj_us / 1000.0 / n,
            "projection_share": proj_us / total_us if total_us else 0.0, "projection_nodes": sorted(proj),
            "by_operator_ms_per_sentence": {k: v / 1000.0 / n for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}}


def render(r):
    stages = list(next(iter(r["stages"].values())))
    lines = ["# Where the exported single pass spends its time", "", f"`{r['command']}`", "",
             f"{r['date']}, {r['platform']}, {r['threads']} threads, {r['precision']} graphs of `{r['model']}` "
             f"({'CTC' if r['ctc'] else 'length head'}), the first {r['n']} sources; ms per sentence, mean over "
             "batches (one warm-up batch not counted).", "",
             "| batch | " + " | ".join(stages) + " |", "|---:|" + "---:|" * len(stages)]
    for bs, st in r["stages"].items():
        lines.append(f"| {bs} | " + " | ".join(f"{st[s]:.2f}" for s in stages) + " |")
    for bs, p in r["operators"].items():
        lines += ["", f"Target graph, batch {bs}, onnxruntime's profiler: kernels {p['kernel_ms_per_sentence']:.2f} "
                  f"ms a sentence, of which the output projection ({len(p['projection_nodes'])} node(s)) "
                  f"{p['projection_ms_per_sentence']:.2f} ms (**{100 * p['projection_share']:.1f} %**).", "",
                  "| operator | ms per sentence |", "|---|---:|"]
        for op, ms in list(p["by_operator_ms_per_sentence"].items())[:10]:
            lines.append(f"| {op} | {ms:.3f} |")
    return "\n".join(lines) + "\n"


def quick_export(tmp):
    """A tiny trained-for-one-update checkpoint exported to tmp/export (for --quick)."""
    import subprocess

    from benchmarks.report_io import REPO, prepare_shipped_data

    data = prepare_shipped_data(os.path.join(tmp, "data"))
    subprocess.run(["fairseq-train", os.path.join(data, "bin"), "--user-dir", os.path.join(REPO, "mist_fairseq"),
                    "--task", "mist_nar", "--arch", "mist_tiny", "--criterion", "mist", "--optimizer", "adam",
                    "--lr", "1e-4", "--batch-size", "8", "--max-update", "1", "--save-dir", os.path.join(tmp, "ck"),
                    "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0", "--cpu"],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "mist_fairseq.export", os.path.join(tmp, "ck", "checkpoint_last.pt"),
                    "--data", os.path.join(data, "bin"), "--out", os.path.join(tmp, "export")],
                   check=True, capture_output=True, cwd=REPO)
    return os.path.join(tmp, "export"), os.path.join(data, "raw", "test.src")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="export folder (python -m mist_fairseq.export)")
    p.add_argument("--sources", help="input sentences, one a line")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--n", type=int, default=160, help="sources decoded at each batch size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/serving/PASS_PROFILE", help="OUT.md and OUT.json")
    p.add_argument("--quick", action="store_true", help="a tiny export made on the fly, 8 sources")
    args = p.parse_args(argv)
    quick_dir = None
    if args.quick:
        quick_dir = tempfile.mkdtemp(prefix="pass_profile_quick_")
        args.model, args.sources = quick_export(quick_dir)
        args.n, args.batch_sizes = 8, [1, 4]
    elif not (args.model and args.sources):
        p.error("--model and --sources are needed (or --quick)")
    import torch

    from mist_fairseq.export.runner import OnnxMistModel

    torch.set_num_threads(args.threads)
    with open(args.sources, encoding="utf-8") as f:
        sources = [ln.rstrip("\n") for _, ln in zip(range(args.n), f)]
    runner = OnnxMistModel(args.model, precision=args.precision, threads=args.threads)
    vocab_size = len(runner.dict)
    stages, operators = {}, {}
    for bs in args.batch_sizes:
        batches = [(sources[i:i + bs], bs) for i in range(0, len(sources), bs)]
        stage_times(runner, batches[0][0], bs)  # warm-up
        per = [stage_times(runner, s, bs) for s, _ in batches]
        stages[str(bs)] = {k: statistics.fmean(x[k] for x in per) for k in per[0]}  # means: the stages add up
        operators[str(bs)] = operator_profile(args.model, args.precision, args.threads, batches, vocab_size)
    report = {"command": "python -m benchmarks.pass_profile " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "platform": platform_line(),
              "threads": args.threads, "precision": args.precision, "model": args.model, "ctc": runner.model.ctc,
              "n": len(sources), "stages": stages, "operators": operators}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_atomic(args.out + ".json", json.dumps(report, indent=1) + "\n")
    write_atomic(args.out + ".md", render(report))
    print(render(report))
    if quick_dir:
        shutil.rmtree(quick_dir)


if __name__ == "__main__":
    main()
