"""The serving race (benchmarks.race) end to end on tiny models: a Fairseq AR transformer trained
by the baselines script, converted with CTranslate2's Fairseq converter, raced against the MIST
generator in PyTorch and ONNX Runtime."""

import json
import os
import shutil
import sys

import pytest

from conftest import REPO, python_cli, run_cli

pytest.importorskip("ctranslate2")
pytest.importorskip("onnxruntime")


def test_race_runs_every_system_and_reports(trained, data, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {"DATA": str(data), "RUNS": str(tmp_path / "ar"), "SYSTEMS": "ar", "SIZE": "tiny", "UPDATES": "2",
           "MAX_TOKENS": "2048", "SCORE_ARGS": "--no-meteor"}
    run_cli(["bash", os.path.join(REPO, "examples", "baselines", "run_baselines.sh")], env=env)
    ckpt = trained / "checkpoint_last.pt"
    # an AR checkpoint is refused by the exporter with one line (CTranslate2 converts those)
    shutil.copy(data / "bin" / "vocab.txt", tmp_path / "ar" / "bin" / "vocab.txt")
    res = python_cli("mist_fairseq.export", str(tmp_path / "ar" / "ar" / "checkpoint_last.pt"), "--data",
                     str(tmp_path / "ar" / "bin"), "--out", str(tmp_path / "no"), check=False)
    assert res.returncode == 2 and "not a mist_nar model" in res.stderr, res.stderr[-2000:]
    python_cli("mist_fairseq.export", str(ckpt), "--data", str(data / "bin"), "--out", str(tmp_path / "export"),
               "--int8")
    out = tmp_path / "docs"
    run_cli([sys.executable, "-m", "benchmarks.race", "--data", str(data), "--mist", str(ckpt),
             "--export", str(tmp_path / "export"), "--fairseq-ar", str(tmp_path / "ar" / "ar" / "checkpoint_last.pt"),
             "--fairseq-data", str(tmp_path / "ar" / "bin"), "--n", "8", "--batch-sizes", "1", "4", "--warmup", "1",
             "--threads", "1", "--pause-ms", "5", "--out", str(out)], cwd=REPO)
    report = json.loads((out / "RACE.json").read_text())
    names = [r["system"] for r in report["rows"]]
    assert names == ["MIST, PyTorch fp32", "MIST, ONNX Runtime fp32", "MIST, ONNX Runtime int8",
                     "MIST, ONNX Runtime int8, batched (batch-dependent)", "AR transformer, CTranslate2 int8 greedy", "AR transformer, CTranslate2 int8 beam 4"]
    assert (tmp_path / "ar" / "ar" / "ct2_int8" / "model.bin").exists()  # converted by CTranslate2's Fairseq converter
    for r in report["rows"]:
        assert r["ms_b1"] > 0 and r["ms_b4"] > 0 and 0 <= r["BLEU-4"] <= 100
    md = (out / "RACE.md").read_text()
    assert "CTranslate2 int8 beam 4" in md and "speedup vs CTranslate2 beam 4" in md
    assert (out / "RACE.png").stat().st_size > 0
