"""The output vocabulary shortlist (--output-shortlist): the table, the batch's candidates, the
projection onto them in training (token and CTC losses over the shortlist's columns) and in every
decoding path (-inf outside it), and a checkpoint through fairseq-train / fairseq-generate /
add_shortlist (the ONNX export of one: tests/test_export.py)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import USER_DIR, python_cli, run_cli, tiny_cfg
from mist_fairseq.criterions.ctc_passes import ctc_outputs
from mist_fairseq.criterions.mist import MistCriterion
from mist_fairseq.generators.precision import decoding_copy
from mist_fairseq.models.mist_nar import MistNARModel
from mist_fairseq.models.shortlist import build_table, candidates, ids_of, index_of, widen

PAD, UNK, SEP, MASK = 0, 4, 6, 7


def pairs(rows):
    return [(torch.tensor(s), torch.tensor(t)) for s, t in rows]


CORPUS = [([10, 11, SEP], [20, 21, SEP]), ([10, 12, SEP], [20, 22, SEP]), ([10, SEP], [22, SEP]),
          ([13, SEP], [20, 23, SEP])]


def test_table_ranks_frequent_targets_and_cooccurring_neighbours_by_hand():
    frequent, table = build_table(pairs(CORPUS), 30, top_n=1, neighbours=2, special=[SEP, PAD])
    # target counts per pair: 20 x3, 22 x2, 21 x1, 23 x1 ([SEP] never counted)
    assert frequent.tolist() == [20]
    # 10 co-occurs with 22 in two pairs, 21 in one (20 is frequent: not a neighbour)
    assert table[10].tolist() == [22, 21]
    assert table[11].tolist() == [21, -1] and table[12].tolist() == [22, -1] and table[13].tolist() == [23, -1]
    assert table[SEP].tolist() == [-1, -1]  # special source ids get no neighbours
    assert table[25].tolist() == [-1, -1]  # never seen
    # more frequent slots than target types: padded with the first special
    frequent, _ = build_table(pairs(CORPUS), 30, top_n=6, neighbours=0, special=[SEP, PAD])
    assert frequent.tolist() == [20, 22, 21, 23, SEP, SEP]
    # nothing left beyond the frequent ones: no neighbours, no error
    _, table = build_table(pairs(CORPUS), 30, top_n=6, neighbours=2, special=[SEP, PAD])
    assert (table == -1).all()


def test_candidates_are_the_union_sorted():
    frequent, table = build_table(pairs(CORPUS), 40, top_n=1, neighbours=2, special=[SEP, PAD])
    got = candidates(frequent, table, torch.tensor([[10, 11, SEP]]), torch.tensor([UNK, SEP]), torch.tensor([30]))
    assert got.tolist() == [UNK, SEP, 10, 11, 20, 21, 22, 30]
    vocab = got
    assert ids_of(vocab, index_of(vocab, torch.tensor([[22, 30], [UNK, 10]]))).tolist() == [[22, 30], [UNK, 10]]
    assert index_of(None, torch.tensor([3])).tolist() == [3] and ids_of(None, torch.tensor([3])).tolist() == [3]
    wide = widen(torch.tensor([[1.0, 2.0]]), torch.tensor([1, 3]), 5)
    assert wide.tolist() == [[float("-inf"), 1.0, float("-inf"), 2.0, float("-inf")]]


def shortlisted(small_dict, **over):
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(output_shortlist=3, shortlist_neighbours=2, **over), small_dict)
    model.fill_shortlist(pairs(CORPUS))
    return model


def test_decoding_projects_onto_the_shortlist_only(small_dict):
    model = shortlisted(small_dict).eval()
    src = torch.tensor([[10, 11, SEP], [13, 14, SEP]])
    state = model.encode_source(src)
    assert state.vocab.tolist() == candidates(model.shortlist_frequent, model.shortlist_neighbours, src,
                                              model.shortlist_always, pad=PAD).tolist()
    assert {10, 11, 13, 14, 20, 21, 22, 23, UNK, SEP} <= set(state.vocab.tolist()) and PAD not in state.vocab.tolist()
    tgt = model.masked_target(torch.tensor([4, 3]))
    wide = model.decode_target(state, tgt)
    full = model.decode_target(state._replace(vocab=None, vocab_mask=None), tgt)
    outside = torch.ones(len(small_dict), dtype=torch.bool)
    outside[state.vocab] = False
    assert torch.isinf(wide[..., outside]).all() and (wide[..., outside] < 0).all()
    allowed = state.vocab_mask[:, None, :].expand(-1, tgt.size(1), -1)  # each sentence's own candidates
    assert torch.isinf(wide[..., state.vocab][~allowed]).all()
    torch.testing.assert_close(wide[..., state.vocab][allowed], full[..., state.vocab][allowed])
    torch.testing.assert_close(model.decode_target(state, tgt, compact=True), full[..., state.vocab])
    # the AR/semi-NAR step and the teacher-forced scores read the same shortlist
    step, _ = model.decode_step(state, None, tgt[:, :0], tgt[:, :1])
    assert torch.isinf(step[..., outside]).all()
    # a model without a table yet (or without the option) projects onto the whole vocabulary
    fresh = MistNARModel(tiny_cfg(output_shortlist=3), small_dict).eval()
    assert fresh.encode_source(src).vocab is None
    assert MistNARModel(tiny_cfg(), small_dict).eval().encode_source(src).vocab is None


def test_a_sentence_decodes_the_same_alone_and_in_a_batch(small_dict):
    """Each sentence may output its own candidates only, not those its batch mates bring."""
    model = shortlisted(small_dict).eval()
    alone = torch.tensor([[10, 11, SEP]])
    batch = torch.tensor([[10, 11, SEP, PAD], [12, 13, 14, SEP]])  # brings 12, 13, 14, 22, 23
    tgt = model.masked_target(torch.tensor([4]))
    with torch.no_grad():
        one = model.decode_target(model.encode_source(alone), tgt)
        both = model.decode_target(model.encode_source(batch), model.masked_target(torch.tensor([4, 3])))
    assert torch.equal(torch.isinf(one[0]), torch.isinf(both[0, :4]))
    assert torch.isinf(both[0, :, [12, 13, 14, 23]]).all() and not torch.isinf(both[1, :, [12, 13, 14, 23]]).any()
    torch.testing.assert_close(one[0][~torch.isinf(one[0])], both[0, :4][~torch.isinf(one[0])])
    # the same through the generator
    from mist_fairseq.generators.mist_generator import MistGenerator

    gen = MistGenerator(small_dict)
    sample = {"net_input": {"src_tokens": batch, "src_lengths": batch.ne(PAD).sum(1)}}
    first = gen.generate([model], sample)[0][0]["tokens"]
    single = gen.generate([model], {"net_input": {"src_tokens": alone, "src_lengths": torch.tensor([3])}})[0][0]
    assert torch.equal(first, single["tokens"])


def test_int8_copy_cuts_the_rows_of_its_int8_matrix(small_dict):
    model = shortlisted(small_dict).eval()
    copy = decoding_copy(model, torch.float32, int8=True)
    src = torch.tensor([[10, 11, SEP]])
    state = copy.encode_source(src)
    tgt = copy.masked_target(torch.tensor([4]))
    wide = copy.decode_target(state, tgt)
    full = copy.decode_target(state._replace(vocab=None, vocab_mask=None), tgt)
    torch.testing.assert_close(wide[..., state.vocab], full[..., state.vocab])


def make_criterion(task_dict, datasets=None, **over):
    kw = dict(label_smoothing=0.1, length_loss_factor=0.1, mist_loss_factor=1.0, mix_mode="none",
              glat_ratio=0.0, glat_ratio_end=None, glat_anneal_updates=0, glat_hamming="first",
              pseudo_from="glanced", score_positions="all", target_keep_prob=0.0, target_random_prob=0.0)
    kw.update(over)
    task = SimpleNamespace(cfg=SimpleNamespace(static_pseudo_targets=None, train_subset="train"),
                           source_dictionary=task_dict, target_dictionary=task_dict, datasets=datasets or {})
    return MistCriterion(task, **kw)


def sample_of(src, tgt):
    return {"id": torch.arange(src.size(0)), "net_input": {"src_tokens": src, "src_lengths": src.ne(PAD).sum(1)},
            "target": tgt, "nsentences": src.size(0), "ntokens": int(tgt.ne(PAD).sum())}


class TrainSplit:
    """The two fields of a LanguagePairDataset the table is built from."""
    src = [torch.tensor(s) for s, _ in CORPUS]
    tgt = [torch.tensor(t) for _, t in CORPUS]

    def __len__(self):
        return len(CORPUS)


def test_first_training_step_builds_the_table_from_the_train_split(small_dict):
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(output_shortlist=2, shortlist_neighbours=2), small_dict).train()
    ds = TrainSplit()
    crit = make_criterion(small_dict, {"train": ds})
    sample = sample_of(torch.tensor([[10, 11, SEP]]), torch.tensor([[20, 21, SEP]]))
    model.eval()
    crit(model, sample)  # validation does not build it
    assert not bool(model.shortlist_ready)
    model.train()
    crit(model, sample)
    assert bool(model.shortlist_ready) and model.shortlist_frequent.tolist() == [20, 22]
    # kept in the checkpoint
    again = MistNARModel(tiny_cfg(output_shortlist=2, shortlist_neighbours=2), small_dict)
    again.load_state_dict(model.state_dict())
    assert bool(again.shortlist_ready) and torch.equal(again.shortlist_neighbours, model.shortlist_neighbours)


@pytest.mark.parametrize("mix_mode", ["none", "dynamic"])
def test_token_loss_is_label_smoothed_ce_over_the_shortlist_columns(small_dict, mix_mode):
    model = shortlisted(small_dict).train()
    crit = make_criterion(small_dict, mix_mode=mix_mode)
    src = torch.tensor([[10, 11, SEP], [13, 14, SEP]])
    gold = torch.tensor([[20, 30, 21, SEP], [23, SEP, PAD, PAD]])  # 30: in no table, a gold token
    outputs, _ = crit.mist_outputs(model, sample_of(src, gold))
    vocab = torch.unique(torch.cat([model.encode_source(src).vocab, gold[gold.ne(PAD)]]))
    assert 30 in vocab.tolist()
    real = gold.ne(PAD)
    state = model.encode_source(src)._replace(vocab=None)
    full = model.decode_target(state, model.masked_target(real.sum(1), gold.size(1)), real)
    cols = full[:, vocab]
    torch.testing.assert_close(outputs["word_ins"]["out"], cols)
    assert ids_of(vocab, outputs["word_ins"]["tgt"]).tolist() == gold[real].tolist()
    lp = cols.log_softmax(-1)
    tgt = outputs["word_ins"]["tgt"]
    ref = 0.9 * -lp.gather(1, tgt[:, None]).mean() - 0.1 * lp.mean()
    got = crit._compute_loss(outputs["word_ins"]["out"], tgt, label_smoothing=0.1)["loss"]
    torch.testing.assert_close(got, ref)
    if mix_mode == "dynamic":
        assert outputs["mist"]["out"].size(1) == vocab.numel()


def test_ctc_loss_over_the_shortlist_columns(small_dict):
    torch.manual_seed(0)
    model = shortlisted(small_dict, ctc=True).train()
    crit = make_criterion(small_dict, mix_mode="dynamic")
    src = torch.tensor([[10, 11, 12, SEP], [13, 14, SEP, PAD]])
    gold = torch.tensor([[20, 30, 21, SEP], [23, 23, SEP, PAD]])
    outputs, extras = {}, {}
    state = crit.batch_shortlist(model, model.encode_source(src), gold)
    assert model.blank_idx in state.vocab.tolist()
    ctc_outputs(crit, model, sample_of(src, gold), state, outputs, extras)
    y0 = model.slot_target(src)
    n_slots = y0.ne(PAD).sum(1)
    lp = model.decode_target(state._replace(vocab=None), y0)[..., state.vocab].log_softmax(-1)
    targets = index_of(state.vocab, torch.tensor([[20, 30, 21], [23, 23, PAD]]))
    ref = F.ctc_loss(lp.transpose(0, 1), targets, n_slots, torch.tensor([3, 2]),
                     blank=int(index_of(state.vocab, torch.tensor(model.blank_idx))), reduction="sum",
                     zero_infinity=True)
    torch.testing.assert_close(outputs["word_ins"]["loss"], ref / 5)  # divided by the 5 gold tokens
    assert "mist" in outputs and extras["_ctc_skipped"] == 0


def test_trained_checkpoint_generates_within_its_shortlist(data, tmp_path):
    ck = tmp_path / "ck"
    run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", "mist_tiny",
             "--criterion", "mist", "--output-shortlist", "20", "--shortlist-neighbours", "2", "--optimizer", "adam",
             "--lr", "5e-4", "--batch-size", "8", "--max-update", "4", "--save-dir", str(ck), "--no-epoch-checkpoints",
             "--disable-validation", "--num-workers", "0", "--seed", "1"])
    state = torch.load(ck / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    weights = state["model"]
    assert bool(weights["shortlist_ready"]) and weights["shortlist_frequent"].numel() == 20
    out = run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--path", str(ck / "checkpoint_last.pt"), "--gen-subset", "test", "--batch-size", "1"]).stdout
    from mist_fairseq.dictionary import BertDictionary

    d = BertDictionary.load(str(data / "bin" / "dict.src.txt"))
    srcs = {int(line.split("\t")[0][2:]): line.split("\t")[1] for line in out.splitlines() if line.startswith("S-")}
    hyps = {int(line.split("\t")[0][2:]): line.split("\t")[2] for line in out.splitlines() if line.startswith("H-")}
    assert hyps and set(hyps) == set(srcs)
    frequent, table = weights["shortlist_frequent"], weights["shortlist_neighbours"]
    for i, hyp in hyps.items():
        src = torch.tensor([d.index(w) for w in srcs[i].split()] + [d.eos()])
        allowed = set(candidates(frequent, table, src, torch.tensor([d.eos(), d.unk()])).tolist())
        assert {d.index(w) for w in hyp.split()} <= allowed, (srcs[i], hyp)


def test_export_refuses_a_shortlist_without_a_table(small_dict, tmp_path):
    from mist_fairseq.export.onnx_export import export

    model = MistNARModel(tiny_cfg(output_shortlist=3), small_dict)  # never trained: no table
    hub = SimpleNamespace(models=[model], task=SimpleNamespace(cfg=SimpleNamespace()))
    with pytest.raises(ValueError, match="no table"):
        export(hub, str(tmp_path / "onnx"))
    assert not (tmp_path / "onnx").exists()


def test_add_shortlist_gives_a_trained_checkpoint_a_table(trained, data, tmp_path):
    ck = trained / "checkpoint_last.pt"
    before = ck.read_bytes()
    out = tmp_path / "sl.pt"
    done = python_cli("mist_fairseq.add_shortlist", str(ck), "--data", str(data / "bin"), "--out", str(out),
                      "--output-shortlist", "10", "--shortlist-neighbours", "3")
    assert "from 64 train pairs" in done.stdout
    assert ck.read_bytes() == before  # the original is untouched
    new = torch.load(out, map_location="cpu", weights_only=False)
    old = torch.load(ck, map_location="cpu", weights_only=False)
    assert new["cfg"]["model"]["output_shortlist"] == 10 and bool(new["model"]["shortlist_ready"])
    assert new["model"]["shortlist_neighbours"].shape[1] == 3
    for k, v in old["model"].items():  # the trained weights are carried over as they were
        assert torch.equal(new["model"][k], v), k
    from mist_fairseq.inference import MistModel

    hub = MistModel.from_pretrained(str(tmp_path), checkpoint_file="sl.pt", data_name_or_path=str(data / "bin"))
    src = hub.encode("how do i learn python ?")[None]
    assert hub.models[0].encode_source(src).vocab.numel() < len(hub.task.target_dictionary)
    assert len(hub.generate(["how do i learn python ?"])) == 1
    refused = python_cli("mist_fairseq.add_shortlist", str(ck), "--data", str(data / "bin"), "--out", str(ck),
                         check=False)
    assert refused.returncode != 0 and "its own name" in refused.stderr
