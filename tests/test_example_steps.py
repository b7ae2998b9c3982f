"""examples/steps.py: the file-to-file steps the experiment scripts call, and the scripts hold no inline
Python (each step is an importable function with a test here)."""

import glob
import json
import os
import re
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "examples"))
import steps  # noqa: E402

STEPS = os.path.join(REPO, "examples", "steps.py")


def test_scripts_hold_no_inline_python():
    scripts = glob.glob(os.path.join(REPO, "examples", "*.sh")) + glob.glob(os.path.join(REPO, "scripts", "*.sh"))
    assert scripts
    inline = [f"{os.path.basename(s)}:{i + 1}" for s in scripts for i, ln in enumerate(open(s))
              if re.search(r"\bpython3?\s+-\s.*<<", ln) or re.search(r"<<\s*'?(PY|EOF)'?\s*$", ln)]
    assert not inline, f"inline Python in {inline}: move it into examples/steps.py"


def test_kd_manifest_and_ship_manifest(tmp_path):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"scores": {"BLEU-4": 30.804, "self-BLEU": 54.196, "iBLEU": 25.38,
                                             "identical-to-source %": 19.5}}))
    distill = tmp_path / "distill_manifest.json"
    distill.write_text(json.dumps({"teacher": {"checkpoint": "/root/kd/quora_ar_same/checkpoint_dev_best.pt"},
                                   "data": "/root/kd/data/quora"}))
    out = tmp_path / "manifest.json"
    subprocess.run([sys.executable, STEPS, "kd-manifest", str(scores), str(distill), "set.gz", "3000", str(out)],
                   check=True)
    m = json.loads(out.read_text())
    assert m["from"] == "set.gz, lines 1-3000"
    assert m["splits"]["train"] == {"pairs": 3000, "distilled BLEU-4": 30.8, "distilled self-BLEU": 54.2,
                                    "distilled iBLEU": 25.38, "distilled identical-to-source %": 19.5}
    assert m["teacher"]["checkpoint"].startswith("/root/")
    # without the distilled set's manifest the teacher is unknown, not invented
    assert steps.kd_manifest(str(scores), str(tmp_path / "missing.json"), "x", 1)["teacher"] is None

    distill_m = json.loads(distill.read_text())
    subprocess.run([sys.executable, STEPS, "ship-manifest", str(distill)], check=True)
    shipped = json.loads(distill.read_text())
    assert "data" not in shipped and shipped["teacher"]["checkpoint"] == ["quora_ar_same", "checkpoint_dev_best.pt"]
    assert steps.ship_manifest(distill_m) == shipped


def test_merge_json_keeps_earlier_entries(tmp_path):
    out, part = tmp_path / "probe.json", tmp_path / "part.json"
    out.write_text(json.dumps({"A": 1, "B": 2}))
    part.write_text(json.dumps({"B": 3, "C": 4}))
    subprocess.run([sys.executable, STEPS, "merge-json", str(out), str(part)], check=True)
    assert json.loads(out.read_text()) == {"A": 1, "B": 3, "C": 4}
    assert not part.exists()
    part.write_text(json.dumps({"D": 5}))
    steps.merge_json(str(tmp_path / "new.json"), str(part))
    assert json.loads((tmp_path / "new.json").read_text()) == {"D": 5}


def test_equal_time_pick_takes_the_dev_best_inside_the_budget(tmp_path):
    def point(ckpt, updates, hours, score):
        return {"checkpoint": ckpt, "updates": updates, "train_hours": hours, "score": score}

    a = {"points": [point("c500.pt", 500, 0.3, 10.0), point("c1000.pt", 1000, 0.6, 12.0),
                    point("c1500.pt", 1500, 0.9, 14.0)]}
    b = {"points": [point("b.pt", 2000, 0.5, 0.0), point("b2.pt", 3000, 0.61, 0.0)]}
    # 0.6 h is inside B's 0.61 h; 0.9 h is not, although it scores best
    assert steps.equal_time_pick(a, b) == ("c1000.pt", 1000, 0.6, 0.61)
    short = {"points": [point("b.pt", 10, 0.1, 0.0)]}
    assert steps.equal_time_pick(a, short)[0] == "c500.pt"  # none inside: A's earliest
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    out = subprocess.run([sys.executable, STEPS, "equal-time-pick", str(pa), str(pb)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["c1000.pt", "1000", "0.600", "0.610"]


def test_parity_counts_differences(tmp_path):
    def gen(path, hyps):
        path.write_text("".join(f"H-{i}\t-0.1\t{h}\nD-{i}\t-0.1\t{h}\n" for i, h in hyps.items()))

    gen(tmp_path / "generate-test.txt", {0: "a b", 1: "c d", 2: "e f"})
    gen(tmp_path / "test-fp16.txt", {0: "a b", 1: "c x", 2: "e f"})
    gen(tmp_path / "test-cpu.txt", {0: "a b"})
    subprocess.run([sys.executable, STEPS, "parity", str(tmp_path)], check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=REPO))
    assert json.loads((tmp_path / "parity.json").read_text()) == {
        "n": 3, "gpu_fp32_vs_fp16": {"compared": 3, "differ": 1}, "gpu_fp32_vs_cpu": {"compared": 1, "differ": 0}}


def test_interval_from_the_median_rate():
    log = "ups=2.0 x\nups=4.0\nups=100.0\n"  # median 4 updates/s
    assert steps.interval(log, 0.07) == 200  # 4 * 252 s / 4 = 252 -> 200
    assert steps.interval("", 1.0) == 4500  # 5 updates/s assumed
    assert steps.interval("ups=0.1", 0.01) == 100  # at least 100


def test_copy_fallback_replaces_only_copies(data, tmp_path):
    vocab = str(data / "bin" / "vocab.txt")
    src = ["What is the best way to learn Python?", "How do I lose weight?"]
    kd = ["what is the best way to learn python ?", "how can i lose weight fast?"]  # a copy up to case and spaces
    ref = ["How can I learn Python well?", "What is the fastest way to lose weight?"]
    out, n = steps.copy_fallback(vocab, src, kd, ref)
    assert (out, n) == ([ref[0], kd[1]], 1)
    for name, text in (("src", src), ("kd", kd), ("ref", ref)):
        (tmp_path / name).write_text("\n".join(text) + "\n")
    done = subprocess.run([sys.executable, STEPS, "copy-fallback", vocab, *(str(tmp_path / x) for x in ("src", "kd", "ref")),
                           str(tmp_path / "out")], capture_output=True, text=True, check=True)
    assert (tmp_path / "out").read_text().splitlines() == out and done.stdout.startswith("1 of 2 ")
    (tmp_path / "ref").write_text(ref[0] + "\n")
    bad = subprocess.run([sys.executable, STEPS, "copy-fallback", vocab, *(str(tmp_path / x) for x in ("src", "kd", "ref")),
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert bad.returncode != 0 and "give aligned files" in bad.stderr
