"""The inference contract: what a generator (and the probe, the criterion's passes, the ONNX runner)
may call on a model. ``MistNARModel`` implements it with PyTorch modules; the ONNX runner
(:mod:`mist_fairseq.export.runner`) implements it over two onnxruntime sessions, so
:class:`~mist_fairseq.generators.mist_generator.MistGenerator` decodes either without knowing which.

Shapes: B batch, S source width (binarized, ends in [SEP]; no [CLS]), T target width, V vocabulary.

- ``encode_source(src_tokens (B, S)) -> state``: the source-only pass over ``[CLS] src_tokens``;
  ``state.index_select(order (B',))`` reorders/expands it (length beam).
- ``length_logits(state) -> (B, max_target_positions + 1)``: logits over target lengths, final [SEP]
  counted.
- ``decode_target(state, tgt (B, T)) -> logits (B, T, V)``: the target-only pass over cached source
  keys/values.
- ``decode_step(state, cache, prev_tokens (B, M), block_tokens (B, R)) -> (logits (B, R, V), cache)``:
  one semi-NAR/AR step of the two-stream pattern (:mod:`mist_fairseq.models.streams`): the M tokens
  chosen last join the cached main stream, the R [MASK]s of the next block are predicted
  (``cache`` None at the first step; ``cache.index_select(order)`` reorders it for beam search).
  Models without it (the ONNX runner) decode in NAR mode only.
- ``score_targets(state, tgt (B, T)) -> (B, T)``: teacher-forced AR log-probs of given targets in one
  parallel pass (AR rescoring, :mod:`mist_fairseq.generators.rerank`); models without it rescore nothing.
- ``ctc`` (bool): a CTC checkpoint (:mod:`mist_fairseq.models.ctc`): its target is ``slot_target(src_tokens
  (B, S)) -> (B, T)`` ([MASK] slots, ``upsample_ratio`` per source token, blank id ``blank_idx``) and
  its output is collapsed; the length logits are not used.
- ``masked_target(lengths (B,), src_tokens=(B, S)) -> (B, T)`` (the target input: [MASK]s, or the source
  copied into the slots where ``target_input`` is ``copy``) and ``mix_source(pseudo (B, T), src_tokens
  (B, S)) -> (B, W)``: token bookkeeping, implemented once here (:class:`TokenOps`).
"""

from typing import Optional

import torch

from mist_fairseq.models.ctc import slot_lengths


def uniform_copy(src_tokens: torch.Tensor, lengths: torch.Tensor, width: int, pad: int, eos: int) -> torch.Tensor:
    """src_tokens (B, S): ``X [SEP]`` rows, left- or right-padded; lengths (B,): target lengths, final
    [SEP] counted. Returns (B, width): slot i < L - 1 holds X[floor(i * |X| / (L - 1))], slot L - 1
    [SEP], pad from L on (a row with an empty X gets [SEP]s)."""
    real = src_tokens.ne(pad)
    packed = src_tokens.gather(1, torch.argsort((~real).to(torch.uint8), dim=1, stable=True))  # real first
    n_x = (real.sum(1) - 1).clamp(min=0)  # (B,) tokens of X, its [SEP] not counted
    i = torch.arange(width, device=src_tokens.device).unsqueeze(0)  # (1, width)
    body = (lengths - 1).clamp(min=1).unsqueeze(1)
    j = torch.div(i * n_x.unsqueeze(1), body, rounding_mode="floor").clamp(max=packed.size(1) - 1)
    out = packed.gather(1, j)
    out = out.masked_fill(n_x.eq(0).unsqueeze(1), eos)
    out = out.masked_fill(i == (lengths - 1).unsqueeze(1), eos)
    return out.masked_fill(i >= lengths.unsqueeze(1), pad)


class TokenOps:
    """The contract's token bookkeeping. The class using it sets ``pad``, ``eos``, ``mask_idx``,
    ``num_positions`` (the encoder's position table: [CLS] + source block + target block) and
    ``max_target_positions``."""

    pad: int
    eos: int
    mask_idx: int
    num_positions: int
    max_target_positions: int
    # CTC checkpoints also set blank_idx, upsample_ratio and ctc_min_slots
    ctc: bool = False
    target_input: str = "mask"  # or "copy": the slots hold the source, uniformly copied

    def masked_target(self, lengths: torch.Tensor, width: Optional[int] = None,
                      src_tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B,) lengths -> (B, width) target input up to each length (final [SEP] slot included), pad
        after: all [MASK], or, where ``target_input`` is ``copy``, ``src_tokens`` (B, S) row by row
        copied into the slots (:func:`uniform_copy`; then src_tokens is required)."""
        width = int(lengths.max()) if width is None else width
        if self.target_input == "copy":
            if src_tokens is None:
                raise ValueError("this checkpoint's target input is the copied source (--target-input copy): "
                                 "pass src_tokens")
            return uniform_copy(src_tokens, lengths, width, self.pad, self.eos)
        ar = torch.arange(width, device=lengths.device)
        t = torch.full((lengths.numel(), width), self.mask_idx, dtype=torch.long, device=lengths.device)
        return t.masked_fill(ar[None, :] >= lengths[:, None], self.pad)

    def slot_target(self, src_tokens: torch.Tensor) -> torch.Tensor:
        """CTC: (B, S) source -> (B, T) all [MASK] over each row's slots
        (:func:`~mist_fairseq.models.ctc.slot_lengths`), pad after."""
        return self.masked_target(slot_lengths(src_tokens, self.pad, self.upsample_ratio, self.ctc_min_slots,
                                               self.max_target_positions))

    def mix_source(self, pseudo: torch.Tensor, src_tokens: torch.Tensor) -> torch.Tensor:
        """MIST's mixed source ``Y_p [SEP] X [SEP]`` (``[CLS]`` is added by ``encode_source``).
        pseudo: (B, T) token ids, padded; a final [SEP] is put after its last real token.
        src_tokens: (B, S). Returns (B, W), W <= T + 1 + S: each row's real tokens packed to the left
        (padding of Y_p and of a left-padded X would otherwise sit inside every row and be encoded:
        the mixed pass is the longest of a MIST step). When [CLS] + Y_p + X + target would exceed the
        position table, the tail of X is cut (keeping its final [SEP]) -- Y_p is short and kept whole.
        """
        real = pseudo.ne(self.pad) & pseudo.ne(self.eos)
        y = torch.where(real, pseudo, torch.full_like(pseudo, self.pad))
        sep = src_tokens.new_full((src_tokens.size(0), 1), self.eos)
        mixed = torch.cat([y, sep, src_tokens], 1)
        budget = self.num_positions - 1 - self.max_target_positions  # tokens after [CLS]
        if (mixed.ne(self.pad).sum(1) > budget).any():
            src_real = src_tokens.ne(self.pad)
            allowed = (budget - real.sum(1) - 1).clamp(min=1).unsqueeze(1)  # X tokens kept, [SEP] included
            src_count = src_real.long().cumsum(1)
            x = src_tokens.masked_fill(src_real & (src_count > allowed), self.pad)
            x = x.masked_fill(src_real & (src_count == allowed), self.eos)
            mixed = torch.cat([y, sep, x], 1)
        is_pad = mixed.eq(self.pad)
        order = is_pad.to(torch.int8).argsort(dim=1, stable=True)  # real tokens first, in order
        width = int((~is_pad).sum(1).max())
        return mixed.gather(1, order[:, :width])
