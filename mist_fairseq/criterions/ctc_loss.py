"""CTC's negative log-likelihood over a large vocabulary without its (B, T, V) log-probabilities.

CTC's forward-backward recursion reads, at every slot, the log-probabilities of the blank and of the
target's own tokens only. So the loss needs, per slot, the row's log-sum-exp and the logits of at most
U + 1 columns (U the longest target): those columns are gathered into a small per-row class set
(class 0 the blank, class 1 + j the token at target position j), the target is rewritten in class ids
(a repeated token takes the class of its first occurrence, so "a a" still needs a blank between),
and torch's ``ctc_loss`` runs over (B, T, U + 1) instead of (B, T, V). The value is the same sum over
alignments.

The gradient with respect to the logits z of slot t is softmax(z) * c + d, where d holds, in the gathered
columns, the true gradient with respect to their log-probabilities (-alpha*beta / (y * p), CTC's
occupation probabilities) and c = -sum(d). torch's ``ctc_loss`` backward returns d + exp(log-prob)
(it assumes a log-softmax follows), so d is that minus exp(log-prob). The backward writes the gradient
once, in row chunks, straight into the logits' dtype. On the CPU fast path (bf16 logits) this replaces
an fp32 log-softmax, its transpose, torch's (T, B, V) gradient and the log-softmax backward: several
full passes over the largest tensors of a CTC step (timed by ``python -m benchmarks.fast_path_pieces``).

Shapes: B batch, T slots, U gold target length (final [SEP] not counted), V vocabulary, K = U + 1.
"""

from typing import Tuple

import torch
import torch.nn.functional as F

from mist_fairseq.models.vocab_ops import row_logsumexp, rows_per_chunk


def class_targets(targets: torch.Tensor, lengths: torch.Tensor, blank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """targets (B, U) token ids, padded past lengths (B,) -> (columns (B, K): the token id of each class,
    class 0 the blank, class 1 + j the token at position j (the blank past the length); labels (B, U): each
    position's class, the class of the token's first occurrence in its row, 1 past the length)."""
    B, U = targets.shape
    inside = torch.arange(U, device=targets.device)[None, :] < lengths[:, None]
    same = targets[:, :, None].eq(targets[:, None, :]) & inside[:, None, :]  # (B, U, U)
    first = same.to(torch.uint8).argmax(-1)  # the first position holding the same token
    labels = torch.where(inside, first + 1, torch.ones_like(first))
    columns = torch.cat([targets.new_full((B, 1), blank), targets.masked_fill(~inside, blank)], 1)
    return columns, labels


class _GatheredCTC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, columns, labels, n_slots, lengths):
        B, T, V = logits.shape
        K = columns.size(1)
        lse = row_logsumexp(logits.reshape(B * T, V)).view(B, T)
        cols = columns[:, None, :].expand(B, T, K)
        sub = logits.gather(2, cols).float() - lse[..., None]  # (B, T, K) log-probs of the classes
        with torch.enable_grad():
            leaf = sub.detach().requires_grad_()
            nll = F.ctc_loss(leaf.transpose(0, 1), labels, n_slots, lengths, blank=0, reduction="none",
                             zero_infinity=False)
            found = torch.isfinite(nll)  # False: the target has no alignment onto its slots
            unit = None
            if ctx.needs_input_grad[0]:
                (g,) = torch.autograd.grad(nll.masked_fill(~found, 0.0).sum(), leaf)
                # torch's gradient is d + exp(log-prob) on real slots, 0 past them (module docstring); keep d
                real = torch.arange(T, device=logits.device)[None, :] < n_slots[:, None]
                unit = torch.where((found[:, None] & real)[..., None], g - sub.exp(), torch.zeros_like(g))
        ctx.save_for_backward(logits, columns, lse, unit)
        return nll.detach().masked_fill(~found, 0.0)

    @staticmethod
    def backward(ctx, grad_nll):
        logits, columns, lse, unit = ctx.saved_tensors
        B, T, V = logits.shape
        K = columns.size(1)
        d = (unit * grad_nll.float()[:, None, None]).reshape(B * T, K)
        c = -d.sum(-1)  # (B * T,)
        cols = columns[:, None, :].expand(B, T, K).reshape(B * T, K)
        flat = logits.reshape(B * T, V)
        lse = lse.reshape(B * T)
        grad = torch.empty_like(flat)
        step = rows_per_chunk(flat)
        for s in range(0, B * T, step):
            p = (flat[s:s + step].float() - lse[s:s + step, None]).exp_().mul_(c[s:s + step, None])
            grad[s:s + step] = p.scatter_add_(1, cols[s:s + step], d[s:s + step])
        return grad.view(B, T, V), None, None, None, None


def gathered_ctc_nll(logits: torch.Tensor, n_slots: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                     blank: int) -> torch.Tensor:
    """logits (B, T, V) of any float dtype, n_slots (B,) real slots, targets (B, U) padded, lengths (B,) ->
    (B,) fp32 -log p(target | slots) summed over alignments, 0 (and no gradient) for a row without an
    alignment: ``ctc_loss(log_softmax(logits), zero_infinity=True)`` (module docstring)."""
    columns, labels = class_targets(targets, lengths, blank)
    return _GatheredCTC.apply(logits, columns, labels, n_slots, lengths)
