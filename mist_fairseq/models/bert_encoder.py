"""A BERT encoder (post-LayerNorm transformer) with the MIST attention pattern and a source K/V cache.

The module names mirror Hugging Face's ``BertModel`` closely enough that the key map in
:mod:`mist_fairseq.models.pretrained` stays one line per tensor.

Shapes: B batch, S source block width ([CLS] included), T target block width, H hidden size,
h heads, d = H / h head size, V vocabulary size.
"""

from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mist_fairseq.models.fast_path import Dropout, Int8Weight, Linear, fast_linear, int8_linear, packed_product


def gelu(x: torch.Tensor) -> torch.Tensor:
    # BERT's "gelu" is the exact erf form; the tanh approximation would break the parity test.
    return F.gelu(x)


ACTIVATIONS = {"gelu": gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


class SourceState(NamedTuple):
    """Everything the target-only pass needs from the source-only pass.

    kv:        per layer (key, value), each (B, h, S, d); computed once per source.
    key_mask:  (B, S) bool, True where the source position is a real token (not padding).
    length:    (B,) long, number of real source tokens ([CLS] included); target positions start here.
    pooled:    (B, H) mean of the last-layer states over real source tokens (input of the length head).
    vocab:     (C,) long sorted token ids the output head projects onto for this batch (an output
               shortlist, :mod:`mist_fairseq.models.shortlist`), or None: the whole vocabulary.
    vocab_mask: (B, C) bool, which of them each sentence may output (decoding), or None: all.
    """

    kv: List[Tuple[torch.Tensor, torch.Tensor]]
    key_mask: torch.Tensor
    length: torch.Tensor
    pooled: torch.Tensor
    vocab: Optional[torch.Tensor] = None
    vocab_mask: Optional[torch.Tensor] = None

    def index_select(self, order: torch.Tensor) -> "SourceState":
        """Reorders/expands the batch (length beam, finished sentences); order: (B',) long."""
        order = order.view(-1)
        return SourceState(
            kv=[(k.index_select(0, order), v.index_select(0, order)) for k, v in self.kv],
            key_mask=self.key_mask.index_select(0, order),
            length=self.length.index_select(0, order),
            pooled=self.pooled.index_select(0, order),
            vocab=self.vocab,
            vocab_mask=None if self.vocab_mask is None else self.vocab_mask.index_select(0, order),
        )

    def detach(self) -> "SourceState":
        return SourceState(
            kv=[(k.detach(), v.detach()) for k, v in self.kv],
            key_mask=self.key_mask,
            length=self.length,
            pooled=self.pooled.detach(),
            vocab=self.vocab,
            vocab_mask=self.vocab_mask,
        )


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size, hidden, max_positions, type_vocab_size, pad_idx, eps, dropout):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=pad_idx)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = Dropout(dropout)

    def forward(self, tokens, positions, token_types):
        """tokens, positions, token_types: (B, L) long -> (B, L, H)."""
        x = (
            self.word_embeddings(tokens)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_types)
        )
        return self.dropout(self.LayerNorm(x))


class BertLayer(nn.Module):
    """One post-LN transformer layer; ``past_kv`` prepends cached source keys/values."""

    qkv = None  # an int8 decoding copy's query, key and value as one int8 matrix and bias (fuse_qkv_int8)

    def __init__(self, hidden, heads, ffn, eps, dropout, attention_dropout, activation):
        super().__init__()
        assert hidden % heads == 0, f"hidden size {hidden} is not a multiple of {heads} heads"
        self.heads, self.head_dim = heads, hidden // heads
        self.query = Linear(hidden, hidden)
        self.key = Linear(hidden, hidden)
        self.value = Linear(hidden, hidden)
        self.attn_out = Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = Linear(hidden, ffn)
        self.output = Linear(ffn, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = Dropout(dropout)
        self.attention_dropout = attention_dropout
        self.act = ACTIVATIONS[activation]

    def fuse_qkv_int8(self) -> None:
        """For an int8 decoding copy whose query, key and value hold int8 matrices: one product of
        their stacked rows instead of three (each output channel keeps its own scale, so the values
        are the three products'; a decoding step at one or two rows pays per call, not per weight)."""
        parts = [m.packed for m in (self.query, self.key, self.value)]
        if all(isinstance(p, Int8Weight) for p in parts):
            self.qkv = (Int8Weight(torch.cat([p.q for p in parts]), torch.cat([p.scale for p in parts])),
                        torch.cat([self.query.bias, self.key.bias, self.value.bias]).detach())

    def _split(self, x):  # (B, L, H) -> (B, h, L, d)
        B, L, _ = x.shape
        return x.view(B, L, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, attn_mask, past_kv=None):
        """x: (B, L, H); attn_mask: (B, 1, L, L_keys) bool, True = may attend;
        past_kv: None or ((B, h, S, d), (B, h, S, d)) prepended to this block's keys/values.
        Returns (B, L, H) and this block's own (k, v), each (B, h, L, d)."""
        fast = self.query.bf16 and self.training and x.device.type == "cpu"  # the CPU fast path
        if fast:
            # one bf16 product for Q, K and V: x is cast to bf16 once instead of three times, and the
            # three weights are concatenated in bf16 once a training step (fast_path.step_weights)
            w = (self.query.weight, self.key.weight, self.value.weight)
            b = torch.cat([self.query.bias, self.key.bias, self.value.bias])
            q, k, v = fast_linear(x, w, b, enabled=True).chunk(3, dim=-1)
        elif self.qkv is not None and not self.training:
            q, k, v = int8_linear(x, *self.qkv).chunk(3, dim=-1)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        q, k, v = self._split(q), self._split(k), self._split(v)
        own_kv = (k, v)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        dropout_p = self.attention_dropout if self.training else 0.0
        if fast:
            # at our lengths (< 100 keys, head size 32) the plain math kernel's forward + backward
            # is 1.6x faster on CPU than the flash kernel (benchmarks.fast_path_pieces); fp32
            with sdpa_kernel(SDPBackend.MATH):
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        a = a.transpose(1, 2).reshape(x.shape)
        x = self.attn_norm(x + self.dropout(self.attn_out(a)))
        if fast:
            # the (B, L, ffn) activation stays bf16 between the two products (GELU in bf16,
            # as autocast runs it): two fp32 round trips of the layer's largest tensor fewer
            inner = fast_linear(x, self.intermediate.weight, self.intermediate.bias, enabled=True, bf16_out=True)
            h = fast_linear(self.act(inner), self.output.weight, self.output.bias, enabled=True)
        else:
            h = self.output(self.act(self.intermediate(x)))
        x = self.out_norm(x + self.dropout(h))
        return x, own_kv


class MLMHead(nn.Module):
    """BERT's prediction head: dense -> act -> LayerNorm -> decoder (tied to the word embeddings or not)."""

    def __init__(self, hidden, vocab_size, eps, activation, weight: nn.Parameter):
        super().__init__()
        self.dense = Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.bf16 = False  # the CPU fast path: bf16 products, bf16 logits while training
        self.packed = None  # a decoding copy's packed bf16 or int8 output weight (generators.precision)
        self.weight = weight  # (V, H): the input embeddings themselves when tied
        self.act = ACTIVATIONS[activation]

    def forward(self, h, vocab: Optional[torch.Tensor] = None):
        """h: (..., H) -> logits (..., V): fp32, or bf16 on the fast path while training (the
        criterion's log-softmax reads them in fp32; an fp32 copy of (N, V) would cost more than the
        product saves). vocab: (C,) sorted ids of an output shortlist: logits (..., C) over those rows only."""
        fast = self.bf16 and self.training
        h = self.LayerNorm(self.act(self.dense(h)))
        if vocab is not None:
            y = packed_product(self, h, rows=vocab)
            if y is not None:
                return y
            return fast_linear(h, self.weight.index_select(0, vocab), self.bias.index_select(0, vocab),
                               enabled=fast, bf16_out=fast)
        y = packed_product(self, h)  # a bf16 or int8 decoding copy (generators.precision)
        if y is not None:
            return y
        return fast_linear(h, self.weight, self.bias, enabled=fast, bf16_out=fast)


class BertEncoder(nn.Module):
    """Embeddings + layers. Sources see only sources; targets see every real token."""

    def __init__(self, vocab_size, hidden, layers, heads, ffn, max_positions, type_vocab_size,
                 pad_idx, eps=1e-12, dropout=0.1, attention_dropout=0.1, activation="gelu"):
        super().__init__()
        self.pad_idx = pad_idx
        self.embeddings = BertEmbeddings(
            vocab_size, hidden, max_positions, type_vocab_size, pad_idx, eps, dropout
        )
        self.layers = nn.ModuleList(
            BertLayer(hidden, heads, ffn, eps, dropout, attention_dropout, activation)
            for _ in range(layers)
        )

    def encode_source(self, src: torch.Tensor, return_states: bool = False):
        """Source-only pass. src: (B, S) with [CLS] first, padding anywhere (left, right, or in the
        middle as in ``[CLS] Y_p pad.. X pad..``). Positions count real tokens only, so any padding
        layout gives the same result as the packed sequence.
        Returns a :class:`SourceState` (and the last layer states (B, S, H) if return_states)."""
        key_mask = src.ne(self.pad_idx)
        positions = (key_mask.long().cumsum(1) - 1).clamp(min=0)
        x = self.embeddings(src, positions, torch.zeros_like(src))
        mask = key_mask[:, None, None, :]  # (B, 1, 1, S), broadcast over query rows
        kv = []
        for layer in self.layers:
            x, own = layer(x, mask)
            kv.append(own)
        w = key_mask.unsqueeze(-1).to(x.dtype)
        length = key_mask.sum(1)
        pooled = (x * w).sum(1) / length.unsqueeze(-1).to(x.dtype)
        state = SourceState(kv=kv, key_mask=key_mask, length=length, pooled=pooled)
        return (state, x) if return_states else state

    def decode_target(self, state: SourceState, tgt: torch.Tensor) -> torch.Tensor:
        """Target-only pass over cached source K/V. tgt: (B, T), real tokens first then padding.
        Returns last-layer target states (B, T, H)."""
        return self.decode_target_states(state, tgt)[0]

    def decode_target_states(self, state: SourceState, tgt: torch.Tensor, keep=()):
        """:meth:`decode_target` that also returns the target states after each layer in ``keep``
        (1 = the first layer): (last-layer states (B, T, H), [(B, T, H) per kept layer, in keep's order])."""
        tgt_mask = tgt.ne(self.pad_idx)
        positions = state.length.unsqueeze(1) + torch.arange(tgt.size(1), device=tgt.device)
        positions = positions.clamp(max=self.embeddings.position_embeddings.num_embeddings - 1)
        x = self.embeddings(tgt, positions, torch.ones_like(tgt))
        mask = torch.cat([state.key_mask, tgt_mask], dim=1)[:, None, None, :]  # (B,1,1,S+T)
        kept = {}
        for i, (layer, past) in enumerate(zip(self.layers, state.kv), start=1):
            x, _ = layer(x, mask, past_kv=past)
            if i in keep:
                kept[i] = x
        return x, [kept[i] for i in keep]

    def decode_rows(self, state: SourceState, tokens: torch.Tensor, tpos: torch.Tensor,
                    row_mask: torch.Tensor, cache=None):
        """Target rows with an explicit attention pattern (the two-stream passes of
        :mod:`mist_fairseq.models.streams`). tokens, tpos: (B, R) token ids and target indices
        (position = source length + tpos, token type 1); row_mask: (B, R, R) bool, which of these
        rows each row sees (key padding is applied on top); cache: None or a ``MainCache`` whose
        C earlier rows every row sees where real. Every row sees the real source tokens.
        Returns the last-layer states (B, R, H) and each layer's own (k, v), each (B, h, R, d)."""
        positions = state.length.unsqueeze(1) + tpos
        positions = positions.clamp(max=self.embeddings.position_embeddings.num_embeddings - 1)
        x = self.embeddings(tokens, positions, torch.ones_like(tokens))
        R = tokens.size(1)
        keys = [state.key_mask[:, None, :].expand(-1, R, -1)]
        if cache is not None:
            keys.append(cache.key_mask[:, None, :].expand(-1, R, -1))
        keys.append(row_mask & tokens.ne(self.pad_idx)[:, None, :])
        mask = torch.cat(keys, 2).unsqueeze(1)  # (B, 1, R, S + C + R)
        own = []
        for i, layer in enumerate(self.layers):
            past = state.kv[i]
            if cache is not None:
                past = (torch.cat([past[0], cache.kv[i][0]], 2), torch.cat([past[1], cache.kv[i][1]], 2))
            x, kv = layer(x, mask, past_kv=past)
            own.append(kv)
        return x, own

    def forward_full(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """One pass over ``[CLS] X [SEP] Y [SEP]`` with the block mask (no cache): the reference the
        cached path is tested against, and the benchmark's floor.
        src: (B, S), tgt: (B, T) -> all states (B, S + T, H)."""
        B, S = src.shape
        src_mask, tgt_mask = src.ne(self.pad_idx), tgt.ne(self.pad_idx)
        src_pos = (src_mask.long().cumsum(1) - 1).clamp(min=0)
        tgt_pos = src_mask.sum(1, keepdim=True) + torch.arange(tgt.size(1), device=tgt.device)
        x = self.embeddings(
            torch.cat([src, tgt], 1),
            torch.cat([src_pos, tgt_pos], 1),
            torch.cat([torch.zeros_like(src), torch.ones_like(tgt)], 1),
        )
        keys = torch.cat([src_mask, tgt_mask], 1)  # (B, S+T)
        is_src_key = torch.arange(S + tgt.size(1), device=src.device) < S  # (S+T,)
        is_src_query = is_src_key.unsqueeze(-1)  # (S+T, 1)
        # source rows: source keys only; target rows: every real key
        mask = keys[:, None, None, :] & (~is_src_query | is_src_key)[None, None]
        for layer in self.layers:
            x, _ = layer(x, mask)
        return x
