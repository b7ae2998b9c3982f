"""One inference entry point: load a checkpoint, set threads, ``generate(list[str]) -> list[str]``.

    from mist_fairseq import MistModel
    m = MistModel.from_pretrained("runs/quora", checkpoint_file="checkpoint_best.pt",
                                  data_name_or_path="data/quora/bin")
    m.generate(["How can I learn Python fast?"])                  # -> ["how can i learn python quickly?"]
    m.generate(sources, mist_decode_iters=3, decode_strategy="mask-predict", length_beam=3)
    m.generate(sources, decode_mode="ar", beam=4)                  # two-stream checkpoints
    m.generate(sources, length_beam=5, rerank_path="runs/ar/checkpoint_best.pt")  # AR rescoring

Built on Fairseq's hub machinery (``fairseq.hub_utils.from_pretrained`` loads the model and task,
``GeneratorHubInterface`` batches the inputs and handles the device); raw text goes in, WordPiece
tokenization and detokenization are Fairseq's ``--bpe bert`` with the data folder's ``vocab.txt``.
Decoding takes the same options (:class:`~mist_fairseq.generators.options.DecodeOptions`, the
checkpoint's own by default, keyword overrides per call) and the same table of modes
(:mod:`mist_fairseq.generators.modes`) as ``fairseq-generate``. ``generate`` keeps no state between calls and runs under
``torch.inference_mode``: concurrent calls from several threads are safe (a test checks they give
the serial results).
"""

import os
from typing import List, Optional

import torch
from fairseq import hub_utils, utils

from mist_fairseq.generators.options import DecodeOptions
from mist_fairseq.text import check_source_lengths, literal_special_tokens

HERE = os.path.dirname(os.path.abspath(__file__))


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

    def encode(self, sentence: str) -> torch.Tensor:
        """Fairseq's hub encode (tokenize, WordPiece, binarize) of user text: control-token strings
        such as ``[MASK]`` are kept as text."""
        return super().encode(literal_special_tokens(sentence))

    @property
    def max_source_tokens(self) -> int:
        """The longest binarized source the model takes ([SEP] included; [CLS] is added inside)."""
        return self.task.cfg.max_source_positions - 1

    @property
    def decode_options(self) -> DecodeOptions:
        """The options every call starts from: the checkpoint's task options (``--decode-mode``,
        ``--length-beam``, ...) and its generation options (``--beam``, ...), unless set here (the
        service sets its start-up flags this way)."""
        if "_decode_options" not in self.__dict__:
            self._decode_options = DecodeOptions.from_task(self.task.cfg, self.cfg.generation)
        return self._decode_options

    @decode_options.setter
    def decode_options(self, options: DecodeOptions) -> None:
        self._decode_options = options

    def generator(self, **options):
        """The generator of :attr:`decode_options` with ``options`` (DecodeOptions names) overridden."""
        return self.task.decoding_generator(self.decode_options.replace(**options))

    def generate(self, sentences: List[str], **options) -> List[str]:
        """Raw source strings -> detokenized outputs, in input order. options: any
        :class:`DecodeOptions` field, e.g. ``length_beam=5``, ``mist_decode_iters=3,
        decode_strategy="mask-predict"``, ``decode_mode="semi-nar", block_size=4`` or
        ``decode_mode="ar", beam=4`` (the last two for checkpoints trained with the two-stream loss),
        ``rerank_path=CKPT``. Unset: the checkpoint's own options (by default one NAR pass)."""
        if isinstance(sentences, str):
            raise TypeError("generate takes a list of strings; wrap a single input in a list")
        gen = self.generator(**options)
        if not sentences:
            return []
        tokens = [self.encode(s) for s in sentences]
        check_source_lengths(tokens, self.max_source_tokens)
        out = [None] * len(sentences)
        with torch.inference_mode():
            for batch in self._build_batches(tokens, skip_invalid_size_inputs=False):
                batch = utils.apply_to_sample(lambda t: t.to(self.device), batch)
                for i, hypos in zip(batch["id"].tolist(), gen.generate(self.models, batch)):
                    out[i] = self.decode(hypos[0]["tokens"])
        return out

    def sample(self, sentences, beam: Optional[int] = None, verbose: bool = False, **options):
        """Fairseq's hub name for generation; ``beam`` is the AR beam width, as in ``generate``."""
        single = isinstance(sentences, str)
        out = self.generate([sentences] if single else sentences, beam=beam, **options)
        return out[0] if single else out

    translate = sample
