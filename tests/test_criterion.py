"""Unit tests of the ``mist`` criterion: glancing, the mixed pass, losses, learning a toy task."""

from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_cfg
from mist_fairseq.criterions.mist import MistCriterion, corrupt_target, glance
from mist_fairseq.models.mist_nar import MistNARModel

PAD, MASK = 0, 7


def make_criterion(model_dict, **over):
    kw = dict(label_smoothing=0.1, length_loss_factor=0.1, mist_loss_factor=1.0, mix_mode="dynamic",
              glat_ratio=0.5, glat_ratio_end=None, glat_anneal_updates=0, glat_hamming="first",
              pseudo_from="glanced", score_positions="all", target_keep_prob=0.0, target_random_prob=0.0)
    kw.update(over)
    task = SimpleNamespace(cfg=SimpleNamespace(static_pseudo_targets=None), source_dictionary=model_dict,
                           target_dictionary=model_dict)
    return MistCriterion(task, **kw)


def make_sample(src, tgt):
    return {
        "id": torch.arange(src.size(0)),
        "net_input": {"src_tokens": src, "src_lengths": src.ne(PAD).sum(1)},
        "target": tgt,
        "nsentences": src.size(0),
        "ntokens": int(tgt.ne(PAD).sum()),
    }


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_glance_reveals_exactly_floor_ratio_hamming(ratio):
    torch.manual_seed(0)
    gold = torch.randint(10, 30, (50, 12))
    lengths = torch.randint(2, 13, (50,))
    gold = gold.masked_fill(torch.arange(12)[None] >= lengths[:, None], PAD)
    pred = torch.where(torch.rand(gold.shape) < 0.4, gold, torch.randint(10, 30, gold.shape))
    y = glance(gold, pred, ratio, PAD, MASK)
    real = gold.ne(PAD)
    hamming = (pred.ne(gold) & real).sum(1)
    revealed = (y.ne(MASK) & real).sum(1)
    assert torch.equal(revealed, torch.floor(hamming * ratio).long())
    assert torch.equal(y[y.ne(MASK) & real], gold[y.ne(MASK) & real])  # revealed = gold tokens
    assert torch.equal(y.eq(PAD), ~real)


def test_glat_ratio_anneals_linearly(small_dict):
    crit = make_criterion(small_dict, glat_ratio=0.5, glat_ratio_end=0.1, glat_anneal_updates=100)
    ratios = []
    for n in (0, 50, 100, 300):
        crit.set_update_num(n)
        ratios.append(crit.current_glat_ratio())
    assert ratios == pytest.approx([0.5, 0.3, 0.1, 0.1])
    assert make_criterion(small_dict).current_glat_ratio() == 0.5


def toy_batch(d, n=16, seed=0, reverse=True, min_len=3, max_len=7):
    g = torch.Generator().manual_seed(seed)
    words = torch.arange(8, 8 + 12)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    src = torch.full((n, 9), PAD)
    tgt = torch.full((n, 9), PAD)
    for i, L in enumerate(lengths.tolist()):
        x = words[torch.randint(len(words), (L,), generator=g)]
        y = x.flip(0) if reverse else x
        src[i, : L + 1] = torch.cat([x, torch.tensor([d.eos()])])
        tgt[i, : L + 1] = torch.cat([y, torch.tensor([d.eos()])])
    return src, tgt


def test_named_losses_and_logging(tiny_model, small_dict):
    src, tgt = toy_batch(small_dict)
    tiny_model.train()
    for mode, names in (("dynamic", {"word_ins-loss", "length-loss", "mist-loss"}),
                        ("none", {"word_ins-loss", "length-loss"})):
        crit = make_criterion(small_dict, mix_mode=mode)
        loss, sample_size, log = crit(tiny_model, make_sample(src, tgt))
        assert names <= set(log) and ("mist-loss" in log) == (mode != "none")
        parts = log["word_ins-loss"] + 0.1 * log["length-loss"] + log.get("mist-loss", 0.0)
        assert loss.item() == pytest.approx(parts, rel=1e-4)
        assert log["_pred_total"] == int(tgt.ne(PAD).sum())


def test_mist_loss_has_no_gradient_path_through_the_pseudo_target(tiny_model, small_dict):
    """The mixed-pass gradient equals that of a pass fed a constant copy of Y_p."""
    d = small_dict
    src, tgt = toy_batch(d)
    model = tiny_model.eval()  # no dropout: the two computations must be identical
    crit = make_criterion(d, glat_ratio=0.0, label_smoothing=0.0, pseudo_from="masked")
    outputs, _ = crit.mist_outputs(model, make_sample(src, tgt))
    assert not outputs["mist"]["out"].grad_fn is None
    model.zero_grad()
    torch.nn.functional.cross_entropy(outputs["mist"]["out"], outputs["mist"]["tgt"]).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    # the same mixed pass built by hand from a detached argmax
    real = tgt.ne(PAD)
    with torch.no_grad():
        logits = model.decode_target(model.encode_source(src), model.masked_target(real.sum(1), tgt.size(1)))
    y_p = logits.argmax(-1).masked_fill(~real, PAD)
    model.zero_grad()
    y_in = tgt.masked_fill(real, d.mask())
    out = model.decode_target(model.encode_source(model.mix_source(y_p, src)), y_in, real)
    torch.nn.functional.cross_entropy(out, tgt[real]).backward()
    grads2 = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(grads2)
    for a, b in zip(grads, grads2):
        assert torch.allclose(a, b, atol=1e-6)


def test_mixed_hamming_runs_one_more_prediction(tiny_model, small_dict):
    src, tgt = toy_batch(small_dict)
    tiny_model.train()
    calls = []
    orig = MistCriterion._predict

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    MistCriterion._predict = counting
    try:
        make_criterion(small_dict, glat_hamming="first")(tiny_model, make_sample(src, tgt))
        first = len(calls)
        make_criterion(small_dict, glat_hamming="mixed")(tiny_model, make_sample(src, tgt))
    finally:
        MistCriterion._predict = orig
    assert first == 1 and len(calls) - first == 2


def train_reverse_task(d, crit, steps):
    """A fresh 2-layer model trained with crit on the toy reversal (sources of 6 tokens); returns
    (model in eval mode, first loss, last loss)."""
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(encoder_embed_dim=64, encoder_ffn_embed_dim=128, dropout=0.0), d)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        model.train()
        src, tgt = toy_batch(d, n=32, seed=step, min_len=6, max_len=6)
        loss, _, _ = crit(model, make_sample(src, tgt))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses[0], losses[-1]


@pytest.mark.parametrize("mix_mode,steps", [("none", 500), ("dynamic", 700)])
def test_learns_reverse_task(small_dict, mix_mode, steps):
    """A few hundred updates on a toy reversal drive the loss down and decoding above 90%.

    Sources have a fixed length: from random init (no pretrained positions) a 2-layer model finds
    a fixed offset quickly, a length-dependent one only after thousands of updates. MIST needs
    more updates from scratch: its mixed pass puts Y_p where X sits in the plain pass, which is
    noise until the plain pass predicts well (a pretrained encoder starts past that point)."""
    from mist_fairseq.generators.mist_generator import MistGenerator

    d = small_dict
    model, first, last = train_reverse_task(d, make_criterion(d, mix_mode=mix_mode, label_smoothing=0.0), steps)
    assert last < 0.2 * first
    src, tgt = toy_batch(d, n=64, seed=10_000, min_len=6, max_len=6)
    hyps = MistGenerator(d, dedup=False).generate([model], make_sample(src, tgt))
    correct = total = 0
    for h, t in zip(hyps, tgt):
        ref = t[t.ne(PAD)]
        out = h[0]["tokens"]
        n = min(len(out), len(ref))
        correct += int((out[:n] == ref[:n]).sum())
        total += len(ref)
    assert correct / total > 0.9, correct / total


def test_loss_factors_weight_the_terms(tiny_model, small_dict):
    src, tgt = toy_batch(small_dict)
    tiny_model.eval()  # no dropout, glancing off in eval: the same passes for both settings
    torch.manual_seed(0)
    l1, _, log1 = make_criterion(small_dict, length_loss_factor=0.1, mist_loss_factor=1.0)(tiny_model, make_sample(src, tgt))
    torch.manual_seed(0)
    l2, _, log2 = make_criterion(small_dict, length_loss_factor=0.5, mist_loss_factor=0.25)(tiny_model, make_sample(src, tgt))
    assert log1["mist-loss"] == pytest.approx(log2["mist-loss"]) and log1["length-loss"] == pytest.approx(log2["length-loss"])
    expect = log2["word_ins-loss"] + 0.5 * log2["length-loss"] + 0.25 * log2["mist-loss"]
    assert l2.item() == pytest.approx(expect, rel=1e-4) and l1.item() != pytest.approx(l2.item())


def test_label_smoothing_changes_the_token_loss(tiny_model, small_dict):
    src, tgt = toy_batch(small_dict)
    tiny_model.eval()
    _, _, plain = make_criterion(small_dict, label_smoothing=0.0)(tiny_model, make_sample(src, tgt))
    _, _, smooth = make_criterion(small_dict, label_smoothing=0.1)(tiny_model, make_sample(src, tgt))
    assert plain["nll_loss"] == pytest.approx(smooth["nll_loss"])  # same NLL, different objective
    assert plain["word_ins-loss"] != pytest.approx(smooth["word_ins-loss"])


def test_defaults_are_the_authors_method():
    from mist_fairseq.criterions.mist import MistCriterionConfig
    from mist_fairseq.models.mist_nar import MistNARConfig

    c = MistCriterionConfig()
    assert (c.pseudo_from, c.score_positions, c.glat_hamming, c.glat_ratio) == ("glanced", "all", "mixed", 0.5)
    assert (c.length_loss_factor, c.mist_loss_factor, c.mix_mode) == (1.0, 1.0, "dynamic")
    assert (c.target_keep_prob, c.target_random_prob) == (0.1, 0.1)  # their loader's keep_prob/random_prob
    assert MistNARConfig().tie_output_embeddings is False


class Recorder:
    """Wraps a model's decode_target/mix_source and records (input, positions, logits) / pseudo."""

    def __init__(self, model):
        self.model, self.calls, self.pseudos = model, [], []
        dec, mix = model.decode_target, model.mix_source

        def decode_target(state, tgt, positions=None):
            out = dec(state, tgt, positions)
            self.calls.append((tgt.clone(), positions, out.detach()))
            return out

        def mix_source(pseudo, src):
            self.pseudos.append(pseudo.clone())
            return mix(pseudo, src)

        model.decode_target, model.mix_source = decode_target, mix_source

    def undo(self):
        del self.model.decode_target, self.model.mix_source


def passes_train_then_eval(model, crit, sample):
    """The Recorder calls of one training step's passes then one validation step's (the model is left
    in training mode), and the training step's logging extras."""
    rec = Recorder(model)
    try:
        torch.manual_seed(3)
        model.train()
        _, extras = crit.mist_outputs(model, sample)
        model.eval()
        with torch.no_grad():
            crit.mist_outputs(model, sample)
    finally:
        rec.undo()
        model.train()
    return rec.calls, extras


def argmax_at(logits, positions, pad):
    out = torch.full(positions.shape, pad)
    out[positions] = logits.argmax(-1)
    return out


@pytest.mark.parametrize("pseudo_from", ["glanced", "masked"])
def test_pseudo_target_comes_from_the_chosen_pass(tiny_model, small_dict, pseudo_from):
    """glanced: Y_p = argmax of the graded pass over the glanced Y_M at every real position;
    masked: Y_p = argmax of the no-grad all-[MASK] pass."""
    src, tgt = toy_batch(small_dict, n=32)
    model = tiny_model.train()  # glancing on (the tiny config has no dropout)
    real = tgt.ne(PAD)
    rec = Recorder(model)
    try:
        torch.manual_seed(1)
        make_criterion(small_dict, pseudo_from=pseudo_from)(model, make_sample(src, tgt))
    finally:
        rec.undo()
    (masked_in, masked_pos, masked_logits), (glanced_in, glanced_pos, glanced_logits) = rec.calls[:2]
    assert masked_in[real].eq(MASK).all() and not glanced_in[real].eq(MASK).all()  # gold revealed
    draft = argmax_at(masked_logits, masked_pos, PAD)
    assert torch.equal(glanced_pos, real)  # every real position is scored (and projected)
    pseudo = rec.pseudos[-1]
    if pseudo_from == "glanced":
        glanced_draft = argmax_at(glanced_logits, real, PAD)
        assert not torch.equal(glanced_draft, draft)  # the two choices differ on this batch
        assert torch.equal(pseudo, glanced_draft)
    else:
        assert torch.equal(pseudo, draft)


@pytest.mark.parametrize("mix_mode,pseudo_from,passes", [("none", "glanced", 1), ("dynamic", "glanced", 2),
                                                      ("dynamic", "masked", 3)])
def test_without_glancing_the_draft_pass_runs_only_for_a_masked_pseudo(tiny_model, small_dict, mix_mode,
                                                                        pseudo_from, passes):
    """--glat-ratio 0: the graded first pass reads Y_0 itself, so the no-grad draft pass is skipped
    unless MIST takes its pseudo target from it (--pseudo-from masked); the logged draft accuracy is
    then the graded pass's, the same loss either way."""
    src, tgt = toy_batch(small_dict, n=32)
    model = tiny_model.train()  # the tiny config has no dropout: both passes would agree
    real = tgt.ne(PAD)
    rec = Recorder(model)
    try:
        torch.manual_seed(1)
        crit = make_criterion(small_dict, mix_mode=mix_mode, pseudo_from=pseudo_from, glat_ratio=0.0)
        outputs, extras = crit.mist_outputs(model, make_sample(src, tgt))
    finally:
        rec.undo()
    assert len(rec.calls) == passes
    first_in, first_pos, first_logits = rec.calls[0 if passes < 3 else 1]
    assert first_in[real].eq(MASK).all()  # nothing glanced
    assert extras["_pred_correct"] == int((argmax_at(first_logits, first_pos, PAD).eq(tgt) & real).sum())
    assert torch.equal(outputs["word_ins"]["tgt"], tgt[real])


@pytest.mark.parametrize("score_positions", ["all", "masked"])
def test_score_positions_choose_which_targets_carry_loss(tiny_model, small_dict, score_positions):
    src, tgt = toy_batch(small_dict, n=32)
    model = tiny_model.train()
    real = tgt.ne(PAD)
    rec = Recorder(model)
    try:
        torch.manual_seed(1)
        outputs, extras = make_criterion(small_dict, score_positions=score_positions) \
            .mist_outputs(model, make_sample(src, tgt))
    finally:
        rec.undo()
    glanced_in = rec.calls[1][0]
    revealed = real & glanced_in.ne(MASK)
    assert extras["_revealed"] == int(revealed.sum()) > 0
    scored = real if score_positions == "all" else real & ~revealed
    for term in ("word_ins", "mist"):
        assert torch.equal(outputs[term]["tgt"], tgt[scored]) and outputs[term]["out"].size(0) == int(scored.sum())


@pytest.mark.parametrize("hamming", ["first", "mixed"])
def test_glancing_hamming_comes_from_the_chosen_pass(tiny_model, small_dict, hamming, monkeypatch):
    """mixed (the authors'): the number of revealed tokens is set by the no-grad mixed pass's
    prediction (given the all-[MASK] draft); first: by the draft itself. One Y_M feeds both terms."""
    from mist_fairseq.criterions import mist as mist_module

    src, tgt = toy_batch(small_dict, n=32)
    model = tiny_model.train()
    real = tgt.ne(PAD)
    seen = []
    monkeypatch.setattr(mist_module, "glance", lambda gold, pred, *a: seen.append(pred) or glance(gold, pred, *a))
    rec = Recorder(model)
    try:
        make_criterion(small_dict, glat_hamming=hamming)(model, make_sample(src, tgt))
    finally:
        rec.undo()
    assert len(seen) == 1  # one glanced Y_M for both loss terms
    draft = argmax_at(rec.calls[0][2], real, PAD)
    if hamming == "first":
        assert torch.equal(seen[0], draft)
    else:
        mixed_pred = argmax_at(rec.calls[1][2], real, PAD)  # the mixed no-grad pass over [MASK]s
        assert torch.equal(rec.pseudos[0], draft) and torch.equal(seen[0], mixed_pred)
        assert not torch.equal(mixed_pred, draft)
    # both graded passes read the same glanced target
    assert torch.equal(rec.calls[-1][0], rec.calls[-2][0])


def test_corrupt_target_keeps_and_draws_at_the_given_rates():
    torch.manual_seed(0)
    gold = torch.randint(10, 30, (400, 20))
    gold[:, 15:] = PAD
    real = gold.ne(PAD)
    y = corrupt_target(gold, 0.2, 0.3, PAD, MASK, vocab_size=40)
    assert torch.equal(y.eq(PAD), ~real)  # padding stays, no drawn token is padding
    masked = (y.eq(MASK) & real).float().sum() / real.sum()
    shown = y.ne(MASK) & real
    kept = (shown & y.eq(gold)).float().sum() / real.sum()
    assert masked == pytest.approx(0.5, abs=0.02)
    # kept gold (0.2) plus the random draws that happen to hit gold (0.3 / 39)
    assert kept == pytest.approx(0.2 + 0.3 / 39, abs=0.02)
    assert int(y[real].max()) >= 30  # drawn from the whole vocabulary, not from the targets' range
    assert torch.equal(corrupt_target(gold, 0.0, 0.0, PAD, MASK, 40), gold.masked_fill(real, MASK))


def test_glance_keeps_the_base_where_nothing_is_revealed():
    torch.manual_seed(0)
    gold = torch.randint(10, 30, (20, 9))
    base = torch.randint(30, 40, (20, 9))  # never equal to gold
    pred = torch.zeros_like(gold)  # everything wrong: reveal floor(0.5 * 9) = 4 per row
    y = glance(gold, pred, 0.5, PAD, MASK, base)
    assert (y.eq(gold).sum(1) == 4).all()
    assert torch.equal(y[y.ne(gold)], base[y.ne(gold)])


@pytest.mark.parametrize("keep,random", [(0.1, 0.1), (0.0, 0.0)])
def test_draft_input_is_the_authors_corrupted_target_while_training(tiny_model, small_dict, keep, random):
    """With --target-keep-prob/--target-random-prob the no-grad draft pass and both graded passes read
    a corrupted Y_0 (kept gold, random tokens, [MASK]s), glanced on top; at validation, [MASK]s."""
    src, tgt = toy_batch(small_dict, n=64)
    model = tiny_model.train()
    real = tgt.ne(PAD)
    crit = make_criterion(small_dict, target_keep_prob=keep, target_random_prob=random)
    calls, extras = passes_train_then_eval(model, crit, make_sample(src, tgt))
    n = 3  # training: draft, graded first pass, graded mixed pass (Hamming "first"); then validation
    y0, y_in = calls[0][0], calls[1][0]
    shown = real & y0.ne(MASK)
    assert extras["_pred_hidden"] == int((real & y0.eq(MASK)).sum())
    if keep + random > 0:
        assert 0.1 < shown.float().sum() / real.sum() < 0.35
        assert (y0[shown] != tgt[shown]).any()  # random tokens among them
        # glancing puts gold on top of Y_0: where Y_M is not gold it is Y_0's token
        assert torch.equal(y_in[y_in.ne(tgt) & real], y0[y_in.ne(tgt) & real])
        assert torch.equal(calls[2][0], y_in)  # the mixed pass reads the same Y_M
    else:
        assert not shown.any()
    assert calls[n][0][real].eq(MASK).all()  # validation: all [MASK]


def test_target_noise_probabilities_are_checked(small_dict):
    with pytest.raises(ValueError, match="target-keep-prob"):
        make_criterion(small_dict, target_keep_prob=0.7, target_random_prob=0.4)
