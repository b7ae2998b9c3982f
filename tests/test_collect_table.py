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


def test_fast_path_quality_reads_logs_and_compares_seed_gaps(tmp_path):
    """examples/plot_fast_path.py: curves from the runs' own logs; gaps only where both runs have the point."""
    import pytest

    pytest.importorskip("matplotlib")
    line = ("2026-11-25 10:24:42 | INFO | train_inner | epoch 001:     10 / 766 loss={loss}, nll_loss=1, "
            "num_updates={n}, lr=3e-05, wall={w}\n")
    for k, (loss, bleu, dev) in {"C": (9.0, 11.0, 13.6), "C_fast": (9.1, 11.5, 13.9),
                                 "C_fast_s2": (9.4, 10.0, 13.2)}.items():
        run = tmp_path / f"ablation_{k}"
        write(run / "dev_curve.json", {"best": {"updates": 20}, "points": [
            {"updates": 10, "score": bleu - 5}, {"updates": 20, "score": bleu}]})
        write(run / "scores.json", {"scores": {"BLEU-4": bleu + 1}})
        (run / "train.log").write_text("".join(line.format(loss=loss + 30 - n, n=n, w=3 * n) for n in range(1, 21)))
        for n in (10, 20):
            (run / f"valid-{n}.log").write_text(f"| valid on 'valid' subset | loss {dev + 20 - n:.3f} | nll_loss 1.0 |")
    run_cli([sys.executable, f"{REPO}/examples/plot_fast_path.py", "--root", str(tmp_path), "--docs", str(tmp_path / "d")])
    data = json.loads((tmp_path / "d" / "fast_path_quality.json").read_text())
    s = data["summary"]
    assert set(data["runs"]) == {"C", "C_fast", "C_fast_s2"}  # the optional fp32 seed-2 run is absent
    assert s["dev_bleu"]["fast_vs_fp32_seed1"] == pytest.approx(0.5)
    assert s["dev_bleu"]["fast_seed1_vs_seed2"] == pytest.approx(1.5)
    assert s["dev_loss"]["fast_vs_fp32_seed1"] == pytest.approx(0.3)
    assert "fp32_seed1_vs_seed2" not in s["dev_bleu"]
    assert s["train_wall_s"]["C"] == 60.0
    assert (tmp_path / "d" / "fast_path_quality.png").stat().st_size > 1000


SRCS = ["how do i learn python", "what is the best phone", "why is the sky blue", "how to cook rice"]
REFS = ["how can i learn python", "which phone is the best", "why is the sky blue ?", "how do i cook rice"]


def toy_test_split(tmp_path):
    """tmp_path/data/raw/test.{src,tgt}: four Quora-like pairs; returns (sources, references)."""
    data = tmp_path / "data" / "raw"
    data.mkdir(parents=True)
    (data / "test.src").write_text("\n".join(SRCS) + "\n")
    (data / "test.tgt").write_text("\n".join(REFS) + "\n")
    return SRCS, REFS


def gen(path, hyps):
    """A fairseq-generate output file holding hyps as its D- lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"S-{i}\tx\nD-{i}\t-0.1\t{h}\n" for i, h in enumerate(hyps)))


def test_collect_modes_scores_outputs_and_bootstraps_against_nar_mist(tmp_path):
    """examples/collect_modes.py (issue 15): each row scored from its own output, compared with the
    NAR-only MIST output by paired bootstrap, batch-1 latency from the exact benchmark row; a missing
    output is listed as missing."""
    srcs, refs = toy_test_split(tmp_path)

    gen(tmp_path / "quora_dynamic" / "generate-test.txt", srcs)
    gen(tmp_path / "quora_joint" / "generate-test.txt", refs)  # the joint model's NAR output = the references
    gen(tmp_path / "quora_joint" / "modes" / "ar4.txt", refs[:2] + srcs[2:])
    write(tmp_path / "quora_joint" / "dev_curve.json", {"best": {"updates": 400}, "points": [{"updates": 400}, {"updates": 600}]})
    write(tmp_path / "bench.json", {"decoding": {"MIST AR, beam 4": {"1": {"median_ms": 42.0}},
                                                 "MIST AR, greedy": {"1": {"median_ms": 9.0}}}})
    out = run_cli([sys.executable, f"{REPO}/examples/collect_modes.py", "--root", str(tmp_path), "--data",
                   str(tmp_path / "data"), "--bench", str(tmp_path / "bench.json"), "--out", str(tmp_path / "o"),
                   "--bootstrap-samples", "50"]).stdout
    rows = json.loads((tmp_path / "o" / "modes.json").read_text())
    assert rows["joint: NAR, one pass"]["BLEU-4"] > 99 and rows["joint: NAR, one pass"]["chosen_updates"] == 400
    assert rows["joint: NAR, one pass"]["vs_nar_mist"]["diff"] > 0
    assert rows["joint: AR, beam 4"]["batch1_ms"] == 42.0 and rows["joint: AR, greedy"] == {
        "missing": str(tmp_path / "quora_joint" / "modes" / "ar1.txt")}
    assert rows["copy the source"]["self-BLEU"] > 99 and "vs_nar_mist" not in rows["MIST, NAR only: one pass"]
    assert "| joint: AR, beam 4 |" in out and "| 42.0 |" in out and "missing" in out


def test_collect_kd_rows_bootstrap_and_latency(tmp_path):
    """examples/collect_kd.py (issue 22): every row scored from its own output and compared with the
    raw-data no-mixing student's single pass; batch-1 and batch-16 ms from the exact benchmark rows."""
    srcs, refs = toy_test_split(tmp_path)

    gen(tmp_path / "quora_none" / "generate-test.txt", srcs)
    gen(tmp_path / "quora_none_kd" / "modes" / "lb5ar.txt", refs)
    gen(tmp_path / "quora_ar_same" / "generate-test.txt", refs[:2] + srcs[2:])
    write(tmp_path / "bench.json", {"decoding": {"MIST length beam 5, AR-rescored (lengths predicted)": {
        "1": {"median_ms": 30.0}, "16": {"median_ms": 7.5}}, "MIST single pass": {"1": {"median_ms": 20.0}}}})
    out = run_cli([sys.executable, f"{REPO}/examples/collect_kd.py", "--root", str(tmp_path), "--data",
                   str(tmp_path / "data"), "--bench", str(tmp_path / "bench.json"), "--out", str(tmp_path / "o"),
                   "--bootstrap-samples", "50"]).stdout
    rows = json.loads((tmp_path / "o" / "kd.json").read_text())
    best = rows["no mixing, KD: length beam 5, AR-rescored"]
    assert best["BLEU-4"] > 99 and best["vs_raw_nat"]["diff"] > 0
    assert (best["batch1_ms"], best["batch16_ms"]) == (30.0, 7.5)
    assert "vs_raw_nat" not in rows["no mixing, raw: length beam 1"]
    assert rows["MIST, KD: length beam 3"] == {"missing": str(tmp_path / "quora_dynamic_kd" / "modes" / "lb3.txt")}
    assert "| 30.0 | 7.5 |" in out and (tmp_path / "o" / "kd.png").stat().st_size > 1000


def test_collect_ctc_rows_against_the_length_head_student(tmp_path):
    """examples/collect_ctc.py (issue 24): CTC rows compared with the length-head KD student's single pass,
    latency from the CTC benchmark rows."""
    srcs, refs = toy_test_split(tmp_path)
    gen(tmp_path / "quora_none_kd" / "generate-test.txt", srcs)
    gen(tmp_path / "quora_ctc_none_kd" / "modes" / "cb5ar.txt", refs)
    write(tmp_path / "bench.json", {"decoding": {"CTC single pass (2 x source slots), prefix beam 5, AR-rescored": {
        "1": {"median_ms": 31.0}, "16": {"median_ms": 8.5}}}})
    out = run_cli([sys.executable, f"{REPO}/examples/collect_ctc.py", "--root", str(tmp_path), "--data",
                   str(tmp_path / "data"), "--bench", str(tmp_path / "bench.json"), "--out", str(tmp_path / "o"),
                   "--bootstrap-samples", "50"]).stdout
    rows = json.loads((tmp_path / "o" / "ctc.json").read_text())
    best = rows["CTC, no mixing, KD: prefix beam 5, AR-rescored"]
    assert best["BLEU-4"] > 99 and best["vs_reference"]["diff"] > 0 and (best["batch1_ms"], best["batch16_ms"]) == (31.0, 8.5)
    assert "vs_reference" not in rows["length head, no mixing, KD: single pass"]
    assert rows["CTC, MIST, KD: greedy"] == {"missing": str(tmp_path / "quora_ctc_dynamic_kd" / "generate-test.txt")}
    assert "| 31.0 | 8.5 |" in out and "vs length head, no mixing, KD" in out


def test_collect_ctc_ratio_dev_curves_speed_and_bootstrap(tmp_path):
    """examples/collect_ctc_ratio.py: each slot ratio's test output scored and compared with R = 2's, its dev
    curve and its training speed read from its own files."""
    srcs, refs = toy_test_split(tmp_path)
    for run, hyps, ups in (("r2", srcs, "0.25"), ("r15", refs, "0.31")):
        folder = tmp_path / f"quora_ctc_none_kd_{run}_u750"
        gen(folder / "generate-test.txt", hyps)
        write(folder / "dev_curve.json", {"best": {"updates": 1000}, "points": [
            {"updates": 500, "score": 10.0 if run == "r2" else 11.0}, {"updates": 1000, "score": 20.0}]})
        (folder / "train.log").write_text(
            f"x | INFO | train_inner | epoch 001:  50 / 9 loss=3.0, ups={ups}, wall=200\n"
            "x | INFO | fairseq_cli.train | end of epoch 1 (average epoch stats below)\n"
            "x | INFO | train | epoch 001 | loss 2.0 | num_updates 1000 | wall 4000\n"
            f"x | INFO | train_inner | epoch 002:  50 / 9 loss=3.0, ups={ups}, num_updates=1000, wall=4000\n")
    out = run_cli([sys.executable, f"{REPO}/examples/collect_ctc_ratio.py", "--root", str(tmp_path), "--data",
                   str(tmp_path / "data"), "--out", str(tmp_path / "o"), "--bootstrap-samples", "50"]).stdout
    rows = json.loads((tmp_path / "o" / "ratio.json").read_text())
    r15, r2 = rows["CTC, no mixing, KD, 1.5 x source slots: greedy"], rows["CTC, no mixing, KD, 2 x source slots: greedy"]
    assert r15["BLEU-4"] > 99 and r15["vs_r2"]["diff"] > 0 and "vs_r2" not in r2
    assert r15["dev_curve"] == {"500": 11.0, "1000": 20.0} and r15["training"]["mean_updates_per_s"] == 0.31
    assert r2["training"]["updates"] == 1000 and r2["training"]["wall_s_at"] == {"1000": 4000}
    assert "500: 11.00 / 1000: 20.00 | 1000: 4000 | 0.31 |" in out
