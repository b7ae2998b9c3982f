"""The benchmark's --quick mode runs end to end (no timing is asserted: timings live in docs/)."""

import json
import re
import sys

import pytest

from conftest import REPO, run_cli


def test_latency_quick(tmp_path):
    pytest.importorskip("matplotlib")
    run_cli([sys.executable, "-m", "benchmarks.latency", "--quick", "--pretrained", "", "--out", str(tmp_path)], cwd=REPO)
    data = json.loads((tmp_path / "BENCHMARK_quick.json").read_text())
    rows = data["decoding"]
    for name in ("AR transformer, beam 4", "AR transformer, greedy", "MIST single pass",
                 "MIST single pass, no K/V cache", "MIST 3 iterations", "Mask-Predict 3 iterations (MIST model)",
                 "floor: one bare model forward", "fused single pass, gold length given", "NAT (single pass)",
                 "CMLM, 10 iterations", "MIST semi-NAR, blocks of 4", "MIST semi-NAR, blocks of 2",
                 "MIST AR, greedy", "MIST AR, beam 4"):
        assert name in rows and rows[name]["1"]["median_ms"] > 0
    assert rows["AR transformer, beam 4"]["1"]["speedup_vs_ar_beam4"] == 1.0
    # pinned lengths: AR and NAT produce the reference length (NAT adds <s>); so does MIST's AR mode
    ar, nat = rows["AR transformer, greedy"]["1"]["out_len"], rows["NAT (single pass)"]["1"]["out_len"]
    assert nat == pytest.approx(ar + 1)
    assert rows["MIST AR, greedy"]["1"]["out_len"] == pytest.approx(ar)  # [SEP] counted as </s> is
    assert rows["MIST AR, beam 4"]["1"]["out_len"] == pytest.approx(ar)
    assert "same-encoder AR, greedy" not in rows  # only with --ar-checkpoint
    assert (tmp_path / "BENCHMARK_quick.png").stat().st_size > 1000
    assert "| MIST single pass |" in (tmp_path / "BENCHMARK_quick.md").read_text()


def test_latency_only_times_the_chosen_systems(tmp_path):
    run_cli([sys.executable, "-m", "benchmarks.latency", "--quick", "--pretrained", "", "--out", str(tmp_path),
             "--only", "^MIST (single pass(, bf16)?|AR, greedy)$", "--precisions", "fp32", "bf16"], cwd=REPO)
    rows = json.loads((tmp_path / "BENCHMARK_quick.json").read_text())["decoding"]
    # the reference kept; --precisions adds the bf16 decoding of the single pass
    assert set(rows) == {"AR transformer, beam 4", "MIST single pass", "MIST single pass, bf16", "MIST AR, greedy"}


def test_train_step_quick(tmp_path):
    """fp32 and fast-path rows, MIST and no-mix, each with a speed-up/cost ratio and its own peak memory."""
    run_cli([sys.executable, "-m", "benchmarks.train_step", "--quick", "--out", str(tmp_path)], cwd=REPO)
    data = json.loads((tmp_path / "BENCHMARK_train_quick.json").read_text())
    rows = data["rows"]
    assert set(rows) == {"MIST train step, fp32", "MIST train step, fast path", "MIST train step, fast path with Fairseq's adam",
                         "no-mix train step, fp32", "no-mix train step, fast path",
                         "MIST train step, fp32, output shortlist 2000", "no-mix train step, fp32, output shortlist 2000"}
    for r in rows.values():
        assert r["sec_per_step"] > 0 and r["peak_rss_mb"] > 50 and len(r["times"]) == 2
    assert rows["MIST train step, fast path"]["speedup_vs_fp32"] > 0
    assert rows["MIST train step, fast path"]["cost_vs_nomix"] > 0
    assert rows["MIST train step, fp32, output shortlist 2000"]["speedup_vs_fp32"] > 0
    md = (tmp_path / "BENCHMARK_train_quick.md").read_text()
    assert re.search(r"\| MIST train step, fast path \|.*\| \d+\.\dx \|", md)
    # the profiles before/after name real operators
    assert set(data["profiles"]) == {"MIST train step, fp32", "MIST train step, fast path"}
    assert any(o["op"].startswith("aten::") for o in data["profiles"]["MIST train step, fp32"])


def test_train_step_only_keeps_the_rows_compared_with():
    from benchmarks.train_step import chosen_settings

    assert list(chosen_settings("shortlist")) == [
        "MIST train step, fp32", "no-mix train step, fp32",
        "MIST train step, fp32, output shortlist 2000", "no-mix train step, fp32, output shortlist 2000"]
    assert list(chosen_settings("no-mix train step, fp32$")) == ["no-mix train step, fp32"]
    with pytest.raises(SystemExit):
        chosen_settings("nothing like this")


def test_report_section_is_replaced_and_kept(tmp_path):
    from benchmarks.report_io import get_section, replace_section

    md = tmp_path / "B.md"
    md.write_text("# B\n\n## Batch size 1\n\nrow\n")
    replace_section(str(md), "Training step", "## Training step\n\nold\n")
    replace_section(str(md), "Training step", "## Training step\n\nnew\n")
    text = md.read_text()
    assert text.count("## Training step") == 1 and "new" in text and "old" not in text and "row" in text
    assert get_section(str(md), "Training step").strip() == "## Training step\n\nnew"


def test_latency_with_trained_checkpoints_lets_every_system_predict_its_length(data, tmp_path):
    """Budgeted baselines (stop by wall time, dev-chosen checkpoint) feed the benchmark, unpinned."""
    import os

    from conftest import N_TEST, USER_DIR

    runs = tmp_path / "runs"
    env = {"DATA": str(data), "RUNS": str(runs), "SYSTEMS": "ar nat cmlm levt", "SIZE": "tiny", "UPDATES": "50",
           "MAX_TOKENS": "2048", "SCORE_ARGS": "--no-meteor", "BUDGET_HOURS": "0.0001", "INTERVAL": "1"}
    run_cli(["bash", os.path.join(REPO, "examples", "baselines", "run_baselines.sh")], env=env)
    for system in ("ar", "nat", "cmlm", "levt"):
        curve = json.loads((runs / system / "dev_curve.json").read_text())
        # the wall-time budget stopped training long before --max-update 50
        assert 1 <= max(p["updates"] for p in curve["points"]) < 50
        assert (runs / system / "checkpoint_dev_best.pt").exists()
        gen = (runs / system / "generate-test.txt").read_text()
        assert sum(1 for ln in gen.splitlines() if ln.startswith("D-")) == N_TEST
        assert (runs / system / "train.done").exists()
    run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", "mist_tiny",
             "--criterion", "mist", "--optimizer", "adam", "--lr", "5e-4", "--batch-size", "8", "--max-update", "2",
             "--save-dir", str(tmp_path / "mist"), "--no-epoch-checkpoints", "--num-workers", "0"])
    run_cli([sys.executable, "-m", "benchmarks.latency", "--quick", "--data", str(data),
             "--mist-checkpoint", str(tmp_path / "mist" / "checkpoint_last.pt"), "--baselines", str(runs),
             "--baseline-checkpoint", "checkpoint_dev_best.pt", "--out", str(tmp_path),
             "--modes-checkpoint", str(tmp_path / "mist" / "checkpoint_last.pt"),
             "--ar-checkpoint", str(tmp_path / "mist" / "checkpoint_last.pt")], cwd=REPO)
    rows = json.loads((tmp_path / "BENCHMARK_quick.json").read_text())["decoding"]
    assert "LevT (up to 10 iterations)" in rows and all(r["1"]["median_ms"] > 0 for r in rows.values())
    assert "same-encoder AR, beam 4" in rows and "same-encoder AR, blocks of 4" not in rows
    assert "MIST length beam 5, AR-rescored (lengths predicted)" in rows
    report = (tmp_path / "BENCHMARK_quick.md").read_text()
    assert "predicts its own output length" in report and "trained" in report
    # a missing baseline is one clear line
    bad = run_cli([sys.executable, "-m", "benchmarks.latency", "--quick", "--data", str(data),
                   "--baselines", str(tmp_path / "nothing"), "--out", str(tmp_path)], cwd=REPO, check=False)
    assert bad.returncode != 0 and "run_baselines.sh" in bad.stderr


def test_fast_path_pieces_quick(tmp_path):
    """Each fast-path replacement is timed beside what it replaces; the report names the command."""
    out = tmp_path / "pieces.md"
    run_cli([sys.executable, "-m", "benchmarks.fast_path_pieces", "--quick", "--out", str(out)], cwd=REPO)
    text = out.read_text()
    names = ["output projection", "label-smoothed loss", "CTC loss", "output bias gradient", "dropout", "attention"]
    rows = re.findall(rf"^\| ({'|'.join(names)})[^|]*\| ([\d.]+) \| ([\d.]+) \| [\d.]+x \|$", text, re.M)
    assert [r[0] for r in rows] == names
    assert "python -m benchmarks.fast_path_pieces --quick" in text


def test_vocab_reduce_quick(tmp_path):
    """Each chunked vocabulary reduction is timed beside the one-shot one it replaces; the report
    names the command (run as a module, no sys.path edits)."""
    out = tmp_path / "reduce.md"
    run_cli([sys.executable, "-m", "benchmarks.vocab_reduce", "--quick", "--reps", "1", "--out", str(out)], cwd=REPO)
    text = out.read_text()
    rows = re.findall(r"^\| (choose|score): [^|]*\|[^|]*\|[^|]*\| ([\d.]+) \| ([\d.]+) \| [\d.]+x \|$", text, re.M)
    assert [r[0] for r in rows] == ["choose", "score"]
    assert "python -m benchmarks.vocab_reduce --quick" in text


def test_pass_profile_quick(tmp_path):
    """The exported pass taken apart: every stage timed at each batch size (the stages add up to the
    whole call), and the target graph's operators profiled, the output projection found by its
    vocabulary-sized weight."""
    out = tmp_path / "profile"
    run_cli([sys.executable, "-m", "benchmarks.pass_profile", "--quick", "--threads", "1", "--out", str(out)], cwd=REPO)
    r = json.loads((tmp_path / "profile.json").read_text())
    assert list(r["stages"]) == ["1", "4"]
    for st in r["stages"].values():
        parts = sum(v for k, v in st.items() if k != "total")
        assert st["target graph"] > 0 and st["source graph"] > 0 and abs(parts - st["total"]) < 1e-6 * max(1, st["total"])
    for p in r["operators"].values():
        assert len(p["projection_nodes"]) == 1 and 0 < p["projection_share"] < 1
        assert abs(sum(p["by_operator_ms_per_sentence"].values()) - p["kernel_ms_per_sentence"]) < 1e-6
    assert "python -m benchmarks.pass_profile --quick" in (tmp_path / "profile.md").read_text()


def test_latency_times_a_ctc_checkpoint(data, tmp_path):
    from conftest import USER_DIR

    checkpoints = []
    for ratio in ("2", "1.5"):  # two slot ratios, timed in one run
        ck = tmp_path / f"ctc{ratio}"
        run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch",
                 "mist_tiny", "--criterion", "mist", "--ctc", "--upsample-ratio", ratio, "--optimizer", "adam",
                 "--lr", "5e-4", "--batch-size", "8", "--max-update", "2", "--save-dir", str(ck),
                 "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0", "--seed", "1"])
        checkpoints.append(str(ck / "checkpoint_last.pt"))
    run_cli([sys.executable, "-m", "benchmarks.latency", "--quick", "--pretrained", "", "--out", str(tmp_path),
             "--data", str(data), "--ctc-checkpoint", *checkpoints, "--only", "^CTC"], cwd=REPO)
    rows = json.loads((tmp_path / "BENCHMARK_quick.json").read_text())["decoding"]
    assert rows["CTC single pass (2 x source slots)"]["1"]["median_ms"] > 0
    assert rows["CTC single pass (1.5 x source slots), prefix beam 5"]["1"]["median_ms"] > 0


def test_platform_line_names_the_bf16_units(tmp_path):
    """Reports say which bf16 units the CPU has: the fast path's worth depends on them."""
    from benchmarks.report_io import platform_line

    info = tmp_path / "cpuinfo"
    for flags, units in (("fpu avx512f avx512_bf16 amx_bf16 amx_tile", "AMX + avx512_bf16"),
                         ("fpu avx512f avx512_bf16", "avx512_bf16"), ("fpu avx2", "none")):
        info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n"
                        f"processor\t: 1\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
        assert platform_line(str(info)) == f"Some CPU; bf16 units: {units}"
    assert platform_line(str(tmp_path / "missing")) == "unknown CPU; bf16 units: none"
