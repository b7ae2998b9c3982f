"""The chunked vocabulary reductions equal torch's one-shot ones, for chunk sizes that do and do not
divide the rows, fp32 and bf16 logits, and leave the logits untouched."""

import pytest
import torch

from mist_fairseq.models.vocab_ops import choose_rows, row_logsumexp


@pytest.mark.parametrize("chunk", [1, 3, 32, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_logsumexp_equals_torch(chunk, dtype):
    torch.manual_seed(0)
    x = (torch.randn(37, 501) * 8).to(dtype)
    out = row_logsumexp(x, chunk)
    assert out.dtype == torch.float32 and out.shape == (37,)
    assert torch.allclose(out, x.float().logsumexp(-1), atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 32])
def test_choose_rows_equals_the_log_softmax_reference(chunk):
    torch.manual_seed(1)
    x = torch.randn(23, 300) * 6
    x[:, 7] += 20  # token 7 would win everywhere if it were not banned
    before = x.clone()
    banned = torch.tensor([0, 7])
    best, tokens, keep_lp = choose_rows(x, banned, keep=2, chunk=chunk)
    lp = x.log_softmax(-1)
    ref = lp.index_fill(-1, banned, float("-inf"))
    assert torch.equal(tokens, ref.argmax(-1))
    assert not tokens.eq(7).any()
    assert torch.allclose(best, ref.max(-1).values, atol=1e-5)
    assert torch.allclose(keep_lp, lp[:, 2], atol=1e-5)
    assert torch.equal(x, before)  # the caller's logits keep their values
