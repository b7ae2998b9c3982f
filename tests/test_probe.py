"""Unit tests of ``mist_fairseq.probe``: the four pseudo targets it mixes in, its counts and percentages."""

import math

import torch

from mist_fairseq.generators.mist_generator import MistGenerator
from mist_fairseq.probe import CONDITIONS, finish, probe_batch, shuffle_partners
from test_criterion import toy_batch


def test_shuffle_partners_prefer_same_length_and_never_self():
    lengths = torch.tensor([3, 5, 3, 7, 3, 5, 4])
    p = shuffle_partners(lengths)
    idx = torch.arange(len(lengths))
    assert not (p == idx).any()
    same = lengths[p] == lengths
    assert same[[0, 1, 2, 4, 5]].all()  # lengths 3 and 5 occur more than once
    assert not same[[3, 6]].any()       # lengths 7 and 4 occur once: a neighbour in length order
    assert torch.equal(shuffle_partners(torch.tensor([4])), torch.tensor([0]))


def test_probe_mixes_in_own_gold_shuffled_and_masked_drafts(tiny_model, small_dict):
    src, tgt = toy_batch(small_dict, n=12, seed=3)
    model = tiny_model.eval()
    gen = MistGenerator(small_dict, dedup=False)
    seen = []
    orig = model.mix_source
    model.mix_source = lambda pseudo, s: seen.append(pseudo.clone()) or orig(pseudo, s)
    try:
        torch.manual_seed(0)
        c, toks = probe_batch(model, src, tgt, 0.5, gen)
    finally:
        del model.mix_source
    real = tgt.ne(small_dict.pad())
    draft = toks["draft"]
    own, gold, shuffled, masked = seen[:4]
    assert torch.equal(own, draft) and torch.equal(gold, tgt)
    assert torch.equal(shuffled, draft[shuffle_partners(real.sum(1))])
    assert torch.equal(masked[real], torch.full_like(masked[real], small_dict.mask()))
    for name in CONDITIONS:
        assert c[f"{name}_correct"] == int(((toks[name] == tgt) & real).sum())
    # own-Y_p counts split by whether the draft was right
    right = (draft == tgt) & real
    assert c["pseudo_right"] == int(right.sum())
    assert c["fixed"] + c["kept_right"] == c["own_correct"]
    assert c["kept_right"] <= c["pseudo_right"] and c["fixed"] <= c["tokens"] - c["pseudo_right"]
    assert c["copied"] == int(((toks["own"] == draft) & real).sum())
    # glancing reveals floor(0.5 * Hamming(draft)) gold tokens per row: the rest are scored
    hamming = (draft.ne(tgt) & real).sum(1)
    assert c["scored"] == c["tokens"] - int(torch.floor(hamming * 0.5).sum())
    assert c["glanced_plain_correct"] <= c["scored"] and c["glanced_mixed_nll_sum"] > 0
    assert probe_batch(model, src, tgt, 0.0, gen)[0]["scored"] == c["tokens"]


def test_finish_turns_counts_into_percentages():
    c = dict(tokens=10, scored=4, pseudo_right=6, own_correct=7, gold_correct=10, shuffled_correct=3,
             masked_correct=4, fixed=1, kept_right=6, copied=8, glanced_plain_correct=1,
             glanced_mixed_correct=3, glanced_plain_nll_sum=8.0, glanced_mixed_nll_sum=2.0)
    r = finish(c)
    assert (r["first_pass_acc"], r["mixed_acc_own"], r["mixed_acc_gold"]) == (60.0, 70.0, 100.0)
    assert (r["oracle_gap_acc"], r["shuffled_drop_acc"]) == (30.0, 40.0)
    assert (r["fix_rate"], r["keep_rate"], r["copy_rate"]) == (25.0, 100.0, 80.0)
    assert (r["glanced_plain_acc"], r["glanced_mixed_acc"], r["glanced_plain_nll"], r["glanced_mixed_nll"]) == \
        (25.0, 75.0, 2.0, 0.5)
    assert math.isnan(finish(dict(c, pseudo_right=10, fixed=0))["fix_rate"])
