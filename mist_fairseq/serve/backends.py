"""The model behind the service: anything with ``generate(list[str]) -> list[str]``, ``encode(str)``
(the binarized source, to check its length) and ``max_source_tokens``."""

import os
from typing import Optional

from mist_fairseq.generators.options import DecodeOptions
from mist_fairseq.generators.precision import PRECISIONS


def load_backend(backend: str, model: str, precision: str = "fp32", checkpoint_file: str = "checkpoint_best.pt",
                 data: Optional[str] = None, threads: Optional[int] = None, batch_size: int = 32,
                 decode: Optional[dict] = None, batch_invariant: bool = True):
    """backend 'onnx': model = an export folder (``python -m mist_fairseq.export``), precision fp32|int8.
    backend 'torch': precision fp32|bf16|int8 (its ``decode_precision``), model = a checkpoint folder, checkpoint_file inside it, data = its fairseq-preprocess
    folder (dict.src.txt, vocab.txt). decode: :class:`DecodeOptions` overrides every request uses
    (e.g. length_beam, rerank_path; AR rescoring needs the torch backend; None = the model's own),
    checked here so a bad option fails at start-up. batch_invariant: see
    :class:`~mist_fairseq.export.runner.OnnxMistModel` (int8 only)."""
    decode = {k: v for k, v in (decode or {}).items() if v is not None}
    asked = DecodeOptions().replace(**decode)  # names and values checked before any model is loaded
    if backend == "onnx":
        from mist_fairseq.export.runner import OnnxMistModel, refuse_unexported

        if precision not in ("fp32", "int8"):
            raise ValueError(f"--backend onnx runs fp32 or int8, not {precision}; bf16 is --backend torch --precision bf16")

        refuse_unexported(asked)
        m = OnnxMistModel(model, precision=precision, threads=threads, batch_size=batch_size,
                          batch_invariant=batch_invariant)
        m.decode_options = m.decode_options.replace(**decode)
        m.generator()
        return m
    if backend == "torch":
        if precision not in PRECISIONS:
            raise ValueError(f"--backend torch runs {', '.join(PRECISIONS)}, not {precision}")
        if data is None:
            raise ValueError("--backend torch needs --data: the fairseq-preprocess folder of the training data")
        from mist_fairseq.inference import MistModel

        m = MistModel.from_pretrained(os.path.abspath(model), checkpoint_file=checkpoint_file,
                                      data_name_or_path=os.path.abspath(data), threads=threads,
                                      batch_size=batch_size)
        m.decode_options = m.decode_options.replace(decode_precision=precision, **decode)
        m.generator()  # builds the rescorer once, and refuses a checkpoint trained for another mode
        return m
    raise ValueError(f"unknown backend {backend!r}: torch | onnx")
