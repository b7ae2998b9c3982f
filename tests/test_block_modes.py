"""NAR, semi-NAR and AR from one checkpoint: the criterion's two-stream and JANUS-style terms, the
semi-NAR and AR (beam search) generators, and a toy task learnt in AR mode."""

import pytest
import torch

from conftest import tiny_cfg
from mist_fairseq.criterions.block_loss import parse_block_sizes, symmetric_kl
from mist_fairseq.generators.block_generator import ARGenerator, SemiNARGenerator
from mist_fairseq.generators.mist_generator import MistGenerator
from mist_fairseq.models.mist_nar import MistNARModel
from test_criterion import PAD, make_criterion, make_sample, toy_batch, train_reverse_task


def test_block_loss_is_added_with_its_factor(tiny_model, small_dict):
    src, tgt = toy_batch(small_dict)
    tiny_model.eval()
    loss, _, log = make_criterion(small_dict, block_loss_factor=0.5, block_sizes="2", length_loss_factor=0.1)(
        tiny_model, make_sample(src, tgt))
    parts = log["word_ins-loss"] + 0.1 * log["length-loss"] + log["mist-loss"] + 0.5 * log["block-loss"]
    assert loss.item() == pytest.approx(parts, rel=1e-4)
    assert log["_block_total"] == int(tgt.ne(PAD).sum())
    _, _, off = make_criterion(small_dict)(tiny_model, make_sample(src, tgt))
    assert "block-loss" not in off and "_block_total" not in off


def test_nar_loss_factor_zero_runs_no_nar_pass(tiny_model, small_dict, monkeypatch):
    src, tgt = toy_batch(small_dict)
    tiny_model.train()
    calls = []
    orig = tiny_model.decode_target
    monkeypatch.setattr(tiny_model, "decode_target", lambda *a, **k: calls.append(1) or orig(*a, **k))
    crit = make_criterion(small_dict, mix_mode="none", nar_loss_factor=0.0, block_loss_factor=1.0, block_sizes="1")
    loss, _, log = crit(tiny_model, make_sample(src, tgt))
    assert not calls  # no glancing pass, no graded NAR pass
    assert "word_ins-loss" not in log and "mist-loss" not in log
    assert loss.item() == pytest.approx(log["block-loss"] + 0.1 * log["length-loss"], rel=1e-4)
    assert log["nll_loss"] > 0  # the AR model's NLL is the block term's


def test_block_sizes_are_drawn_per_batch(tiny_model, small_dict, monkeypatch):
    src, tgt = toy_batch(small_dict)
    seen = []
    orig = tiny_model.block_logits
    monkeypatch.setattr(tiny_model, "block_logits", lambda s, g, b, p=None: seen.append(b) or orig(s, g, b, p))
    crit = make_criterion(small_dict, nar_loss_factor=0.0, mix_mode="none", block_loss_factor=1.0, block_sizes="1,2,4")
    tiny_model.train()
    torch.manual_seed(0)
    for _ in range(30):
        crit(tiny_model, make_sample(src, tgt))
    assert set(seen) == {1, 2, 4}
    seen.clear()
    tiny_model.eval()
    for _ in range(5):
        crit(tiny_model, make_sample(src, tgt))
    assert seen == [1] * 5  # validation: always the first size


def test_janus_kl_term(tiny_model, small_dict):
    a, b = torch.randn(5, 11), torch.randn(5, 11)
    ref = (torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="none").sum(-1)
           + torch.nn.functional.kl_div(a.log_softmax(-1), b.log_softmax(-1), log_target=True, reduction="none").sum(-1)) / 2
    assert symmetric_kl(a, b).item() == pytest.approx(ref.mean().item(), rel=1e-5)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-6)
    src, tgt = toy_batch(small_dict)
    tiny_model.eval()
    for score_positions in ("all", "masked"):
        loss, _, log = make_criterion(small_dict, block_loss_factor=1.0, janus_kl_factor=2.0, mix_mode="none",
                                      score_positions=score_positions)(tiny_model, make_sample(src, tgt))
        assert log["janus_kl-loss"] > 0
        parts = log["word_ins-loss"] + 0.1 * log["length-loss"] + log["block-loss"] + 2.0 * log["janus_kl-loss"]
        assert loss.item() == pytest.approx(parts, rel=1e-4)
    # the KL sends gradient into both passes: with the block stream's own loss weighted ~0, the
    # gradient still differs from the run without the KL
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(init_std=0.3), small_dict).eval()  # peaked distributions: a KL that matters
    grads = []
    for kl in (0.0, 1.0):
        model.zero_grad()
        loss, _, log = make_criterion(small_dict, block_loss_factor=1e-9, janus_kl_factor=kl)(model, make_sample(src, tgt))
        loss.backward()
        grads.append(model.encoder.layers[0].query.weight.grad.clone())
    assert log["janus_kl-loss"] > 0.1
    assert (grads[1] - grads[0]).norm() > 0.05 * grads[0].norm()


def test_bad_block_options_are_refused(small_dict):
    for text in ("", "0", "1,x", "-2"):
        with pytest.raises(ValueError, match="--block-sizes"):
            parse_block_sizes(text)
    assert parse_block_sizes("1, 2,8") == [1, 2, 8]
    with pytest.raises(ValueError, match="nothing to train"):
        make_criterion(small_dict, nar_loss_factor=0.0)
    with pytest.raises(ValueError, match="--janus-kl-factor"):
        make_criterion(small_dict, janus_kl_factor=1.0)
    with pytest.raises(ValueError, match="--block-size"):
        SemiNARGenerator(small_dict, block_size=0)
    with pytest.raises(ValueError, match="--beam"):
        ARGenerator(small_dict, beam=0)


@pytest.fixture
def src_sample(small_dict):
    src, tgt = toy_batch(small_dict, n=5, seed=3)
    return make_sample(src, tgt)


def test_semi_nar_with_a_whole_block_is_the_nar_pass(tiny_model, small_dict, src_sample):
    nar = MistGenerator(small_dict).generate([tiny_model], src_sample)
    semi = SemiNARGenerator(small_dict, block_size=16).generate([tiny_model], src_sample)
    for a, b in zip(nar, semi):
        assert torch.equal(a[0]["tokens"], b[0]["tokens"]) and b[0]["steps"] == 1


@pytest.mark.parametrize("block", [1, 2, 3])
def test_semi_nar_blocks_are_consistent_with_the_model(tiny_model, small_dict, src_sample, block):
    """Each block's tokens are the model's choice given the tokens chosen for the earlier blocks:
    re-running the two-stream pass with the output as 'gold' reproduces the output's scores."""
    hyps = SemiNARGenerator(small_dict, block_size=block, dedup=False).generate([tiny_model], src_sample)
    state = tiny_model.encode_source(src_sample["net_input"]["src_tokens"])
    for i, h in enumerate(hyps):
        out = h[0]["tokens"]
        assert h[0]["steps"] == -(-int(tiny_model.length_logits(state)[:, 2:].argmax(-1).max() + 2) // block)
        lp = tiny_model.block_logits(state.index_select(torch.tensor([i])), out.unsqueeze(0), block)[0].log_softmax(-1)
        assert torch.allclose(h[0]["positional_scores"], lp.gather(1, out.unsqueeze(1)).squeeze(1), atol=1e-5)
        inside = lp[:-1].clone()
        inside[:, [small_dict.pad(), small_dict.bos(), small_dict.mask(), small_dict.eos()]] = float("-inf")
        assert torch.equal(inside.argmax(-1), out[:-1]) and out[-1] == small_dict.eos()


@pytest.mark.parametrize("beam", [1, 4])
def test_ar_beam_search_scores_are_the_models(tiny_model, small_dict, src_sample, beam):
    """Every returned hypothesis ends in [SEP], its positional scores are the teacher-forced AR
    log-probs of its own tokens, its score their sum / length, and the n-best list is sorted."""
    gen = ARGenerator(small_dict, beam=beam, max_len_b=12)
    hyps = gen.generate([tiny_model], src_sample)
    state = tiny_model.encode_source(src_sample["net_input"]["src_tokens"])
    for i, nbest in enumerate(hyps):
        assert len(nbest) == beam
        assert [h["score"] for h in nbest] == sorted([h["score"] for h in nbest], reverse=True)
        for h in nbest:
            out = h["tokens"]
            assert out[-1] == small_dict.eos() and small_dict.eos() not in out[:-1].tolist() and 2 <= len(out) <= 12
            lp = tiny_model.block_logits(state.index_select(torch.tensor([i])), out.unsqueeze(0), 1)[0].log_softmax(-1)
            assert torch.allclose(h["positional_scores"], lp.gather(1, out.unsqueeze(1)).squeeze(1), atol=1e-4)
            assert float(h["score"]) == pytest.approx(float(h["positional_scores"].sum()) / len(out), rel=1e-4)
    if beam == 1:  # greedy: every token is the best allowed one
        for i, nbest in enumerate(hyps):
            out = nbest[0]["tokens"]
            lp = tiny_model.block_logits(state.index_select(torch.tensor([i])), out.unsqueeze(0), 1)[0]
            lp[:, [small_dict.pad(), small_dict.bos(), small_dict.mask()]] = float("-inf")
            if len(out) < 12:
                assert torch.equal(lp.argmax(-1), out)


def test_beam_finds_at_least_the_greedy_score_on_average(small_dict):
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(init_std=0.3), small_dict).eval()  # peaked: beams diverge from greedy
    src, tgt = toy_batch(small_dict, n=16, seed=5)
    sample = make_sample(src, tgt)
    greedy = ARGenerator(small_dict, beam=1, max_len_b=10).generate([model], sample)
    beam = ARGenerator(small_dict, beam=4, max_len_b=10).generate([model], sample)
    g = sum(float(h[0]["score"]) for h in greedy)
    b = sum(float(h[0]["score"]) for h in beam)
    assert b > g


def test_ar_mode_learns_reverse_task(small_dict):
    """An AR-only model (two-stream loss with block 1, no NAR term) learns the toy reversal and
    decodes it left to right with the beam."""
    d = small_dict
    crit = make_criterion(d, mix_mode="none", nar_loss_factor=0.0, block_loss_factor=1.0, block_sizes="1",
                          label_smoothing=0.0)
    model, _, _ = train_reverse_task(d, crit, 300)
    src, tgt = toy_batch(d, n=64, seed=10_000, min_len=6, max_len=6)
    hyps = ARGenerator(d, beam=2).generate([model], make_sample(src, tgt))
    correct = sum(int(torch.equal(h[0]["tokens"], t[t.ne(PAD)])) for h, t in zip(hyps, tgt))
    assert correct / len(hyps) > 0.8, correct / len(hyps)


def test_ar_length_limits(tiny_model, small_dict, src_sample):
    """--max-len-a/b bound the output ([SEP] included), --min-target-length holds it back, and a
    minimum above the maximum still ends every hypothesis at the maximum."""
    src_len = int(src_sample["net_input"]["src_tokens"].ne(PAD).sum(1).max())
    for kw, lo, hi in ((dict(max_len_b=5), 1, 5), (dict(max_len_b=9, min_length=7), 7, 9),
                       (dict(max_len_a=0.5, max_len_b=1), 1, int(0.5 * src_len + 1)),
                       (dict(max_len_b=4, min_length=10), 4, 4)):
        hyps = ARGenerator(small_dict, beam=2, **kw).generate([tiny_model], src_sample)
        assert all(lo <= len(h["tokens"]) <= hi and h["tokens"][-1] == small_dict.eos() for nb in hyps for h in nb), kw
