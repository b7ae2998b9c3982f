"""--target-input copy: the target slots hold the source, uniformly copied (Fairseq NAT's copy, on token
ids), in the criterion's passes and in every decoding path; [MASK] (the authors' MIST) stays the default
and old checkpoints load as [MASK] models."""

import pytest
import torch

from conftest import tiny_cfg
from mist_fairseq.models.contract import uniform_copy
from mist_fairseq.models.mist_nar import MistNARModel
from test_criterion import MASK, PAD, Recorder, make_criterion, make_sample, passes_train_then_eval, toy_batch

EOS = 6


def test_uniform_copy_by_hand():
    # row 0 left-padded X = (5 6 7), row 1 right-padded X = (8 9 10 11 12)
    src = torch.tensor([[PAD, PAD, 5, 6, 7, EOS], [8, 9, 10, 11, 12, EOS]])
    out = uniform_copy(src, torch.tensor([4, 7]), 7, PAD, EOS)
    assert out.tolist() == [[5, 6, 7, EOS, PAD, PAD, PAD],
                            [8, 8, 9, 10, 11, 12, EOS]]  # slot i < 6 takes X[floor(i * 5 / 6)]
    short = uniform_copy(src, torch.tensor([1, 3]), 3, PAD, EOS)
    assert short.tolist() == [[EOS, PAD, PAD], [8, 10, EOS]]  # L = 1: the [SEP] slot alone
    empty = uniform_copy(torch.tensor([[EOS, PAD]]), torch.tensor([3]), 3, PAD, EOS)
    assert empty.tolist() == [[EOS, EOS, EOS]]


def copy_model(small_dict, **over):
    torch.manual_seed(0)
    return MistNARModel(tiny_cfg(target_input="copy", **over), small_dict)


def test_every_pass_of_the_criterion_reads_the_copied_source(small_dict):
    model = copy_model(small_dict).train()
    src, tgt = toy_batch(small_dict, n=32)
    real = tgt.ne(PAD)
    copied = uniform_copy(src, real.sum(1), tgt.size(1), PAD, small_dict.eos())
    crit = make_criterion(small_dict, mix_mode="dynamic")
    calls, extras = passes_train_then_eval(model, crit, make_sample(src, tgt))
    # training: draft, graded first pass, graded mixed pass; at validation (no glancing) the graded first
    # and mixed passes only: the draft would be the graded first pass again
    y0, y_in, y_mixed, y_valid = (calls[i][0] for i in range(4))
    assert len(calls) == 5
    assert torch.equal(y0, copied) and not y0[real].eq(MASK).any()  # the draft pass: the copy, no [MASK]
    kept = y_in.ne(tgt) & real  # glancing puts gold on top of the copy
    assert torch.equal(y_in[kept], copied[kept]) and torch.equal(y_mixed, y_in)
    assert torch.equal(y_valid, copied)  # validation: the copy, glancing off
    assert extras["_pred_hidden"] == int(real.sum())  # the copy hides the target as [MASK]s do


def test_generator_fills_the_predicted_lengths_with_the_copy(small_dict):
    from mist_fairseq.generators.mist_generator import MistGenerator

    model = copy_model(small_dict).eval()
    src, _ = toy_batch(small_dict, n=8)
    gen = MistGenerator(small_dict, length_beam=2)
    with torch.no_grad():
        _, src_k, tgt = gen.start(model, src)
    lengths = tgt.ne(PAD).sum(1)
    assert src_k.size(0) == 16 and torch.equal(tgt, uniform_copy(src_k, lengths, tgt.size(1), PAD, small_dict.eos()))
    model.target_input = "mask"  # the same model reading [MASK]s decodes differently
    with torch.no_grad():
        _, _, masked = gen.start(model, src)
    assert masked[masked.ne(PAD) & masked.ne(small_dict.eos())].eq(MASK).all()


def test_default_and_old_checkpoints_are_mask_models(small_dict):
    assert MistNARModel(tiny_cfg(), small_dict).target_input == "mask"
    cfg = tiny_cfg()
    del cfg.target_input  # a checkpoint saved before the option existed
    assert MistNARModel(cfg, small_dict).target_input == "mask"


def test_refusals(small_dict):
    with pytest.raises(ValueError, match="--ctc slots hold"):
        copy_model(small_dict, ctc=True)
    model = copy_model(small_dict).train()
    src, tgt = toy_batch(small_dict)
    with pytest.raises(ValueError, match="target-keep-prob"):
        make_criterion(small_dict, target_keep_prob=0.1).mist_outputs(model, make_sample(src, tgt))
    with pytest.raises(ValueError, match="score-positions all"):
        make_criterion(small_dict, score_positions="masked").mist_outputs(model, make_sample(src, tgt))
    with pytest.raises(ValueError, match="pass src_tokens"):
        model.masked_target(torch.tensor([3]))


def test_mask_predict_gives_remasked_slots_the_copy_back(small_dict):
    """Mask-Predict re-masks its least confident tokens: in a copy model those slots read the copied
    source again (the input the model was trained on), the rest keep the first pass's tokens."""
    from mist_fairseq.generators.mist_generator import MistGenerator

    model = copy_model(small_dict).eval()
    src, _ = toy_batch(small_dict, n=8, min_len=5, max_len=7)
    gen = MistGenerator(small_dict, decode_iters=2, strategy="mask-predict")
    rec = Recorder(model)
    try:
        gen.generate([model], make_sample(src, src))
    finally:
        rec.undo()
    first, second = rec.calls[0][0], rec.calls[1][0]
    real = first.ne(PAD)
    changed = second.ne(first) & real
    assert not second[real].eq(MASK).any()
    # the remasked half: back to the copy (first pass's input); the rest: the first pass's argmax
    remasked = second.eq(first) & real
    assert remasked.sum(1).ge(real.sum(1) // 2).all() and changed.any()
