"""The CPU fast path piece by piece: each replacement timed against what it replaces, one run.

    python -m benchmarks.fast_path_pieces [--threads 2] [--reps 10] [--out docs/fast_path_pieces.md]
    python -m benchmarks.fast_path_pieces --quick      # small shapes: checks that it runs (tests)

Shapes are those of a MIST step on Quora at batch 64 (about 800 scored target positions, a
30,522-word vocabulary, hidden 384, 12 heads, mixed-source length 46). Each row times the fp32
operation and its fast-path replacement alternately (median of --reps after one warm-up each).
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mist_fairseq.criterions.ctc_loss import gathered_ctc_nll
from mist_fairseq.criterions.label_smoothed_ce import label_smoothed_nll
from mist_fairseq.models.fast_path import bf16_linear, column_sum, fast_dropout
from benchmarks.report_io import platform_line, timed_pair, write_atomic


def pieces(N, V, H, B, L, heads, reps):
    torch.manual_seed(0)
    x = torch.randn(N, H, requires_grad=True)
    w = torch.randn(V, H, requires_grad=True)
    g = torch.randn(N, V)
    rows = []

    def proj(fn):
        def run():
            x.grad = w.grad = None
            fn(x, w).backward(g)
        return run
    rows.append((f"output projection {N} x {H} -> {V}, forward + backward",
                 *timed_pair(proj(lambda a, b: F.linear(a, b)), proj(lambda a, b: bf16_linear(a, b)), reps)))

    logits = (3 * torch.randn(N, V))
    target = torch.randint(0, V, (N,))

    def ref_loss():
        z = logits.clone().requires_grad_()
        lp = F.log_softmax(z, -1)
        ((1 - 0.1) * F.nll_loss(lp, target) - 0.1 * lp.mean()).backward()

    def chunked():
        z = logits.bfloat16().requires_grad_()
        label_smoothed_nll(z, target, 0.1)[0].backward()
    rows.append((f"label-smoothed loss over {N} x {V} logits, forward + backward (fp32 logits vs bf16)",
                 *timed_pair(ref_loss, chunked, reps)))

    # CTC over 2 x source slots (B sources of L / 2 tokens, targets of L / 4 - 1 tokens): full log-softmax +
    # torch's ctc_loss vs the gathered columns (criterions/ctc_loss.py); the fast path's bf16 logits for both
    T, U = N // B, max(1, N // B // 2 - 1)
    slot_logits = (3 * torch.randn(B, T, V)).bfloat16()
    ctc_tgt = torch.randint(2, V, (B, U))
    n_slots, lengths = torch.full((B,), T), torch.full((B,), U)

    def ctc_ref():
        z = slot_logits.clone().requires_grad_()
        lp = z.float().log_softmax(-1).transpose(0, 1)
        F.ctc_loss(lp, ctc_tgt, n_slots, lengths, blank=1, reduction="none", zero_infinity=True).sum().backward()

    def ctc_gathered():
        z = slot_logits.clone().requires_grad_()
        gathered_ctc_nll(z, n_slots, ctc_tgt, lengths, 1).sum().backward()
    rows.append((f"CTC loss over {B} x {T} slots x {V} (bf16 logits), forward + backward "
                 "(log-softmax + ctc_loss vs gathered columns)", *timed_pair(ctc_ref, ctc_gathered, reps)))

    g16 = g.bfloat16()
    rows.append((f"output bias gradient: column sums of the {N} x {V} bf16 gradient (one up-cast vs blocks)",
                 *timed_pair(lambda: g16.sum(0, dtype=torch.float32), lambda: column_sum(g16), reps)))

    a = torch.randn(B, L, H)
    rows.append((f"dropout 0.1 of {B} x {L} x {H}", *timed_pair(lambda: F.dropout(a, 0.1, True),
                                                             lambda: fast_dropout(a, 0.1), reps)))

    q, k, v = (torch.randn(B, heads, L, H // heads, requires_grad=True) for _ in range(3))
    mask = torch.rand(B, 1, 1, L) > 0.1
    go = torch.randn(B, heads, L, H // heads)

    def attn(backend):
        def run():
            for t in (q, k, v):
                t.grad = None
            if backend is None:
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(go)
            else:
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(go)
        return run
    rows.append((f"attention {B} x {heads} heads x {L} x {L}, forward + backward (flash vs math kernel, fp32)",
                 *timed_pair(attn(None), attn(SDPBackend.MATH), reps)))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default=os.path.join(REPO, "docs", "fast_path_pieces.md"))
    p.add_argument("--quick", action="store_true", help="small shapes, 2 reps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = dict(N=32, V=1000, H=64, B=4, L=10, heads=4) if args.quick else dict(N=800, V=30522, H=384, B=64, L=46, heads=12)
    rows = pieces(**shape, reps=2 if args.quick else args.reps)
    lines = ["# CPU fast path, piece by piece", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPU cores "
             f"({platform_line()}), {args.threads} threads, one run. Command: "
             f"`python -m benchmarks.fast_path_pieces {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| piece | fp32 (ms) | fast path (ms) | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {s:.1f} | {f:.1f} | {s / f:.1f}x |" for name, s, f in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    write_atomic(args.out, text)


if __name__ == "__main__":
    main()
