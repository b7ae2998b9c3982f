"""The benchmark's --quick mode runs end to end (no timing is asserted: timings live in docs/)."""

import json
import sys

import pytest

from conftest import REPO, run_cli


def test_latency_quick(tmp_path):
    pytest.importorskip("matplotlib")
    run_cli([sys.executable, f"{REPO}/benchmarks/latency.py", "--quick", "--pretrained", "", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "BENCHMARK_quick.json").read_text())
    rows = data["decoding"]
    for name in ("AR transformer, beam 4", "AR transformer, greedy", "MIST single pass",
                 "MIST single pass, no K/V cache", "MIST 3 iterations", "Mask-Predict 3 iterations (MIST model)",
                 "floor: one bare model forward", "fused single pass, gold length given", "NAT (single pass)",
                 "CMLM, 10 iterations"):
        assert name in rows and rows[name]["1"]["median_ms"] > 0
    assert rows["AR transformer, beam 4"]["1"]["speedup_vs_ar_beam4"] == 1.0
    # pinned lengths: AR and NAT produce the reference length (NAT adds <s>)
    ar, nat = rows["AR transformer, greedy"]["1"]["out_len"], rows["NAT (single pass)"]["1"]["out_len"]
    assert nat == pytest.approx(ar + 1)
    assert set(data["training"]) >= {"MIST (dynamic mixing, glancing 0.5)", "no mixing (glancing 0.5)"}
    assert (tmp_path / "BENCHMARK_quick.png").stat().st_size > 1000
    assert "| MIST single pass |" in (tmp_path / "BENCHMARK_quick.md").read_text()
