"""The service's life cycle under load: SIGTERM answers every request already in flight, then exits;
after kill -9 the service restarts on the same port and answers as before."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_serve import Server, export_dir  # noqa: F401  (export_dir: the module's fixture)

pytest.importorskip("onnxruntime")


def test_sigterm_drains_in_flight_requests(export_dir, data, tmp_path):  # noqa: F811
    from mist_fairseq.export import OnnxMistModel

    sources = (data / "raw" / "test.src").read_text().splitlines()[:12]
    want = OnnxMistModel(str(export_dir), threads=1).generate(sources)
    # a 3-second batching window: every request is inside the service, waiting, when SIGTERM comes
    s = Server("--model", str(export_dir), "--max-wait-ms", "3000", log=tmp_path / "serve.log")
    with ThreadPoolExecutor(len(sources)) as pool:
        futures = [pool.submit(s.post, {"inputs": [x]}) for x in sources]
        time.sleep(1.0)
        assert not any(f.done() for f in futures)  # still in flight
        s.proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    assert [a.status_code for a in answers] == [200] * len(sources)
    assert [a.json()["outputs"][0] for a in answers] == want
    # it exits by itself once drained; uvicorn re-raises the signal after its shutdown, so the status
    # is that of SIGTERM (or 0 on versions that do not)
    assert s.proc.wait(60) in (0, -signal.SIGTERM)
    assert "Finished server process" in (tmp_path / "serve.log").read_text()


def test_kill_9_then_restart_on_the_same_port(export_dir, data, tmp_path):  # noqa: F811
    sources = (data / "raw" / "test.src").read_text().splitlines()[:4]
    s = Server("--model", str(export_dir), log=tmp_path / "a.log")
    before = s.post({"inputs": sources}).json()["outputs"]
    s.proc.send_signal(signal.SIGKILL)
    assert s.proc.wait(30) == -signal.SIGKILL
    again = Server("--model", str(export_dir), log=tmp_path / "b.log", port=s.port)
    try:
        r = again.post({"inputs": sources})
        assert r.status_code == 200 and r.json()["outputs"] == before
        assert again.health()["requests"] == 1  # a fresh process: nothing carried over
    finally:
        again.stop()
