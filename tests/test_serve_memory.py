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
