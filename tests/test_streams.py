"""Unit tests of the two-stream attention pattern (NAR / semi-NAR / AR from one set of weights):
what each predicting row may see, and that the incremental decoding steps reproduce the training pass."""

import pytest
import torch

from mist_fairseq.models import streams


def gold_batch(d, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    words = torch.arange(8, len(d))
    out = torch.full((len(lengths), max(lengths)), d.pad())
    for i, n in enumerate(lengths):
        out[i, : n - 1] = words[torch.randint(len(words), (n - 1,), generator=g)]
        out[i, n - 1] = d.eos()
    return out


@pytest.fixture
def src(small_dict):
    return gold_batch(small_dict, [6, 9, 4], seed=1)


def test_training_mask_pattern():
    m = streams.training_row_mask(5, 2)
    main, pred = slice(0, 5), slice(5, 10)
    assert torch.equal(m[main, main], torch.ones(5, 5, dtype=torch.bool).tril())
    assert not m[main, pred].any()  # the main stream never sees a [MASK]
    # predicting row 3 (block [2, 4)): main rows 0, 1 and predicting rows 2, 3
    assert m[8, :5].tolist() == [True, True, False, False, False]
    assert m[8, 5:].tolist() == [False, False, True, True, False]
    # block 1 = AR: predicting row t sees main rows < t and only itself
    ar = streams.training_row_mask(4, 1)
    assert torch.equal(ar[4:, :4], torch.ones(4, 4, dtype=torch.bool).tril(-1))
    assert torch.equal(ar[4:, 4:], torch.eye(4, dtype=torch.bool))


def test_whole_block_is_the_nar_pass(tiny_model, small_dict, src):
    """The two-stream pass with one block spanning the target equals decode_target over [MASK]s."""
    gold = gold_batch(small_dict, [5, 7, 3], seed=2)
    state = tiny_model.encode_source(src)
    h = streams.block_states(tiny_model.encoder, state, gold, gold.size(1), small_dict.mask(), small_dict.pad())
    masks = gold.masked_fill(gold.ne(small_dict.pad()), small_dict.mask())
    ref = tiny_model.encoder.decode_target(state, masks)
    real = gold.ne(small_dict.pad())
    assert torch.allclose(h[real], ref[real], atol=1e-5)


@pytest.mark.parametrize("block", [1, 2, 3])
def test_no_row_sees_its_own_block_or_the_future(tiny_model, small_dict, src, block):
    """Changing gold tokens at positions >= the start of row t's block leaves row t unchanged;
    changing one before that block changes it (so the test fails if the mask shows everything or nothing)."""
    gold = gold_batch(small_dict, [7, 7, 7], seed=3)
    state = tiny_model.encode_source(src)
    base = tiny_model.block_logits(state, gold, block)
    for t in range(1, 6):
        start = (t // block) * block
        later = gold.clone()
        later[:, start:6] = small_dict.index("w3")  # the block of t and everything after it
        assert torch.allclose(tiny_model.block_logits(state, later, block)[:, t], base[:, t], atol=1e-5), t
        if start > 0:
            earlier = gold.clone()
            earlier[:, start - 1] = small_dict.index("w5") if gold[0, start - 1] != small_dict.index("w5") else small_dict.index("w6")
            assert not torch.allclose(tiny_model.block_logits(state, earlier, block)[:, t], base[:, t], atol=1e-4), t


@pytest.mark.parametrize("block", [1, 2, 3])
def test_incremental_steps_reproduce_the_training_pass(tiny_model, small_dict, src, block):
    """Decoding step by step (each block's gold tokens fed back into the main-stream cache) gives the
    training pass's logits at every real position: the cache is exact."""
    gold = gold_batch(small_dict, [6, 8, 3], seed=4)
    real = gold.ne(small_dict.pad())
    state = tiny_model.encode_source(src)
    ref = tiny_model.block_logits(state, gold, block)
    cache, prev, got = None, gold[:, :0], []
    for s in range(0, gold.size(1), block):
        blk = gold[:, s: s + block]
        logits, cache = tiny_model.decode_step(state, cache, prev, blk.masked_fill(blk.ne(small_dict.pad()), small_dict.mask()))
        got.append(logits)
        prev = blk
    got = torch.cat(got, 1)
    assert cache.width == gold.size(1) - gold[:, s:].size(1)
    assert torch.allclose(got[real], ref[real], atol=1e-5)


def test_cache_reorders_with_the_beam(tiny_model, small_dict, src):
    gold = gold_batch(small_dict, [4, 4, 4], seed=5)
    state = tiny_model.encode_source(src)
    masks = torch.full((3, 1), small_dict.mask())
    _, cache = tiny_model.decode_step(state, None, gold[:, :0], masks)
    _, cache = tiny_model.decode_step(state, cache, gold[:, :1], masks)
    order = torch.tensor([2, 0, 0])
    a, _ = tiny_model.decode_step(state.index_select(order), cache.index_select(order), gold[order, 1:2], masks)
    b, _ = tiny_model.decode_step(state, cache, gold[:, 1:2], masks)
    assert torch.allclose(a, b[order], atol=1e-6)
