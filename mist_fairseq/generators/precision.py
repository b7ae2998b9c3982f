"""Decoding precision (``--decode-precision fp32|bf16|int8``, the same name in ``MistModel.generate``
and the service), for every decoding pass -- the model's and an AR rescorer's:

- ``fp32`` (the default) decodes the model as loaded.
- ``bf16``: bf16 weights and activations. On CPUs with bf16 matrix units (avx512_bf16, AMX) and on
  GPUs the products run faster and the vocabulary projection reads half the bytes.
- ``int8`` (CPU): weight-only int8 -- every linear layer and the vocabulary projection multiply by an
  int8 matrix with one scale per output channel, activations rounded to bf16 for the product and
  fp32 everywhere else (:func:`mist_fairseq.models.fast_path.int8_linear`). A decoding step at one to
  a few dozen rows (batch-1 passes, AR and semi-NAR steps) is bound by reading the weights, and int8
  reads a quarter of fp32's bytes, on any x86 CPU; at a hundred rows or more (batches of the single
  pass, an AR rescorer's pass over several candidates) fp32's products are faster. Each row is computed on its own, so a
  sentence decodes the same alone or in any batch.

A bf16 or int8 pass runs on a copy of the model, made at the first call and kept: the loaded model
is left as it is (fp32 calls, training and checkpoints stay exact), and the copy is made anew when
a weight of the model changes (e.g. between validations while training). The copy's matrices are
prepared once (:func:`decoding_copy`): quantized for int8; for bf16 on a CPU with bf16 units, packed
into oneDNN's layout (F.linear in bf16 reorders its weight at every call, which at the one to a few
dozen rows of a decoding step costs more than the product itself).
"""

import copy
import threading
import weakref
from typing import List, NamedTuple

import torch

from mist_fairseq.models.fast_path import can_pack, can_quantize, pack_weight, quantize_int8, weight_key


class Precision(NamedTuple):
    dtype: torch.dtype  # of the copy's floating-point weights and activations
    int8: bool  # its matrices weight-only int8


PRECISIONS = {"fp32": Precision(torch.float32, False), "bf16": Precision(torch.bfloat16, False),
              "int8": Precision(torch.float32, True)}
_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {(dtype, int8): (key, copy)}
_LOCK = threading.Lock()


def decoding_copy(model: torch.nn.Module, dtype: torch.dtype, int8: bool = False) -> torch.nn.Module:
    """A copy of ``model`` in ``dtype``, in eval mode; its linear layers and output projection (the
    modules with a ``packed`` slot) hold their weights as int8 matrices (``int8``; CPU models only)
    or else packed where :func:`can_pack` says so."""
    if int8 and any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("--decode-precision int8 runs on CPU (weight-only int8 products); on a GPU decode "
                         "with --decode-precision bf16 or Fairseq's --fp16")
    out = copy.deepcopy(model)
    out.to(dtype)
    out.eval()  # not chained: Fairseq's make_generation_fast_ (fairseq-generate) makes train() return None
    for m in out.modules():
        if "packed" not in dir(m):
            continue
        m.packed = None  # a copy of a copy is prepared anew for its own precision
        if int8 and can_quantize(m.weight):
            m.packed = quantize_int8(m.weight)
        elif not int8 and can_pack(m.weight):
            m.packed = pack_weight(m.weight)
    for m in out.modules():
        if hasattr(m, "fuse_qkv_int8"):
            m.qkv = None
            if int8:
                m.fuse_qkv_int8()
    out.int8_decoding = int8  # read by an AR rescorer, which decodes in its decoder's precision
    return out


def is_int8_copy(model: torch.nn.Module) -> bool:
    """Whether ``model`` is an int8 :func:`decoding_copy`."""
    return bool(getattr(model, "int8_decoding", False))


def in_dtype(model: torch.nn.Module, dtype: torch.dtype, int8: bool = False) -> torch.nn.Module:
    """``model`` itself (as it is) when its floating-point weights are ``dtype`` and no int8 is asked
    for (or it is such a copy already), else its :func:`decoding_copy`, kept for the next call while
    the model's weights are unchanged."""
    params = list(model.parameters())
    floats = [p for p in params if p.is_floating_point()]
    if not floats or (floats[0].dtype == dtype and int8 == is_int8_copy(model)):
        return model
    key, kind = weight_key(params), (dtype, int8)
    with _LOCK:
        kept = _COPIES.setdefault(model, {})
        if kind not in kept or kept[kind][0] != key:
            kept[kind] = (key, decoding_copy(model, dtype, int8))
        return kept[kind][1]


def _fp32_scores(hypos: List[List[dict]]) -> List[List[dict]]:
    """Scores as fp32 tensors, as an fp32 decoding returns them (fairseq-generate prints them)."""
    for beam in hypos:
        for h in beam:
            for name in ("score", "positional_scores"):
                if torch.is_tensor(h.get(name)) and h[name].is_floating_point():
                    h[name] = h[name].float()
    return hypos


class PrecisionGenerator:
    """A generator of :mod:`mist_fairseq.generators.modes` run on the models' copies in ``precision``."""

    def __init__(self, generator, precision: Precision):
        self.generator, self.precision = generator, precision

    def __getattr__(self, name):  # the wrapped generator's attributes (e.g. symbols_to_strip_from_output)
        return getattr(self.__dict__["generator"], name)

    @torch.no_grad()
    def generate(self, models, sample, **kwargs) -> List[List[dict]]:
        p = self.precision
        return _fp32_scores(self.generator.generate([in_dtype(m, p.dtype, p.int8) for m in models], sample, **kwargs))


def with_precision(generator, precision: str):
    """``generator`` itself for fp32, else wrapped to decode in ``precision``."""
    return generator if precision == "fp32" else PrecisionGenerator(generator, PRECISIONS[precision])
