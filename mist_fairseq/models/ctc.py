"""CTC output on the encoder: bookkeeping shared by the criterion, the generator and the ONNX runner.

A CTC checkpoint fills Y_M with ``slots = clamp(ceil(r * |X|), min_slots, max_target_positions)``
[MASK]s (|X|: source tokens before its final [SEP]; r: ``--upsample-ratio``) instead of a predicted
length, and each slot predicts a token or the blank (the vocabulary's ``[unused0]``, which no
tokenized text holds). The output is the slot sequence with consecutive repeats merged, then blanks
removed (:func:`collapse`). Training maximises the sum over all such alignments (``ctc_loss``);
glancing reveals gold at slots of the best alignment (:func:`best_alignment`, Viterbi).

Shapes: B batch, S source width, T slots, U gold target length (final [SEP] not counted), V vocabulary.
"""

import math
from typing import Tuple

import torch

BLANK_TOKEN = "[unused0]"


def blank_index(dictionary) -> int:
    """The blank's id: ``[unused0]`` of a BERT vocabulary; ValueError naming the fix otherwise."""
    idx = dictionary.indices.get(BLANK_TOKEN)
    if idx is None:
        raise ValueError(f"--ctc needs a reserved blank token: the vocabulary has no {BLANK_TOKEN} "
                         "(every BERT vocab.txt has it); binarize with a BERT vocabulary")
    return idx


def slot_lengths(src_tokens: torch.Tensor, pad: int, ratio: float, min_slots: int, max_slots: int) -> torch.Tensor:
    """src_tokens (B, S), each row ending in [SEP], any padding -> (B,) slot counts
    clamp(ceil(ratio * |X|), min_slots, max_slots)."""
    n_src = (src_tokens.ne(pad).sum(1) - 1).clamp(min=1).to(torch.float64)
    slots = torch.ceil(n_src * ratio - 1e-9).long()  # the epsilon: 2.0 * 3 must not round up to 7
    return slots.clamp(min=min(min_slots, max_slots), max=max_slots)


def min_slots_needed(targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """targets (B, U) padded, lengths (B,) -> (B,) the fewest slots an alignment needs: U plus one
    blank between each pair of equal neighbours."""
    ar = torch.arange(targets.size(1), device=targets.device)
    inside = ar[None, 1:] < lengths[:, None]
    repeats = (targets[:, 1:].eq(targets[:, :-1]) & inside).sum(1)
    return lengths + repeats


def best_alignment(label_lp: torch.Tensor, ext: torch.Tensor, n_slots: torch.Tensor,
                   lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Viterbi alignment of each target onto its slots (batched over rows, a loop over slots).

    label_lp: (B, T, 2U + 1) log-probs of the extended labels ``ext`` (B, 2U + 1) = blank, y1, blank,
    y2, ..., yU, blank at each slot; n_slots (B,) real slots; lengths (B,) real target lengths.
    Returns (path (B, T): the extended-label index of each slot on the best path, -1 beyond n_slots
    or where no alignment exists; ok (B,) bool: an alignment exists)."""
    B, T, S = label_lp.shape
    n_states = 2 * lengths + 1
    neg = torch.finfo(label_lp.dtype).min / 4
    states = torch.arange(S, device=ext.device)
    # a skip over a blank is allowed into a label that differs from the label two states back
    skip_ok = torch.zeros(B, S, dtype=torch.bool, device=ext.device)
    skip_ok[:, 2:] = (states[None, 2:] % 2 == 1) & ext[:, 2:].ne(ext[:, :-2])
    valid = states[None, :] < n_states[:, None]
    alpha = torch.full((B, S), neg, dtype=label_lp.dtype, device=label_lp.device)
    alpha[:, 0] = label_lp[:, 0, 0]
    alpha[:, 1] = torch.where(lengths > 0, label_lp[:, 0, 1], alpha.new_full((B,), neg))
    back = torch.zeros(B, T, S, dtype=torch.long, device=ext.device)
    history = [alpha]
    for t in range(1, T):
        stay = alpha
        step = torch.cat([alpha.new_full((B, 1), neg), alpha[:, :-1]], 1)
        skip = torch.cat([alpha.new_full((B, 2), neg), alpha[:, :-2]], 1).masked_fill(~skip_ok, neg)
        best, arg = torch.stack([stay, step, skip], -1).max(-1)
        alpha = (best + label_lp[:, t]).masked_fill(~valid, neg)
        back[:, t] = arg
        history.append(alpha)
    last = torch.stack(history, 1).gather(1, (n_slots - 1).clamp(min=0)[:, None, None].expand(B, 1, S)).squeeze(1)
    end_blank = (n_states - 1).clamp(min=0)
    end_label = (n_states - 2).clamp(min=0)
    a_blank, a_label = last.gather(1, end_blank[:, None]).squeeze(1), last.gather(1, end_label[:, None]).squeeze(1)
    state = torch.where((a_label > a_blank) & (lengths > 0), end_label, end_blank)
    ok = torch.maximum(a_blank, a_label) > neg / 2
    path = torch.full((B, T), -1, dtype=torch.long, device=ext.device)
    rows = torch.arange(B, device=ext.device)
    for t in range(T - 1, -1, -1):
        active = t < n_slots
        path[:, t] = torch.where(active, state, path[:, t])
        if t > 0:
            state = torch.where(active, state - back[rows, t, state], state)
    return path.masked_fill(~ok[:, None], -1), ok


def extended_labels(targets: torch.Tensor, lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """targets (B, U) padded -> (B, 2U + 1): blank, y1, blank, ..., yU, blank (blank past each length)."""
    B, U = targets.shape
    ext = torch.full((B, 2 * U + 1), blank, dtype=targets.dtype, device=targets.device)
    inside = torch.arange(U, device=targets.device)[None, :] < lengths[:, None]
    ext[:, 1::2] = torch.where(inside, targets, torch.full_like(targets, blank))
    return ext


def collapse(tokens: torch.Tensor, scores: torch.Tensor, blank: int, pad: int):
    """CTC's output rule on slot predictions. tokens, scores: (B, T) right-padded with pad. Merges
    consecutive repeats (a repeat split by a blank stays two tokens), then drops blanks. Returns the
    kept tokens and their scores, left-aligned, pad/0 after, width = the longest row's."""
    keep = tokens.ne(pad) & tokens.ne(blank)
    keep[:, 1:] &= tokens[:, 1:].ne(tokens[:, :-1])
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)  # kept slots first, in order
    width = max(1, int(keep.sum(1).max())) if tokens.numel() else 1
    kept = keep.gather(1, order)[:, :width]
    out_tokens = tokens.gather(1, order)[:, :width].masked_fill(~kept, pad)
    out_scores = scores.gather(1, order)[:, :width].masked_fill(~kept, 0.0)
    return out_tokens, out_scores


def ceil_slots(n_src: int, ratio: float, min_slots: int, max_slots: int) -> int:
    """One source of n_src tokens -> its slot count (the scalar form of :func:`slot_lengths`)."""
    return max(min(min_slots, max_slots), min(max_slots, math.ceil(n_src * ratio - 1e-9)))
