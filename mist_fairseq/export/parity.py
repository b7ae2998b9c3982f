"""How closely an exported model follows the PyTorch generator: identical outputs, token agreement,
and (with references) BLEU-4 of each and the paired bootstrap of each precision against PyTorch.

    python -m mist_fairseq.export.parity EXPORT_DIR --data DATA_BIN --src test.src --ref test.tgt \
        --json parity.json [--task quora] [--threads 2]

The PyTorch side is the checkpoint the export came from (recorded in its mist_export.json).
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, List


def token_agreement(a: List[str], b: List[str]) -> Dict:
    """a, b: outputs for the same inputs. Returns the share of identical outputs and of equal tokens
    at equal positions (whitespace tokens; a length mismatch counts the missing ones as different)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} outputs against {len(b)}")
    same_tok = total = 0
    for x, y in zip(a, b):
        xs, ys = x.split(), y.split()
        same_tok += sum(p == q for p, q in zip(xs, ys))
        total += max(len(xs), len(ys))
    return {"n": len(a), "identical": sum(x == y for x, y in zip(a, b)) / max(len(a), 1),
            "token_agreement": same_tok / max(total, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.export.parity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export", help="export folder")
    p.add_argument("--data", required=True, help="fairseq-preprocess folder of the checkpoint's data")
    p.add_argument("--src", required=True, help="source sentences, one a line")
    p.add_argument("--ref", help="references, aligned with --src (adds BLEU and the bootstrap)")
    p.add_argument("--task", default="quora", help="scorer task (quora | squad-qg)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", required=True, help="where the report goes")
    args = p.parse_args(argv)

    from mist_fairseq.export.runner import OnnxMistModel, read_config
    from mist_fairseq.inference import MistModel
    from mist_fairseq.score import compare, score

    config = read_config(args.export)
    ckpt = config.get("checkpoint")
    if not ckpt or not os.path.exists(ckpt):
        p.error(f"{args.export}/mist_export.json names checkpoint {ckpt!r}, which is not here: the PyTorch side needs it")
    with open(args.src, encoding="utf-8") as f:
        sources = [ln.rstrip("\n") for ln in f]
    refs = None
    if args.ref:
        with open(args.ref, encoding="utf-8") as f:
            refs = [ln.rstrip("\n") for ln in f]
    hub = MistModel.from_pretrained(os.path.dirname(ckpt), checkpoint_file=os.path.basename(ckpt),
                                    data_name_or_path=args.data, threads=args.threads, batch_size=args.batch_size)
    t = time.time()
    outputs = {"pytorch": hub.generate(sources)}
    seconds = {"pytorch": time.time() - t}
    for prec in config["precisions"]:
        m = OnnxMistModel(args.export, precision=prec, threads=args.threads, batch_size=args.batch_size)
        t = time.time()
        outputs[f"onnx-{prec}"] = m.generate(sources)
        seconds[f"onnx-{prec}"] = time.time() - t
    report = {"export": os.path.abspath(args.export), "checkpoint": ckpt, "n": len(sources),
              "command": "python -m mist_fairseq.export.parity " + " ".join(argv if argv is not None else sys.argv[1:]),
              "decode_seconds": {k: round(v, 1) for k, v in seconds.items()}, "systems": {}}
    for name, out in outputs.items():
        row = token_agreement(out, outputs["pytorch"])
        if refs is not None:
            s = score(args.task, out, refs, sources, meteor=False)
            row.update({k: s[k] for k in ("BLEU-4", "iBLEU") if k in s})
            if name != "pytorch":
                row["vs_pytorch"] = compare(args.task, out, outputs["pytorch"], refs, sources)
        report["systems"][name] = row
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, args.json)
    print(json.dumps({k: {m: v[m] for m in ("identical", "token_agreement", "BLEU-4") if m in v}
                      for k, v in report["systems"].items()}))


if __name__ == "__main__":
    main()
