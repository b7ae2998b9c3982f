"""Fairseq's baselines run on the same prepared data and are scored by the same scorer."""

import json
import os
import shutil

import pytest

from conftest import N_TEST, REPO, run_cli


@pytest.mark.parametrize("system", ["ar", "cmlm"])
def test_baseline_script_tiny(data, tmp_path, system):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {"DATA": str(data), "RUNS": str(tmp_path), "SYSTEMS": system, "SIZE": "tiny", "UPDATES": "2",
           "MAX_TOKENS": "2048", "SCORE_ARGS": "--no-meteor"}
    run_cli(["bash", os.path.join(REPO, "examples", "baselines", "run_baselines.sh")], env=env)
    gen = (tmp_path / system / "generate-test.txt").read_text()
    assert sum(1 for ln in gen.splitlines() if ln.startswith("D-")) == N_TEST  # nothing dropped
    scores = json.loads((tmp_path / system / "scores.json").read_text())["scores"]
    assert scores["n"] == N_TEST and 0 <= scores["BLEU-4"] <= 100
