"""The HTTP service (python -m mist_fairseq.serve), started on a loopback port and called with a real
HTTP client: outputs equal the backend's, concurrent requests are batched, every malformed request
gets a 4xx with a message and the service stays up."""

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import REPO

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")
requests = pytest.importorskip("requests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, log=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "mist_fairseq.serve", "--port", str(self.port),
                                      "--threads", "1", *args], cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}"
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.3)
        raise AssertionError("server did not start")

    def post(self, body, **kw):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(self.url + "/generate", data=data, timeout=60, **kw)

    def health(self):
        return requests.get(self.url + "/health", timeout=10).json()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        if self.log is not subprocess.DEVNULL:
            self.log.close()


@pytest.fixture(scope="module")
def export_dir(trained, data, tmp_path_factory):
    from mist_fairseq.export.onnx_export import export
    from mist_fairseq import MistModel

    out = tmp_path_factory.mktemp("serve_export")
    hub = MistModel.from_pretrained(str(trained), checkpoint_file="checkpoint_last.pt",
                                    data_name_or_path=str(data / "bin"))
    export(hub, str(out))
    return out


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    # a long batching wait, so that concurrent requests surely meet in one batch
    s = Server("--model", str(export_dir), "--backend", "onnx", "--max-wait-ms", "300", "--max-inputs", "4",
               "--max-input-chars", "1000", log=tmp_path_factory.mktemp("log") / "serve.log")
    yield s
    s.stop()


def test_outputs_equal_the_backend_and_requests_are_batched(server, export_dir, data):
    from mist_fairseq.export import OnnxMistModel

    sources = (data / "raw" / "test.src").read_text().splitlines()[:8]
    want = OnnxMistModel(str(export_dir), threads=1).generate(sources)
    r = server.post({"inputs": sources[:3]})
    assert r.status_code == 200 and r.json()["outputs"] == want[:3]
    r = server.post({"inputs": sources[3]})  # one string: a list of one output
    assert r.status_code == 200 and r.json()["outputs"] == want[3:4]
    before = server.health()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda s: server.post({"inputs": [s]}), sources))
    assert [a.status_code for a in answers] == [200] * 8
    assert [a.json()["outputs"][0] for a in answers] == want
    after = server.health()
    requests_made = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests_made == 8 and batches < 8, (requests_made, batches)  # grouped, not one pass each


MALFORMED = [
    (b"not json", 400, "not JSON"),
    (b'{"inputs": ["caf\xe9"]}', 400, "not UTF-8"),
    (b"[1, 2]", 422, "not an object"),
    (b'{"input": "x"}', 422, "unknown field"),
    (b"{}", 422, "missing field 'inputs'"),
    (b'{"inputs": 3}', 422, "must be a string or a list"),
    (b'{"inputs": []}', 422, "empty list"),
    (b'{"inputs": ["ok", 5]}', 422, "inputs[1] is a JSON int"),
    (b'{"inputs": ["  "]}', 422, "inputs[0] is empty"),
    (json.dumps({"inputs": ["a"] * 5}).encode(), 413, "5 inputs; at most 4"),
    (json.dumps({"inputs": ["x" * 1001]}).encode(), 413, "1001 characters; at most 1000"),
    (json.dumps({"inputs": ["! " * 470]}).encode(), 413, "471 WordPiece tokens; this model takes at most 463"),
    (b"x" * 100_000, 413, "bytes; at most"),
]


@pytest.mark.parametrize("body,status,message", MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_requests_get_a_4xx_with_a_message(server, body, status, message):
    r = server.post(body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    # the service is still up and still answers good requests
    assert server.post({"inputs": ["how are you?"]}).status_code == 200


def test_health_and_rejected_count(server):
    h = server.health()
    assert h["status"] == "ok" and h["backend"] == "onnx-fp32" and h["rss_mb"] > 0
    n = h["rejected"]
    server.post(b"nope")
    assert server.health()["rejected"] == n + 1


def test_torch_backend(trained, data):
    from mist_fairseq import MistModel

    sources = (data / "raw" / "test.src").read_text().splitlines()[:3]
    want = MistModel.from_pretrained(str(trained), checkpoint_file="checkpoint_last.pt",
                                     data_name_or_path=str(data / "bin")).generate(sources)
    s = Server("--model", str(trained), "--backend", "torch", "--checkpoint-file", "checkpoint_last.pt",
               "--data", str(data / "bin"), "--no-access-log")
    try:
        r = s.post({"inputs": sources})
        assert r.status_code == 200 and r.json()["outputs"] == want
        assert s.health()["backend"] == "torch-fp32"
    finally:
        s.stop()


def test_cli_errors(trained):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "mist_fairseq.serve", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    r = run("--model", str(trained), "--backend", "torch")
    assert r.returncode == 2 and "--data" in r.stderr
    r = run("--model", str(trained), "--backend", "onnx")
    assert r.returncode == 2 and "mist_export.json" in r.stderr
    r = run("--model", str(trained), "--max-batch", "0")
    assert r.returncode == 2 and "--max-batch must be >= 1" in r.stderr


def test_load_and_fault_benchmark(export_dir, data, tmp_path):
    """benchmarks/serve_load.py: bounded, loopback; every good answer equals a lone request's, every
    malformed one is a 4xx with a message, and requests were batched."""
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "serve_load.py"), "--model", str(export_dir),
                          "--sources", str(data / "raw" / "test.src"), "--n-sources", "10", "--clients", "6",
                          "--requests", "60", "--rounds", "2", "--bad-share", "0.3", "--threads", "1", "--max-wait-ms", "20",
                          "--port", str(free_port()), "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "SERVE_LOAD.json").read_text())
    for rnd in ("good_only", "with_malformed"):
        r = report[rnd]
        assert r["good_errors"] == 0 and r["malformed_not_4xx_with_message"] == 0 and r["failed_batches"] == 0
        assert r["differs_from_alone"] == 0  # fp32: batching never changes an answer
        assert r["batching_factor"] > 1.0, r
    assert report["with_malformed"]["malformed"] > 0
    assert "p99 ms" in (tmp_path / "SERVE_LOAD.md").read_text()


def test_batcher_groups_requests_and_survives_a_failing_batch():
    """The batcher alone: concurrent submits become one generate call, in order; a batch whose
    generate raises fails its requests only, and the next request is served."""
    import asyncio

    from mist_fairseq.serve.batcher import DynamicBatcher

    calls = []

    def generate(sentences):
        calls.append(list(sentences))
        if "boom" in sentences:
            raise RuntimeError("model failed")
        return [s.upper() for s in sentences]

    async def scenario():
        b = DynamicBatcher(generate, max_batch=8, max_wait_ms=100)
        await b.start()
        try:
            outs = await asyncio.gather(b.submit(["a"]), b.submit(["b", "c"]), b.submit(["d"]))
            assert outs == [["A"], ["B", "C"], ["D"]]
            assert calls == [["a", "b", "c", "d"]]  # one model call for the three requests
            results = await asyncio.gather(b.submit(["boom"]), b.submit(["x"]), return_exceptions=True)
            assert all(isinstance(r, RuntimeError) for r in results)  # the failing batch's requests
            assert await b.submit(["after"]) == ["AFTER"]  # and the batcher is still serving
            assert b.stats["failed_batches"] == 1 and b.stats["batches"] == 2
        finally:
            await b.stop()

    asyncio.run(scenario())
