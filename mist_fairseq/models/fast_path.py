"""The CPU fast path of training (``--cpu-fast-path``): bf16 matrix products with fp32 master
weights, and a cheaper dropout mask.

On a CPU with bf16 dot-product instructions (avx512_bf16, AMX) a bf16 matrix product runs several
times faster than an fp32 one (benchmarks.fast_path_pieces: the 30,522-word output projection of
800 positions, forward + backward, 2.2x on a 2-core AMD EPYC without AMX). ``torch.autocast`` gets little of
that at our training shapes because it also moves attention, whose bf16 backward is slow on CPU, to
bf16. Here only the linear layers change: inputs and weights are rounded to bf16 for the product
(oneDNN accumulates in fp32), the weights stay fp32 for the optimizer, and everything around the
products (attention, LayerNorm, softmax, the loss) stays fp32 -- except the feed-forward's inner
activation, which stays bf16 through its GELU (as autocast runs it): it is the layer's largest tensor,
and keeping it bf16 saves two fp32 round trips of it per layer.
The bias is rounded to bf16 and added inside the product (as autocast does): a separate fp32 add
would be one more pass over every activation.

Dropout: ``F.dropout`` draws one Bernoulli number per element, which on this CPU costs more than the
product next to it; :func:`fast_dropout` takes four 15-bit uniform numbers from each 64-bit random
word instead (2.7x faster in benchmarks.fast_path_pieces), so the drop probability is rounded to a multiple of 2^-15 (0.1 ->
0.100006) and the kept values are scaled by 1 / (1 - that), keeping the expectation exact.

Shapes: x (..., in), weight (out, in), bias (out,) -> (..., out).
"""

import contextlib
import functools
import threading
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=None)
def bf16_matmul_supported() -> bool:
    """True when this CPU runs bf16 matrix products natively (else they are emulated and slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_STEP = threading.local()  # .weights: the open step's bf16 copies, keyed by the weights they round


@contextlib.contextmanager
def step_weights():
    """Within this block (one training step's forward and backward: ``MistNARTask.train_step`` opens
    it), each weight is rounded to bf16 once, at its first product, and the step's later passes (the
    glancing draft, the graded pass, MIST's mixed pass, the backward) reuse that copy; the optimizer
    changes the weights only after the block. Outside it every product rounds its weights anew."""
    outer = getattr(_STEP, "weights", None)
    _STEP.weights = {}
    try:
        yield
    finally:
        _STEP.weights = outer


def weight_key(weights) -> tuple:
    """What identifies a bf16 copy within a step: each weight's identity, storage and version (an
    in-place change makes a new version, so a changed weight is rounded anew)."""
    return tuple((id(w), w.data_ptr(), w._version) for w in weights)


def bf16_weight(weights) -> torch.Tensor:
    """weights: a tuple of (out_i, in) tensors -> their concatenation along dim 0 in bf16, taken from
    the open step's copies where there is one (:func:`step_weights`)."""
    cache = getattr(_STEP, "weights", None)
    key = weight_key(weights)
    if cache is not None and key in cache:
        return cache[key]
    w16 = (weights[0] if len(weights) == 1 else torch.cat(weights)).detach().to(torch.bfloat16)
    if cache is not None:
        cache[key] = w16
    return w16


@functools.lru_cache(maxsize=None)
def amx_supported() -> bool:
    """True when this CPU has AMX tile units: there bf16 products run several times faster than with
    avx512_bf16 dot products alone (~9x fp32 for a 1024 x 384 x 1536 product, one thread)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


class _BF16Linear(torch.autograd.Function):
    """y = x @ cat(weights).T (+ bias), the product in bf16; x fp32 or bf16, y fp32 unless ``bf16_out``,
    which returns the product as bf16 (logits that the loss's log-softmax reads in fp32 without an
    fp32 copy of a (N, V) tensor; the feed-forward's inner activation, which stays bf16). Several
    weights (the attention's query, key and value) make one product over one cast of x."""

    @staticmethod
    def forward(ctx, x, bias, bf16_out, *weights):
        x16, w16 = x.to(torch.bfloat16), bf16_weight(weights)
        y = F.linear(x16, w16, None if bias is None else bias.to(torch.bfloat16))
        if not bf16_out:
            y = y.float()
        ctx.save_for_backward(x16, w16)
        ctx.x_dtype, ctx.b_dtype = x.dtype, None if bias is None else bias.dtype
        ctx.rows, ctx.w_dtypes = [w.size(0) for w in weights], [w.dtype for w in weights]
        return y

    @staticmethod
    def backward(ctx, grad):
        x16, w16 = ctx.saved_tensors
        g16 = grad.to(torch.bfloat16)
        grad_x = grad_b = None
        grad_ws = [None] * len(ctx.rows)
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(g16, w16).to(ctx.x_dtype)
        if any(ctx.needs_input_grad[3:]):
            # (out, N) @ (N, in): one product over all rows, fp32 accumulation inside oneDNN
            gw = torch.mm(g16.reshape(-1, g16.size(-1)).t(), x16.reshape(-1, x16.size(-1)))
            grad_ws = [g.to(dt) if need else None
                       for g, dt, need in zip(gw.split(ctx.rows), ctx.w_dtypes, ctx.needs_input_grad[3:])]
        if ctx.b_dtype is not None and ctx.needs_input_grad[1]:
            grad_b = column_sum(grad.reshape(-1, grad.size(-1))).to(ctx.b_dtype)
        return (grad_x, grad_b, None, *grad_ws)


def bf16_linear(x: torch.Tensor, weight, bias: Optional[torch.Tensor] = None,
                bf16_out: bool = False) -> torch.Tensor:
    """F.linear with the product in bf16 (see the module docstring); weight: a tensor, or a tuple of
    tensors that act as their concatenation along dim 0 (each gets its own gradient)."""
    weights = tuple(weight) if isinstance(weight, (tuple, list)) else (weight,)
    return _BF16Linear.apply(x, bias, bf16_out, *weights)


def fast_linear(x, weight, bias=None, enabled=False, bf16_out=False):
    """bf16_linear where it pays (enabled, on CPU, fp32 or already-bf16 inputs); F.linear everywhere
    else, so CUDA and Fairseq's own --fp16/--bf16 paths are untouched. weight: a tensor or a tuple
    (concatenated along dim 0)."""
    weights = tuple(weight) if isinstance(weight, (tuple, list)) else (weight,)
    if enabled and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) \
            and all(w.dtype == torch.float32 for w in weights):
        return bf16_linear(x, weights, bias, bf16_out)
    return F.linear(x, weights[0] if len(weights) == 1 else torch.cat(weights), bias)


def column_sum(x: torch.Tensor, rows: int = 0) -> torch.Tensor:
    """x (N, C) of any float dtype -> (C,) fp32 sum over rows. An fp32 x is summed at once; a bf16 x a
    block of rows at a time (``rows``, default ~2M elements a block): ``x.sum(0, dtype=torch.float32)``
    up-casts all of it first (for the output projection's (N, 30,522) gradient 3x slower than blocks,
    which stay in cache), while blocks of a narrow x would only add calls."""
    if x.dtype == torch.float32:
        return x.sum(0)
    rows = rows or max(64, (1 << 21) // max(1, x.size(-1)))
    out = torch.zeros(x.size(-1), dtype=torch.float32, device=x.device)
    for s in range(0, x.size(0), rows):
        out += x[s:s + rows].sum(0, dtype=torch.float32)
    return out


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with the mask cut from 64-bit random words (module docstring); x any shape."""
    if p <= 0:
        return x
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
    u = words.view(torch.int16)[:n].view(x.shape) & 0x7FFF  # four uniform 15-bit numbers per word
    threshold = round(p * 32768)
    keep = (u >= threshold).to(x.dtype).mul_(32768.0 / (32768 - threshold))
    return x * keep


class Dropout(nn.Dropout):
    """nn.Dropout that uses :func:`fast_dropout` while ``self.fast`` is set (CPU, fp32)."""

    fast = False

    def forward(self, x):
        if self.fast and self.training and self.p > 0 and x.device.type == "cpu" and x.dtype == torch.float32:
            return fast_dropout(x, self.p)
        return super().forward(x)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (..., in) bf16 times a weight packed by :func:`pack_weight` (+ bias) -> (..., out) bf16."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class Int8Weight(NamedTuple):
    """A weight-only int8 matrix of an int8 decoding copy (``--decode-precision int8``):
    weight ~= q * scale[:, None]. q: (out, in) int8; scale: (out,) bf16, one per output channel."""

    q: torch.Tensor
    scale: torch.Tensor


def can_quantize(weight: torch.Tensor) -> bool:
    """Whether :func:`int8_linear` can multiply by this weight: a CPU matrix whose input size is a
    multiple of 8 (torch's weight-only int8 kernel needs that; every BERT size is)."""
    return (weight.dim() == 2 and weight.device.type == "cpu" and weight.size(1) % 8 == 0
            and hasattr(torch, "_weight_int8pack_mm"))


def quantize_int8(weight: torch.Tensor) -> Int8Weight:
    """(out, in) float -> its :class:`Int8Weight`: each output channel scaled so that its largest
    magnitude is 127 (symmetric; the scale rounded to bf16 first, q rounded against that scale)."""
    w = weight.detach().float()
    scale = (w.abs().amax(1) / 127.0).clamp(min=1e-12).to(torch.bfloat16)
    q = torch.round(w / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return Int8Weight(q.contiguous(), scale)


def int8_linear(x: torch.Tensor, w: Int8Weight, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (..., in) of any float dtype -> (..., out) in x's dtype: x rounded to bf16 times the int8
    matrix, each output channel scaled, + bias. torch's weight-only int8 kernel reads a quarter of
    fp32's weight bytes (a decoding step at one to a few rows is bound by those reads) and computes
    every row on its own, so a sentence's result does not depend on the batch around it (unlike
    dynamic quantization, whose activation scale spans the batch)."""
    rows = x.reshape(-1, x.size(-1)).to(torch.bfloat16).contiguous()
    y = torch._weight_int8pack_mm(rows, w.q, w.scale)  # bf16
    # the bias add returns x's dtype (type promotion): one op instead of a cast and an add
    y = y.to(x.dtype) if bias is None else torch.add(bias.to(x.dtype), y)
    return y.view(*x.shape[:-1], y.size(-1))


def packed_product(module: nn.Module, x: torch.Tensor, rows: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """``module``'s product of x (+ its bias) through the weight a decoding copy
    (:mod:`mist_fairseq.generators.precision`) put in its ``packed`` slot: the int8 matrix of an int8
    copy, or the packed bf16 matrix of a bf16 copy given bf16 input. None where there is none (no
    slot set, training, or an fp32 input to a bf16 copy): the caller multiplies as usual. rows: (C,)
    output rows to compute (an output shortlist); only an int8 matrix can be cut so (None otherwise)."""
    packed = module.packed
    if packed is None or module.training:
        return None
    if isinstance(packed, Int8Weight):
        if rows is not None:
            cut = Int8Weight(packed.q.index_select(0, rows), packed.scale.index_select(0, rows))
            return int8_linear(x, cut, module.bias.index_select(0, rows))
        return int8_linear(x, packed, module.bias)
    if rows is not None:
        return None
    if x.dtype == torch.bfloat16:
        return packed_linear(x, packed, module.bias)
    return None


def can_pack(weight: torch.Tensor) -> bool:
    """Whether oneDNN can pack this weight for inference: a bf16 CPU matrix on a CPU with bf16 units."""
    return (weight.dtype == torch.bfloat16 and weight.dim() == 2 and weight.device.type == "cpu"
            and bf16_matmul_supported() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) bf16 -> the same matrix in oneDNN's blocked layout for :func:`packed_linear`:
    a decoding pass reads it as laid out, where F.linear in bf16 reorders the weight at every call
    (at one to a few rows the reorder costs more than the product)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) whose product runs in bf16 while
    ``self.bf16`` is set and the module is training, and through ``self.packed`` (a decoding copy's
    packed bf16 or int8 weight, :mod:`mist_fairseq.generators.precision`) in eval mode where set."""

    bf16 = False
    packed = None  # a packed bf16 tensor or an Int8Weight (packed_product)

    def forward(self, x):
        y = packed_product(self, x)
        if y is not None:
            return y
        return fast_linear(x, self.weight, self.bias, enabled=self.bf16 and self.training)
