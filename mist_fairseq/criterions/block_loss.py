"""The two-stream (semi-)autoregressive term of ``--criterion mist`` (BANG-style) and the JANUS-style
agreement term between it and the NAR pass.

- :func:`block_entry`: one block size b is drawn per batch from ``--block-sizes``; every real target
  position t is predicted from the source, the gold tokens before its block and [MASK]s over the
  block (:meth:`MistNARModel.block_logits`; b = 1 is teacher-forced AR, b >= T the NAR pass).
- :func:`symmetric_kl`: JANUS (Liang et al., EMNLP 2022) ties the AR and NAR distributions with a
  bidirectional KL through an auxiliary distribution. Here the simplification is the KL between the
  block stream's distribution (AR or semi-NAR, given the gold prefix) and the NAR first pass's
  (over the glanced Y_M, which already mixes gold tokens and [MASK]s) at the same target positions,
  both directions, gradients into both: the NAR pass learns from a distribution that saw the gold
  prefix, and the AR one is pulled towards what a parallel pass can predict.
"""

from typing import List

import torch
import torch.nn.functional as F

from mist_fairseq.models.shortlist import compact, index_of


def parse_block_sizes(text: str) -> List[int]:
    try:
        sizes = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--block-sizes {text!r}: give comma-separated integers >= 1, e.g. '1,2,4'")
    return sizes


def draw_block(sizes: List[int], training: bool) -> int:
    """One block size per batch: drawn uniformly while training (Fairseq seeds torch per update),
    the first one at validation so the valid loss is comparable across checkpoints."""
    if not training or len(sizes) == 1:
        return sizes[0]
    return sizes[int(torch.randint(len(sizes), (1,)))]


def block_entry(model, state, gold, real, block: int, label_smoothing: float, factor: float):
    """The named-loss entry of the two-stream pass and its logits at the real positions (N, V): V the
    columns of the state's output shortlist where it has one (:mod:`mist_fairseq.models.shortlist`)."""
    logits = model.block_logits(state, gold, block, real, **compact(state))
    entry = {"out": logits, "tgt": index_of(state.vocab, gold[real]), "ls": label_smoothing, "factor": factor}
    return entry, logits


def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b: (N, V) logits at the same N positions -> mean over positions of
    (KL(p_a || p_b) + KL(p_b || p_a)) / 2, in fp32."""
    la, lb = F.log_softmax(a.float(), -1), F.log_softmax(b.float(), -1)
    kl = ((la.exp() - lb.exp()) * (la - lb)).sum(-1) / 2  # KL(a||b) + KL(b||a) = sum (pa - pb)(la - lb)
    return kl.mean()
