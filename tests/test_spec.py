"""examples/specs: each experiment's rows declared once, read by its script (the training options of a
row step) and its collector (the labels); bad specs refused in one line."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_cli

sys.path.insert(0, os.path.join(REPO, "examples"))
import collect_ablation  # noqa: E402
import spec  # noqa: E402


def test_row_steps_train_with_the_spec_options(tmp_path):
    """quora_ablation.sh's row steps hand quora.sh the spec's mode, recipe, fast path and flags (a stub
    quora.sh records them), and the script itself declares no criterion flags."""
    ex = tmp_path / "examples"
    ex.mkdir()
    for name in ("quora_ablation.sh", "common.sh", "spec.py"):
        shutil.copy(os.path.join(REPO, "examples", name), ex / name)
    shutil.copytree(os.path.join(REPO, "examples", "specs"), ex / "specs")
    (ex / "quora.sh").write_text('echo "$RUN|$MODE|$RECIPE|$FAST_PATH|$EXTRA|$UPDATES" >> "$LOG"\n')
    env = dict(os.environ, ROOT=str(tmp_path / "runs"), DOCS=str(tmp_path / "docs"), LOG=str(tmp_path / "log"),
               STEPS="J D")
    subprocess.run(["bash", str(ex / "quora_ablation.sh")], check=True, env=env, cwd=tmp_path)
    runs = str(tmp_path / "runs")
    assert (tmp_path / "log").read_text().splitlines() == [
        f"{runs}/ablation_J|dynamic|plugin|1|--pseudo-from glanced --score-positions all --glat-hamming first "
        "--target-keep-prob 0.1 --target-random-prob 0.1|300",
        f"{runs}/ablation_D|dynamic|authors|0|--target-keep-prob 0 --target-random-prob 0|300"]
    bad = subprocess.run(["bash", str(ex / "quora_ablation.sh")], env=dict(env, STEPS="Z"), cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown step Z" in bad.stderr and " J " in bad.stderr
    script = open(os.path.join(REPO, "examples", "quora_ablation.sh")).read()
    assert "--pseudo-from" not in script and "--target-keep-prob" not in script


def test_collector_rows_are_the_spec_rows():
    s = spec.load("quora_ablation")
    assert [r for r, _ in collect_ablation.ROWS] == spec.rows(s, table=True)
    assert "C_fast" in spec.rows(s) and "C_fast" not in spec.rows(s, table=True)
    assert dict(collect_ablation.ROWS)["D"] == s["rows"]["D"]["label"]
    assert ("H", "I") in spec.pairs(s, "equal_time")


def test_bad_specs_are_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "SPECS", str(tmp_path))
    (tmp_path / "x.yaml").write_text("rows:\n  A: {mode: none, recipe: plugin, fast_path: 0, flags: ''}\n")
    with pytest.raises(ValueError, match="row A lacks label"):
        spec.load("x")
    (tmp_path / "y.yaml").write_text("rows:\n  A: {mode: none, recipe: plugin, fast_path: 0, flags: '', label: a}\n"
                                     "pairs:\n  p: [A B]\n")
    with pytest.raises(ValueError, match="pair A B under p names a row"):
        spec.load("y")
    (tmp_path / "z.yaml").write_text("rows:\n  A: {mode: none, label: a, flags: --block-sizes 1,2,4}\n")
    with pytest.raises(ValueError, match="row A has unknown fields 2, 4 \\(quote values that hold commas"):
        spec.load("z")
    out = run_cli([sys.executable, os.path.join(REPO, "examples", "spec.py"), "quora_ablation", "row", "Q"],
                  check=False)
    assert out.returncode != 0 and out.stderr.strip().startswith("error: no row Q; rows: A B C")


def _stub_examples(tmp_path, script):
    ex = tmp_path / "examples"
    ex.mkdir()
    for name in (script, "common.sh", "spec.py"):
        shutil.copy(os.path.join(REPO, "examples", name), ex / name)
    shutil.copytree(os.path.join(REPO, "examples", "specs"), ex / "specs")
    (ex / "quora.sh").write_text('echo "$RUN|$MODE|$RECIPE|$FAST_PATH|$EXTRA|$DATA|$INTERVAL|$BATCH" >> "$LOG"\n')
    (ex / "quora_table.sh").write_text('echo "quora_table.sh|$STEPS|$DATA|$BUDGET_HOURS" >> "$LOG"\n')
    return ex


@pytest.mark.parametrize("script,steps,expected", [
    ("quora_kd.sh", "none_kd dynamic_kd none_raw",
     ["{r}/quora_none_kd|none|plugin|1||{kd}|500|32", "{r}/quora_dynamic_kd|dynamic|plugin|1||{kd}|500|32",
      "quora_table.sh|none|{raw}|1"]),
    ("quora_ctc.sh", "none_kd none_raw",
     ["{r}/quora_ctc_none_kd|none|plugin|1|--ctc|{kd}|500|32", "{r}/quora_ctc_none|none|plugin|1|--ctc|{raw}|500|32"]),
])
def test_student_steps_train_the_spec_rows(tmp_path, script, steps, expected):
    """quora_kd.sh / quora_ctc.sh train a row step with the spec's mode, flags and data (distilled or raw),
    in the row's run folder; a row trained by another script runs that script's step."""
    ex = _stub_examples(tmp_path, script)
    runs, raw, kd = str(tmp_path / "runs"), str(tmp_path / "raw"), str(tmp_path / "kd")
    env = dict(os.environ, ROOT=runs, DATA=raw, KD=kd, LOG=str(tmp_path / "log"), STEPS=steps)
    subprocess.run(["bash", str(ex / script)], check=True, env=env, cwd=tmp_path)
    assert (tmp_path / "log").read_text().splitlines() == [e.format(r=runs, raw=raw, kd=kd) for e in expected]
    bad = subprocess.run(["bash", str(ex / script)], env=dict(env, STEPS="Z"), cwd=tmp_path, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown step Z" in bad.stderr and "none_kd" in bad.stderr
    code = "".join(ln for ln in open(os.path.join(REPO, "examples", script)) if not ln.lstrip().startswith("#"))
    assert "--ctc" not in code.split("ratio)")[0] and "--length-beam" not in code and "--ctc-beam" not in code


def test_collectors_and_decodings_come_from_the_spec():
    import collect_ctc
    import collect_kd

    kd, ctc = spec.load("quora_kd"), spec.load("quora_ctc")
    rows = spec.table_rows(kd)
    assert rows[0] == ("same-encoder AR teacher: greedy", "ar_same", "generate-test.txt", "same-encoder AR, greedy")
    assert ("no mixing, KD: length beam 5, AR-rescored", "none_kd", "modes/lb5ar.txt",
            "MIST length beam 5, AR-rescored (lengths predicted)") in rows
    assert len(rows) == 2 + 3 * 5  # the teacher twice, three students in five decodings
    assert collect_kd.REFERENCE == "no mixing, raw: length beam 1" and collect_kd.REFERENCE_RUN == "none"
    assert collect_ctc.ROWS == spec.table_rows(ctc)
    assert ("CTC, MIST, KD: prefix beam 5, AR-rescored", "ctc_dynamic_kd", "modes/cb5ar.txt",
            "CTC single pass (2 x source slots), prefix beam 5, AR-rescored") in collect_ctc.ROWS
    assert spec.decodings(ctc) == ["cb5:--ctc-beam 5", "cb5ar:--ctc-beam 5 --rerank-path {teacher}"]
    out = run_cli([sys.executable, os.path.join(REPO, "examples", "spec.py"), "quora_kd", "runs", "--own"])
    assert out.stdout.split() == ["none_kd", "dynamic_kd"]


def test_a_reference_outside_the_table_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "SPECS", str(tmp_path))
    (tmp_path / "r.yaml").write_text("rows:\n  A: {mode: none, label: a, bench: b}\nfirst_decoding: one\n"
                                     "decodings:\n  d: {args: --x, label: x}\nreference: 'a: one'\n")
    with pytest.raises(ValueError, match="decoding d lacks bench"):
        spec.load("r")
    (tmp_path / "r.yaml").write_text("rows:\n  A: {mode: none, label: a, bench: b}\nfirst_decoding: one\n"
                                     "reference: 'a: two'\n")
    with pytest.raises(ValueError, match="reference 'a: two' is not a row of the table"):
        spec.reference(spec.load("r"))
    assert spec.reference(dict(spec.load("r"), reference="a: one")) == ("a: one", "A", "generate-test.txt")


@pytest.mark.parametrize("script,runner,prefix,steps", [
    ("quora_table.sh", "quora.sh", "quora", "none static joint ar_same"),
    ("squad_qg_table.sh", "squad_qg.sh", "squad_sentence", "dynamic static"),
])
def test_table_steps_train_the_spec_rows(tmp_path, script, runner, prefix, steps):
    """quora_table.sh / squad_qg_table.sh train a row step with examples/specs/table.yaml's mode, flags
    (the static row's pseudo targets filled in) and decoding options; the collector's rows are the spec's."""
    ex = tmp_path / "examples"
    ex.mkdir()
    for name in (script, "common.sh", "spec.py"):
        shutil.copy(os.path.join(REPO, "examples", name), ex / name)
    shutil.copytree(os.path.join(REPO, "examples", "specs"), ex / "specs")
    (ex / runner).write_text('echo "$RUN|$MODE|$EXTRA|$GEN_ARGS|$INTERVAL|${LEVEL:-}" >> "$LOG"\n')
    runs = tmp_path / "runs"
    (runs / f"{prefix}_none").mkdir(parents=True)
    (runs / f"{prefix}_none" / "pseudo-train.txt").write_text("x\n")  # static_pseudo_targets' output, made
    env = dict(os.environ, ROOT=str(runs), DATA=str(tmp_path / "data"), LOG=str(tmp_path / "log"), STEPS=steps)
    subprocess.run(["bash", str(ex / script)], check=True, env=env, cwd=tmp_path)
    level = "sentence" if "squad" in script else ""
    flags = {"none": "", "dynamic": "", "static": f"--static-pseudo-targets {runs}/{prefix}_none/pseudo-train.txt",
             "joint": "--block-loss-factor 1 --block-sizes 1,2,4 --janus-kl-factor 1",
             "ar_same": "--nar-loss-factor 0 --block-loss-factor 1 --block-sizes 1"}
    mode = {"none": "none", "dynamic": "dynamic", "static": "static", "joint": "dynamic", "ar_same": "none"}
    gen = {"ar_same": "--decode-mode ar --beam 1"}
    assert (tmp_path / "log").read_text().splitlines() == [
        f"{runs}/{prefix}_{s}|{mode[s]}|{flags[s]}|{gen.get(s, '')}|100|{level}" for s in steps.split()]
    import collect_table

    assert collect_table.MIST_ROWS == [("none", "encoder init, no mixing"), ("dynamic", "MIST (dynamic mixing)"),
                                       ("static", "static mixing")]
    code = "".join(ln for ln in open(os.path.join(REPO, "examples", script)) if not ln.lstrip().startswith("#"))
    assert "--block-sizes" not in code and "--static-pseudo-targets" not in code


def test_modes_come_from_the_table_spec():
    import collect_modes

    s = spec.load("table")
    assert spec.modes(s) == ["joint", "ar_same"]
    assert spec.modes(s, "ar_same") == ["ar4:--decode-mode ar --beam 4"]
    assert "semi2:--decode-mode semi-nar --block-size 2" in spec.modes(s, "joint")
    with pytest.raises(ValueError, match="no modes for run none"):
        spec.modes(s, "none")
    assert collect_modes.ROWS[0] == ("MIST, NAR only: one pass", "dynamic", "generate-test.txt", "MIST single pass")
    assert (collect_modes.REFERENCE_RUN, collect_modes.REFERENCE_OUTPUT) == ("dynamic", "generate-test.txt")
    # every mode the collector reads is one the modes step decodes
    decoded = {(run, f"modes/{m.split(':')[0]}.txt") for run in spec.modes(s) for m in spec.modes(s, run)}
    assert {(run, out) for _, run, out, _ in collect_modes.ROWS if out.startswith("modes/")} == decoded
    code = "".join(ln for ln in open(os.path.join(REPO, "examples", "quora_table.sh")) if not ln.lstrip().startswith("#"))
    assert "--decode-mode" not in code
