"""Text-side helpers shared by the PyTorch (:mod:`mist_fairseq.inference`) and ONNX
(:mod:`mist_fairseq.export.runner`) paths; imports neither."""

import re
from typing import List

import torch


def check_source_lengths(tokens: List[torch.Tensor], limit: int) -> None:
    """ValueError naming the first binarized source longer than limit tokens ([SEP] included)."""
    for i, t in enumerate(tokens):
        if t.numel() > limit:
            raise ValueError(f"input {i}: {t.numel()} WordPiece tokens ([SEP] included); this model takes at most {limit}")


# BERT's tokenizer keeps these strings whole as control tokens; typed by a user they are text
_SPECIAL = re.compile(r"\[(PAD|UNK|CLS|SEP|MASK)\]")


def literal_special_tokens(text: str) -> str:
    """``[MASK]`` typed in user text -> ``[ MASK ]``: tokenized as the characters it is (``[``, ``mask``,
    ``]``, as BERT's tokenizer splits any other bracketed word), never as the control token."""
    return _SPECIAL.sub(lambda m: f"[ {m.group(1)} ]", text)
