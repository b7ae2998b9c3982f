"""The scorer: each metric against an independent computation, and its input handling."""

import json
import shutil

import numpy as np
import pytest

from conftest import python_cli
from mist_fairseq import score as S

REFS = ["How do I learn Python quickly?", "What is the best way to lose weight?",
        "Why is the sky blue?", "Which laptop should I buy for programming?"]
HYPS = ["how can i learn python fast ?", "what is the best way to lose weight fast ?",
        "why is sky blue ?", "which laptop should i buy ?"]


def test_normalization_merges_wordpieces_and_splits_punctuation():
    assert S.normalize("what is astro ##logy ?") == "what is astrology ?"
    assert S.normalize("What's Astrology?") == "what ' s astrology ?"


def test_perfect_hypothesis_scores_100():
    out = S.score("quora", REFS, REFS, meteor=False)
    assert out["BLEU-4"] == pytest.approx(100.0, abs=1e-4) and out["BLEU-1"] == pytest.approx(100.0, abs=1e-4)
    out = S.score("xsum", REFS, REFS)
    assert out["ROUGE-1"] == out["ROUGE-2"] == out["ROUGE-L"] == pytest.approx(100.0)
    out = S.score("squad-qg", REFS, REFS, srcs_raw=["a", "b", "c", "d"], meteor=False)
    assert out["ROUGE-L"] == pytest.approx(100.0, abs=1e-4) and out["BLEU-4"] == pytest.approx(100.0, abs=1e-4)


def test_coco_bleu_equals_sacrebleu_on_single_references():
    sacrebleu = pytest.importorskip("sacrebleu")
    H = [S.normalize(h) for h in HYPS]
    R = [S.normalize(r) for r in REFS]
    coco = S.coco_scores(H, [[r] for r in R], ["bleu"])["BLEU-4"]
    sb = sacrebleu.corpus_bleu(H, [R], tokenize="none", smooth_method="none").score
    assert coco == pytest.approx(sb, abs=0.01)
    # and our resamplable statistics give exactly the coco number
    stats = np.stack([S.bleu_stats(h, [r]) for h, r in zip(H, R)]).sum(0)
    assert 100 * S.bleu_from_stats(stats)[3] == pytest.approx(coco, abs=1e-6)


def test_rouge_l_by_hand():
    # LCS("the cat sat", "the cat was sat") = 3: P = 3/3, R = 3/4, F = 6/7
    per = S.rouge_scores(["the cat sat"], ["the cat was sat"])
    assert per["ROUGE-L"][0] == pytest.approx(100 * 6 / 7)
    assert per["ROUGE-2"][0] == pytest.approx(100 * 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_references_grouped_by_identical_source():
    refs = S.group_refs(["p1", "p2", "p1"], ["q1", "q2", "q3"])
    assert refs == [["q1", "q3"], ["q2"], ["q1", "q3"]]
    # each hypothesis equals the *other* question of the same paragraph: 100 only with grouping
    hyps, refs = ["a b c d e", "v w x y z"], ["v w x y z", "a b c d e"]
    assert S.score("squad-qg", hyps, refs, ["p", "p"], meteor=False)["BLEU-4"] == pytest.approx(100.0, abs=1e-4)
    assert S.score("squad-qg", hyps, refs, ["p", "o"], meteor=False)["BLEU-4"] < 1


def test_quora_copy_metrics():
    out = S.score("quora", REFS[:2] + HYPS[2:], HYPS, REFS, meteor=False)
    assert out["identical-to-source %"] == 50.0
    assert out["iBLEU"] == pytest.approx(out["BLEU-4"] - 0.1 * out["self-BLEU"])


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_runs_and_orders_systems():
    good = S.score("quora", HYPS, REFS, meteor=True)["METEOR"]
    bad = S.score("quora", ["banana"] * 4, REFS, meteor=True)["METEOR"]
    assert 30 < good <= 100 and bad < 5


def test_read_hypotheses_from_generate_output(tmp_path):
    gen = tmp_path / "gen.txt"
    gen.write_text("S-1\tsrc b\nH-1\t-0.5\tb ##ee\nD-1\t-0.5\tbee\nS-0\tsrc a\nH-0\t-0.1\ta\nD-0\t-0.1\ta\n")
    assert S.read_hypotheses(str(gen)) == ["a", "bee"]
    gen.write_text("H-0\t-0.1\ta\nH-2\t-0.1\tc\n")
    with pytest.raises(S.ScoreError, match=r"no hypothesis for sample id\(s\) \[1\]"):
        S.read_hypotheses(str(gen))
    plain = tmp_path / "plain.txt"
    plain.write_text("x y\nz\n")
    assert S.read_hypotheses(str(plain)) == ["x y", "z"]


def test_paired_bootstrap():
    R = [S.normalize(r) for r in REFS] * 10
    res = S.compare("quora", R, R, R, samples=200)
    assert res["diff"] == 0 and res["p_value"] == 1.0
    res = S.compare("quora", R, [h + " junk words" for h in R], R, samples=200)
    assert res["diff"] > 0 and res["p_value"] == 0.0 and res["ci95"][0] > 0


def test_cli_table_json_and_errors(tmp_path):
    hyp, ref, src = tmp_path / "h.txt", tmp_path / "r.txt", tmp_path / "s.txt"
    hyp.write_text("\n".join(HYPS) + "\n")
    ref.write_text("\n".join(REFS) + "\n")
    src.write_text("\n".join(REFS) + "\n")
    out = tmp_path / "scores.json"
    proc = python_cli("mist_fairseq.score", "--task", "quora", str(hyp), "--ref", str(ref), "--src", str(src),
                      "--no-meteor", "--json", str(out), "--compare", str(src), "--bootstrap-samples", "50")
    assert "| h.txt |" in proc.stdout and "paired bootstrap" in proc.stdout
    data = json.loads(out.read_text())
    assert data["compare_scores"]["BLEU-4"] == pytest.approx(100.0, abs=1e-4)
    ref.write_text("\n".join(REFS[:3]) + "\n")
    proc = python_cli("mist_fairseq.score", "--task", "quora", str(hyp), "--ref", str(ref), check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        "error: 4 hypotheses but 3 references; they must be aligned"]
