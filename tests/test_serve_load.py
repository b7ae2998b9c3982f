"""benchmarks.serve_load never leaves its server behind: stopped by SIGTERM it stops the server, and
killed outright (SIGKILL) the server still goes (Linux: the kernel's parent-death signal)."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import free_port, REPO

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("requests")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (its parent, the benchmark, is dead and init reaps it)
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc are Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_benchmark_stops_its_server(trained, data, sig):
    bench = subprocess.Popen([sys.executable, "-m", "benchmarks.serve_load", "--model", str(trained),
                              "--backend", "torch", "--checkpoint-file", "checkpoint_last.pt",
                              "--data", str(data / "bin"), "--sources", str(data / "raw" / "test.src"),
                              "--n-sources", "5", "--clients", "2", "--requests", "100000", "--threads", "1",
                              "--port", str(free_port())],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"))
    lines, reported = [], threading.Event()

    def read_stderr():  # read to the end, so the benchmark never blocks on a full pipe
        for line in bench.stderr:
            lines.append(line)
            if line.startswith("server pid "):  # printed once the server answers /health
                reported.set()
        reported.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    pid = None
    try:
        reported.wait(300)
        pid = next((int(ln.split()[2]) for ln in lines if ln.startswith("server pid ")), None)
        assert pid is not None and alive(pid), "the benchmark never reported its server:\n" + "".join(lines)[-2000:]
        time.sleep(2)  # inside the load rounds
        bench.send_signal(sig)
        try:
            bench.wait(120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the benchmark did not exit on signal {sig}:\n" + "".join(lines)[-2000:])
        deadline = time.time() + 60
        while alive(pid) and time.time() < deadline:
            time.sleep(0.5)
        assert not alive(pid), f"server {pid} still running after the benchmark got signal {sig}"
    finally:
        if bench.poll() is None:
            bench.kill()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_peak_rss_is_the_largest_value_polled_while_in_use():
    """The round's peak memory: /health polled while the round runs, the largest rss_mb kept (a
    snapshot after the round would land before or after the service's malloc_trim)."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmarks.serve_load import PeakRSS

    values = iter([500.0, 640.0, 530.0] + [520.0] * 1000)
    polls = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            v = next(values)
            polls.append(v)
            body = json.dumps({"rss_mb": v}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with PeakRSS(f"http://127.0.0.1:{server.server_port}", every=0.01) as peak:
            deadline = time.time() + 10
            while len(polls) < 5 and time.time() < deadline:
                time.sleep(0.01)
        n = len(polls)
        time.sleep(0.1)
        assert peak.peak == 640.0 and len(polls) >= 5
        assert len(polls) == n  # polling stopped with the round
    finally:
        server.shutdown()
