"""The model behind the service: anything with ``generate(list[str]) -> list[str]``, ``encode(str)``
(the binarized source, to check its length) and ``max_source_tokens``."""

import os
from typing import Optional


def load_backend(backend: str, model: str, precision: str = "fp32", checkpoint_file: str = "checkpoint_best.pt",
                 data: Optional[str] = None, threads: Optional[int] = None, batch_size: int = 32,
                 decode: Optional[dict] = None):
    """backend 'onnx': model = an export folder (``python -m mist_fairseq.export``), precision fp32|int8.
    backend 'torch': model = a checkpoint folder, checkpoint_file inside it, data = its fairseq-preprocess
    folder (dict.src.txt, vocab.txt). decode: decoding options every request uses (``generate``'s
    keywords, e.g. length_beam, rerank, rerank_path; AR rescoring needs the torch backend), checked here
    once so a bad option fails at start-up."""
    decode = {k: v for k, v in (decode or {}).items() if v is not None}
    if backend == "onnx":
        from mist_fairseq.export.runner import OnnxMistModel, refuse_rerank

        refuse_rerank(decode.get("rerank"), decode.get("rerank_path"))  # before the graphs are loaded
        m = OnnxMistModel(model, precision=precision, threads=threads, batch_size=batch_size)
        m.decode_defaults = decode
        m.generator(**decode)
        return m
    if backend == "torch":
        if precision != "fp32":
            raise ValueError("--backend torch runs fp32; int8 is --backend onnx --precision int8")
        if data is None:
            raise ValueError("--backend torch needs --data: the fairseq-preprocess folder of the training data")
        from mist_fairseq.inference import MistModel

        m = MistModel.from_pretrained(os.path.abspath(model), checkpoint_file=checkpoint_file,
                                      data_name_or_path=os.path.abspath(data), threads=threads,
                                      batch_size=batch_size)
        m.decode_defaults = decode
        m.generator(**decode)
        return m
    raise ValueError(f"unknown backend {backend!r}: torch | onnx")
