"""``mist_nar`` task: translation-style data binarized with a BERT vocabulary, NAR generation."""

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.data import LanguagePairDataset, data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from mist_fairseq.data_utils import TruncateKeepEosDataset, read_pseudo_targets
from mist_fairseq.dictionary import BertDictionary
from mist_fairseq.generators.modes import DECODE_MODES, build_generator
from mist_fairseq.generators.options import STRATEGIES, DecodeOptions
from mist_fairseq.generators.precision import PRECISIONS
from mist_fairseq.generators.rerank import RERANK_CHOICES, build_rescorer
from mist_fairseq.models.fast_path import step_weights

logger = logging.getLogger(__name__)

DECODE_STRATEGIES = ChoiceEnum(list(STRATEGIES))
_D = DecodeOptions()  # the decoding defaults, the same on every path
DECODE_MODE_CHOICES = ChoiceEnum(list(DECODE_MODES))
RERANK = ChoiceEnum(RERANK_CHOICES)
PRECISION = ChoiceEnum(list(PRECISIONS))


@dataclass
class MistNARTaskConfig(TranslationConfig):
    # the paper's lengths; [CLS] + source block + target block fits BERT's 512 positions
    max_source_positions: int = field(
        default=464, metadata={"help": "source block length, [CLS] included; longer sources are cut (counted)"}
    )
    max_target_positions: int = field(
        default=48, metadata={"help": "target length, final [SEP] included; longer targets are cut (counted)"}
    )
    left_pad_source: bool = field(default=False, metadata={"help": "pad source on the left"})
    static_pseudo_targets: Optional[str] = field(
        default=None,
        metadata={
            "help": "fairseq-generate output (WordPiece H- lines) over the train split, used as the "
            "fixed pseudo targets of --mix-mode static"
        },
    )
    mist_decode_iters: int = field(
        default=_D.mist_decode_iters, metadata={"help": "decoding passes; 1 = the paper's single parallel pass"}
    )
    decode_strategy: DECODE_STRATEGIES = field(
        default=_D.decode_strategy,
        metadata={
            "help": "refinement after the first pass: 'mist' feeds the output back as pseudo target "
            "([CLS] Y_p [SEP] X [SEP] [MASK]..); 'mask-predict' re-masks the least confident tokens "
            "with Ghazvininejad et al.'s linear schedule"
        },
    )
    length_beam: int = field(
        default=_D.length_beam, metadata={"help": "decode the top-k predicted lengths in one batch; best mean log-prob wins"}
    )
    min_target_length: int = field(
        default=_D.min_target_length, metadata={"help": "smallest predicted target length, final [SEP] included"}
    )
    decode_mode: DECODE_MODE_CHOICES = field(
        default=_D.decode_mode,
        metadata={
            "help": "'nar': one parallel pass over [MASK]s (the paper's); 'semi-nar': --block-size "
            "positions per pass, each block given the earlier ones; 'ar': left to right with beam search "
            "(--beam, --lenpen, --max-len-a/b), ending at [SEP]. Semi-NAR and AR need a checkpoint trained "
            "with the two-stream loss (--block-loss-factor > 0 of --criterion mist); 'ctc': the one pass of a "
            "checkpoint trained with --ctc (its 'nar' is the same)"
        },
    )
    block_size: int = field(
        default=_D.block_size, metadata={"help": "positions predicted per pass with --decode-mode semi-nar (1 = AR order, greedy)"}
    )
    no_dedup: bool = field(
        default=_D.no_dedup, metadata={"help": "keep consecutive duplicate tokens (removed by default, as in MIST's code)"}
    )
    ctc_beam: int = field(
        default=_D.ctc_beam,
        metadata={
            "help": "CTC checkpoints: prefix beam search over the slots' log-probs keeping this many "
            "candidates (best by log-prob per token, or the one --rerank-path's AR scorer prefers); 1 = "
            "each slot's best class"
        },
    )
    rerank: RERANK = field(
        default=_D.rerank,
        metadata={
            "help": "how the --length-beam candidates are ranked: 'none': their own mean log-prob; 'ar': "
            "scored by this checkpoint's AR stream teacher-forced, all candidates in one parallel pass "
            "(needs a checkpoint trained with --block-loss-factor > 0 --block-sizes including 1)"
        },
    )
    rerank_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "rank the --length-beam (CTC: --ctc-beam) candidates by a separate mist_nar checkpoint on the same "
            "dictionary, trained with the two-stream loss at block size 1 (e.g. the same-encoder AR "
            "model), teacher-forced in one parallel pass"
        },
    )
    avoid_copy: bool = field(
        default=_D.avoid_copy,
        metadata={
            "help": "among the --length-beam (CTC: --ctc-beam) candidates, one identical to its source wins only "
            "where every candidate is (paraphrase, query rewriting)"
        },
    )
    decode_precision: PRECISION = field(
        default=_D.decode_precision,
        metadata={
            "help": "the decoding passes' weights and activations (the model's and an AR rescorer's): 'fp32'; "
            "'bf16' (a bf16 copy of the model, made once; faster on CPUs with bf16 units and on GPUs); or "
            "'int8' (CPU: a copy whose matrices are weight-only int8, one scale per output channel, "
            "activations bf16 in the products: a quarter of the weight bytes for batch-1 passes and AR or "
            "semi-NAR steps; slower than fp32 at many rows, e.g. batch 16; a sentence decodes the same alone or in any batch)"
        },
    )


@register_task("mist_nar", dataclass=MistNARTaskConfig)
class MistNARTask(TranslationTask):
    cfg: MistNARTaskConfig

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        if src_dict.symbols != tgt_dict.symbols:
            raise ValueError("source and target dictionaries differ; binarize both sides with the same BERT vocab.txt")
        self.pseudo_targets = None
        self.truncated = {}
        # what the checkpoint was trained with (saved in its task_state): the two-stream block sizes
        # of the criterion (empty: NAR only; None: unknown, a checkpoint saved before it was recorded)
        self.two_stream_blocks = None
        self.ctc_checkpoint = False  # set by build_model: the model has a CTC output (--ctc)

    @classmethod
    def load_dictionary(cls, filename):
        return BertDictionary.load(filename)

    @classmethod
    def build_dictionary(cls, *args, **kwargs):
        raise ValueError(
            "mist_nar uses the checkpoint's vocabulary: run fairseq-preprocess with "
            "--srcdict PATH/vocab.txt --joined-dictionary"
        )

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)] if split == self.cfg.train_subset else paths[0]
        src, tgt = self.cfg.source_lang, self.cfg.target_lang

        def load(lang):
            prefix = os.path.join(data_path, f"{split}.{src}-{tgt}.{lang}")
            ds = data_utils.load_indexed_dataset(prefix, self.src_dict, self.cfg.dataset_impl)
            if ds is None:
                raise FileNotFoundError(f"{prefix}.bin/.idx: missing; binarize split '{split}' with fairseq-preprocess")
            return ds

        # binarized lengths: the source block also holds [CLS]
        src_ds = TruncateKeepEosDataset(load(src), self.cfg.max_source_positions - 1, self.src_dict.eos())
        tgt_ds = TruncateKeepEosDataset(load(tgt), self.cfg.max_target_positions, self.tgt_dict.eos())
        for side, ds in (("source", src_ds), ("target", tgt_ds)):
            if ds.num_truncated:
                logger.warning(
                    f"{split}: {ds.num_truncated} of {len(ds)} {side}s longer than "
                    f"{ds.max_len} tokens were truncated (kept, not dropped)"
                )
        self.truncated[split] = (src_ds.num_truncated, tgt_ds.num_truncated)
        self.datasets[split] = LanguagePairDataset(
            src_ds, src_ds.sizes, self.src_dict, tgt_ds, tgt_ds.sizes, self.tgt_dict,
            left_pad_source=self.cfg.left_pad_source, left_pad_target=False,
            shuffle=(split == self.cfg.train_subset),
        )
        if split == self.cfg.train_subset and self.cfg.static_pseudo_targets:
            self.pseudo_targets = read_pseudo_targets(
                self.cfg.static_pseudo_targets, self.tgt_dict, self.cfg.max_target_positions
            )
            missing = len(src_ds) - sum(1 for i in range(len(src_ds)) if i in self.pseudo_targets)
            if missing:
                raise ValueError(
                    f"{self.cfg.static_pseudo_targets}: {missing} of {len(src_ds)} train examples have no "
                    "H- line; generate over the whole train split with --required-batch-size-multiple 1"
                )

    def static_pseudo_batch(self, sample) -> torch.Tensor:
        """(B, T') right-padded pseudo targets of the batch's sample ids (--mix-mode static)."""
        if self.pseudo_targets is None:
            raise ValueError("--mix-mode static needs --static-pseudo-targets FILE")
        items = [self.pseudo_targets[int(i)] for i in sample["id"]]
        return data_utils.collate_tokens(items, self.tgt_dict.pad()).to(sample["id"].device)

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        return LanguagePairDataset(
            src_tokens, src_lengths, self.source_dictionary,
            tgt_dict=self.target_dictionary, left_pad_source=self.cfg.left_pad_source,
        )

    def get_batch_iterator(self, dataset, *args, required_batch_size_multiple=1, **kwargs):
        # Fairseq rounds batches to --required-batch-size-multiple (default 8) and can then lose
        # the sentences of a short last batch (fairseq issue #5036). An NAR batch has no shape
        # constraint that needs the multiple, so it is always 1 here.
        return super().get_batch_iterator(dataset, *args, required_batch_size_multiple=1, **kwargs)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        self.ctc_checkpoint = bool(getattr(model, "ctc", False))
        # the model cleared its own copy of the path; clear the trainer's too, so the
        # checkpoint's config never points at (and never reloads) the pretrained weights
        if getattr(cfg, "pretrained_encoder", None):
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.pretrained_encoder = None
        return model

    def build_generator(self, models, args, **unused):
        # args: fairseq-generate's generation options (--beam, --lenpen, --max-len-a/b) for AR mode
        return self.decoding_generator(DecodeOptions.from_task(self.cfg, args))

    def decoding_generator(self, options: DecodeOptions):
        """The generator of ``options``, after checking the checkpoint was trained for the mode and
        rescoring asked for. A CTC checkpoint's ``nar`` is ``ctc``."""
        if self.ctc_checkpoint and options.decode_mode == "nar":
            options = options.replace(decode_mode="ctc")
        if self.ctc_checkpoint and options.decode_mode != "ctc":
            raise ValueError(f"--decode-mode {options.decode_mode}: this checkpoint has a CTC output (--ctc) and "
                             "decodes with --decode-mode nar or ctc (the same one pass)")
        if options.decode_mode == "ctc" and not self.ctc_checkpoint:
            raise ValueError("--decode-mode ctc needs a checkpoint trained with --ctc; decode this one with "
                             "--decode-mode nar")
        if options.decode_mode == "ar":
            self.require_two_stream("--decode-mode ar", block=1)
        elif options.decode_mode == "semi-nar":
            self.require_two_stream("--decode-mode semi-nar")
        rescorer = build_rescorer(self, options.rerank, options.rerank_path)
        return build_generator(self.target_dictionary, options, rescorer)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if hasattr(criterion, "set_update_num"):
            criterion.set_update_num(update_num)  # the glancing-ratio anneal needs it
        # the CPU fast path rounds each weight to bf16 once for the step's passes (not once a pass)
        with step_weights():
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def max_positions(self):
        return (self.cfg.max_source_positions - 1, self.cfg.max_target_positions)

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        if hasattr(criterion, "block_loss_factor"):
            self.two_stream_blocks = list(criterion.block_sizes) if criterion.block_loss_factor > 0 else []
        return criterion

    def vocab_fingerprint(self) -> str:
        """First 16 hex digits of the SHA-256 of the dictionary's tokens in id order: two vocabularies
        of the same size with swapped entries differ."""
        return hashlib.sha256("\n".join(self.src_dict.symbols).encode("utf-8")).hexdigest()[:16]

    def state_dict(self):
        # written into every checkpoint by Fairseq's trainer (task_state)
        state = dict(super().state_dict())
        state["vocab_fingerprint"] = self.vocab_fingerprint()
        if self.two_stream_blocks is not None:
            state["two_stream_blocks"] = list(self.two_stream_blocks)
        return state

    def load_state_dict(self, state_dict):
        """Called by Fairseq when a checkpoint is loaded for inference: refuses a data folder whose
        dictionary is not the one the checkpoint was trained on."""
        state_dict = dict(state_dict)
        saved = state_dict.pop("vocab_fingerprint", None)
        if saved is not None and saved != self.vocab_fingerprint():
            raise ValueError(
                f"{self.cfg.data}: its dictionary (fingerprint {self.vocab_fingerprint()}) is not the one this "
                f"checkpoint was trained on ({saved}); pass the data folder (and vocab.txt) it was trained with")
        blocks = state_dict.pop("two_stream_blocks", None)
        if blocks is not None and self.two_stream_blocks is None:
            self.two_stream_blocks = list(blocks)
        super().load_state_dict(state_dict)

    def require_two_stream(self, what: str, block: int = None) -> None:
        """ValueError unless the loaded checkpoint was trained with the two-stream loss (at block size
        ``block`` when given). A checkpoint whose task state records no
        block sizes passes."""
        blocks = self.two_stream_blocks
        if blocks is None or (blocks and (block is None or block in blocks)):
            return
        trained = f"block sizes {','.join(map(str, blocks))}" if blocks else "no two-stream loss"
        need = f" --block-sizes including {block}" if block is not None else ""
        raise ValueError(f"{what} needs a checkpoint trained with --block-loss-factor > 0{need}; this one was "
                         f"trained with {trained}: retrain with the two-stream loss or decode with --decode-mode nar")
