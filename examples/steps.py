"""The small file-to-file steps the experiment scripts call between their commands, one subcommand each
(importable functions; the scripts hold no inline Python).

    python examples/steps.py kd-manifest SCORES_JSON DISTILL_MANIFEST KD_SET N OUT_JSON
    python examples/steps.py ship-manifest MANIFEST_JSON
    python examples/steps.py merge-json OUT_JSON PART_JSON
    python examples/steps.py equal-time-pick DEV_CURVE_A DEV_CURVE_B
    python examples/steps.py parity RUN
    python examples/steps.py interval TRAIN_LOG BUDGET_HOURS
    python examples/steps.py copy-fallback VOCAB SRC KD REF OUT

- kd-manifest: the manifest of distilled targets taken from a kept distilled set (quickstart_kd.sh): the
  teacher of DISTILL_MANIFEST (if it exists), where the lines came from and their scores (SCORES_JSON of
  ``mist_fairseq.score``: BLEU-4 against the references, self-BLEU, iBLEU, share identical to the source).
- ship-manifest: drops machine-specific paths from a manifest in place (the data folder; the teacher's
  checkpoint path keeps its last two parts), for the copy shipped in mist_fairseq/resources.
- merge-json: PART's keys merged into OUT (created if missing, replaced atomically), PART removed.
- equal-time-pick: A's dev-best checkpoint among those saved within B's training wall time (2 % slack;
  A's earliest if none); prints "CHECKPOINT UPDATES A_HOURS B_HOURS".
- parity: RUN/generate-test.txt against RUN/test-fp16.txt and RUN/test-cpu.txt (sentences compared,
  how many differ) into RUN/parity.json.
- interval: a checkpoint interval giving about four checkpoints in BUDGET_HOURS at the median ``ups=``
  of TRAIN_LOG (5 updates/s if it has none), a multiple of 100, at least 100.
- copy-fallback: the text targets of a kept distilled set with ``mist_fairseq.distill --copy-fallback``
  applied: KD's line, or REF's where KD's WordPieces (VOCAB) are SRC's; prints how many were copies.
"""

import argparse
import json
import os
import re
from typing import Dict, Tuple


def _dump(obj, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def kd_manifest(scores_json: str, distill_manifest: str, kd_set: str, n: int) -> Dict:
    s = json.load(open(scores_json))["scores"]
    teacher = json.load(open(distill_manifest)).get("teacher") if os.path.exists(distill_manifest) else None
    return {"teacher": teacher, "from": f"{kd_set}, lines 1-{n}", "splits": {"train": {
        "pairs": int(n), "distilled BLEU-4": round(s["BLEU-4"], 2), "distilled self-BLEU": round(s["self-BLEU"], 2),
        "distilled iBLEU": round(s["iBLEU"], 2), "distilled identical-to-source %": s["identical-to-source %"]}}}


def ship_manifest(manifest: Dict) -> Dict:
    m = dict(manifest)
    m.pop("data", None)
    teacher = m.get("teacher")
    if isinstance(teacher, dict) and isinstance(teacher.get("checkpoint"), str):
        m["teacher"] = dict(teacher, checkpoint=teacher["checkpoint"].split("/")[-2:])
    return m


def merge_json(out: str, part: str) -> Dict:
    merged = json.load(open(out)) if os.path.exists(out) else {}
    merged.update(json.load(open(part)))
    _dump(merged, out)
    os.remove(part)
    return merged


def equal_time_pick(curve_a: Dict, curve_b: Dict) -> Tuple[str, int, float, float]:
    """(checkpoint, updates, its training hours, B's hours) of A's dev_curve.json points."""
    budget = max(p["train_hours"] for p in curve_b["points"])
    inside = [p for p in curve_a["points"] if p["train_hours"] <= budget * 1.02]
    best = max(inside, key=lambda p: p["score"]) if inside else min(curve_a["points"], key=lambda p: p["train_hours"])
    return best["checkpoint"], best["updates"], best["train_hours"], budget


def parity(run: str) -> Dict:
    from mist_fairseq.dev_select import read_by_id

    ref = read_by_id(os.path.join(run, "generate-test.txt"))
    out: Dict = {"n": len(ref)}
    for name in ("fp16", "cpu"):
        other = read_by_id(os.path.join(run, f"test-{name}.txt"))
        out[f"gpu_fp32_vs_{name}"] = {"compared": len(other), "differ": sum(ref.get(i) != h for i, h in other.items())}
    return out


def interval(train_log_text: str, budget_hours: float) -> int:
    ups = sorted(float(m) for m in re.findall(r"\bups=([\d.]+)", train_log_text))
    rate = ups[len(ups) // 2] if ups else 5.0
    return max(100, int(rate * budget_hours * 3600 / 4) // 100 * 100)


def copy_fallback(vocab: str, src: list, kd: list, ref: list) -> Tuple[list, int]:
    """(targets, copies): kd with ref's line wherever kd tokenizes to the source's WordPieces."""
    from fairseq.data.encoders.hf_bert_bpe import BertBPE, BertBPEConfig

    from mist_fairseq.distill import copies

    bpe = BertBPE(BertBPEConfig(bpe_vocab_file=vocab))
    same = set(copies([bpe.encode(x) for x in src], [bpe.encode(x) for x in kd]))
    return [r if i in same else k for i, (k, r) in enumerate(zip(kd, ref))], len(same)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    for name, args in (("kd-manifest", ["scores", "distill_manifest", "kd_set", "n", "out"]),
                       ("ship-manifest", ["manifest"]), ("merge-json", ["out", "part"]),
                       ("equal-time-pick", ["curve_a", "curve_b"]), ("parity", ["run"]),
                       ("interval", ["train_log", "budget_hours"]),
                       ("copy-fallback", ["vocab", "src", "kd", "ref", "out"])):
        sp = sub.add_parser(name)
        for a in args:
            sp.add_argument(a)
    a = p.parse_args(argv)
    if a.step == "kd-manifest":
        _dump(kd_manifest(a.scores, a.distill_manifest, a.kd_set, int(a.n)), a.out)
    elif a.step == "ship-manifest":
        _dump(ship_manifest(json.load(open(a.manifest))), a.manifest)
    elif a.step == "merge-json":
        merge_json(a.out, a.part)
    elif a.step == "equal-time-pick":
        ckpt, updates, hours, budget = equal_time_pick(json.load(open(a.curve_a)), json.load(open(a.curve_b)))
        print(ckpt, updates, f"{hours:.3f}", f"{budget:.3f}")
    elif a.step == "parity":
        out = parity(a.run)
        _dump(out, os.path.join(a.run, "parity.json"))
        print(a.run, out)
    elif a.step == "copy-fallback":
        from mist_fairseq.distill import read_lines, write_lines

        lines = [read_lines(f) for f in (a.src, a.kd, a.ref)]
        if len({len(x) for x in lines}) != 1:
            raise SystemExit(f"copy-fallback: {a.src}, {a.kd}, {a.ref} have {[len(x) for x in lines]} lines; "
                             "give aligned files")
        out, n = copy_fallback(a.vocab, *lines)
        write_lines(a.out, out)  # tmp + rename: never half-written
        print(f"{n} of {len(out)} distilled targets were their source; they keep the reference")
    else:
        print(interval(open(a.train_log).read(), float(a.budget_hours)))


if __name__ == "__main__":
    main()
