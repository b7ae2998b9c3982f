"""One inference entry point: load a checkpoint, set threads, ``generate(list[str]) -> list[str]``.

    from mist_fairseq import MistModel
    m = MistModel.from_pretrained("runs/quora", checkpoint_file="checkpoint_best.pt",
                                  data_name_or_path="data/quora/bin")
    m.generate(["How can I learn Python fast?"])                  # -> ["how can i learn python quickly?"]
    m.generate(sources, iterations=3, strategy="mask-predict", length_beam=3)
    m.generate(sources, mode="ar", beam=4)                         # two-stream checkpoints
    m.generate(sources, length_beam=5, rerank_path="runs/ar/checkpoint_best.pt")  # AR rescoring

Built on Fairseq's hub machinery (``fairseq.hub_utils.from_pretrained`` loads the model and task,
``GeneratorHubInterface`` batches the inputs and handles the device); raw text goes in, WordPiece
tokenization and detokenization are Fairseq's ``--bpe bert`` with the data folder's ``vocab.txt``.
Decoding goes through the same table of modes (:mod:`mist_fairseq.generators.modes`) that
``fairseq-generate`` uses. ``generate`` keeps no state between calls and runs under
``torch.inference_mode``: concurrent calls from several threads are safe (a test checks they give
the serial results).
"""

import os
from typing import List, Optional

import torch
from fairseq import hub_utils, utils

from mist_fairseq.generators.modes import call_options

HERE = os.path.dirname(os.path.abspath(__file__))


def check_source_lengths(tokens: List[torch.Tensor], limit: int) -> None:
    """ValueError naming the first binarized source longer than limit tokens ([SEP] included)."""
    for i, t in enumerate(tokens):
        if t.numel() > limit:
            raise ValueError(f"input {i}: {t.numel()} WordPiece tokens ([SEP] included); this model takes at most {limit}")


class MistModel(hub_utils.GeneratorHubInterface):
    """A trained ``mist_nar`` checkpoint behind Fairseq's hub interface (``encode``/``decode``/
    ``string`` work as in Fairseq); :meth:`generate` takes and returns plain strings."""

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "checkpoint_best.pt",
                        data_name_or_path: str = ".", threads: Optional[int] = None,
                        batch_size: int = 32, **kwargs) -> "MistModel":
        """model_name_or_path: the checkpoint folder; data_name_or_path: the ``fairseq-preprocess``
        folder of the training data (``dict.src.txt``, ``vocab.txt``; relative paths starting with
        '.' are taken inside the checkpoint folder, as in Fairseq); threads: torch threads (default:
        torch's); batch_size: sentences per forward pass. Further kwargs override checkpoint options."""
        data = (os.path.abspath(os.path.join(model_name_or_path, data_name_or_path))
                if data_name_or_path.startswith(".") else data_name_or_path)
        for name in ("dict.src.txt", "vocab.txt"):
            if not os.path.exists(os.path.join(data, name)):
                raise FileNotFoundError(
                    f"{data}/{name} not found: pass data_name_or_path= the fairseq-preprocess folder of the "
                    "training data (python -m mist_fairseq.prepare writes it as OUT/bin)")
        ckpt = os.path.join(model_name_or_path, checkpoint_file)
        if not os.path.exists(ckpt):
            raise FileNotFoundError(f"{ckpt} not found: checkpoint_file= names a file in {model_name_or_path}")
        if threads:
            torch.set_num_threads(threads)
        loaded = hub_utils.from_pretrained(
            model_name_or_path, checkpoint_file=checkpoint_file, data_name_or_path=data, user_dir=HERE,
            bpe="bert", bpe_vocab_file=os.path.join(data, "vocab.txt"), **kwargs)
        cfg = loaded["args"]
        cfg.dataset.batch_size, cfg.dataset.max_tokens = batch_size, None
        return cls(cfg, loaded["task"], loaded["models"])

    @property
    def max_source_tokens(self) -> int:
        """The longest binarized source the model takes ([SEP] included; [CLS] is added inside)."""
        return self.task.cfg.max_source_positions - 1

    def generator(self, iterations: Optional[int] = None, strategy: Optional[str] = None,
                  length_beam: Optional[int] = None, min_length: Optional[int] = None,
                  dedup: Optional[bool] = None, mode: Optional[str] = None,
                  block_size: Optional[int] = None, beam: Optional[int] = None,
                  rerank: Optional[str] = None, rerank_path: Optional[str] = None):
        """The decoding strategy: the task's own options (the checkpoint's ``--decode-mode``,
        ``--mist-decode-iters``, ``--decode-strategy``, ``--length-beam``, ``--min-target-length``,
        ``--no-dedup``, ``--block-size``, ``--rerank``, ``--rerank-path``), as fairseq-generate uses
        them, unless given here; beam: hypotheses kept in AR mode (default 1: greedy)."""
        from types import SimpleNamespace

        tcfg = self.task.cfg

        def pick(value, name, default):
            return getattr(tcfg, name, default) if value is None else value

        cfg = SimpleNamespace(
            decode_mode=pick(mode, "decode_mode", "nar"),
            mist_decode_iters=pick(iterations, "mist_decode_iters", 1),
            decode_strategy=pick(strategy, "decode_strategy", "mist"),
            length_beam=pick(length_beam, "length_beam", 1),
            min_target_length=pick(min_length, "min_target_length", 2),
            no_dedup=not dedup if dedup is not None else getattr(tcfg, "no_dedup", False),
            block_size=pick(block_size, "block_size", 4),
            rerank=pick(rerank, "rerank", "none"),
            rerank_path=pick(rerank_path, "rerank_path", None),
        )
        return self.task.decoding_generator(SimpleNamespace(beam=beam or 1), cfg)

    def generate(self, sentences: List[str], iterations: Optional[int] = None, strategy: Optional[str] = None,
                 length_beam: Optional[int] = None, **kwargs) -> List[str]:
        """Raw source strings -> detokenized outputs, in input order. iterations: decoding passes
        (1 = the single parallel pass); strategy: 'mist' (feed the output back as pseudo target) or
        'mask-predict'; length_beam: candidate lengths decoded per input; mode: 'nar', 'semi-nar'
        (block_size positions per pass) or 'ar' (beam hypotheses, default greedy) -- the last two for
        checkpoints trained with the two-stream loss. Unset: the checkpoint's own decoding options
        (by default one NAR pass, one length)."""
        if isinstance(sentences, str):
            raise TypeError("generate takes a list of strings; wrap a single input in a list")
        if not sentences:
            return []
        gen = self.generator(**call_options(getattr(self, "decode_defaults", {}), iterations=iterations,
                                            strategy=strategy, length_beam=length_beam, **kwargs))
        tokens = [self.encode(s) for s in sentences]
        check_source_lengths(tokens, self.max_source_tokens)
        out = [None] * len(sentences)
        with torch.inference_mode():
            for batch in self._build_batches(tokens, skip_invalid_size_inputs=False):
                batch = utils.apply_to_sample(lambda t: t.to(self.device), batch)
                for i, hypos in zip(batch["id"].tolist(), gen.generate(self.models, batch)):
                    out[i] = self.decode(hypos[0]["tokens"])
        return out

    def sample(self, sentences, beam: Optional[int] = None, verbose: bool = False, **kwargs):
        """Fairseq's hub name for generation (``beam`` is the length beam here)."""
        single = isinstance(sentences, str)
        out = self.generate([sentences] if single else sentences, length_beam=beam, **kwargs)
        return out[0] if single else out

    translate = sample
