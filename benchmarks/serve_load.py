"""Load and fault test of the HTTP service (python -m mist_fairseq.serve), loopback only, bounded:
it starts the server, sends a fixed number of requests from N concurrent clients, stops it, and
writes what it measured.

    python -m benchmarks.serve_load --model EXPORT_DIR --sources DATA/raw/test.src \
        [--backend onnx --precision int8] [--clients 16] [--requests 800] [--bad-share 0.25]

Rounds after a warm-up: (1) good requests only, repeated --rounds times: throughput, p50/p95/p99
latency, errors (must be 0), batching factor (requests per model call, from the server's own
counters), and how many answers differ from the answer the same input gets as a lone request (0 on
every backend: int8 decodes one input a pass, since its activation scales are computed per call); (2) the same with a share of malformed requests (every kind the service rejects): each
must get a 4xx with a message, and the good ones must still succeed; (3) with --slow-clients /
--leaving-clients, good requests again beside connections that stall in their headers and clients
that hang up right after sending. Resident memory of the server
after the warm-up and after every round shows whether it grows. Writes OUT/SERVE_LOAD.md and .json.
The server it starts stops with it: on SIGTERM or Ctrl-C, and (Linux) when the benchmark is killed.
"""

import argparse
import json
import os
import random
import signal
import statistics
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.report_io import platform_line, write_atomic

# (body, expected status): one of each kind the service must refuse
MALFORMED = [
    (b"not json", 400), (b'{"inputs": ["caf\xe9"]}', 400), (b"[1, 2]", 422), (b'{"input": "x"}', 422),
    (b"{}", 422), (b'{"inputs": 3}', 422), (b'{"inputs": []}', 422), (b'{"inputs": ["ok", 5]}', 422),
    (b'{"inputs": [" "]}', 422), (json.dumps({"inputs": ["! " * 600]}).encode(), 413),
]


def _die_with_parent():
    """In the server's process, before it runs (Linux): the kernel sends it SIGTERM when the benchmark
    process dies, even by SIGKILL, so a killed benchmark never leaves a server holding the port."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: SIGTERM/SIGINT of the benchmark still stop the server (main's finally)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")  # runs main's finally: the server is stopped


def start_server(args, port):
    cmd = [sys.executable, "-m", "mist_fairseq.serve", "--model", args.model, "--backend", args.backend,
           "--precision", args.precision, "--port", str(port), "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--header-timeout", str(args.header_timeout),
           "--malloc-arenas", str(args.malloc_arenas), "--malloc-trim-s", str(args.malloc_trim_s), "--no-access-log",
           "--log-level", "error"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.backend == "torch":
        cmd += ["--checkpoint-file", args.checkpoint_file, "--data", args.data]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if requests.get(url + "/health", timeout=1).ok:
                print(f"server pid {proc.pid} at {url}", file=sys.stderr, flush=True)
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start in 300 s")


def one(session_url, body):
    t = time.perf_counter()
    r = requests.post(session_url + "/generate", data=body, timeout=120,
                      headers={"Content-Type": "application/json"})
    ms = (time.perf_counter() - t) * 1000
    try:
        payload = r.json()
    except ValueError:
        payload = None
    return r.status_code, payload, ms


class PeakRSS:
    """Polls the server's /health every ``every`` seconds while in use; ``peak``: the largest rss_mb seen.
    A snapshot after a round lands before or after the service's malloc_trim; the peak over the round
    (its working set at the busiest moment) does not depend on that timing."""

    def __init__(self, url, every=0.5):
        self.url, self.every, self.peak = url, every, 0.0
        self.stop = threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, requests.get(self.url + "/health", timeout=5).json()["rss_mb"])
            except requests.RequestException:
                pass
            self.stop.wait(self.every)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_round(url, jobs, clients):
    """jobs: list of (body, kind, expected); returns per-job (status, payload, ms) and wall seconds."""
    before = requests.get(url + "/health").json()
    t = time.perf_counter()
    pool = ThreadPoolExecutor(clients)
    try:
        results = list(pool.map(lambda j: one(url, j[0]), jobs))
    finally:  # stopped by a signal: the queued requests are dropped, not sent before the server stops
        pool.shutdown(wait=False, cancel_futures=True)
    wall = time.perf_counter() - t
    after = requests.get(url + "/health").json()
    return results, wall, before, after


class Hostile:
    """Background clients for one round: ``slow`` connections that send half a request line and then
    nothing (each reopened once the server closes it), and ``leaving`` clients that send a whole request
    and close at once (over and over). Counts the slow connections the server closed."""

    def __init__(self, port, slow, leaving):
        self.port, self.stop, self.closed_by_server, self.left = port, threading.Event(), 0, 0
        self.lock = threading.Lock()  # the counters are bumped from many client threads
        self.threads = [threading.Thread(target=self.slow_one, daemon=True) for _ in range(slow)]
        self.threads += [threading.Thread(target=self.leaving_one, daemon=True) for _ in range(leaving)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def slow_one(self):
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Ty")
                    while not self.stop.is_set():
                        try:
                            if c.recv(100) == b"":
                                with self.lock:
                                    self.closed_by_server += 1
                                break
                        except socket.timeout:
                            continue
            except OSError:
                time.sleep(0.1)

    def leaving_one(self):
        body = json.dumps({"inputs": ["How can I learn Python fast?"]}).encode()
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
                    c.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                with self.lock:
                    self.left += 1
                time.sleep(0.05)
            except OSError:
                time.sleep(0.1)


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def summarize(jobs, results, wall, before, after, want):
    good = [(j, r) for j, r in zip(jobs, results) if j[1] == "good"]
    bad = [(j, r) for j, r in zip(jobs, results) if j[1] != "good"]
    ms = [r[2] for _, r in good]
    good_errors = sum(1 for j, r in good if r[0] != 200 or not isinstance((r[1] or {}).get("outputs"), list))
    # batching must not change an answer; int8 can (activations are quantized per call, over the batch)
    differs = sum(1 for j, r in good if r[0] == 200 and r[1]["outputs"] != [want[j[2]]])
    bad_wrong = sum(1 for j, r in bad if r[0] != j[2] or not (r[1] or {}).get("error"))
    d_req, d_batch = after["requests"] - before["requests"], after["batches"] - before["batches"]
    return {"requests": len(jobs), "good": len(good), "malformed": len(bad), "wall_s": round(wall, 2),
            "good_per_s": round(len(good) / wall, 2), "p50_ms": round(pct(ms, 50), 1),
            "p95_ms": round(pct(ms, 95), 1), "p99_ms": round(pct(ms, 99), 1), "mean_ms": round(statistics.mean(ms), 1),
            "good_errors": good_errors, "differs_from_alone": differs, "malformed_not_4xx_with_message": bad_wrong,
            "batching_factor": round(d_req / d_batch, 2) if d_batch else 0.0,
            "failed_batches": after["failed_batches"] - before["failed_batches"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export folder (onnx) or checkpoint folder (torch)")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--checkpoint-file", default="checkpoint_best.pt")
    p.add_argument("--data", help="--backend torch: the fairseq-preprocess folder")
    p.add_argument("--sources", required=True, help="input sentences, one a line")
    p.add_argument("--n-sources", type=int, default=200, help="distinct sources used (first N lines)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--requests", type=int, default=800, help="requests per round")
    p.add_argument("--bad-share", type=float, default=0.25, help="malformed share in the last round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of good requests before the malformed one")
    p.add_argument("--slow-clients", type=int, default=0,
                   help="a last good round beside this many connections that stall in their headers")
    p.add_argument("--leaving-clients", type=int, default=0,
                   help="... and this many clients that send a request and hang up at once, over and over")
    p.add_argument("--header-timeout", type=float, default=10.0, help="the server's --header-timeout")
    p.add_argument("--threads", type=int, default=None, help="server compute threads")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--malloc-arenas", type=int, default=2, help="the server's --malloc-arenas (0: glibc's default)")
    p.add_argument("--malloc-trim-s", type=float, default=1.0, help="the server's --malloc-trim-s (0: never)")
    p.add_argument("--port", type=int, default=8764)
    p.add_argument("--out", default="docs", help="where SERVE_LOAD.md/.json go")
    p.add_argument("--name", default="SERVE_LOAD")
    args = p.parse_args(argv)
    with open(args.sources, encoding="utf-8") as f:
        sources = [ln.rstrip("\n") for _, ln in zip(range(args.n_sources), f)]
    rng = random.Random(1)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    proc, url = start_server(args, args.port)
    try:
        # the output of each source as a lone request: what every loaded answer must equal
        want = [one(url, json.dumps({"inputs": [s]}))[1]["outputs"][0] for s in sources]
        warm = [(json.dumps({"inputs": [sources[i % len(sources)]]}), "good", i % len(sources)) for i in range(100)]
        run_round(url, warm, args.clients)
        rss0 = requests.get(url + "/health").json()["rss_mb"]
        jobs1 = [(json.dumps({"inputs": [sources[i % len(sources)]]}), "good", i % len(sources))
                 for i in range(args.requests)]
        rounds, rss, peaks = [], [], []
        for _ in range(args.rounds):  # repeated: memory must level off, not grow round after round
            rng.shuffle(jobs1)
            with PeakRSS(url) as peak:
                rounds.append(summarize(jobs1, *run_round(url, jobs1, args.clients), want))
            rss.append(requests.get(url + "/health").json()["rss_mb"])
            peaks.append(peak.peak)
        r1 = rounds[-1]
        jobs2 = []
        for i in range(args.requests):
            if rng.random() < args.bad_share:
                body, status = MALFORMED[len(jobs2) % len(MALFORMED)]
                jobs2.append((body, "bad", status))
            else:
                jobs2.append((json.dumps({"inputs": [sources[i % len(sources)]]}), "good", i % len(sources)))
        r2 = summarize(jobs2, *run_round(url, jobs2, args.clients), want)
        hostile = None
        if args.slow_clients or args.leaving_clients:
            rng.shuffle(jobs1)
            with Hostile(args.port, args.slow_clients, args.leaving_clients) as h:
                start = time.time()
                hostile = summarize(jobs1, *run_round(url, jobs1, args.clients), want)
                # long enough for the server's header timeout to have closed the stalled connections
                time.sleep(max(0.0, start + 1.5 * args.header_timeout + 1 - time.time()))
            hostile.update({"slow_clients": args.slow_clients, "slow_closed_by_server": h.closed_by_server,
                            "leaving_clients": args.leaving_clients, "requests_left_unread": h.left})
        health = requests.get(url + "/health").json()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    report = {"platform": platform_line(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python -m benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
              "backend": health["backend"], "clients": args.clients, "max_batch": args.max_batch,
              "max_wait_ms": args.max_wait_ms, "malloc_arenas": args.malloc_arenas, "malloc_trim_s": args.malloc_trim_s,
              "threads": args.threads, "n_sources": len(sources),
              "good_only": r1, "good_only_rounds": rounds, "with_malformed": r2, "with_hostile_clients": hostile,
              "rss_mb": {"after_warmup": rss0, "after_good_rounds": rss, "peak_in_good_rounds": peaks,
                         "after_malformed_round": health["rss_mb"]},
              "housekeeping": health.get("housekeeping", 0), "housekeeping_s": round(health.get("housekeeping_s", 0.0), 3)}
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, args.name + ".json"), json.dumps(report, indent=1) + "\n")
    write_atomic(os.path.join(args.out, args.name + ".md"), render(report))
    print(json.dumps({k: report[k] for k in ("good_only", "with_malformed", "rss_mb")}))
    return report


def render(r):
    rows = [(f"good requests only, round {i + 1}", x) for i, x in enumerate(r["good_only_rounds"])]
    rows.append(("with malformed requests", r["with_malformed"]))
    h = r.get("with_hostile_clients")
    if h:
        rows.append((f"beside {h['slow_clients']} slow-header and {h['leaving_clients']} hang-up clients", h))
    lines = [f"# Service load and fault test ({r['backend']})", "",
             f"`{r['command']}`", "",
             f"{r['date']}, {r['platform']}, {r['cpus']} CPUs; {r['clients']} concurrent clients on loopback, one input "
             f"per request ({r['n_sources']} distinct sources), server batching: up to {r['max_batch']} inputs, "
             f"{r['max_wait_ms']} ms wait, {r['threads'] or 'default'} compute threads, "
             f"{r.get('malloc_arenas') or 'glibc default'} malloc arenas, "
             f"{'malloc_trim at most every %ss' % r['malloc_trim_s'] if r.get('malloc_trim_s') else 'no malloc_trim'}"
             f"{' (%d calls, %.2f s in all)' % (r['housekeeping'], r['housekeeping_s']) if 'housekeeping' in r else ''}. "
             "Clients and server share "
             "the machine.", "",
             "| round | requests (good / malformed) | good/s | p50 ms | p95 ms | p99 ms | good requests failed "
             "| good answers differing from a lone request's | malformed not answered 4xx + message "
             "| batching factor (requests per model call) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, x in rows:
        lines.append(f"| {name} | {x['good']} / {x['malformed']} | {x['good_per_s']} | {x['p50_ms']} | {x['p95_ms']} | "
                     f"{x['p99_ms']} | {x['good_errors']} | {x['differs_from_alone']} | {x['malformed_not_4xx_with_message']} | "
                     f"{x['batching_factor']} |")
    m = r["rss_mb"]
    lines += ["", f"Server resident memory (MiB): {m['after_warmup']} after the warm-up; "
              + ", ".join(f"{v} after round {i + 1}" for i, v in enumerate(m["after_good_rounds"]))
              + f"; {m['after_malformed_round']} after the malformed round."
              + ((" Peak within each good round (/health polled every 0.5 s): "
                  + ", ".join(str(v) for v in m["peak_in_good_rounds"]) + ".") if m.get("peak_in_good_rounds") else ""), ""]
    if h:
        lines += [f"Hostile round: the server closed {h['slow_closed_by_server']} stalled connections (--header-timeout); "
                  f"{h['requests_left_unread']} requests were sent by clients that hung up at once.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
