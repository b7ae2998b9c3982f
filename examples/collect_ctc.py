"""Issue 24's Quora table: CTC students (examples/quora_ctc.sh) beside the length-head students and the AR
teacher of examples/quora_kd.sh; paired bootstrap against the length-head no-mixing KD student's single
pass, copy-the-source and iBLEU beside every row, batch-1 and batch-16 ms from the benchmark, and the
quality-vs-latency chart.

    python examples/collect_ctc.py --root ~/kd --data ~/kd/data/quora [--bench BENCH.json] --out docs/quora_ctc

Reads ROOT/quora_{none_kd,dynamic_kd,ar_same,ctc_*}/{generate-test.txt,dev_curve.json,modes/*.txt}; a
missing output is listed as missing. Test outputs were decoded once each.
"""

import argparse
import os
import sys

from collect_kd import format_table, plot
import spec
from collect_rows import load, scored_rows, test_split

from mist_fairseq import score as scorer

SPEC = spec.load("quora_ctc")  # the rows, decodings and reference: examples/specs/quora_ctc.yaml
ROWS = spec.table_rows(SPEC)
REFERENCE, REFERENCE_RUN, REFERENCE_OUTPUT = spec.reference(SPEC)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the run folders of examples/quora_kd.sh and quora_ctc.sh")
    p.add_argument("--data", required=True, help="the prepared Quora folder (raw/test.src, raw/test.tgt)")
    p.add_argument("--bench", help="benchmarks.latency JSON with the CTC and length-head rows")
    p.add_argument("--out", required=True, help="folder for ctc_table.md, ctc.json, ctc.png")
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    args = p.parse_args(argv)
    refs, srcs = test_split(args.data)
    bench = (load(args.bench) or {}).get("decoding", {}) if args.bench else {}
    base_path = os.path.join(args.root, f"quora_{REFERENCE_RUN}", REFERENCE_OUTPUT)
    if not os.path.exists(base_path):
        sys.exit(f"error: {base_path} missing: {REFERENCE} is the reference of every comparison")
    base = scorer.read_hypotheses(base_path)
    out = scored_rows(ROWS, args.root, refs, srcs, base, "vs_reference", lambda label, run: label == REFERENCE,
                      bench, args.bootstrap_samples)
    os.makedirs(args.out, exist_ok=True)
    scorer.write_json(os.path.join(args.out, "ctc.json"), out)
    table = format_table(out, reference=REFERENCE.split(":")[0], key="vs_reference")
    with open(os.path.join(args.out, "ctc_table.md"), "w") as f:
        f.write(table)
    print(table)
    plot(out, os.path.join(args.out, "ctc.png"), title="Quora: CTC and length-head students, AR rescoring, "
         "the AR teacher: quality vs latency", green="CTC")


if __name__ == "__main__":
    main()
