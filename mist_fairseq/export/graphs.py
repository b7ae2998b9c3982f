"""The two ONNX graphs of the single-pass decoder, as ``nn.Module`` wrappers around a trained
``MistNARModel`` (the export traces these; the runner feeds them).

Why two graphs: the target width is the *predicted* length, known only after the source pass, and
the source keys/values are computed once and reused by every target pass (length beam, MIST's
feed-back step). The runner moves the keys/values between them; at our sizes that is < 1 MB a
sentence.

Shapes: B batch, S source width (binarized, ends in [SEP]; [CLS] is added inside), S1 = S + 1,
T target width, n layers, h heads, d head size, V vocabulary, P = max_target_positions + 1, C the
candidates of an output shortlist (:mod:`mist_fairseq.models.shortlist`; the runner computes them).
"""

import copy
from typing import Tuple

import torch
from torch import nn

from mist_fairseq.models.bert_encoder import SourceState

SOURCE_INPUTS = ["src_tokens"]
SOURCE_OUTPUTS = ["length_logits", "keys", "values", "key_mask", "src_length"]
TARGET_INPUTS = ["keys", "values", "key_mask", "src_length", "tgt_tokens"]
SHORTLIST_INPUTS = TARGET_INPUTS + ["vocab"]  # the target graph of a checkpoint with an output shortlist
TARGET_OUTPUTS = ["logits"]


class SourceGraph(nn.Module):
    """src_tokens (B, S) int64 -> length_logits (B, P) float, keys and values (n, B, h, S1, d) float,
    key_mask (B, S1) bool, src_length (B,) int64 (real source tokens, [CLS] included)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        # the encoder's pass without the output shortlist's candidates (the runner computes them)
        state = self.model.encoder.encode_source(self.model.add_cls(src_tokens))
        keys = torch.stack([k for k, _ in state.kv])
        values = torch.stack([v for _, v in state.kv])
        return self.model.length_logits(state), keys, values, state.key_mask, state.length


class TargetGraph(nn.Module):
    """keys, values (n, B, h, S1, d), key_mask (B, S1) bool, src_length (B,) int64, tgt_tokens (B, T)
    int64 -> logits (B, T, V) float: ``MistNARModel.decode_target`` over the cached source. With an
    output shortlist also vocab (C,) int64, sorted candidate ids -> logits (B, T, C) over those rows.

    own_output_weight: give the output projection its own copy of the weights where they are tied to
    the word embeddings, so that it exports as a plain weight product (which int8 quantization can
    take) instead of a product with the transposed embedding table."""

    def __init__(self, model, own_output_weight: bool = False):
        super().__init__()
        self.model = model
        self.head = copy.deepcopy(model.mlm_head) if own_output_weight else model.mlm_head

    def forward(self, keys, values, key_mask, src_length, tgt_tokens, vocab=None):
        kv = [(keys[i], values[i]) for i in range(keys.size(0))]
        # pooled is read only by the length head, which the source graph already ran
        state = SourceState(kv=kv, key_mask=key_mask, length=src_length, pooled=keys.new_zeros(0))
        return self.head(self.model.encoder.decode_target(state, tgt_tokens), vocab)
