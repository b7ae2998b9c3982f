"""Output vocabulary shortlist: the vocabulary projection onto a per-batch candidate set.

Most of a Quora target is drawn from a few thousand WordPieces, but every target position is
projected onto all 30,522 (about a third of a training step's multiply-adds and of a single pass's).
With ``--output-shortlist N`` a batch's candidates are

- the N most frequent WordPieces of the train targets,
- the batch's source WordPieces (a paraphrase copies many of them),
- for each of those, the ``--shortlist-neighbours k`` target WordPieces that co-occur with it most in
  train pairs (beyond the N frequent ones): its paraphrase/translation neighbours,
- [SEP], [UNK] and, for a CTC output, the blank,

and, while training, the batch's gold target tokens (so every loss is defined). The table (the N
frequent ids and a (V, k) neighbour matrix) is built from the binarized train split at the first
training step and saved in the checkpoint as model buffers, so decoding needs no data folder.

The product runs over the union of a batch's candidates; decoding then allows each sentence only its
own (:func:`row_mask`), so a sentence decodes the same alone and in any batch.
"""

from typing import Iterable, Optional

import torch


def build_table(pairs: Iterable, vocab_size: int, top_n: int, neighbours: int, special=()):
    """pairs: (source ids (S,), target ids (T,)) long tensors of the train split. Returns (frequent (top_n,)
    long: the top_n most frequent target ids, padded with special[0]; neighbours (vocab_size, k) long:
    per source id its k target ids co-occurring in the most pairs among those not frequent, -1 where
    fewer exist). special: ids never counted (padding, [SEP], ...)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    keys = []
    for src, tgt in pairs:
        s, t = torch.unique(src), torch.unique(tgt)
        counts.index_add_(0, t, torch.ones_like(t))
        keys.append((s[:, None] * vocab_size + t[None, :]).reshape(-1))
    for sp in special:
        counts[sp] = -1
    fill = special[0] if special else 0
    order = torch.argsort(counts, descending=True, stable=True)
    frequent = order[:top_n][counts[order[:top_n]] > 0]
    frequent = torch.cat([frequent, frequent.new_full((top_n - frequent.numel(),), fill)])
    table = torch.full((vocab_size, max(neighbours, 0)), -1, dtype=torch.long)
    if neighbours <= 0 or not keys:
        return frequent, table
    pair_keys, pair_counts = torch.unique(torch.cat(keys), return_counts=True)
    s, t = pair_keys // vocab_size, pair_keys % vocab_size
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[frequent] = False
    keep[list(special)] = False
    sel = keep[t] & ~torch.isin(s, torch.tensor(list(special), dtype=torch.long))
    s, t, c = s[sel], t[sel], pair_counts[sel]
    if c.numel() == 0:  # every co-occurring target is frequent or special
        return frequent, table
    # by source id, then by count (descending): each source id's first k rows are its neighbours
    order = torch.argsort(s * (int(c.max()) + 1) + (int(c.max()) - c), stable=True)
    s, t = s[order], t[order]
    first = torch.ones_like(s, dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]
    start = torch.cummax(torch.where(first, torch.arange(s.numel()), torch.zeros_like(s)), 0).values
    rank = torch.arange(s.numel()) - start
    ok = rank < neighbours
    table[s[ok], rank[ok]] = t[ok]
    return frequent, table


def candidates(frequent: torch.Tensor, neighbours: torch.Tensor, src_tokens: torch.Tensor,
               always: torch.Tensor, extra: Optional[torch.Tensor] = None, pad: Optional[int] = None) -> torch.Tensor:
    """The batch's candidate set: sorted unique ids (C,) of frequent (F,), the source tokens src_tokens
    (B, S) other than the padding id pad, their neighbours (rows of (V, k)), always (A,) and extra (any
    shape; e.g. the gold targets while training)."""
    src = torch.unique(src_tokens)
    if pad is not None:
        src = src[src.ne(pad)]
    parts = [frequent, src, always]
    if neighbours.size(1) > 0:
        near = neighbours.index_select(0, src).reshape(-1)
        parts.append(near[near.ge(0)])
    if extra is not None:
        parts.append(extra.reshape(-1))
    return torch.unique(torch.cat(parts))


def row_mask(vocab: torch.Tensor, frequent: torch.Tensor, neighbours: torch.Tensor, src_tokens: torch.Tensor,
             always: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, C) bool: which of the batch's candidates vocab (C,) are each sentence's own (frequent, always,
    its source tokens src_tokens (B, S) but pad, their neighbours), whatever its batch mates bring."""
    B = src_tokens.size(0)
    shared = torch.isin(vocab, torch.cat([frequent, always]))  # (C,)
    ids = src_tokens
    if neighbours.size(1) > 0:
        ids = torch.cat([ids, neighbours.index_select(0, src_tokens.reshape(-1)).view(B, -1)], 1)
    valid = ids.ge(0) & ids.ne(pad)
    col = torch.searchsorted(vocab, ids.clamp(min=0).contiguous()).clamp_(max=vocab.numel() - 1)
    hit = valid & vocab[col].eq(ids)
    own = torch.zeros(B, vocab.numel(), dtype=torch.int32, device=vocab.device).scatter_add_(1, col, hit.int())
    return own.gt(0) | shared


def sentence_candidates(frequent: torch.Tensor, neighbours: torch.Tensor, always: torch.Tensor,
                        src_tokens: torch.Tensor, pad: int):
    """Decoding's rule, shared by the model and the ONNX runner: (the batch's candidates (C,) of
    :func:`candidates`, each sentence's own among them (B, C) of :func:`row_mask`) for src_tokens (B, S)."""
    vocab = candidates(frequent, neighbours, src_tokens, always, pad=pad)
    return vocab, row_mask(vocab, frequent, neighbours, src_tokens, always, pad)


def on_candidates(state, vocab: Optional[torch.Tensor]):
    """A source state (``SourceState``) projecting onto vocab (C,) for the whole batch, no per-sentence
    mask: how the criterion's passes share one candidate set (the first pass's, gold tokens included)."""
    return state._replace(vocab=vocab, vocab_mask=None)


def compact(state) -> dict:
    """Keyword arguments that ask a model's projection for the candidates' columns where ``state`` has an
    output shortlist ({"compact": True}), none otherwise (so models and test doubles without the option
    are called as before)."""
    return {"compact": True} if getattr(state, "vocab", None) is not None else {}


def index_of(vocab: Optional[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Token ids (any shape, each in the sorted vocab (C,)) -> their columns in the shortlist's logits;
    ids unchanged where vocab is None (the full vocabulary). An id outside the shortlist gets some
    column (callers pass only ids in it, or padding they never read)."""
    return ids if vocab is None else torch.searchsorted(vocab, ids.contiguous()).clamp_(max=vocab.numel() - 1)


def ids_of(vocab: Optional[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Columns of shortlist logits (any shape) -> token ids; unchanged where vocab is None."""
    return index if vocab is None else vocab[index]


def widen(logits: torch.Tensor, vocab: torch.Tensor, vocab_size: int,
          mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(..., C) shortlist logits -> (..., V) with -inf outside the shortlist (and where mask, broadcast
    to (..., C), is False: a sentence's batch mates' candidates): what a decoder that reads columns as
    token ids (every generator, the rescorer) is given."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    out = logits.new_full(logits.shape[:-1] + (vocab_size,), float("-inf"))
    return out.index_copy_(-1, vocab, logits)
