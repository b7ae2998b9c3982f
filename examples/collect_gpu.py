"""The GPU Quora table (examples/quora_gpu.sh): four systems trained side by side on one GPU for the same
wall time, each dev-chosen and decoded on test once; paired bootstrap against the same-GPU AR model's
greedy output, copy-the-source and iBLEU beside every row; the smoke runs' device/precision parity.

    python examples/collect_gpu.py --root ROOT --data DATA --out docs/quora_gpu

Reads ROOT/quora_{ar,ctc_none_kd,ctc_dynamic_kd,dynamic}/{generate-test.txt,dev_curve.json,modes/*.txt}
and ROOT/quora_smoke_*/parity.json; a missing output is listed as missing.
"""

import argparse
import json
import os
import sys

from collect_kd import format_table
from collect_rows import load, scored_rows, test_split

from mist_fairseq import score as scorer

ROWS = [  # (label, run, test output)
    ("same-encoder AR: greedy", "ar", "generate-test.txt"),
    ("same-encoder AR: beam 4", "ar", "modes/ar4.txt"),
    ("CTC, no mixing, KD: single pass", "ctc_none_kd", "generate-test.txt"),
    ("CTC, no mixing, KD: prefix beam 5", "ctc_none_kd", "modes/cb5.txt"),
    ("CTC, no mixing, KD: prefix beam 5, AR-rescored", "ctc_none_kd", "modes/cb5ar.txt"),
    ("CTC, MIST, KD: single pass", "ctc_dynamic_kd", "generate-test.txt"),
    ("CTC, MIST, KD: prefix beam 5", "ctc_dynamic_kd", "modes/cb5.txt"),
    ("CTC, MIST, KD: prefix beam 5, AR-rescored", "ctc_dynamic_kd", "modes/cb5ar.txt"),
    ("length head, MIST, raw: single pass", "dynamic", "generate-test.txt"),
    ("length head, MIST, raw: length beam 5", "dynamic", "modes/lb5.txt"),
    ("length head, MIST, raw: length beam 5, AR-rescored", "dynamic", "modes/lb5ar.txt"),
]
REFERENCE = "same-encoder AR: greedy"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="ROOT of examples/quora_gpu.sh")
    p.add_argument("--data", required=True, help="the prepared Quora folder (raw/test.src, raw/test.tgt)")
    p.add_argument("--out", required=True, help="folder for gpu_table.md and gpu.json")
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    args = p.parse_args(argv)
    refs, srcs = test_split(args.data)
    base_path = os.path.join(args.root, "quora_ar", "generate-test.txt")
    if not os.path.exists(base_path):
        sys.exit(f"error: {base_path} missing: the AR model's greedy output is the reference of every comparison")
    base = scorer.read_hypotheses(base_path)
    rows = [(label, run, path, "") for label, run, path in ROWS]
    out = scored_rows(rows, args.root, refs, srcs, base, "vs_ar_greedy", lambda label, run: label == REFERENCE,
                      {}, args.bootstrap_samples, batch_sizes=())
    parity = {name: load(os.path.join(args.root, f"quora_smoke_{name}", "parity.json")) for name in ("len", "ctc", "ar")}
    os.makedirs(args.out, exist_ok=True)
    scorer.write_json(os.path.join(args.out, "gpu.json"), {"rows": out, "parity": parity})
    # no latency columns: serving speed is measured on the CPU, not on this GPU
    table = format_table(out, reference="AR greedy", key="vs_ar_greedy", latency=False)
    with open(os.path.join(args.out, "gpu_table.md"), "w") as f:
        f.write(table)
    print(table)
    print(json.dumps(parity, indent=1))


if __name__ == "__main__":
    main()
