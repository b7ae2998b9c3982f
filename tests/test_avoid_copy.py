"""--avoid-copy: among a source's candidates (CTC prefix beam, length beam), one that is the source
itself wins only where every candidate is one; the option reaches the generators from DecodeOptions."""

import pytest
import torch

from conftest import tiny_cfg
from mist_fairseq.generators import mist_generator as mist_generator_module
from mist_fairseq.generators.ctc_generator import CTCGenerator
from mist_fairseq.generators.mist_generator import MistGenerator
from mist_fairseq.generators.modes import build_generator
from mist_fairseq.generators.options import DecodeOptions
from mist_fairseq.generators.rerank import choose_candidates, is_copy
from mist_fairseq.models.mist_nar import MistNARModel
from test_ctc import copy_batch, small, train_copy_model  # noqa: F401  (fixture)

PAD, CLS, SEP = 0, 101, 102


def test_is_copy_ignores_padding_and_special_tokens():
    src = torch.tensor([[PAD, CLS, 7, 8, SEP], [CLS, 7, 8, SEP, PAD], [CLS, 7, 8, SEP, PAD]])
    cand = torch.tensor([[7, 8, SEP, PAD], [7, 8, 9, SEP], [8, 7, SEP, PAD]])
    assert is_copy(cand, src, (PAD, CLS, SEP)).tolist() == [True, False, False]


def test_choose_candidates_passes_over_copies_unless_all_are():
    scores = torch.tensor([0.9, 0.5, 0.1, 0.9, 0.8, 0.7])
    copies = torch.tensor([True, False, False, True, True, True])
    assert choose_candidates(scores, 3).tolist() == [0, 3]
    assert choose_candidates(scores, 3, copies).tolist() == [1, 3]  # the second source has nothing else


def test_options_reach_the_generators_and_ar_refuses(small):  # noqa: F811
    for mode, cls in (("nar", MistGenerator), ("ctc", CTCGenerator)):
        gen = build_generator(small, DecodeOptions(decode_mode=mode, avoid_copy=True))
        assert isinstance(gen, cls) and gen.avoid_copy
    assert not build_generator(small, DecodeOptions(decode_mode="ctc")).avoid_copy
    with pytest.raises(ValueError, match="--avoid-copy chooses among"):
        DecodeOptions(decode_mode="ar", avoid_copy=True)


def test_a_copying_ctc_model_gives_its_best_other_candidate(small):  # noqa: F811
    """A tiny CTC model trained to copy: its prefix beam's best candidate is mostly the source; with
    avoid_copy the output is the best-scored candidate that is not."""
    model, batch, _ = train_copy_model(small)
    src, k = batch["net_input"]["src_tokens"], 4
    specials = (small.pad(), small.bos(), small.eos())

    def outputs(avoid):
        hyps = CTCGenerator(small, beam=k, avoid_copy=avoid).generate([model], batch)
        return [h[0]["tokens"] for h in hyps]

    plain, avoided = outputs(False), outputs(True)
    plain_copies = is_copy(torch.nn.utils.rnn.pad_sequence(plain, True, small.pad()), src, specials)
    assert plain_copies.sum() >= 6  # the model copies
    # the candidates by hand: prefix beam, dedup, [SEP], then the best non-copy by log-prob per token
    gen = CTCGenerator(small, beam=k)
    _, tgt, logits = gen.slot_pass(model, src)
    out, scores, sentence = gen.beam_candidates(model, tgt, logits)
    out, scores = mist_generator_module.dedup_consecutive(out, scores, small.pad())
    from mist_fairseq.generators.ctc_generator import append_eos

    out, _ = append_eos(out, scores, small.pad(), small.eos())
    copies = is_copy(out, src.repeat_interleave(k, 0), specials).view(-1, k)
    for b in range(src.size(0)):
        ok = [j for j in range(k) if not copies[b, j]] or list(range(k))
        j = max(ok, key=lambda j: float(sentence[b * k + j]))
        want = out[b * k + j]
        assert avoided[b].tolist() == want[want.ne(small.pad())].tolist()
        if not copies[b].all():
            assert not is_copy(avoided[b][None], src[b : b + 1], specials).item()


def test_the_length_beam_passes_over_what_is_copy_marks(small, monkeypatch):  # noqa: F811
    """MistGenerator.finish consults is_copy: marking each source's own best candidate as a copy makes
    the second best win."""
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(), small).eval()
    batch, k = copy_batch(small, n=4), 3
    gen = MistGenerator(small, length_beam=k)
    state, src_k, tgt = gen.start(model, batch["net_input"]["src_tokens"])
    tokens, scores = gen.predict_pass(model, state, tgt, src_k)
    real = tgt.ne(small.pad())
    mean = (scores.sum(1) / real.sum(1)).view(-1, k)
    top2 = mean.topk(2, dim=1).indices
    marked = torch.zeros(mean.shape, dtype=torch.bool)
    marked[torch.arange(mean.size(0)), top2[:, 0]] = True
    monkeypatch.setattr(mist_generator_module, "is_copy", lambda *a: marked.view(-1))
    plain = MistGenerator(small, length_beam=k).generate([model], batch)
    avoided = MistGenerator(small, length_beam=k, avoid_copy=True).generate([model], batch)
    deduped, _ = mist_generator_module.dedup_consecutive(tokens, scores, small.pad())
    for b in range(mean.size(0)):
        for hyps, j in ((plain, top2[b, 0]), (avoided, top2[b, 1])):
            want = deduped[b * k + j]
            assert hyps[b][0]["tokens"].tolist() == want[want.ne(small.pad())].tolist()


@pytest.mark.parametrize("argv,want", [([], None), (["--avoid-copy"], True)])
def test_the_service_flag_reaches_the_backends_decoding_options(monkeypatch, tmp_path, argv, want):
    from mist_fairseq.serve import __main__ as serve_main
    from mist_fairseq.serve import backends

    seen = {}

    def fake_load_backend(*args, decode=None, **kw):
        seen.update(decode)
        raise ValueError("stop here")

    monkeypatch.setattr(backends, "load_backend", fake_load_backend)
    with pytest.raises(SystemExit):
        serve_main.main(["--backend", "torch", "--model", str(tmp_path), *argv])
    assert seen["avoid_copy"] is want  # None: the checkpoint's own option
