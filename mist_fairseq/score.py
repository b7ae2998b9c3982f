"""Scores generated text with each benchmark's standard metrics.

    python -m mist_fairseq.score --task quora    GEN_OR_HYP --ref test.tgt --src test.src
    python -m mist_fairseq.score --task squad-qg GEN_OR_HYP --ref test.tgt --src test.src
    python -m mist_fairseq.score --task xsum     GEN_OR_HYP --ref test.tgt

GEN_OR_HYP is ``fairseq-generate`` output (``D-``/``H-`` lines, put back in sample-id order) or a
plain file with one hypothesis a line. WordPieces are merged and both sides are lowercased and
split into words and punctuation the same way (BERT's basic tokenization) before scoring.

- squad-qg: BLEU-1..4, METEOR, ROUGE-L of ``pycocoevalcap`` (Du et al.'s qgevalcap), references
  grouped by identical source (needs --src).
- quora: BLEU-1, BLEU-4, METEOR; with --src also self-BLEU against the source, the share of
  outputs identical to their source, and iBLEU = BLEU-4 - 0.1 * self-BLEU.
- xsum: ROUGE-1/2/L F1 from ``rouge-score`` with stemming.

``--compare OTHER`` adds a paired bootstrap test of BLEU-4 (or ROUGE-L for xsum) between the two
systems. ``--json FILE`` writes the scores (atomically).
"""

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

_GEN_LINE = re.compile(r"^([DH])-(\d+)\t[^\t]*\t(.*)$")


class ScoreError(ValueError):
    pass


def read_lines(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [ln.rstrip("\n").rstrip("\r") for ln in f]
    except FileNotFoundError:
        raise ScoreError(f"{path}: no such file")
    except UnicodeDecodeError as e:
        raise ScoreError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); re-encode it as UTF-8")


def read_hypotheses(path: str) -> List[str]:
    """fairseq-generate output -> hypotheses in sample-id order (D- lines if any, else H-);
    any other file -> its lines."""
    lines = read_lines(path)
    found: Dict[str, Dict[int, str]] = {"D": {}, "H": {}}
    for ln in lines:
        m = _GEN_LINE.match(ln)
        if m:
            found[m.group(1)][int(m.group(2))] = m.group(3)
    hyps = found["D"] or found["H"]
    if not hyps:
        return lines
    missing = sorted(set(range(max(hyps) + 1)) - set(hyps))
    if missing:
        raise ScoreError(
            f"{path}: no hypothesis for sample id(s) {missing[:10]}; regenerate with "
            "--required-batch-size-multiple 1 (mist_nar sets it) and without --skip-invalid-size-inputs-valid-test"
        )
    return [hyps[i] for i in range(len(hyps))]


_normalizer = None


def words(text: str) -> List[str]:
    """Lowercased words and punctuation, WordPieces merged: the same for hypotheses and references."""
    global _normalizer
    if _normalizer is None:
        from tokenizers import normalizers, pre_tokenizers

        _normalizer = (normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer())
    text = text.replace(" ##", "")
    norm = _normalizer[0].normalize_str(text)
    return [w for w, _ in _normalizer[1].pre_tokenize_str(norm)]


def normalize(text: str) -> str:
    return " ".join(words(text))


# ---- BLEU from sufficient statistics (exactly pycocoevalcap's formula, but resamplable) ----------

def bleu_stats(hyp: str, refs: Sequence[str], n: int = 4) -> np.ndarray:
    """[testlen, closest reflen, guess_1..n, correct_1..n] for one sentence."""
    h = hyp.split()
    ref_toks = [r.split() for r in refs]
    max_counts: Counter = Counter()
    for r in ref_toks:
        c = Counter(tuple(r[i : i + k]) for k in range(1, n + 1) for i in range(len(r) - k + 1))
        for g, v in c.items():
            max_counts[g] = max(max_counts[g], v)
    hc = Counter(tuple(h[i : i + k]) for k in range(1, n + 1) for i in range(len(h) - k + 1))
    guess = [max(len(h) - k + 1, 0) for k in range(1, n + 1)]
    correct = [0] * n
    for g, v in hc.items():
        correct[len(g) - 1] += min(v, max_counts.get(g, 0))
    reflen = min((abs(len(r) - len(h)), len(r)) for r in ref_toks)[1]  # coco's "closest"
    return np.array([len(h), reflen] + guess + correct, dtype=np.float64)


def bleu_from_stats(total: np.ndarray, n: int = 4) -> List[float]:
    """Corpus BLEU-1..n (0..1) from summed stats, with pycocoevalcap's smoothing constants."""
    small, tiny = 1e-9, 1e-15
    testlen, reflen, guess, correct = total[0], total[1], total[2 : 2 + n], total[2 + n : 2 + 2 * n]
    out, b = [], 1.0
    for k in range(n):
        b *= (correct[k] + tiny) / (guess[k] + small)
        out.append(b ** (1.0 / (k + 1)))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        out = [x * math.exp(1 - 1 / ratio) for x in out]
    return out


def coco_scores(hyps: List[str], refs: List[List[str]], metrics: Sequence[str]) -> Dict[str, float]:
    """pycocoevalcap's scorers on normalized text; scores in 0..100."""
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    out = {}
    if "bleu" in metrics:
        from pycocoevalcap.bleu.bleu import Bleu

        with contextlib.redirect_stdout(io.StringIO()):  # the scorer prints its internals
            b, _ = Bleu(4).compute_score(gts, res)
        out.update({f"BLEU-{k + 1}": 100 * b[k] for k in range(4)})
    if "meteor" in metrics:
        from pycocoevalcap.meteor.meteor import Meteor

        m = Meteor()
        try:
            out["METEOR"] = 100 * m.compute_score(gts, res)[0]
        finally:
            with contextlib.suppress(Exception):
                m.meteor_p.kill()
    if "rouge" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        out["ROUGE-L"] = 100 * Rouge().compute_score(gts, res)[0]
    return out


def rouge_scores(hyps: List[str], refs: List[str]) -> Dict[str, np.ndarray]:
    """Per-sentence ROUGE-1/2/L F1 (0..100) of rouge-score, stemming on."""
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per = defaultdict(list)
    for h, r in zip(hyps, refs):
        s = sc.score(r, h)
        for k, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
            per[name].append(100 * s[k].fmeasure)
    return {k: np.array(v) for k, v in per.items()}


def group_refs(srcs: List[str], tgts: List[str]) -> List[List[str]]:
    """All targets of identical sources become each other's references (standard QG evaluation)."""
    by_src = defaultdict(list)
    for s, t in zip(srcs, tgts):
        by_src[s].append(t)
    return [by_src[s] for s in srcs]


def paired_bootstrap(stat_a: np.ndarray, stat_b: np.ndarray, metric, samples: int = 1000, seed: int = 1):
    """Koehn (2004)-style paired bootstrap. stat_*: (N, ...) per-sentence statistics; metric maps a
    summed/averaged resample to a score. Returns (score_a, score_b, 95% CI of a - b, p-value of
    'a is not better than b')."""
    rng = np.random.default_rng(seed)
    n = len(stat_a)
    a0, b0 = metric(stat_a), metric(stat_b)
    diffs = np.empty(samples)
    for i in range(samples):
        idx = rng.integers(0, n, n)
        diffs[i] = metric(stat_a[idx]) - metric(stat_b[idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return a0, b0, (float(lo), float(hi)), float((diffs <= 0).mean())


def score(task: str, hyps: List[str], refs_raw: List[str], srcs_raw: Optional[List[str]] = None,
          meteor: bool = True) -> Dict[str, float]:
    """Normalizes and scores; returns metric -> value (0..100) plus 'n'."""
    if len(hyps) != len(refs_raw):
        raise ScoreError(f"{len(hyps)} hypotheses but {len(refs_raw)} references; they must be aligned")
    if srcs_raw is not None and len(srcs_raw) != len(refs_raw):
        raise ScoreError(f"{len(srcs_raw)} sources but {len(refs_raw)} references; they must be aligned")
    H = [normalize(h) for h in hyps]
    R = [normalize(r) for r in refs_raw]
    S = [normalize(s) for s in srcs_raw] if srcs_raw is not None else None
    out: Dict[str, float] = {"n": len(H)}
    if task == "xsum":
        out.update({k: float(v.mean()) for k, v in rouge_scores(H, R).items()})
        return out
    if task == "squad-qg":
        if S is None:
            raise ScoreError("--task squad-qg groups references by identical source: pass --src")
        out.update(coco_scores(H, group_refs(S, R), ["bleu"] + (["meteor"] if meteor else []) + ["rouge"]))
        return out
    if task != "quora":
        raise ScoreError(f"--task {task}: choose squad-qg, xsum or quora")
    full = coco_scores(H, [[r] for r in R], ["bleu"] + (["meteor"] if meteor else []))
    out.update({k: full[k] for k in ("BLEU-1", "BLEU-4", "METEOR") if k in full})
    if S is not None:
        self_bleu = coco_scores(H, [[s] for s in S], ["bleu"])["BLEU-4"]
        out["self-BLEU"] = self_bleu
        out["iBLEU"] = out["BLEU-4"] - 0.1 * self_bleu
        out["identical-to-source %"] = 100.0 * sum(h == s for h, s in zip(H, S)) / max(len(H), 1)
    return out


def compare(task, hyps_a, hyps_b, refs_raw, srcs_raw=None, samples=1000):
    """Paired bootstrap of BLEU-4 (ROUGE-L F1 for xsum) between two systems."""
    R = [normalize(r) for r in refs_raw]
    A, B = [normalize(h) for h in hyps_a], [normalize(h) for h in hyps_b]
    if task == "xsum":
        sa, sb = rouge_scores(A, R)["ROUGE-L"], rouge_scores(B, R)["ROUGE-L"]
        name, metric = "ROUGE-L", lambda s: float(s.mean())
    else:
        refs = group_refs([normalize(s) for s in srcs_raw], R) if task == "squad-qg" else [[r] for r in R]
        sa = np.stack([bleu_stats(h, r) for h, r in zip(A, refs)])
        sb = np.stack([bleu_stats(h, r) for h, r in zip(B, refs)])
        name, metric = "BLEU-4", lambda s: 100 * bleu_from_stats(s.sum(0))[3]
    a, b, ci, p = paired_bootstrap(sa, sb, metric, samples)
    return {"metric": name, "a": a, "b": b, "diff": a - b, "ci95": ci, "p_value": p, "samples": samples}


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def format_table(rows: Dict[str, Dict[str, float]]) -> str:
    cols = [c for c in next(iter(rows.values())) if c != "n"]
    lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hyp", help="fairseq-generate output or a plain hypothesis file")
    p.add_argument("--task", required=True, choices=["squad-qg", "xsum", "quora"])
    p.add_argument("--ref", required=True, help="references, one a line, in test-set order (raw/test.tgt)")
    p.add_argument("--src", help="sources in test-set order (raw/test.src): squad-qg grouping, quora self-BLEU")
    p.add_argument("--compare", help="a second system's output: paired bootstrap against it")
    p.add_argument("--bootstrap-samples", type=int, default=1000, help="resamples for --compare")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--json", help="write the scores here")
    args = p.parse_args(argv)
    try:
        refs = read_lines(args.ref)
        srcs = read_lines(args.src) if args.src else None
        hyps = read_hypotheses(args.hyp)
        result = {"scores": score(args.task, hyps, refs, srcs, meteor=not args.no_meteor)}
        rows = {os.path.basename(args.hyp): result["scores"]}
        if args.compare:
            other = read_hypotheses(args.compare)
            rows[os.path.basename(args.compare)] = score(args.task, other, refs, srcs, meteor=not args.no_meteor)
            result["compare"] = compare(args.task, hyps, other, refs, srcs, args.bootstrap_samples)
            result["compare_scores"] = rows[os.path.basename(args.compare)]
    except ScoreError as e:
        sys.exit(f"error: {e}")
    print(format_table(rows))
    if "compare" in result:
        c = result["compare"]
        print(f"paired bootstrap ({c['samples']} samples): {c['metric']} diff {c['diff']:+.2f}, "
              f"95% CI [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}], p = {c['p_value']:.4f}")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
