"""The CTC output (--ctc): loss, alignment, collapse, glancing on the alignment, a tiny model that
learns to copy, and the checkpoint through fairseq-train / fairseq-generate / MistModel / ONNX."""

import itertools
import json
import math
import re

import pytest
import torch
from fairseq.data import data_utils

from conftest import N_TEST, USER_DIR, python_cli, run_cli, small_vocab, tiny_cfg
from mist_fairseq.criterions.ctc_passes import aligned_labels, ctc_nll, ctc_outputs, ctc_targets
from mist_fairseq.criterions.mist import MistCriterion
from mist_fairseq.dictionary import BertDictionary
from mist_fairseq.generators.ctc_generator import CTCGenerator
from mist_fairseq.models.ctc import best_alignment, collapse, extended_labels, min_slots_needed, slot_lengths
from mist_fairseq.models.mist_nar import MistNARModel

BLANK = 0  # in the hand-made cases below


def collapse_path(path, blank=BLANK):
    out = [p for i, p in enumerate(path) if p != blank and (i == 0 or p != path[i - 1])]
    return out


def paths_of(target, T, V):
    """Every slot sequence of length T over V classes that collapses to target (brute force)."""
    return [p for p in itertools.product(range(V), repeat=T) if collapse_path(list(p)) == list(target)]


def test_ctc_loss_equals_the_sum_over_alignments_by_hand():
    torch.manual_seed(0)
    V, T = 4, 4
    logits = torch.randn(2, T, V)
    lp = logits.log_softmax(-1)
    # gold as the task gives it: right-padded, each row ending in [SEP] (id 3 here), pad 0 is not used by
    # targets; the blank is class 0 (as [unused0] is a class of its own in a BERT vocabulary)
    pad, eos = 9, 3
    gold = torch.tensor([[1, 2, eos], [1, 1, eos]])  # "a b", "a a" (needs a blank between)
    targets, lengths = ctc_targets(gold, pad, eos)
    assert targets.tolist() == [[1, 2], [1, 1]] and lengths.tolist() == [2, 2]
    nll = ctc_nll(logits, torch.tensor([T, 3]), targets, lengths, BLANK)
    for b, n_slots in enumerate((T, 3)):
        total = sum(math.exp(sum(lp[b, t, p[t]].item() for t in range(n_slots)))
                    for p in paths_of(targets[b].tolist(), n_slots, V))
        assert nll[b].item() == pytest.approx(-math.log(total), rel=1e-5)


def test_a_target_longer_than_its_slots_adds_nothing_and_is_flagged():
    targets, lengths = torch.tensor([[1, 1, 2]]), torch.tensor([3])
    assert min_slots_needed(targets, lengths).tolist() == [4]  # a a b needs a blank between the a's
    nll = ctc_nll(torch.randn(1, 3, 4), torch.tensor([3]), targets, lengths, BLANK)
    assert nll.item() == 0.0  # zero_infinity: no alignment, no loss (and no NaN gradient)
    ext = extended_labels(targets, lengths, BLANK)
    _, ok = best_alignment(torch.randn(1, 3, ext.size(1)), ext, torch.tensor([3]), lengths)
    assert not ok.item()


def test_best_alignment_is_the_best_valid_monotonic_path():
    torch.manual_seed(1)
    V, T = 4, 5
    targets = torch.tensor([[1, 2, 2], [3, 0, 0], [1, 3, 0]])  # 0 beyond each length is padding here
    lengths = torch.tensor([3, 1, 2])
    n_slots = torch.tensor([5, 5, 3])
    lp = torch.randn(3, T, V).log_softmax(-1)
    ext = extended_labels(targets, lengths, BLANK)
    label_lp = lp.gather(2, ext[:, None, :].expand(3, T, ext.size(1)))
    path, ok = best_alignment(label_lp, ext, n_slots, lengths)
    assert ok.all()
    for b in range(3):
        n = int(n_slots[b])
        states = path[b, :n].tolist()
        assert all(p == -1 for p in path[b, n:].tolist())
        assert all(0 <= s2 - s1 <= 2 for s1, s2 in zip(states, states[1:]))  # monotonic, at most one skip
        labels = [int(ext[b, s]) for s in states]
        target = targets[b, : lengths[b]].tolist()
        assert collapse_path(labels) == target  # a valid alignment of this target
        score = sum(lp[b, t, labels[t]].item() for t in range(n))
        best = max(sum(lp[b, t, p[t]].item() for t in range(n)) for p in paths_of(target, n, V))
        assert score == pytest.approx(best, abs=1e-5)  # and the best one


def test_collapse_merges_repeats_then_drops_blanks():
    pad, blank = 9, 0
    tokens = torch.tensor([[5, 5, 0, 5, 6, 6, 0, pad], [0, 0, 0, 7, pad, pad, pad, pad]])
    scores = torch.arange(16, dtype=torch.float32).view(2, 8)
    out, sc = collapse(tokens, scores, blank, pad)
    assert out.tolist() == [[5, 5, 6], [7, pad, pad]]  # the blank keeps the two 5s apart
    assert sc.tolist() == [[0.0, 3.0, 4.0], [11.0, 0.0, 0.0]]


def test_slot_lengths_upsample_floor_and_cap():
    pad, eos = 0, 102
    src = torch.tensor([[5, 6, 7, eos, pad], [5, eos, pad, pad, pad], [5, 6, 7, 8, eos]])
    assert slot_lengths(src, pad, 2.0, 4, 48).tolist() == [6, 4, 8]  # 2 x 3, the floor 4, 2 x 4
    assert slot_lengths(src, pad, 1.5, 1, 5).tolist() == [5, 2, 5]  # ceil(4.5) = 5, ceil(1.5) = 2, capped


@pytest.fixture
def small():
    return BertDictionary(small_vocab())


def copy_batch(d, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    words = [d.index(f"w{i}") for i in range(40)]
    srcs = []
    for i in range(n):
        length = 3 + i % 4
        srcs.append(torch.tensor([words[int(j)] for j in torch.randint(0, 40, (length,), generator=g)] + [d.eos()]))
    src = data_utils.collate_tokens(srcs, d.pad())
    return {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}, "target": src.clone(),
            "ntokens": int(src.ne(d.pad()).sum()), "nsentences": n, "id": torch.arange(n)}


class _Task:
    def __init__(self, d):
        self.target_dictionary = d
        self.cfg = type("cfg", (), {"static_pseudo_targets": None})()


def criterion(d, mix_mode="none", ratio=0.5):
    return MistCriterion(_Task(d), 0.1, 0.1, 1.0, mix_mode, ratio, None, 0, "first",
                         target_keep_prob=0, target_random_prob=0)


def spied_ctc_model(small):
    """A tiny CTC model in training mode whose decode_target records its target inputs -> (model, the
    inputs seen, the unspied decode_target)."""
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(ctc=True, upsample_ratio=2.0, ctc_min_slots=4), small).train()
    seen, original = [], model.decode_target

    def spy(state, tgt, positions=None):
        seen.append(tgt.clone())
        return original(state, tgt, positions)

    model.decode_target = spy
    return model, seen, original


def test_glancing_reveals_the_best_alignment_labels(small):
    model, seen, original = spied_ctc_model(small)
    batch = copy_batch(small)
    outputs, extras = {}, {}
    ctc_outputs(criterion(small, ratio=1.0), model, batch, model.encode_source(batch["net_input"]["src_tokens"]),
                outputs, extras)
    draft_in, glanced = seen[0], seen[1]
    assert draft_in.eq(small.mask()).sum() == draft_in.ne(small.pad()).sum()  # the draft sees [MASK]s only
    with torch.no_grad():
        state = model.encode_source(batch["net_input"]["src_tokens"])
        draft_logits = original(state, draft_in)
    targets, lengths = ctc_targets(batch["target"], small.pad(), small.eos())
    real = draft_in.ne(small.pad())
    labels, ok = aligned_labels(draft_logits, targets, lengths, real.sum(1), model.blank_idx)
    shown = glanced.ne(small.mask()) & real
    # every slot glancing shows holds its aligned label (blank or token)
    assert shown.any() and torch.equal(glanced[shown], labels[shown])
    hamming = (draft_logits.argmax(-1).ne(labels) & real).sum(1)
    assert shown.sum(1).tolist() == hamming.tolist()  # ratio 1: every wrong slot is shown
    assert outputs["word_ins"]["loss"].requires_grad and extras["_ctc_skipped"] == 0


def test_no_glancing_skips_the_draft_and_keeps_the_loss(small):
    """--glat-ratio 0: one target pass (no draft, no alignment) and the same loss as glancing that shows
    nothing (ratio 0 with the draft computed)."""
    model, calls, _ = spied_ctc_model(small)
    batch = copy_batch(small)
    state = model.encode_source(batch["net_input"]["src_tokens"])
    outputs, extras = {}, {}
    ctc_outputs(criterion(small, ratio=0.0), model, batch, state, outputs, extras)
    assert len(calls) == 1 and calls[0].eq(small.mask()).sum() == calls[0].ne(small.pad()).sum()
    assert "_pred_correct" not in extras and extras["_ctc_rows"] == batch["target"].size(0)
    model.eval()  # evaluation keeps the draft (its slot accuracy is logged); ratio 0 shows nothing
    ref_out, ref_extras = {}, {}
    ctc_outputs(criterion(small, ratio=0.0), model, batch, state, ref_out, ref_extras)
    assert len(calls) == 3 and "_pred_correct" in ref_extras and ref_extras["_revealed"] == 0
    torch.testing.assert_close(outputs["word_ins"]["loss"], ref_out["word_ins"]["loss"])


_TRAINED = {}  # (vocabulary, mix mode, steps) -> (state dict, log): one training per test session


def train_copy_model(d, mix_mode="none", steps=200):
    """A tiny CTC model trained on copy_batch(d) -> (a fresh model in eval mode holding the trained
    weights, the batch, the last log). The training runs once per arguments in a test session."""
    key = (tuple(d.symbols), mix_mode, steps)
    if key not in _TRAINED:
        torch.manual_seed(0)
        model = MistNARModel(tiny_cfg(ctc=True, upsample_ratio=2.0, ctc_min_slots=4), d)
        crit = criterion(d, mix_mode)
        batch = copy_batch(d)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            loss, _, log = crit(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        _TRAINED[key] = ({k: v.clone() for k, v in model.state_dict().items()}, log)
    weights, log = _TRAINED[key]
    model = MistNARModel(tiny_cfg(ctc=True, upsample_ratio=2.0, ctc_min_slots=4), d)
    model.load_state_dict(weights)
    return model.eval(), copy_batch(d), log


@pytest.mark.parametrize("mix_mode", ["none", "dynamic"])
def test_a_tiny_ctc_model_learns_to_copy(small, mix_mode):
    model, batch, log = train_copy_model(small, mix_mode)
    assert ("mist-loss" in log) == (mix_mode == "dynamic")
    hyps = CTCGenerator(small).generate([model], batch)
    gold = [small.string(t[t.ne(small.pad())]) for t in batch["target"]]
    out = [small.string(h[0]["tokens"]) for h in hyps]
    assert all(h[0]["tokens"][-1].item() == small.eos() for h in hyps)
    assert "[unused0]" not in " ".join(out)  # blanks never reach the output
    assert sum(o == g for o, g in zip(out, gold)) >= 6, list(zip(out, gold))


def test_ctc_and_length_head_generators_refuse_each_others_checkpoints(small, tiny_model):
    from mist_fairseq.generators.mist_generator import MistGenerator

    batch = copy_batch(small, n=2)
    with pytest.raises(ValueError, match="trained with --ctc"):
        CTCGenerator(small).generate([tiny_model], batch)
    ctc_model = MistNARModel(tiny_cfg(ctc=True), small).eval()
    with pytest.raises(ValueError, match="--decode-mode ctc"):
        MistGenerator(small).generate([ctc_model], batch)
    with pytest.raises(ValueError, match="no \\[unused0\\]"):
        MistNARModel(tiny_cfg(ctc=True), BertDictionary([t for t in small_vocab() if t != "[unused0]"]))


def test_ctc_checkpoint_through_the_clis_api_and_onnx(data, tmp_path, ar_teacher):
    ck = tmp_path / "ck"
    out = run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch",
                   "mist_tiny", "--criterion", "mist", "--ctc", "--upsample-ratio", "1.5", "--optimizer", "adam",
                   "--lr", "5e-4", "--batch-size", "8", "--max-update", "4", "--save-dir", str(ck),
                   "--no-epoch-checkpoints", "--disable-validation", "--log-format", "simple", "--log-interval", "1",
                   "--num-workers", "0", "--seed", "1"])
    assert "ctc_skipped" in out.stdout + out.stderr
    gen = ["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--path",
           str(ck / "checkpoint_last.pt"), "--gen-subset", "test", "--batch-size", "8"]
    plain = run_cli(gen)
    hyps = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", plain.stdout, re.M))
    assert len(hyps) == N_TEST and "[unused0]" not in plain.stdout
    assert run_cli(gen + ["--decode-mode", "ctc"]).stdout == plain.stdout  # nar is ctc on this checkpoint
    bad = run_cli(gen + ["--decode-mode", "semi-nar"], check=False)
    assert bad.returncode != 0 and "CTC output" in bad.stderr
    bad = run_cli(gen + ["--length-beam", "3"], check=False)
    assert bad.returncode != 0 and "no length candidates" in bad.stderr

    from mist_fairseq import MistModel

    hub = MistModel.from_pretrained(str(ck), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(data / "bin"),
                                    threads=1, batch_size=4)
    sources = (data / "raw" / "test.src").read_text().splitlines()
    texts = hub.generate(sources)
    assert len(texts) == N_TEST and not any("[unused0]" in t for t in texts)
    assert len(hub.generate(sources, ctc_beam=3, rerank_path=str(ar_teacher))) == N_TEST
    beam = run_cli(gen + ["--ctc-beam", "3", "--rerank-path", str(ar_teacher)])
    assert len(re.findall(r"^H-", beam.stdout, re.M)) == N_TEST
    avoided = run_cli(gen + ["--ctc-beam", "3", "--avoid-copy", "--bpe", "bert", "--bpe-vocab-file",
                             str(data / "bin" / "vocab.txt")])  # the flag on the CLI and the API alike
    cli = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", avoided.stdout, re.M))
    assert [cli[str(i)] for i in range(N_TEST)] == hub.generate(sources, ctc_beam=3, avoid_copy=True)
    with pytest.raises(ValueError, match="--ctc-beam 3 is for checkpoints trained with --ctc"):
        MistModel.from_pretrained(str(ar_teacher.parent), checkpoint_file=ar_teacher.name,
                                  data_name_or_path=str(data / "bin")).generate(sources[:1], ctc_beam=3)
    from mist_fairseq.serve.backends import load_backend

    served = load_backend("torch", str(ck), checkpoint_file="checkpoint_last.pt", data=str(data / "bin"),
                          decode={"ctc_beam": 3, "avoid_copy": True})
    assert served.decode_options.ctc_beam == 3 and served.decode_options.avoid_copy and len(served.generate(sources[:2])) == 2
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from mist_fairseq.export import OnnxMistModel

    res = python_cli("mist_fairseq.export", str(ck / "checkpoint_last.pt"), "--data", str(data / "bin"),
                     "--out", str(tmp_path / "onnx"), "--check", str(data / "raw" / "test.src"))
    assert json.loads(res.stdout.strip().splitlines()[-1])["fp32"]["identical"] == 1.0
    onnx = OnnxMistModel(str(tmp_path / "onnx"), threads=1, batch_size=4)
    assert onnx.config["ctc"]["upsample_ratio"] == 1.5 and onnx.generate(sources) == texts


def test_prefix_beam_search_sums_every_alignment_of_its_outputs():
    from mist_fairseq.generators.ctc_beam import prefix_beam_search

    torch.manual_seed(2)
    V, T = 4, 5  # class 0 the blank
    lp = torch.randn(T, V).log_softmax(-1)
    tokens = list(range(1, V))
    ranked = prefix_beam_search([tokens] * T, [[lp[t, c].item() for c in tokens] for t in range(T)],
                                [lp[t, 0].item() for t in range(T)], beam=1000)
    exact = {}
    for p in itertools.product(range(V), repeat=T):
        out = tuple(collapse_path(list(p)))
        exact[out] = exact.get(out, 0.0) + math.exp(sum(lp[t, p[t]].item() for t in range(T)))
    assert len(ranked) == len(exact)  # every output, once
    for prefix, score in ranked:
        assert score == pytest.approx(math.log(exact[prefix]), abs=1e-5)
    norm = [s / max(1, len(p)) for p, s in ranked]
    assert norm == sorted(norm, reverse=True)  # best log-prob per token first
    small = prefix_beam_search([tokens] * T, [[lp[t, c].item() for c in tokens] for t in range(T)],
                               [lp[t, 0].item() for t in range(T)], beam=3)
    assert len(small) == 3


class _PreferLast:
    """A rescorer that prefers each source's last candidate."""

    def score(self, model, state, src, tokens, k):
        self.seen = tokens.clone()
        return torch.arange(tokens.size(0), dtype=torch.float32) % k


def test_ctc_beam_candidates_and_rescoring(small):
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(ctc=True, upsample_ratio=2.0, ctc_min_slots=4), small).eval()
    batch = copy_batch(small, n=3)
    greedy = CTCGenerator(small).generate([model], batch)
    one = CTCGenerator(small, beam=1).generate([model], batch)
    assert [h[0]["tokens"].tolist() for h in one] == [h[0]["tokens"].tolist() for h in greedy]
    beam = CTCGenerator(small, beam=4).generate([model], batch)
    assert all(h[0]["tokens"][-1].item() == small.eos() for h in beam)
    scorer = _PreferLast()
    picked = CTCGenerator(small, beam=4, rescorer=scorer).generate([model], batch)
    assert scorer.seen.size(0) == 3 * 4  # every candidate of every source, in one call
    for i, h in enumerate(picked):
        cand = scorer.seen[4 * i + 3]
        assert h[0]["tokens"].tolist() == cand[cand.ne(small.pad())].tolist()


def test_deep_supervision_adds_the_inner_layers_ctc_loss(small):
    """--layer-loss-layers 1,2 on a 3-layer CTC model: a 'layers' loss equal to the mean CTC NLL of
    layers 1 and 2's outputs through the output head (computed here layer by layer), L_NAT unchanged."""
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(ctc=True, upsample_ratio=2.0, ctc_min_slots=4, encoder_layers=3), small).train()
    batch = copy_batch(small)
    src = batch["net_input"]["src_tokens"]
    crit = MistCriterion(_Task(small), 0.1, 0.1, 1.0, "none", 0.0, None, 0, "first", target_keep_prob=0,
                         target_random_prob=0, layer_loss_layers="1,2")
    outputs, extras = {}, {}
    ctc_outputs(crit, model, batch, model.encode_source(src), outputs, extras)
    plain = {}
    ctc_outputs(criterion(small, ratio=0.0), model, batch, model.encode_source(src), plain, {})
    assert "layers" not in plain
    torch.testing.assert_close(outputs["word_ins"]["loss"], plain["word_ins"]["loss"])
    # by hand: the slots are all [MASK] (no glancing), each layer's states projected by the same head
    state = model.encode_source(src)
    y = model.slot_target(src)
    enc = model.encoder
    positions = state.length.unsqueeze(1) + torch.arange(y.size(1))
    x = enc.embeddings(y, positions, torch.ones_like(y))
    mask = torch.cat([state.key_mask, y.ne(small.pad())], 1)[:, None, None, :]
    targets, lengths = ctc_targets(batch["target"], small.pad(), small.eos())
    n_slots = y.ne(small.pad()).sum(1)
    nlls = []
    for layer, past in list(zip(enc.layers, state.kv))[:2]:
        x, _ = layer(x, mask, past_kv=past)
        nlls.append(ctc_nll(model.mlm_head(x), n_slots, targets, lengths, model.blank_idx))
    expected = torch.stack(nlls).mean(0).sum() / lengths.sum()
    torch.testing.assert_close(outputs["layers"]["loss"], expected)
    assert outputs["layers"]["loss"].requires_grad


def test_deep_supervision_refusals(small, tiny_model):
    from mist_fairseq.criterions.ctc_passes import parse_layers

    assert parse_layers("") == () and parse_layers("2, 4") == (2, 4)
    for bad in ("0", "a", "2,2"):
        with pytest.raises(ValueError, match="--layer-loss-layers"):
            parse_layers(bad)
    batch = copy_batch(small)
    crit = MistCriterion(_Task(small), 0.1, 0.1, 1.0, "none", 0.0, None, 0, "first", target_keep_prob=0,
                         target_random_prob=0, layer_loss_layers="2")
    ctc_model = MistNARModel(tiny_cfg(ctc=True, upsample_ratio=2.0, ctc_min_slots=4), small).train()  # 2 layers
    with pytest.raises(ValueError, match="layers below its last are 1-1"):
        crit.mist_outputs(ctc_model, batch)
    with pytest.raises(ValueError, match="supervises a CTC output's layers"):
        crit.mist_outputs(tiny_model.train(), batch)


def _reference_ctc_nll(logits, n_slots, targets, lengths, blank):
    """CTC over the full vocabulary: log-softmax, then torch's ctc_loss (what ctc_nll computes without it)."""
    lp = logits.float().log_softmax(-1).transpose(0, 1)
    return torch.nn.functional.ctc_loss(lp, targets, n_slots, lengths, blank=blank, reduction="none",
                                        zero_infinity=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-4)])
def test_ctc_nll_over_gathered_columns_equals_the_full_vocabulary_loss_and_gradient(dtype, tol):
    torch.manual_seed(3)
    B, T, V, blank = 6, 9, 40, 1
    # repeats (a a b: a blank is needed between the a's), one token five times, a short row, padded slots,
    # and a row whose target cannot fit its slots (no alignment: no loss, no gradient)
    targets = torch.tensor([[3, 3, 4, 0, 0], [5, 6, 5, 6, 7], [8, 8, 8, 8, 8], [9, 0, 0, 0, 0],
                            [3, 4, 5, 6, 7], [2, 2, 2, 0, 0]])
    lengths = torch.tensor([3, 5, 5, 1, 5, 3])
    n_slots = torch.tensor([9, 9, 9, 4, 7, 4])
    weights = torch.rand(B)
    x = torch.randn(B, T, V).to(dtype).requires_grad_()
    ref = _reference_ctc_nll(x, n_slots, targets, lengths, blank)
    (ref * weights).sum().backward()
    ref_grad, x.grad = x.grad.float().clone(), None
    nll = ctc_nll(x, n_slots, targets, lengths, blank)
    (nll * weights).sum().backward()
    assert nll[5].item() == 0.0 and ref[5].item() == 0.0 and x.grad[5].abs().max().item() == 0.0
    assert torch.allclose(nll, ref, rtol=1e-6, atol=1e-4)
    assert x.grad.dtype == dtype
    assert (x.grad.float() - ref_grad).abs().max().item() < tol
    assert x.grad[3, 4:].abs().max().item() == 0.0  # slots past the row's n_slots get no gradient
