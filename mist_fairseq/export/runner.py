"""Runs an exported model (``python -m mist_fairseq.export``) on onnxruntime behind the same
``generate(list[str]) -> list[str]`` as :class:`~mist_fairseq.inference.MistModel`.

:class:`OnnxMistNAR` implements the model's inference contract (:mod:`mist_fairseq.models.contract`)
over the two graphs, so decoding is the very :class:`~mist_fairseq.generators.mist_generator.MistGenerator`
that ``fairseq-generate`` runs (one pass, length beam, MIST feed-back, mask-predict alike), and the
text goes through the same Fairseq ``--bpe bert`` tokenizer and dictionary as the PyTorch API.
``generate`` keeps no state between calls; onnxruntime sessions may be run from several threads.
"""

import json
import os
from argparse import Namespace
from typing import List, NamedTuple, Optional

import numpy as np
import torch
from fairseq.data import data_utils
from fairseq.data.encoders.hf_bert_bpe import BertBPE

from mist_fairseq.dictionary import BertDictionary
from mist_fairseq.export import folder
from mist_fairseq.export.onnx_export import CONFIG, FORMAT, SHORTLIST_FORMAT_VERSION
from mist_fairseq.generators.modes import build_generator
from mist_fairseq.generators.options import DecodeOptions
from mist_fairseq.models.contract import TokenOps
from mist_fairseq.models.shortlist import sentence_candidates, widen
from mist_fairseq.text import check_source_lengths, literal_special_tokens


class OnnxSourceState(NamedTuple):
    """The source pass's outputs. keys, values: (n, B, h, S1, d) float32 numpy (fed back to the target
    graph as they are); key_mask (B, S1) bool, length (B,) long, length_logits (B, P) float: torch;
    vocab (C,) long: the batch's output shortlist candidates, vocab_mask (B, C) bool: each sentence's own
    among them; or None."""

    keys: np.ndarray
    values: np.ndarray
    key_mask: torch.Tensor
    length: torch.Tensor
    length_logits: torch.Tensor
    vocab: Optional[torch.Tensor] = None
    vocab_mask: Optional[torch.Tensor] = None

    def index_select(self, order: torch.Tensor) -> "OnnxSourceState":
        idx = order.view(-1).numpy()
        return OnnxSourceState(self.keys[:, idx], self.values[:, idx], self.key_mask.index_select(0, order.view(-1)),
                               self.length.index_select(0, order.view(-1)),
                               self.length_logits.index_select(0, order.view(-1)), self.vocab,
                               None if self.vocab_mask is None else self.vocab_mask.index_select(0, order.view(-1)))


class OnnxMistNAR(TokenOps):
    """The inference contract over two onnxruntime sessions (source graph, target graph)."""

    def __init__(self, source_session, target_session, config: dict, shortlist: Optional[dict] = None):
        """shortlist: the export's output shortlist table {frequent, neighbours, always} as torch tensors."""
        self.source, self.target = source_session, target_session
        self.shortlist = shortlist
        ids = config["ids"]
        self.pad, self.eos, self.bos, self.mask_idx = ids["pad"], ids["eos"], ids["bos"], ids["mask"]
        self.num_positions = config["num_positions"]
        self.max_target_positions = config["max_target_positions"]
        self.target_input = config.get("target_input", "mask")  # exports made before the option: [MASK]
        ctc = config.get("ctc")  # a CTC checkpoint's slot rule and blank (TokenOps.slot_target)
        self.ctc = ctc is not None
        if ctc:
            self.blank_idx, self.upsample_ratio, self.ctc_min_slots = ctc["blank"], ctc["upsample_ratio"], ctc["min_slots"]

    def encode_source(self, src_tokens: torch.Tensor) -> OnnxSourceState:
        """src_tokens (B, S) without [CLS] -> the source state."""
        length_logits, keys, values, key_mask, length = self.source.run(
            None, {"src_tokens": np.ascontiguousarray(src_tokens.numpy(), dtype=np.int64)})
        vocab = mask = None
        if self.shortlist is not None:  # the model's own rule (MistNARModel.encode_source)
            vocab, mask = sentence_candidates(self.shortlist["frequent"], self.shortlist["neighbours"],
                                              self.shortlist["always"], src_tokens, self.pad)
        return OnnxSourceState(keys, values, torch.from_numpy(key_mask), torch.from_numpy(length),
                               torch.from_numpy(length_logits), vocab, mask)

    def length_logits(self, state: OnnxSourceState) -> torch.Tensor:
        return state.length_logits

    def decode_target(self, state: OnnxSourceState, tgt: torch.Tensor) -> torch.Tensor:
        """tgt (B, T) -> logits (B, T, V) float32 (-inf outside an output shortlist's candidates)."""
        feed = {"keys": state.keys, "values": state.values, "key_mask": state.key_mask.numpy(),
                "src_length": state.length.numpy(), "tgt_tokens": np.ascontiguousarray(tgt.numpy(), dtype=np.int64)}
        if state.vocab is not None:
            feed["vocab"] = state.vocab.numpy()
        (logits,) = self.target.run(None, feed)
        logits = torch.from_numpy(logits)
        if state.vocab is None:
            return logits
        return widen(logits, state.vocab, self.shortlist["neighbours"].size(0), state.vocab_mask.unsqueeze(1))


def read_config(path: str) -> dict:
    cfg_path = os.path.join(path, CONFIG)
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path} not found: {path} is not an export folder; write one with "
                                "python -m mist_fairseq.export CHECKPOINT --data DATA_BIN --out DIR")
    with open(cfg_path) as f:
        config = json.load(f)
    if config.get("format") != FORMAT or config.get("version", 0) > SHORTLIST_FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: format {config.get('format')!r} version {config.get('version')} is not "
                         f"{FORMAT} <= {SHORTLIST_FORMAT_VERSION}; export it again with this mist_fairseq")
    return config


def refuse_unexported(options: DecodeOptions) -> None:
    """ValueError if ``options`` ask for what the exported graphs do not hold: the two-stream steps of
    semi-NAR/AR decoding and of AR rescoring (the graphs are the single pass)."""
    if options.decode_mode not in ("nar", "ctc"):
        raise ValueError(f"decode_mode={options.decode_mode!r}: the exported graphs decode NAR only (the "
                         "two-stream steps of semi-nar/ar are not exported); use mist_fairseq.MistModel for those modes")
    if options.rerank != "none" or options.rerank_path:
        raise ValueError("AR rescoring (--rerank/--rerank-path) needs the model's two-stream pass, which is not "
                         "exported; use mist_fairseq.MistModel (the service's --backend torch) for it")
    if options.decode_precision != "fp32":
        raise ValueError(f"decode_precision={options.decode_precision!r} is PyTorch decoding's; the exported graphs "
                         "run fp32 or int8 (the runner's precision=, the service's --precision)")


class OnnxMistModel:
    """An export folder on onnxruntime. precision: 'fp32' or 'int8' (exported with --int8);
    threads: onnxruntime intra-op threads (default: its own choice); batch_size: sentences per pass;
    spinning: let onnxruntime's threads busy-wait between runs (its default; off here).

    batch_invariant (int8): the int8 graphs quantize activations with one scale per tensor, computed
    per call, so a batched input's output depends on its batch mates (and on their padding). By
    default int8 decodes each input on its own, so the same input always gives the same text; False
    batches int8 like fp32 (faster; outputs may change with the other inputs of the batch). fp32 is
    batch-invariant either way."""

    def __init__(self, path: str, precision: str = "fp32", threads: Optional[int] = None, batch_size: int = 32,
                 spinning: bool = False, batch_invariant: bool = True):
        import onnxruntime as ort

        self.config = config = read_config(path)
        if precision not in config["graphs"]:
            raise ValueError(f"{path} has no {precision} graphs (it has {', '.join(config['graphs'])}); "
                             "export with --int8 for int8")
        # a torn or edited folder (a killed export of an older release, a replaced graph) is refused here,
        # not met as an onnxruntime traceback or as another checkpoint's outputs
        shortlist_file = (config.get("shortlist") or {}).get("file")
        folder.check_files(path, config.get("files", {}), ["vocab.txt", "dict.src.txt", *config["graphs"][precision].values()]
                           + ([shortlist_file] if shortlist_file else []))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's memory pattern keeps an allocation plan per input shape; a service sees ever new
        # (batch, length) shapes, so the plans piled up: +116 MiB over 400 mixed fp32 batches with it,
        # +26 MiB without, at the same speed (python -m benchmarks.ort_memory; docs/serving/ort_memory.jsonl)
        opts.enable_mem_pattern = False
        if not spinning:
            # onnxruntime's workers busy-wait after each run by default; between our two graphs the
            # generator's own (torch) work then competes with them for the cores, which made batch-1
            # decoding with 2 threads several times slower in our timings (docs/RESULTS.md, Serving)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            torch.set_num_threads(threads)  # the generator's own work between the graphs, as MistModel does

        def session(name):
            return ort.InferenceSession(os.path.join(path, config["graphs"][precision][name]), opts,
                                        providers=["CPUExecutionProvider"])

        shortlist = None
        if shortlist_file:
            with np.load(os.path.join(path, shortlist_file)) as table:
                shortlist = {k: torch.from_numpy(table[k]) for k in ("frequent", "neighbours", "always")}
        self.model = OnnxMistNAR(session("source"), session("target"), config, shortlist)
        self.precision, self.batch_size = precision, batch_size
        # per-call activation scales of the int8 graphs: one input a pass keeps answers independent
        self.pass_size = 1 if precision == "int8" and batch_invariant else batch_size
        self.dict = BertDictionary.load(os.path.join(path, "dict.src.txt"))
        self.bpe = BertBPE(Namespace(bpe_cased=config["bpe_cased"], bpe_vocab_file=os.path.join(path, "vocab.txt")))
        self.max_source_tokens = config["max_source_positions"] - 1  # the binarized source, [SEP] included
        # the options the export recorded (the checkpoint's, as a single pass); calls override them
        self.decode_options = DecodeOptions.from_dict(config["decoding"])
        refuse_unexported(self.decode_options)

    # the same compositions as Fairseq's hub interface (encode = bpe + binarize, decode = string + bpe)
    def encode(self, sentence: str) -> torch.Tensor:
        return self.dict.encode_line(self.bpe.encode(literal_special_tokens(sentence)), add_if_not_exist=False).long()

    def decode(self, tokens: torch.Tensor) -> str:
        return self.bpe.decode(self.dict.string(tokens))

    def generator(self, **options):
        """The generator of :attr:`decode_options` (the export config's) with ``options`` overridden."""
        chosen = self.decode_options.replace(**options)
        if self.model.ctc and chosen.decode_mode == "nar":
            chosen = chosen.replace(decode_mode="ctc")  # a CTC export's one pass, as in the task
        refuse_unexported(chosen)
        return build_generator(self.dict, chosen)

    def generate(self, sentences: List[str], **options) -> List[str]:
        """Raw source strings -> detokenized outputs, in input order (see ``MistModel.generate``)."""
        if isinstance(sentences, str):
            raise TypeError("generate takes a list of strings; wrap a single input in a list")
        gen = self.generator(**options)
        tokens = [self.encode(s) for s in sentences]
        check_source_lengths(tokens, self.max_source_tokens)
        order = sorted(range(len(tokens)), key=lambda i: tokens[i].numel())  # similar lengths batch together
        out = [None] * len(tokens)
        with torch.inference_mode():
            for b in range(0, len(order), self.pass_size):
                ids = order[b:b + self.pass_size]
                src = data_utils.collate_tokens([tokens[i] for i in ids], self.dict.pad(),
                                                left_pad=self.config["left_pad_source"])
                hypos = gen.generate([self.model], {"net_input": {"src_tokens": src}})
                for i, h in zip(ids, hypos):
                    out[i] = self.decode(h[0]["tokens"])
        return out
