"""Small helpers the benchmark scripts share: the shipped data, atomic writes, one section of a
Markdown report, the CPU's name, alternating A/B timing."""

import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prepare_shipped_data(out: str) -> str:
    """Prepares the shipped quora_small (train and test) into out; returns out."""
    res = os.path.join(REPO, "mist_fairseq", "resources", "quora_small")
    subprocess.run([sys.executable, "-m", "mist_fairseq.prepare", "parallel", "--out", out]
                   + [a for s in ("train", "test") for side in ("src", "tgt")
                      for a in (f"--{s}-{side}", os.path.join(res, f"{s}.{side}"))],
                   check=True, capture_output=True)
    return out


def write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def section_bounds(lines, title):
    """(start, end) line indices of the section headed '## title' (end: the next '## ' heading or
    the end), or None."""
    head = f"## {title}"
    for i, ln in enumerate(lines):
        if ln.rstrip() == head:
            for j in range(i + 1, len(lines)):
                if lines[j].startswith("## "):
                    return i, j
            return i, len(lines)
    return None


def get_section(path: str, title: str) -> str:
    """The text of section '## title' of the Markdown file at path ('' if either is missing)."""
    if not os.path.exists(path):
        return ""
    lines = open(path).read().splitlines(keepends=True)
    b = section_bounds(lines, title)
    return "".join(lines[b[0]:b[1]]) if b else ""


def replace_section(path: str, title: str, text: str) -> None:
    """Puts text (which starts with '## title') in place of that section of path, or appends it."""
    lines = open(path).read().splitlines(keepends=True) if os.path.exists(path) else []
    b = section_bounds(lines, title)
    body = text if text.endswith("\n") else text + "\n"
    if b is None:
        new = "".join(lines).rstrip("\n") + ("\n\n" if lines else "") + body
    else:
        new = "".join(lines[:b[0]]) + body + ("\n" + "".join(lines[b[1]:]) if b[1] < len(lines) else "")
    write_atomic(path, new)


def platform_line(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and its bf16 units (they decide what the CPU fast path is worth:
    AMX tiles, avx512_bf16 dot products, or none)."""
    name, flags = "unknown CPU", set()
    try:
        for ln in open(cpuinfo):
            if ln.startswith("model name") and name == "unknown CPU":
                name = ln.split(":", 1)[1].strip()
            elif ln.startswith("flags") and not flags:
                flags = set(ln.split(":", 1)[1].split())
    except OSError:
        pass
    units = [unit for unit, flag in (("AMX", "amx_bf16"), ("avx512_bf16", "avx512_bf16")) if flag in flags]
    return f"{name}; bf16 units: {' + '.join(units) or 'none'}"


def timed_pair(slow, fast, reps):
    """(median ms of slow, median ms of fast), run alternately after one warm-up each."""
    slow(), fast()
    t = {0: [], 1: []}
    for _ in range(reps):
        for k, f in ((0, slow), (1, fast)):
            s = time.perf_counter()
            f()
            t[k].append(1000 * (time.perf_counter() - s))
    return statistics.median(t[0]), statistics.median(t[1])
