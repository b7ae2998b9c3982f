"""What the table collectors (collect_modes.py, collect_kd.py) share: reading a run's test output into a
scored row with the dev-chosen and last update counts."""

import json
import os

from mist_fairseq import score as scorer


def load(path):
    """A JSON file's content, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def test_split(data):
    """(references, sources) of DATA/raw/test.*."""
    return (scorer.read_lines(os.path.join(data, "raw", "test.tgt")),
            scorer.read_lines(os.path.join(data, "raw", "test.src")))


def scored_row(path, run_dir, refs, srcs):
    """(hypotheses, row): the test output at path scored (BLEU-4, self-BLEU, iBLEU, ...) with the run's
    dev-chosen and last updates from run_dir/dev_curve.json."""
    hyps = scorer.read_hypotheses(path)
    row = scorer.score("quora", hyps, refs, srcs, meteor=False)
    curve = load(os.path.join(run_dir, "dev_curve.json")) or {}
    row["chosen_updates"] = curve.get("best", {}).get("updates")
    row["last_updates"] = max((q["updates"] for q in curve.get("points", [])), default=None)
    return hyps, row


def scored_rows(rows, root, refs, srcs, base, key, is_reference, bench, samples, batch_sizes=("1", "16")):
    """The table collectors' loop. rows: (label, run, test output under ROOT/quora_RUN, benchmark row);
    base: the reference hypotheses, compared with every row for which is_reference(label, run) is False
    (paired bootstrap under ``key``); bench: benchmark rows by name. Returns label -> row, copying the
    source first; a missing output is {"missing": path}."""
    out = {"copy the source": scorer.score("quora", srcs, refs, srcs, meteor=False)}
    for label, run, name, bench_row in rows:
        path = os.path.join(root, f"quora_{run}", name)
        if not os.path.exists(path):
            out[label] = {"missing": path}
            continue
        hyps, row = scored_row(path, os.path.join(root, f"quora_{run}"), refs, srcs)
        if not is_reference(label, run):
            row[key] = scorer.compare("quora", hyps, base, refs, samples=samples)
        for bs in batch_sizes:
            row[f"batch{bs}_ms"] = bench.get(bench_row, {}).get(bs, {}).get("median_ms")
        row["bench_row"] = bench_row
        out[label] = row
    return out
