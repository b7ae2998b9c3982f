"""GLAT's glancing input (Qian et al. 2021), shared by the token and the CTC passes of ``mist``."""

from typing import Optional

import torch


def glance(gold: torch.Tensor, pred: torch.Tensor, ratio: float, pad: int, mask: int,
           base: Optional[torch.Tensor] = None) -> torch.Tensor:
    """GLAT's glancing input. gold, pred: (B, T) (pred is only read at non-pad positions of gold).
    Reveals floor(ratio * Hamming(pred, gold)) gold tokens per row at random real positions; every
    other real position takes ``base`` (B, T) (default [MASK]), pad elsewhere. Returns (B, T)."""
    real = gold.ne(pad)
    hamming = (pred.ne(gold) & real).sum(1)
    n_reveal = torch.floor(hamming.to(torch.float) * ratio).long()  # (B,)
    scores = torch.rand(gold.shape, device=gold.device).masked_fill(~real, 2.0)
    rank = scores.argsort(1).argsort(1)  # rank of each position among the row's random scores
    reveal = (rank < n_reveal.unsqueeze(1)) & real
    rest = gold.new_full(gold.shape, mask) if base is None else base
    return torch.where(reveal, gold, rest).masked_fill(~real, pad)
