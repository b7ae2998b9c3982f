"""Two-stream target passes (BANG-style): one set of weights for NAR, semi-NAR and AR.

The target block holds two streams at the same positions (source length + t, token type 1):

- the **main stream**: tokens already known (gold while training, the output so far while decoding);
  main row t sees the source and main rows <= t (causal), never a predicting row;
- the **predicting stream**: a [MASK] at every position; predicting row t, in block
  [s, s + b) with s = b * floor(t / b), sees the source, main rows < s and the predicting rows of its
  own block, and predicts the token at t.

Block size b = T (or more) is exactly the single NAR pass (the main stream is invisible), b = 1 is
autoregressive (row t sees the gold prefix < t and its own [MASK]), 1 < b < T is semi-NAR. The main
stream does not depend on b, so while decoding its keys/values are computed once per token and kept
(:class:`MainCache`): a decoding step runs the rows of the tokens chosen at the previous step plus
the [MASK] rows of the next block, over the cached source and main-stream keys/values.

Shapes: B batch, T target width, C cached main rows, h heads, d head size.
"""

from typing import List, NamedTuple, Optional, Tuple

import torch


class MainCache(NamedTuple):
    """Keys/values of the main-stream rows computed so far.

    kv:       per layer (key, value), each (B, h, C, d).
    key_mask: (B, C) bool, True where the row holds a real token (not padding).
    """

    kv: List[Tuple[torch.Tensor, torch.Tensor]]
    key_mask: torch.Tensor

    @property
    def width(self) -> int:
        return self.key_mask.size(1)

    def index_select(self, order: torch.Tensor) -> "MainCache":
        """Reorders/expands the batch (beam search); order: (B',) long."""
        return MainCache(
            kv=[(k.index_select(0, order), v.index_select(0, order)) for k, v in self.kv],
            key_mask=self.key_mask.index_select(0, order),
        )

    def extend(self, own_kv, n_rows: int, key_mask: torch.Tensor) -> "MainCache":
        """Appends the first n_rows of a pass's own keys/values (each (B, h, R, d)); key_mask (B, n_rows)."""
        kv = [(torch.cat([k0, k[:, :, :n_rows]], 2), torch.cat([v0, v[:, :, :n_rows]], 2))
              for (k0, v0), (k, v) in zip(self.kv, own_kv)]
        return MainCache(kv=kv, key_mask=torch.cat([self.key_mask, key_mask], 1))

    @staticmethod
    def empty(own_kv, batch: int, device) -> "MainCache":
        """A cache with no rows, shaped like a pass's own keys/values."""
        kv = [(k[:, :, :0], v[:, :, :0]) for k, v in own_kv]
        return MainCache(kv=kv, key_mask=torch.zeros(batch, 0, dtype=torch.bool, device=device))


def training_row_mask(T: int, block: int, device=None) -> torch.Tensor:
    """(2T, 2T) bool: rows/keys 0..T-1 are the main stream, T..2T-1 the predicting stream."""
    t = torch.arange(T, device=device)
    start = (t // block) * block  # first position of each row's block
    main_main = t[None, :] <= t[:, None]
    pred_main = t[None, :] < start[:, None]
    pred_pred = start[None, :] == start[:, None]
    top = torch.cat([main_main, torch.zeros_like(main_main)], 1)
    bottom = torch.cat([pred_main, pred_pred], 1)
    return torch.cat([top, bottom], 0)


def step_row_mask(n_main: int, n_pred: int, device=None) -> torch.Tensor:
    """(M + R, M + R) bool for one decoding step: M main rows (the previous block's tokens, causal
    among themselves) then R predicting rows (the next block: they see all M main rows and each other)."""
    n = n_main + n_pred
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    mask[:n_main, :n_main] = torch.ones(n_main, n_main, dtype=torch.bool, device=device).tril()
    mask[n_main:, :] = True
    return mask


def block_states(encoder, state, gold: torch.Tensor, block: int, mask_idx: int, pad: int) -> torch.Tensor:
    """Training pass of both streams. gold: (B, T) right-padded targets (final [SEP] included).
    Returns the predicting stream's last-layer states (B, T, H): row t predicts gold[:, t] from the
    source, gold[:, :s] (s the start of t's block) and [MASK]s over its block."""
    B, T = gold.shape
    pred = gold.masked_fill(gold.ne(pad), mask_idx)
    tokens = torch.cat([gold, pred], 1)
    tpos = torch.arange(T, device=gold.device).repeat(2).unsqueeze(0).expand(B, -1)
    row_mask = training_row_mask(T, block, gold.device).unsqueeze(0).expand(B, -1, -1)
    h, _ = encoder.decode_rows(state, tokens, tpos, row_mask)
    return h[:, T:]


def step_states(encoder, state, cache: Optional[MainCache], prev_tokens: torch.Tensor,
                block_tokens: torch.Tensor):
    """One decoding step. prev_tokens: (B, M) the tokens at target positions [C, C + M) that join
    the main stream (M = 0 at the first step; padding for rows already finished); block_tokens:
    (B, R) [MASK] (or padding) at positions [C + M, C + M + R). Returns the predicting rows'
    states (B, R, H) and the cache with the M new main rows."""
    B, M = prev_tokens.shape
    R = block_tokens.size(1)
    C = 0 if cache is None else cache.width
    device = block_tokens.device
    tokens = torch.cat([prev_tokens, block_tokens], 1)
    tpos = (C + torch.arange(M + R, device=device)).unsqueeze(0).expand(B, -1)
    row_mask = step_row_mask(M, R, device).unsqueeze(0).expand(B, -1, -1)
    h, own = encoder.decode_rows(state, tokens, tpos, row_mask, cache)
    if cache is None:
        cache = MainCache.empty(own, B, device)
    if M:
        cache = cache.extend(own, M, prev_tokens.ne(encoder.pad_idx))
    return h[:, M:], cache
