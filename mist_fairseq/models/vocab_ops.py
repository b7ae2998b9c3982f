"""Reductions over the vocabulary axis of decoding logits, in row chunks.

A decoding pass ends in an (N, V) logit matrix (N target positions, V = 30,522 for BERT vocabularies).
torch's ``logsumexp`` over it makes several full passes through memory (max, subtract, exp, sum),
each of them a stream of N x V x 4 bytes that no cache holds (2.2 GB for 64 sources x 5 lengths x
14 positions). Taking the rows a chunk at a time keeps each chunk in cache for all of its passes,
with the same values (timed against the one-shot reductions by ``python -m benchmarks.vocab_reduce``;
figures in docs/vocab_reduce.md).
"""

from typing import Optional, Tuple

import torch

CHUNK_ELEMENTS = 1 << 21  # 8 MB of fp32 a chunk (68 rows of 30,522): stays in a CPU's L3 share


def rows_per_chunk(x: torch.Tensor) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, x.size(-1)))


def row_logsumexp(x: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """x (N, V) -> (N,) fp32 log(sum(exp(x))) per row; chunk: rows at a time (default ~8 MB)."""
    chunk = chunk or rows_per_chunk(x)
    out = x.new_empty(x.size(0), dtype=torch.float32)
    for i in range(0, x.size(0), chunk):
        xc = x[i:i + chunk].float()
        m = xc.amax(-1, keepdim=True)
        out[i:i + chunk] = (xc - m).exp_().sum(-1).log_().add_(m.squeeze(-1))
    return out


def choose_rows(x: torch.Tensor, banned: Optional[torch.Tensor], keep: int,
                chunk: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (N, V) logits -> (best (N,) the largest log-prob outside ``banned`` token ids, tokens (N,)
    its id, keep_lp (N,) the log-prob of token ``keep``), all fp32 log-probs. x is not modified."""
    chunk = chunk or rows_per_chunk(x)
    n = x.size(0)
    best = x.new_empty(n, dtype=torch.float32)
    tokens = torch.empty(n, dtype=torch.long, device=x.device)
    keep_lp = x.new_empty(n, dtype=torch.float32)
    for i in range(0, n, chunk):
        xc = x[i:i + chunk].float()
        m = xc.amax(-1, keepdim=True)
        lse = (xc - m).exp_().sum(-1).log_().add_(m.squeeze(-1))
        keep_lp[i:i + chunk] = xc[:, keep] - lse
        if banned is not None:  # a copy of the chunk (in cache), so x keeps its values
            xc = xc.index_fill(-1, banned, float("-inf"))
        b, t = xc.max(-1)
        best[i:i + chunk] = b - lse
        tokens[i:i + chunk] = t
    return best, tokens, keep_lp
