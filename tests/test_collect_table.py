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


def test_collect_ablation_rows_probe_and_bootstrap_from_files_only(tmp_path):
    s = {"n": 3, "BLEU-4": 12.25, "iBLEU": 10.0, "self-BLEU": 20.0, "identical-to-source %": 2.0}
    write(tmp_path / "copy_source.json", {"scores": dict(s, **{"BLEU-4": 30.0})})
    write(tmp_path / "scores_D.json", {"scores": s})
    write(tmp_path / "dev_curve_D.json", {"best": {"updates": 200}, "points": [
        {"updates": 200, "train_hours": 0.5}, {"updates": 300, "train_hours": 0.75}]})
    write(tmp_path / "probe.json", {"/r/ablation_D/checkpoint_dev_best.pt": {"oracle_gap_acc": 11.04, "fix_rate": 5.0},
                                    "/r/ablation_E/checkpoint_dev_best.pt": {"oracle_gap_acc": 1.0}})
    write(tmp_path / "D_vs_E_at_300_updates.json",
          {"compare": {"a": 12.25, "b": 11.0, "diff": 1.25, "ci95": [0.5, 2.0], "p_value": 0.001}})
    out = run_cli([sys.executable, f"{REPO}/examples/collect_ablation.py", "--docs", str(tmp_path),
                   "--out", str(tmp_path / "t.md")]).stdout
    row = next(ln for ln in out.splitlines() if ln.startswith("| D |"))
    assert "200 / 300" in row and "| 0.75 | 12.25 | 10.00 |" in row
    assert next(ln for ln in out.splitlines() if ln.startswith("| - | copy the source |")).count("30.00") == 1
    assert "| A |" in out and "(not run or not finished)" in out  # no scores: no numbers
    probe_row = next(ln for ln in out.splitlines() if ln.startswith("| D |") and "11.0" in ln)
    assert "| 5.0 |" in probe_row and not any(ln.startswith("| E |") and "1.0" in ln for ln in out.splitlines())
    assert "| D vs E, at 300 updates | 12.25 | 11.00 | +1.25 | [+0.50, +2.00] | 0.001 |" in out
    assert (tmp_path / "t.md").read_text().strip() == out.strip()
