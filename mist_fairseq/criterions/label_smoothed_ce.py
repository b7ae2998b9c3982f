"""Label-smoothed cross-entropy over a large vocabulary in row chunks, fp32 inside, any logit dtype.

The loss of Fairseq's ``nat_loss`` (``(1 - ls) * nll - ls * mean(log p)``) computed from logits
z (N, V) without materialising log p: the forward keeps one fp32 value per row (log-sum-exp), the
backward writes d loss / dz = (softmax(z) - (1 - ls) * onehot(target) - ls / V) / N straight into
z's dtype. Chunks of rows are up-cast to fp32 one at a time, so the fp32 temporaries stay in cache.
On the CPU fast path (bf16 logits of 800 x 30,522) this is 2.4x faster than log_softmax + nll_loss +
mean with their backward passes over fp32 logits (benchmarks.fast_path_pieces), with the same
value to ~1e-7.
"""

from typing import Tuple

import torch

CHUNK_ROWS = 16  # 16 x 30,522 fp32 = 2 MB: one core's L2 on the machines measured


class _LabelSmoothedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, label_smoothing):
        N = logits.size(0)
        lse = logits.new_empty(N, dtype=torch.float32)
        picked = torch.empty_like(lse)
        mean = torch.empty_like(lse)
        for s in range(0, N, CHUNK_ROWS):
            z = logits[s:s + CHUNK_ROWS].float()
            lse[s:s + CHUNK_ROWS] = torch.logsumexp(z, -1)
            picked[s:s + CHUNK_ROWS] = z.gather(1, target[s:s + CHUNK_ROWS, None]).squeeze(1)
            mean[s:s + CHUNK_ROWS] = z.mean(-1)
        nll = (lse - picked).mean()
        loss = nll * (1 - label_smoothing) + (lse - mean).mean() * label_smoothing
        ctx.save_for_backward(logits, target, lse)
        ctx.label_smoothing = label_smoothing
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, unused_grad_nll):
        logits, target, lse = ctx.saved_tensors
        N, V = logits.shape
        ls = ctx.label_smoothing
        grad = torch.empty_like(logits)
        scale = grad_loss.float() / N
        for s in range(0, N, CHUNK_ROWS):
            p = (logits[s:s + CHUNK_ROWS].float() - lse[s:s + CHUNK_ROWS, None]).exp_()  # softmax
            if ls > 0:
                p.sub_(ls / V)
            rows = torch.arange(p.size(0), device=p.device)
            p[rows, target[s:s + CHUNK_ROWS]] -= 1 - ls
            grad[s:s + CHUNK_ROWS] = p.mul_(scale)
        return grad, None, None


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """logits (N, V) of any float dtype, target (N,) long -> (loss, nll), fp32 scalars, both means
    over the N rows; only ``loss`` carries a gradient."""
    if logits.size(0) == 0:
        zero = logits.float().sum() * 0.0
        return zero, zero.detach()
    return _LabelSmoothedCE.apply(logits, target, float(label_smoothing))
