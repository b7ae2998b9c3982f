"""Unit tests of ``mist_fairseq.probe``: its counts are consistent with each other and with glancing."""

import math

import torch

from mist_fairseq.probe import finish, probe_batch
from test_criterion import toy_batch


def test_probe_counts_are_consistent(tiny_model, small_dict):
    src, tgt = toy_batch(small_dict, n=12, seed=3)
    torch.manual_seed(0)
    c = probe_batch(tiny_model.eval(), src, tgt, glat_ratio=0.5)
    real = tgt.ne(small_dict.pad())
    assert c["tokens"] == int(real.sum())
    assert c["pseudo_right"] <= c["tokens"]
    # accuracy split by where the pseudo target was right adds up to the overall mixed accuracy
    assert c["mixed_correct_where_right"] + c["mixed_correct_where_wrong"] == c["mixed_correct"]
    assert c["mixed_correct_where_right"] <= c["pseudo_right"]
    # glancing reveals floor(0.5 * Hamming) gold tokens per row: the rest are scored
    torch.manual_seed(0)
    model = tiny_model.eval()
    with torch.no_grad():
        pred = model.decode_target(model.encode_source(src), model.masked_target(real.sum(1), tgt.size(1))).argmax(-1)
    hamming = (pred.ne(tgt) & real).sum(1)
    assert c["scored"] == c["tokens"] - int(torch.floor(hamming * 0.5).sum())
    assert c["glanced_plain_correct"] <= c["scored"] and c["glanced_mixed_nll_sum"] > 0
    # no glancing: every real position is scored
    assert probe_batch(model, src, tgt, glat_ratio=0.0)["scored"] == c["tokens"]


def test_finish_turns_counts_into_percentages():
    c = dict(tokens=10, scored=4, pseudo_right=6, mixed_correct=7, mixed_correct_where_right=6,
             mixed_correct_where_wrong=1, mixed_kept=8, oracle_correct=10, glanced_plain_correct=1,
             glanced_mixed_correct=3, glanced_plain_nll_sum=8.0, glanced_mixed_nll_sum=2.0)
    r = finish(c)
    assert (r["first_pass_acc"], r["mixed_acc"], r["oracle_mixed_acc"]) == (60.0, 70.0, 100.0)
    assert (r["mixed_acc_where_pseudo_right"], r["mixed_acc_where_pseudo_wrong"]) == (100.0, 25.0)
    assert (r["glanced_plain_acc"], r["glanced_mixed_acc"], r["glanced_plain_nll"], r["glanced_mixed_nll"]) == \
        (25.0, 75.0, 2.0, 0.5)
    assert math.isnan(finish(dict(c, pseudo_right=10, mixed_correct_where_wrong=0))["mixed_acc_where_pseudo_wrong"])
