"""examples/collect_table.py: rows come from the run folders that exist, never invented."""

import json
import sys

from conftest import REPO, run_cli


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_collect_table_reads_runs_and_exact_benchmark_rows(tmp_path):
    s = {"n": 3, "BLEU-1": 30.0, "BLEU-4": 9.5, "METEOR": 20.0, "self-BLEU": 15.0, "identical-to-source %": 1.0,
         "iBLEU": 8.0}
    write(tmp_path / "quora_dynamic" / "scores.json", {"scores": s})
    write(tmp_path / "quora_dynamic" / "dev_curve.json", {"best": {"updates": 200}, "points": [
        {"updates": 200, "train_hours": 0.2, "score": 7.0}, {"updates": 250, "train_hours": 0.33, "score": 6.0}]})
    (tmp_path / "quora_none").mkdir()  # started, not finished
    write(tmp_path / "quora_dynamic" / "iter" / "mist-1.txt.json", {"scores": dict(s, **{"BLEU-4": 9.5})})
    write(tmp_path / "quora_dynamic" / "iter" / "mask-predict-3.txt.json", {"scores": dict(s, **{"BLEU-4": 11.0})})
    bench = {"decoding": {"MIST single pass": {"1": {"speedup_vs_ar_beam4": 3.4}},
                          "MIST single pass, no K/V cache": {"1": {"speedup_vs_ar_beam4": 3.2}}}}
    write(tmp_path / "bench.json", bench)
    out = run_cli([sys.executable, f"{REPO}/examples/collect_table.py", "--root", str(tmp_path), "--dataset", "quora",
                   "--bench", str(tmp_path / "bench.json"), "--out", str(tmp_path / "t.md")]).stdout
    row = next(ln for ln in out.splitlines() if ln.startswith("| MIST (dynamic mixing) |"))
    assert "| 9.50 |" in row and "200 / 250" in row and "3.4x" in row  # exact row, not the no-cache one
    assert "| encoder init, no mixing |" in out and "(not finished)" in out
    assert "static mixing" not in out and "AR transformer" not in out  # no folder, no row
    it = next(ln for ln in out.splitlines() if "| Mask-Predict |" in ln)
    assert it.split("|")[3:6] == [" 9.50 ", " 11.00 ", " - "]  # one pass shared; missing 6 shown as -
    assert (tmp_path / "t.md").read_text().strip() == out.strip()
