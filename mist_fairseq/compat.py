"""Keeps Fairseq 0.12 working on current torch, without turning torch's guards off.

torch >= 2.6 loads checkpoints with ``weights_only=True``; a Fairseq checkpoint also holds an
``argparse.Namespace`` (legacy ``args``) and the training meters. We allow-list exactly those
classes (``torch.serialization.add_safe_globals``) instead of setting
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, so a checkpoint that would run code when loaded is still
refused.
"""

import argparse
import collections

import torch


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:  # torch < 2.4 loads everything anyway
        return
    from fairseq.logging import meters

    add([
        argparse.Namespace,
        collections.defaultdict,
        meters.AverageMeter,
        meters.SumMeter,
        meters.ConcatTensorMeter,
        meters.TimeMeter,
        meters.StopwatchMeter,
        meters.MetersDict,
    ])
