"""Keeps Fairseq 0.12 checkpoints loading on current torch, without turning torch's guard off, and
turns an unreadable checkpoint into one error line.

torch >= 2.6 loads checkpoints with ``weights_only=True``. A checkpoint that Fairseq 0.12 writes
from a dataclass config holds only plain types, but a legacy one (older Fairseq, models configured
through argparse) stores its options as an ``argparse.Namespace`` in ``state["args"]``, and
``fairseq-generate``/resumed ``fairseq-train`` then fail. We allow-list exactly that class
(``torch.serialization.add_safe_globals``) instead of setting ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``,
so a checkpoint that would run code when loaded is still refused.
"""

import argparse
import os
import sys

import torch


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no guard to satisfy
        add([argparse.Namespace])


def _checkpoint_being_read(tb):
    """The path Fairseq's ``load_checkpoint_to_cpu`` was reading when ``torch.load`` raised, or None
    when the traceback is not that."""
    path, in_load = None, False
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "load_checkpoint_to_cpu" and code.co_filename.endswith(os.path.join("fairseq", "checkpoint_utils.py")):
            path = tb.tb_frame.f_locals.get("path")
        elif path is not None and code.co_filename.endswith(os.path.join("torch", "serialization.py")):
            in_load = True
        tb = tb.tb_next
    return path if in_load else None


def one_line_checkpoint_errors() -> None:
    """A file that is not a readable checkpoint (text renamed .pt, truncated, another kind of torch
    file) ends Fairseq's command-line tools in a long traceback from inside ``torch.load``; with this
    hook the process prints one line naming the file instead (exit status 1). Every other uncaught
    exception keeps its traceback."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        path = _checkpoint_being_read(tb) if issubclass(exc_type, Exception) else None
        if path is None:
            return previous(exc_type, exc, tb)
        first = (str(exc).strip().splitlines() or [""])[0]
        first = first if len(first) <= 60 else first[:60] + "..."
        sys.stderr.write(f"error: {path}: not a readable checkpoint ({exc_type.__name__}: {first}); "
                         "pass a .pt file written by fairseq-train\n")

    sys.excepthook = hook
