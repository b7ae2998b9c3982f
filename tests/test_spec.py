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
    out = run_cli([sys.executable, os.path.join(REPO, "examples", "spec.py"), "quora_ablation", "row", "Q"],
                  check=False)
    assert out.returncode != 0 and out.stderr.strip().startswith("error: no row Q; rows: A B C")
