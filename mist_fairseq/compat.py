"""Keeps Fairseq 0.12 checkpoints loading on current torch, without turning torch's guard off.

torch >= 2.6 loads checkpoints with ``weights_only=True``. A checkpoint that Fairseq 0.12 writes
from a dataclass config holds only plain types, but a legacy one (older Fairseq, models configured
through argparse) stores its options as an ``argparse.Namespace`` in ``state["args"]``, and
``fairseq-generate``/resumed ``fairseq-train`` then fail. We allow-list exactly that class
(``torch.serialization.add_safe_globals``) instead of setting ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``,
so a checkpoint that would run code when loaded is still refused.
"""

import argparse

import torch


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no guard to satisfy
        add([argparse.Namespace])
