"""Unit tests of the encoder: Hugging Face parity, weight import, masks, the source K/V cache."""

import json
import os

import pytest
import torch

from conftest import small_vocab, tiny_cfg
from mist_fairseq.dictionary import BertDictionary
from mist_fairseq.models import pretrained
from mist_fairseq.models.mist_nar import MistNARModel

transformers = pytest.importorskip("transformers")


def hf_bert_dir(tmp_path, with_mlm_head, layers=2):
    """Saves a randomly initialised Hugging Face BERT (no download) as a checkpoint directory."""
    vocab = small_vocab()
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(1)
    cls = transformers.BertForMaskedLM if with_mlm_head else transformers.BertModel
    hf = cls(config).eval()
    # make the MLM head weights non-trivial so the import test can tell them apart from init
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = tmp_path / ("mlm" if with_mlm_head else "enc")
    hf.save_pretrained(out)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return out, hf


def load_model(path, **cfg_over):
    d = BertDictionary(small_vocab())
    model = MistNARModel(tiny_cfg(**cfg_over), d)
    fresh, unused = pretrained.load_pretrained(model, str(path))
    return model.eval(), d, fresh, unused


def batch(d, lengths, pad_left=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    words = torch.arange(8, len(d))
    T = max(lengths)
    out = torch.full((len(lengths), T), d.pad())
    for i, n in enumerate(lengths):
        row = words[torch.randint(len(words), (n - 1,), generator=g)].tolist() + [d.eos()]
        if pad_left:
            out[i, T - n:] = torch.tensor(row)
        else:
            out[i, :n] = torch.tensor(row)
    return out


@pytest.mark.parametrize("with_head", [False, True])
def test_parity_with_transformers(tmp_path, with_head):
    path, hf = hf_bert_dir(tmp_path, with_head)
    model, d, fresh, _ = load_model(path)
    src = batch(d, [7, 4, 6])
    ids = model.add_cls(src)
    _, ours = model.encoder.encode_source(ids, return_states=True)
    bert = hf.bert if with_head else hf
    ref = bert(input_ids=ids, attention_mask=ids.ne(0).long()).last_hidden_state
    real = ids.ne(0)
    assert torch.allclose(ours[real], ref[real], atol=1e-5)
    if with_head:
        # the MLM head came from cls.predictions.*, so the logits match too
        assert not any(k.startswith("mlm_head") for k in fresh)
        ref_logits = hf(input_ids=ids, attention_mask=ids.ne(0).long()).logits
        assert torch.allclose(model.mlm_head(ours)[real], ref_logits[real], atol=1e-4)
    else:
        assert "mlm_head.dense.weight" in fresh
    assert "length_head.weight" in fresh


def test_import_rejects_wrong_shapes_and_configs(tmp_path):
    path, _ = hf_bert_dir(tmp_path, False)
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match="num_hidden_layers=2 but --encoder-layers=3"):
        pretrained.check_config(cfg, tiny_cfg(encoder_layers=3), str(path))
    pretrained.check_config(cfg, tiny_cfg(), str(path))  # the matching preset passes
    d = BertDictionary(small_vocab() + ["extra"])
    with pytest.raises(AssertionError, match="word_embeddings.weight has shape"):
        pretrained.load_pretrained(MistNARModel(tiny_cfg(), d), str(path))


def test_pytorch_model_bin_is_read(tmp_path):
    path, hf = hf_bert_dir(tmp_path, False)
    os.remove(path / "model.safetensors")
    torch.save({"bert." + k: v for k, v in hf.state_dict().items()}, path / "pytorch_model.bin")
    model, d, _, _ = load_model(path)
    assert torch.equal(model.encoder.layers[1].value.weight, hf.encoder.layer[1].attention.self.value.weight)


def test_cached_decoding_equals_full_forward(tiny_model, small_dict):
    d = small_dict
    for pad_left in (False, True):
        src = batch(d, [9, 3, 6], pad_left=pad_left)
        tgt = batch(d, [5, 2, 4], seed=1)
        tgt = tgt.masked_fill(torch.rand(tgt.shape) < 0.5, d.mask()).masked_fill(tgt.eq(d.pad()), d.pad())
        state = tiny_model.encode_source(src)
        cached = tiny_model.decode_target(state, tgt)
        full = tiny_model.encoder.forward_full(tiny_model.add_cls(src), tgt)[:, -tgt.size(1):]
        real = tgt.ne(d.pad())
        assert torch.allclose(cached[real], tiny_model.mlm_head(full)[real], atol=1e-5)


def test_padding_layout_does_not_change_the_output(tiny_model, small_dict):
    d = small_dict
    right, left = batch(d, [9, 3], pad_left=False), batch(d, [9, 3], pad_left=True)
    tgt = torch.full((2, 4), d.mask())
    a = tiny_model.decode_target(tiny_model.encode_source(right), tgt)
    b = tiny_model.decode_target(tiny_model.encode_source(left), tgt)
    assert torch.allclose(a, b, atol=1e-5)
    # a padded row gives what the same row gives alone
    alone = tiny_model.decode_target(tiny_model.encode_source(right[1:, :3]), tgt[1:])
    assert torch.allclose(a[1:], alone, atol=1e-5)


def test_source_rows_never_see_the_target(tiny_model, small_dict):
    d = small_dict
    src = batch(d, [6, 6])
    t1 = torch.full((2, 5), d.mask())
    t2 = batch(d, [5, 5], seed=3)
    h1 = tiny_model.encoder.forward_full(tiny_model.add_cls(src), t1)
    h2 = tiny_model.encoder.forward_full(tiny_model.add_cls(src), t2)
    S = src.size(1) + 1
    assert torch.allclose(h1[:, :S], h2[:, :S], atol=1e-6)
    assert not torch.allclose(h1[:, S:], h2[:, S:], atol=1e-3)  # target rows do


def test_mix_source_layout_and_truncation(tiny_model, small_dict):
    d, m = small_dict, tiny_model
    pseudo = torch.tensor([[10, 11, d.eos()], [12, d.eos(), d.pad()]])
    src = torch.tensor([[20, 21, 22, d.eos()], [23, d.eos(), d.pad(), d.pad()]])
    mixed = m.mix_source(pseudo, src)
    real = [[t for t in row.tolist() if t != d.pad()] for row in mixed]
    assert real == [[10, 11, d.eos(), 20, 21, 22, d.eos()], [12, d.eos(), 23, d.eos()]]
    # packed: no padding inside a row, width = the longest row (not T + 1 + S)
    assert mixed.shape == (2, 7) and mixed[1, 4:].eq(d.pad()).all() and mixed[:, :4].ne(d.pad()).all()
    left_padded = torch.tensor([[20, 21, 22, d.eos()], [d.pad(), d.pad(), 23, d.eos()]])
    assert torch.equal(m.mix_source(pseudo, left_padded), mixed)
    # budget: positions (64) - [CLS] - target (16) = 47 tokens; a long source is cut, [SEP] kept
    long_src = torch.cat([torch.full((1, 60), 20), torch.tensor([[d.eos()]])], 1)
    cut = m.mix_source(pseudo[:1], long_src)
    row = [t for t in cut[0].tolist() if t != d.pad()]
    assert len(row) == 47 and row[-1] == d.eos() and row[:3] == [10, 11, d.eos()]
    assert row.count(d.eos()) == 2


def test_length_budget_is_checked(small_dict):
    with pytest.raises(ValueError, match="exceed the encoder's 64 positions"):
        MistNARModel(tiny_cfg(max_source_positions=50, max_target_positions=20), small_dict)


def test_init_std_and_dropout_flags_are_used(small_dict):
    torch.manual_seed(0)
    wide = MistNARModel(tiny_cfg(init_std=0.5), small_dict)
    narrow = MistNARModel(tiny_cfg(init_std=0.02), small_dict)
    assert wide.length_head.weight.std() > 10 * narrow.length_head.weight.std()
    src = batch(small_dict, [6, 4])
    tgt = torch.full((2, 3), small_dict.mask())
    for over, same in (({"dropout": 0.0, "attention_dropout": 0.0}, True), ({"dropout": 0.3}, False),
                       ({"dropout": 0.0, "attention_dropout": 0.3}, False)):
        m = MistNARModel(tiny_cfg(**over), small_dict).train()
        a = m.decode_target(m.encode_source(src), tgt)
        b = m.decode_target(m.encode_source(src), tgt)
        assert torch.allclose(a, b) == same, over


def test_output_projection_is_untied_by_default_and_tied_on_request(small_dict, tmp_path):
    torch.manual_seed(0)
    untied = MistNARModel(tiny_cfg(), small_dict)
    embed = untied.encoder.embeddings.word_embeddings.weight
    assert untied.mlm_head.weight is not embed and torch.equal(untied.mlm_head.weight, embed)  # a copy
    tied = MistNARModel(tiny_cfg(tie_output_embeddings=True), small_dict)
    assert tied.mlm_head.weight is tied.encoder.embeddings.word_embeddings.weight
    # untied, a step on the output side moves the projection and leaves the embeddings
    opt = torch.optim.SGD(untied.mlm_head.parameters(), lr=1.0)
    untied.mlm_head(torch.randn(3, 32)).logsumexp(-1).sum().backward()
    opt.step()
    assert not torch.equal(untied.mlm_head.weight, embed)
    # a checkpoint trained tied loads into the (default) untied model and gives the same outputs
    src, tgt = batch(small_dict, [6, 4]), torch.full((2, 3), small_dict.mask())
    untied.load_state_dict(tied.state_dict())
    untied.eval(), tied.eval()
    assert torch.allclose(untied.decode_target(untied.encode_source(src), tgt),
                          tied.decode_target(tied.encode_source(src), tgt), atol=1e-6)
    # importing an encoder-only checkpoint: the untied projection starts from its embeddings
    path, _ = hf_bert_dir(tmp_path, False)
    model, _, _, _ = load_model(path)
    assert torch.equal(model.mlm_head.weight, model.encoder.embeddings.word_embeddings.weight)
