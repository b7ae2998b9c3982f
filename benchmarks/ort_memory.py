"""Resident memory and time of the ONNX runner over batches of mixed shapes, with onnxruntime's memory
pattern and CPU arena each on or off: the evidence for the runner's ``enable_mem_pattern = False``.

    python -m benchmarks.ort_memory --model EXPORT_DIR --sources DATA/raw/test.src \
        [--precision fp32] [--mem-pattern on|off|runner] [--arena on|off] [--batches 400] [--threads 2]

Draws --batches batches of 1-32 distinct inputs (seeded) from the first 500 sources, decodes each with
``OnnxMistModel.generate`` and prints resident memory (MiB) every 50 batches and the total seconds as
one JSON line. ``--mem-pattern runner`` leaves the runner's own setting; ``on``/``off`` override it by
wrapping ``onnxruntime.SessionOptions`` before the runner builds its sessions. Run one setting per
process, one after the other on an idle machine.
"""

import argparse
import json
import random
import time


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export folder (python -m mist_fairseq.export)")
    p.add_argument("--sources", required=True, help="input sentences, one a line")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--mem-pattern", choices=["runner", "on", "off"], default="runner")
    p.add_argument("--arena", choices=["on", "off"], default="on")
    p.add_argument("--batches", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import onnxruntime as ort

    base = ort.SessionOptions

    class Options(base):  # what the runner builds its sessions with; its own settings come after ours
        def __init__(self):
            super().__init__()
            self.enable_cpu_mem_arena = args.arena == "on"

        def __setattr__(self, name, value):
            if name == "enable_mem_pattern" and args.mem_pattern != "runner":
                value = args.mem_pattern == "on"
            super().__setattr__(name, value)

    ort.SessionOptions = Options
    from mist_fairseq.export.runner import OnnxMistModel

    model = OnnxMistModel(args.model, args.precision, threads=args.threads)
    with open(args.sources, encoding="utf-8") as f:
        sources = [ln.rstrip("\n") for _, ln in zip(range(500), f)]
    rng = random.Random(0)
    t0, marks = time.time(), []
    for i in range(args.batches):
        model.generate(rng.sample(sources, rng.randint(1, min(32, len(sources)))))
        if i % 50 == 49:
            marks.append(round(rss_mib(), 1))
    out = {"mem_pattern": args.mem_pattern, "arena": args.arena, "precision": args.precision,
           "batches": args.batches, "rss_mib_every_50": marks, "seconds": round(time.time() - t0, 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
