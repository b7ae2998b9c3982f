"""Unit tests of the NAR generator: single pass, dedup, length beam, refinement strategies."""

import pytest
import torch

from mist_fairseq.generators.mist_generator import MistGenerator, dedup_consecutive

PAD = 0


def sample_of(src):
    return {"id": torch.arange(src.size(0)), "net_input": {"src_tokens": src, "src_lengths": src.ne(PAD).sum(1)}}


def test_dedup_consecutive():
    tokens = torch.tensor([[5, 5, 6, 6, 6, 5, 2], [7, 8, 9, 2, PAD, PAD, PAD]])
    scores = torch.arange(14, dtype=torch.float).view(2, 7)
    t, s = dedup_consecutive(tokens, scores, PAD)
    assert t.tolist() == [[5, 6, 5, 2, PAD, PAD, PAD], [7, 8, 9, 2, PAD, PAD, PAD]]
    assert s[0, :4].tolist() == [0.0, 2.0, 5.0, 6.0] and s[0, 4:].eq(0).all()


@pytest.fixture
def src(small_dict):
    return torch.tensor([[10, 11, 12, small_dict.eos()], [13, small_dict.eos(), PAD, PAD]])


def test_single_pass_output_format(tiny_model, small_dict, src):
    hyps = MistGenerator(small_dict, dedup=False).generate([tiny_model], sample_of(src))
    assert len(hyps) == 2
    for (h,) in hyps:
        toks = h["tokens"]
        assert toks[-1].item() == small_dict.eos()
        banned = {small_dict.pad(), small_dict.bos(), small_dict.mask()}
        assert not banned & set(toks.tolist())
        assert small_dict.eos() not in toks[:-1].tolist()
        assert h["positional_scores"].shape == toks.shape
        assert h["score"].item() == pytest.approx(h["positional_scores"].mean().item(), abs=1e-5)


def test_single_pass_matches_argmax_of_the_model(tiny_model, small_dict, src):
    gen = MistGenerator(small_dict, dedup=False)
    hyps = gen.generate([tiny_model], sample_of(src))
    state = tiny_model.encode_source(src)
    lengths = gen.predict_lengths(tiny_model, state)[:, 0]
    assert [len(h[0]["tokens"]) for h in hyps] == lengths.tolist()
    logits = tiny_model.decode_target(state, tiny_model.masked_target(lengths))
    logits[..., [small_dict.pad(), small_dict.bos(), small_dict.mask(), small_dict.eos()]] = -1e9
    for i, (h,) in enumerate(hyps):
        L = int(lengths[i])
        assert h["tokens"][:-1].tolist() == logits[i, : L - 1].argmax(-1).tolist()


def test_length_beam_keeps_the_best_mean_logprob(tiny_model, small_dict, src):
    k = 3
    state = tiny_model.encode_source(src)
    gen = MistGenerator(small_dict, length_beam=k, dedup=False)
    lengths = gen.predict_lengths(tiny_model, state)
    best = gen.generate([tiny_model], sample_of(src))
    for i in range(src.size(0)):
        scores = []
        for L in lengths[i].tolist():
            one = MistGenerator(small_dict, dedup=False)
            one.predict_lengths = lambda m, s, L=L: torch.full((s.length.size(0), 1), L)
            scores.append(one.generate([tiny_model], sample_of(src[i : i + 1]))[0][0]["score"].item())
        assert best[i][0]["score"].item() == pytest.approx(max(scores), abs=1e-5)
        assert len(best[i][0]["tokens"]) == lengths[i, scores.index(max(scores))].item()


def test_min_length_is_respected(tiny_model, small_dict, src):
    with torch.no_grad():
        tiny_model.length_head.bias.zero_()
        tiny_model.length_head.bias[1] = 100.0  # the head insists on length 1
    hyps = MistGenerator(small_dict, min_length=3).generate([tiny_model], sample_of(src))
    assert all(len(h[0]["tokens"]) >= 3 for h in hyps)


@pytest.mark.parametrize("strategy", ["mist", "mask-predict"])
def test_refinement_runs_the_requested_passes(tiny_model, small_dict, src, strategy):
    calls = {"src": 0, "tgt": 0}
    enc, dec = tiny_model.encode_source, tiny_model.decode_target

    def count_enc(*a, **k):
        calls["src"] += 1
        return enc(*a, **k)

    def count_dec(*a, **k):
        calls["tgt"] += 1
        return dec(*a, **k)

    tiny_model.encode_source, tiny_model.decode_target = count_enc, count_dec
    MistGenerator(small_dict, decode_iters=3, strategy=strategy).generate([tiny_model], sample_of(src))
    assert calls["tgt"] == 3
    # MIST re-encodes the mixed source each round; mask-predict reuses the source K/V
    assert calls["src"] == (3 if strategy == "mist" else 1)


def test_mask_predict_remasks_linear_schedule(tiny_model, small_dict, src):
    seen = []
    dec = tiny_model.decode_target

    def spy(state, tgt, *a):
        seen.append(int(tgt.eq(small_dict.mask()).sum(1)[0]))
        return dec(state, tgt, *a)

    tiny_model.decode_target = spy
    gen = MistGenerator(small_dict, decode_iters=4, strategy="mask-predict")
    gen.predict_lengths = lambda m, s: torch.full((s.length.size(0), 1), 8)
    gen.generate([tiny_model], sample_of(src))
    assert seen == [8, 6, 4, 2]  # n = L * (N - t) / N


def test_bad_options_are_refused(small_dict):
    with pytest.raises(ValueError, match="--mist-decode-iters"):
        MistGenerator(small_dict, decode_iters=0)
    with pytest.raises(ValueError, match="--length-beam"):
        MistGenerator(small_dict, length_beam=0)


@pytest.mark.parametrize("iters,strategy", [(1, "mist"), (3, "mist"), (3, "mask-predict")])
def test_the_benchmarks_no_cache_pass_gives_the_same_output(tiny_model, small_dict, src, iters, strategy):
    """The source keys/values cache changes nothing but the time: the benchmark's no-cache generator
    (one full forward per target pass) decodes the same tokens."""
    from benchmarks.latency_systems import NoCacheGenerator

    a = MistGenerator(small_dict, decode_iters=iters, strategy=strategy).generate([tiny_model], sample_of(src))
    b = NoCacheGenerator(small_dict, decode_iters=iters, strategy=strategy).generate([tiny_model], sample_of(src))
    for (x,), (y,) in zip(a, b):
        assert torch.equal(x["tokens"], y["tokens"])
        assert torch.allclose(x["positional_scores"], y["positional_scores"], atol=1e-4)
