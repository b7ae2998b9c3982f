"""An export folder is written whole or not at all, and checked against its config when loaded.

The export writes into ``OUT.partial-PID`` beside OUT and renames it into place once everything is
written, so a killed export leaves the previous folder as it was (its stray ``.partial-PID`` folder
is removed by the next export). The config records each file's size and SHA-256; the runner refuses
a folder whose files do not match it (a torn or hand-edited folder), naming the file.
"""

import hashlib
import os
import shutil
from typing import Dict, Iterable

PARTIAL = ".partial-"


def digest(path: str) -> Dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def digests(folder: str, names: Iterable[str]) -> Dict[str, Dict]:
    return {name: digest(os.path.join(folder, name)) for name in names}


def check_files(folder: str, recorded: Dict[str, Dict], names: Iterable[str]) -> None:
    """ValueError naming the first of ``names`` that is missing or differs from ``recorded``."""
    fix = "the folder is torn or was edited; export it again with python -m mist_fairseq.export"
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: missing, though {folder}/mist_export.json lists it; {fix}")
        want = recorded.get(name)
        if want is None:
            continue
        if os.path.getsize(path) != want["bytes"] or digest(path)["sha256"] != want["sha256"]:
            raise ValueError(f"{path}: not the file mist_export.json records ({want['bytes']} bytes, sha256 "
                             f"{want['sha256'][:12]}...); {fix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(out_dir: str, known_files: Iterable[str]) -> str:
    """A fresh work folder beside out_dir (stale ones of killed exports removed). out_dir may be absent,
    empty or an export folder; a folder holding anything else is refused, so nothing is lost."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise ValueError(f"--out {out_dir}: exists and is not a folder; choose another --out")
        other = sorted(set(os.listdir(out_dir)) - set(known_files))
        if other:
            raise ValueError(f"--out {out_dir}: holds files an export does not write ({', '.join(other[:3])}); "
                             "choose an empty or new folder, or a previous export folder")
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):
        if name.startswith(base + PARTIAL):
            pid = name[len(base + PARTIAL):].split(".")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    work = os.path.join(parent, f"{base}{PARTIAL}{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return work


def finish(work: str, out_dir: str) -> None:
    """Put the complete work folder in out_dir's place (a previous export there is replaced)."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        old = f"{out_dir}{PARTIAL}{os.getpid()}.old"
        os.rename(out_dir, old)
        os.rename(work, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, out_dir)
