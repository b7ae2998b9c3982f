"""``python -m mist_fairseq.export CHECKPOINT --data DATA_BIN --out DIR [--int8] [--check FILE]``."""

import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m mist_fairseq.export",
        description="Export a mist_nar checkpoint's single-pass decoder to ONNX (two graphs: source pass with "
        "the length head, target pass with the output head; dynamic batch and lengths), with the vocabulary "
        "and decoding options; run it with mist_fairseq.export.OnnxMistModel or the service's --backend onnx.")
    p.add_argument("checkpoint", help="a mist_nar checkpoint file (e.g. RUN/checkpoint_best.pt)")
    p.add_argument("--data", required=True,
                   help="the fairseq-preprocess folder of its training data (dict.src.txt, vocab.txt)")
    p.add_argument("--out", required=True, help="export folder, written whole or not at all (built beside it, then renamed; a previous "
                   "export there is replaced, a folder holding other files refused)")
    p.add_argument("--int8", action="store_true",
                   help="also write int8 graphs (onnxruntime dynamic quantization of every MatMul weight)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--check", metavar="FILE",
                   help="source sentences, one a line: decode them with PyTorch and with each exported precision "
                   "and print the agreement (JSON)")
    p.add_argument("--check-lines", type=int, default=200, help="first N lines of --check (default 200)")
    args = p.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        p.error(f"{args.checkpoint}: no such checkpoint file")
    if args.check and not os.path.isfile(args.check):
        p.error(f"--check {args.check}: no such file")

    from mist_fairseq.export.onnx_export import export
    from mist_fairseq.inference import MistModel

    try:
        hub = MistModel.from_pretrained(os.path.dirname(os.path.abspath(args.checkpoint)),
                                        checkpoint_file=os.path.basename(args.checkpoint), data_name_or_path=args.data)
    except FileNotFoundError as e:
        p.error(str(e))
    try:
        config = export(hub, args.out, int8=args.int8, opset=args.opset, checkpoint=args.checkpoint)
    except ValueError as e:
        p.error(str(e))
    sizes = {f: os.path.getsize(os.path.join(args.out, f)) for g in config["graphs"].values() for f in g.values()}
    print(f"wrote {args.out}: " + ", ".join(f"{f} ({n / 2**20:.1f} MiB)" for f, n in sizes.items()), file=sys.stderr)
    if args.check:
        from mist_fairseq.export.parity import token_agreement
        from mist_fairseq.export.runner import OnnxMistModel

        with open(args.check, encoding="utf-8") as f:
            sources = [line.rstrip("\n") for _, line in zip(range(args.check_lines), f)]
        ref = hub.generate(sources)
        report = {p: token_agreement(OnnxMistModel(args.out, precision=p).generate(sources), ref)
                  for p in config["precisions"]}
        print(json.dumps(report))


if __name__ == "__main__":
    main()
