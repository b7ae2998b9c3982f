"""Decoding precision (``--decode-precision fp32|bf16``, the same name in ``MistModel.generate`` and
the service): ``bf16`` runs every decoding pass -- the model's and an AR rescorer's -- with bf16
weights and activations. On CPUs with bf16 matrix units (avx512_bf16, AMX) and on GPUs the products
run faster and the vocabulary projection reads half the bytes; ``fp32`` (the default) decodes the
model as loaded.

The bf16 pass runs on a bf16 copy of the model, made at the first call and kept: the loaded model
is left as it is (fp32 calls, training and checkpoints stay exact), and the copy is made anew when
a weight of the model changes (e.g. between validations while training). On a CPU with bf16 units
the copy's matrices are also packed once into oneDNN's layout (:func:`decoding_copy`): F.linear in
bf16 reorders its weight at every call, which at the one to a few dozen rows of a decoding step
costs more than the product itself.
"""

import copy
import threading
import weakref
from typing import List

import torch

from mist_fairseq.models.fast_path import can_pack, pack_weight, weight_key

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {dtype: (key, copy)}
_LOCK = threading.Lock()


def decoding_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` in ``dtype``, in eval mode; its linear layers and output projection (the
    modules with a ``packed`` slot) hold their weights packed where :func:`can_pack` says so."""
    out = copy.deepcopy(model)
    out.to(dtype)
    out.eval()  # not chained: Fairseq's make_generation_fast_ (fairseq-generate) makes train() return None
    for m in out.modules():
        if "packed" in dir(m) and getattr(m, "packed") is None and can_pack(m.weight):
            m.packed = pack_weight(m.weight)
    return out


def in_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` itself (as it is) when its floating-point weights are ``dtype``, else its
    :func:`decoding_copy` in ``dtype``, kept for the next call while the model's weights are unchanged."""
    params = list(model.parameters())
    floats = [p for p in params if p.is_floating_point()]
    if not floats or floats[0].dtype == dtype:
        return model
    key = weight_key(params)
    with _LOCK:
        kept = _COPIES.setdefault(model, {})
        if dtype not in kept or kept[dtype][0] != key:
            kept[dtype] = (key, decoding_copy(model, dtype))
        return kept[dtype][1]


def _fp32_scores(hypos: List[List[dict]]) -> List[List[dict]]:
    """Scores as fp32 tensors, as an fp32 decoding returns them (fairseq-generate prints them)."""
    for beam in hypos:
        for h in beam:
            for name in ("score", "positional_scores"):
                if torch.is_tensor(h.get(name)) and h[name].is_floating_point():
                    h[name] = h[name].float()
    return hypos


class PrecisionGenerator:
    """A generator of :mod:`mist_fairseq.generators.modes` run on the models' copies in ``dtype``."""

    def __init__(self, generator, dtype: torch.dtype):
        self.generator, self.dtype = generator, dtype

    def __getattr__(self, name):  # the wrapped generator's attributes (e.g. symbols_to_strip_from_output)
        return getattr(self.__dict__["generator"], name)

    @torch.no_grad()
    def generate(self, models, sample, **kwargs) -> List[List[dict]]:
        return _fp32_scores(self.generator.generate([in_dtype(m, self.dtype) for m in models], sample, **kwargs))


def with_precision(generator, precision: str):
    """``generator`` itself for fp32, else wrapped to decode in ``precision``."""
    return generator if precision == "fp32" else PrecisionGenerator(generator, PRECISIONS[precision])
