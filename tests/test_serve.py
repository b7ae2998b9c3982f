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

from conftest import free_port, REPO

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")
requests = pytest.importorskip("requests")


class Server:
    def __init__(self, *args, log=None, port=None):
        self.port = port or free_port()
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

    def post(self, body, headers=None, **kw):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers = {"Content-Type": "application/json"} if headers is None else headers
        return requests.post(self.url + "/generate", data=data, timeout=60, headers=headers, **kw)

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
               "--max-input-chars", "1000", "--max-request-tokens", "200", "--read-timeout", "1",
               log=tmp_path_factory.mktemp("log") / "serve.log")
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
    (b'{"inputs": ["\\ud800 hi"]}', 422, "lone surrogate"),
    (b'{"inputs": [' + b"1" * 5000 + b"]}", 400, "not JSON this service reads"),
    (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "not JSON this service reads"),
    ('{"inputs": ["\u200b\u200b"]}'.encode(), 422, "no WordPiece tokens once tokenized"),
    (json.dumps({"inputs": ["word " * 60] * 4}).encode(), 413, "WordPiece tokens; at most 200 a request"),
]


@pytest.mark.parametrize("body,status,message", MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_requests_get_a_4xx_with_a_message(server, body, status, message):
    r = server.post(body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    # the service is still up and still answers good requests
    assert server.post({"inputs": ["how are you?"]}).status_code == 200


def test_body_limits_while_reading_timeouts_and_content_type(server):
    # a chunked body (no Content-Length) over the size limit is refused while it is read
    def chunks():
        for _ in range(200):
            yield b"x" * 1000
    r = requests.post(server.url + "/generate", data=chunks(), headers={"Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == 413 and "over" in r.json()["error"]
    # a Content-Length longer than the body: answered 408 once the read timeout passes, not held forever
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as c:
        c.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"inputs\"")
        t = time.time()
        head = c.recv(200)
        assert head.startswith(b"HTTP/1.1 408") and time.time() - t < 20, head
    r = server.post({"inputs": ["hi"]}, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    assert server.post({"inputs": ["hi"]}, headers={}).status_code == 415
    for path in ("/docs", "/openapi.json"):
        assert requests.get(server.url + path, timeout=10).status_code == 404


def test_slow_header_clients_are_closed_and_cannot_starve_good_ones(export_dir, tmp_path):
    """More clients than --max-connections, each sending half a request line and then nothing: good
    requests get 503 while they hold the slots, and once --header-timeout passes the server has closed
    every one of them and good requests succeed again (uvicorn alone never closes them)."""
    s = Server("--model", str(export_dir), "--backend", "onnx", "--max-connections", "4", "--header-timeout", "2",
               log=tmp_path / "serve.log")
    try:
        slow = []
        for _ in range(8):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            c.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Ty")
            slow.append(c)
        time.sleep(0.5)
        assert s.post({"inputs": ["hi"]}).status_code == 503  # the slots are held
        t = time.time()
        for c in slow:
            assert c.recv(100) == b""  # closed by the server, without an answer
        assert time.time() - t < 20
        r = s.post({"inputs": ["How can I learn Python fast?"]})
        assert r.status_code == 200 and len(r.json()["outputs"]) == 1
        # a kept-alive connection whose next request stalls in its headers is closed too
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
            c.sendall(b"GET /hea")
            t = time.time()
            while c.recv(4096):
                pass
            assert 1 < time.time() - t < 20
    finally:
        for c in slow:
            c.close()
        s.stop()


def test_control_token_strings_are_text(server, export_dir):
    from mist_fairseq.export import OnnxMistModel

    onnx = OnnxMistModel(str(export_dir), threads=1)
    ids = onnx.encode("what is [MASK] or [SEP] here?").tolist()
    d = onnx.dict
    assert d.index("[MASK]") not in ids and ids.count(d.eos()) == 1  # the final [SEP] only
    assert ids == onnx.encode("what is [ mask ] or [ sep ] here?").tolist()
    r = server.post({"inputs": ["what is [MASK] here?", "what is [ mask ] here?"]})
    a, b = r.json()["outputs"]
    assert r.status_code == 200 and a == b


def test_health_and_rejected_count(server):
    h = server.health()
    assert h["status"] == "ok" and h["backend"] == "onnx-fp32" and h["rss_mb"] > 0
    n = h["rejected"]
    server.post(b"nope")
    assert server.health()["rejected"] == n + 1


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_torch_backend(trained, data, precision):
    from mist_fairseq import MistModel

    sources = (data / "raw" / "test.src").read_text().splitlines()[:3]
    want = MistModel.from_pretrained(str(trained), checkpoint_file="checkpoint_last.pt",
                                     data_name_or_path=str(data / "bin")).generate(sources, decode_precision=precision)
    s = Server("--model", str(trained), "--backend", "torch", "--checkpoint-file", "checkpoint_last.pt",
               "--data", str(data / "bin"), "--no-access-log", "--precision", precision)
    try:
        r = s.post({"inputs": sources})
        assert r.status_code == 200 and r.json()["outputs"] == want
        assert s.health()["backend"] == f"torch-{precision}"
        from mist_fairseq.serve.backends import load_backend

        backend = load_backend("torch", str(trained), precision, "checkpoint_last.pt", str(data / "bin"))
        assert backend.decode_options.decode_precision == precision  # what every request decodes with
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
    r = run("--model", str(trained), "--host", "0.0.0.0")
    assert r.returncode == 2 and "--allow-remote" in r.stderr


def test_load_and_fault_benchmark(export_dir, data, tmp_path):
    """benchmarks.serve_load: bounded, loopback; every good answer equals a lone request's, every
    malformed one is a 4xx with a message, and requests were batched."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.serve_load", "--model", str(export_dir),
                          "--sources", str(data / "raw" / "test.src"), "--n-sources", "10", "--clients", "6",
                          "--requests", "60", "--rounds", "2", "--bad-share", "0.3", "--threads", "1", "--max-wait-ms", "20",
                          "--slow-clients", "3", "--leaving-clients", "2", "--header-timeout", "1",
                          "--port", str(free_port()), "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "SERVE_LOAD.json").read_text())
    hostile = report["with_hostile_clients"]
    assert hostile["slow_closed_by_server"] > 0 and hostile["requests_left_unread"] > 0, hostile
    for rnd in ("good_only", "with_malformed", "with_hostile_clients"):
        r = report[rnd]
        assert r["good_errors"] == 0 and r["malformed_not_4xx_with_message"] == 0 and r["failed_batches"] == 0
        assert r["differs_from_alone"] == 0  # fp32: batching never changes an answer
        assert r["batching_factor"] > 1.0 or rnd == "with_hostile_clients", r
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


def test_batcher_bounds_its_queue_and_drops_requests_whose_client_left():
    import asyncio

    from mist_fairseq.serve.batcher import DynamicBatcher, QueueFull

    calls = []

    def generate(sentences):
        calls.append(list(sentences))
        return list(sentences)

    async def scenario():
        b = DynamicBatcher(generate, max_batch=8, max_wait_ms=200, max_queue=3)
        await b.start()
        try:
            kept, left = b.enqueue(["a", "b"]), b.enqueue(["c"])
            try:
                b.enqueue(["d"])
                raise AssertionError("a full queue took more")
            except QueueFull as e:
                assert "at most 3" in str(e)
            left.cancel()  # its client went away while it waited
            assert await kept == ["a", "b"]
            assert calls == [["a", "b"]] and b.queued == 0  # "c" was never computed
            assert await b.submit(["e"]) == ["e"]  # room again
        finally:
            await b.stop()

    asyncio.run(scenario())


def test_four_paths_decode_the_same_text(server, export_dir, trained, data):
    """Default options: fairseq-generate, MistModel, the ONNX runner (fp32) and the service (its ONNX
    backend) give the same text; the export recorded the checkpoint's decoding options."""
    import re

    from conftest import USER_DIR, run_cli
    from mist_fairseq import MistModel
    from mist_fairseq.export import OnnxMistModel

    sources = (data / "raw" / "test.src").read_text().splitlines()
    out = run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--path", str(trained / "checkpoint_last.pt"), "--gen-subset", "test", "--batch-size", "8",
                   "--bpe", "bert", "--bpe-vocab-file", str(data / "bin" / "vocab.txt")]).stdout
    cli = {int(i): d for i, d in re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M)}
    cli = [cli[i] for i in range(len(sources))]
    hub = MistModel.from_pretrained(str(trained), checkpoint_file="checkpoint_last.pt",
                                    data_name_or_path=str(data / "bin"))
    onnx = OnnxMistModel(str(export_dir), threads=1)
    assert onnx.decode_options == hub.decode_options
    served = [o for i in range(0, len(sources), 4) for o in server.post({"inputs": sources[i:i + 4]}).json()["outputs"]]
    assert hub.generate(sources) == cli
    assert onnx.generate(sources) == cli
    assert served == cli
