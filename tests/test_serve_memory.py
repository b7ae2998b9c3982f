"""The service caps glibc's malloc arenas (--malloc-arenas) before it loads the model."""

import ctypes
import sys

import pytest

from mist_fairseq.serve import memory


def test_mallopt_gets_the_arena_cap(monkeypatch):
    calls = []

    class FakeMallopt:  # a ctypes function: takes argtypes/restype, then is called
        def __call__(self, param, value):
            calls.append((param, value))
            return 1

    class FakeLibc:
        mallopt = FakeMallopt()

    monkeypatch.setattr(ctypes, "CDLL", lambda path: FakeLibc())
    assert memory.limit_malloc_arenas(2) is True and calls == [(memory.M_ARENA_MAX, 2)]
    assert memory.limit_malloc_arenas(0) is False and len(calls) == 1  # 0: glibc's default, no call


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_glibc_takes_the_cap():
    assert memory.limit_malloc_arenas(2) is True


def test_service_sets_the_cap_before_loading(monkeypatch, tmp_path):
    from mist_fairseq.serve import __main__ as serve_main
    from mist_fairseq.serve import backends

    order = []
    monkeypatch.setattr(memory, "limit_malloc_arenas", lambda n: order.append(("arenas", n)))

    def refuse(*a, **kw):
        order.append(("load",))
        raise ValueError("no model here")

    monkeypatch.setattr(backends, "load_backend", refuse)
    for argv, n in ((["--model", str(tmp_path)], 2), (["--model", str(tmp_path), "--malloc-arenas", "0"], 0)):
        order.clear()
        with pytest.raises(SystemExit):
            serve_main.main(argv)
        assert order == [("arenas", n), ("load",)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_malloc_trim_hands_freed_heap_pages_back():
    """What the batcher's housekeeping relies on: chunks freed inside the heap stay resident until
    malloc_trim(0) returns their pages."""
    from mist_fairseq.serve.app import rss_mb

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    chunks = [libc.malloc(64 * 1024) for _ in range(3000)]  # ~190 MB of heap chunks, below the mmap threshold
    for c in chunks:
        libc.memset(c, 1, 64 * 1024)  # touched: resident
    for c in chunks[:-1]:
        libc.free(c)  # the last one stays, so the heap's top cannot simply shrink
    before = rss_mb()
    trim = memory.malloc_trim_function()
    trim()
    after = rss_mb()
    libc.free(chunks[-1])
    assert before - after > 100, (before, after)


def test_batcher_housekeeps_between_batches_at_most_once_per_interval():
    import asyncio
    import threading

    from mist_fairseq.serve.batcher import DynamicBatcher

    events = []

    def generate(xs):
        events.append(("generate", threading.current_thread().name))
        return [x.upper() for x in xs]

    def housekeeping():
        events.append(("housekeeping", threading.current_thread().name))

    async def run(every_s):
        b = DynamicBatcher(generate, max_wait_ms=0, housekeeping=housekeeping, housekeeping_every_s=every_s)
        await b.start()
        outs = [await b.submit([f"x{i}"]) for i in range(3)]
        await asyncio.sleep(0.05)
        await b.stop()
        return outs, b.stats

    outs, stats = asyncio.run(run(0.0))
    assert outs == [["X0"], ["X1"], ["X2"]]
    # after every batch, on the model's own worker thread (never beside a generate call)
    assert [e[0] for e in events] == ["generate", "housekeeping"] * 3
    assert len({name for _, name in events}) == 1 and stats["housekeeping"] == 3
    events.clear()
    _, stats = asyncio.run(run(3600.0))
    assert [e[0] for e in events] == ["generate"] * 3 and stats["housekeeping"] == 0


def test_service_passes_the_trim_to_its_batcher(monkeypatch, tmp_path):
    from mist_fairseq.serve import __main__ as serve_main
    from mist_fairseq.serve import app as serve_app
    from mist_fairseq.serve import backends

    seen = {}
    monkeypatch.setattr(backends, "load_backend", lambda *a, **kw: object())
    monkeypatch.setattr(memory, "malloc_trim_function", lambda: "TRIM")

    def fake_build_app(*a, housekeeping=None, housekeeping_every_s=None, **kw):
        seen.update(housekeeping=housekeeping, every=housekeeping_every_s)
        raise SystemExit(0)

    monkeypatch.setattr(serve_app, "build_app", fake_build_app)
    with pytest.raises(SystemExit):
        serve_main.main(["--model", str(tmp_path), "--malloc-trim-s", "2.5"])
    assert seen == {"housekeeping": "TRIM", "every": 2.5}
    with pytest.raises(SystemExit):
        serve_main.main(["--model", str(tmp_path), "--malloc-trim-s", "0"])
    assert seen == {"housekeeping": None, "every": 0.0}
    with pytest.raises(SystemExit):
        serve_main.main(["--model", str(tmp_path), "--malloc-trim-s", "-1"])
