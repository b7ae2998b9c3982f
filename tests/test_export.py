"""ONNX export (python -m mist_fairseq.export) and its onnxruntime runner: same outputs as the PyTorch
generator, int8 graphs really quantized, clear errors."""

import json
import os

import pytest
import torch

from conftest import N_TEST, python_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(trained, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    res = python_cli("mist_fairseq.export", str(trained / "checkpoint_last.pt"), "--data", str(data / "bin"),
                     "--out", str(out), "--int8", "--check", str(data / "raw" / "test.src"))
    report = json.loads(res.stdout.strip().splitlines()[-1])
    return out, report


def hub(trained, data):
    from mist_fairseq import MistModel

    return MistModel.from_pretrained(str(trained), checkpoint_file="checkpoint_last.pt",
                                     data_name_or_path=str(data / "bin"), threads=1, batch_size=4)


def test_fp32_export_gives_the_pytorch_outputs(exported, trained, data):
    from mist_fairseq.export import OnnxMistModel

    out, report = exported
    assert report["fp32"]["n"] == N_TEST and report["fp32"]["identical"] == 1.0
    sources = (data / "raw" / "test.src").read_text().splitlines()
    ref, onnx = hub(trained, data), OnnxMistModel(str(out), threads=1, batch_size=4)
    # the contract's numbers, not only the argmax: length logits and token logits of a padded batch
    src = torch.nn.utils.rnn.pad_sequence([ref.encode(s) for s in sources[:5]], batch_first=True)
    model = ref.models[0]
    with torch.no_grad():
        state, ostate = model.encode_source(src), onnx.model.encode_source(src)
        torch.testing.assert_close(ostate.length_logits, model.length_logits(state), atol=1e-4, rtol=1e-4)
        tgt = model.masked_target(torch.tensor([3, 5, 2, 4, 6]))
        torch.testing.assert_close(onnx.model.decode_target(ostate, tgt), model.decode_target(state, tgt),
                                   atol=1e-4, rtol=1e-4)
    assert onnx.generate(sources) == ref.generate(sources)
    # no per-shape allocation plans: with them a service's memory grows with every new (batch, length)
    for session in (onnx.model.source, onnx.model.target):
        assert session.get_session_options().enable_mem_pattern is False
    # every decoding mode goes through the same generator over the contract
    for kw in ({"length_beam": 3}, {"mist_decode_iters": 3, "decode_strategy": "mist"},
               {"mist_decode_iters": 3, "decode_strategy": "mask-predict"}):
        assert onnx.generate(sources, **kw) == ref.generate(sources, **kw), kw


def test_int8_graphs_are_quantized_and_decode(exported, data):
    import onnx

    from mist_fairseq.export import OnnxMistModel

    out, report = exported
    cfg = json.loads((out / "mist_export.json").read_text())
    assert cfg["precisions"] == ["fp32", "int8"]
    for g in ("source", "target"):
        fp32, int8 = out / cfg["graphs"]["fp32"][g], out / cfg["graphs"]["int8"][g]
        ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops
        assert "MatMulInteger" not in {n.op_type for n in onnx.load(str(fp32)).graph.node}
    assert 0.0 <= report["int8"]["token_agreement"] <= 1.0
    sources = (data / "raw" / "test.src").read_text().splitlines()
    outs = OnnxMistModel(str(out), precision="int8", threads=1).generate(sources)
    assert len(outs) == N_TEST and all(isinstance(o, str) for o in outs)


def test_clear_errors(exported, trained, data, tmp_path):
    from mist_fairseq.export import OnnxMistModel

    out, _ = exported
    with pytest.raises(FileNotFoundError, match="mist_export.json"):
        OnnxMistModel(str(tmp_path))
    fp32_only = tmp_path / "fp32"
    fp32_only.mkdir()
    for f in os.listdir(out):
        os.symlink(out / f, fp32_only / f)
    cfg = json.loads((out / "mist_export.json").read_text())
    del cfg["graphs"]["int8"]
    (fp32_only / "mist_export.json").unlink()
    (fp32_only / "mist_export.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="--int8"):
        OnnxMistModel(str(fp32_only), precision="int8")
    onnx = OnnxMistModel(str(out))
    too_long = "word " * (onnx.max_source_tokens + 5)
    with pytest.raises(ValueError, match="input 1: .* WordPiece tokens"):
        onnx.generate(["fine", too_long])
    with pytest.raises(ValueError, match="input 1: .* WordPiece tokens"):
        hub(trained, data).generate(["fine", too_long])
    with pytest.raises(TypeError, match="list of strings"):
        onnx.generate("one string")
    with pytest.raises(ValueError, match="NAR only"):
        onnx.generate(["fine"], decode_mode="ar")
    assert onnx.generate(["fine"], decode_mode="nar") == onnx.generate(["fine"])
    res = python_cli("mist_fairseq.export", str(tmp_path / "nope.pt"), "--data", str(data / "bin"), "--out",
                     str(tmp_path / "x"), check=False)
    assert res.returncode == 2 and "no such checkpoint file" in res.stderr


def test_parity_report(exported, data, tmp_path):
    out, _ = exported
    python_cli("mist_fairseq.export.parity", str(out), "--data", str(data / "bin"), "--src",
               str(data / "raw" / "test.src"), "--ref", str(data / "raw" / "test.tgt"), "--threads", "1",
               "--json", str(tmp_path / "parity.json"))
    rep = json.loads((tmp_path / "parity.json").read_text())["systems"]
    assert set(rep) == {"pytorch", "onnx-fp32", "onnx-int8"}
    assert rep["onnx-fp32"]["identical"] == 1.0 and rep["onnx-fp32"]["BLEU-4"] == rep["pytorch"]["BLEU-4"]
    assert rep["onnx-fp32"]["vs_pytorch"]["diff"] == 0.0
    assert "ci95" in rep["onnx-int8"]["vs_pytorch"] and rep["onnx-int8"]["n"] == N_TEST


def test_export_is_atomic_and_a_torn_folder_is_refused(trained, data, tmp_path, monkeypatch):
    """A failed (or killed) export leaves the previous folder as it was and no half folder; a stale
    work folder of a killed export is removed by the next one; the runner refuses a folder whose files
    do not match its config, naming the file; a folder holding other files is never overwritten."""
    from mist_fairseq.export import OnnxMistModel, onnx_export

    model = hub(trained, data)
    out = tmp_path / "exp"
    onnx_export.export(model, str(out))
    sources = (data / "raw" / "test.src").read_text().splitlines()[:4]
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    want = OnnxMistModel(str(out), threads=1).generate(sources)
    stale = tmp_path / "exp.partial-999999999"  # a killed export's work folder (no such process)
    stale.mkdir()
    (stale / "source.onnx").write_bytes(b"half")

    def dies_after_the_fp32_graphs(*a, **kw):
        raise KeyboardInterrupt  # what a kill between the graphs looks like from inside
    monkeypatch.setattr(onnx_export, "quantize_graphs", dies_after_the_fp32_graphs)
    with pytest.raises(KeyboardInterrupt):
        onnx_export.export(model, str(out), int8=True)
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no work folder left, the stale one gone
    assert OnnxMistModel(str(out), threads=1).generate(sources) == want
    monkeypatch.undo()
    onnx_export.export(model, str(out))  # replacing a previous export works
    assert sorted(os.listdir(out)) == sorted(before) and sorted(p.name for p in tmp_path.iterdir()) == ["exp"]

    torn = tmp_path / "torn"
    torn.mkdir()
    for f in os.listdir(out):
        (torn / f).write_bytes((out / f).read_bytes())
    (torn / "target.onnx").write_bytes((out / "target.onnx").read_bytes()[:1000])
    with pytest.raises(ValueError, match="target.onnx: not the file mist_export.json records"):
        OnnxMistModel(str(torn))
    (torn / "target.onnx").unlink()
    with pytest.raises(ValueError, match="target.onnx: missing"):
        OnnxMistModel(str(torn))
    res = python_cli("mist_fairseq.serve", "--model", str(torn), "--backend", "onnx", check=False)
    assert res.returncode == 2 and "target.onnx: missing" in res.stderr and "Traceback" not in res.stderr

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds files an export does not write"):
        onnx_export.export(model, str(mine))
    assert (mine / "notes.txt").read_text() == "keep me"


def test_int8_answers_do_not_depend_on_batch_mates(exported, data):
    """int8 activation scales are computed per call over the whole batch: batched, a row's logits
    change with its batch mates; so the int8 runner decodes one input a pass by default, and an
    input's text is the same alone and inside any batch."""
    from mist_fairseq.export import OnnxMistModel

    out, _ = exported
    sources = (data / "raw" / "test.src").read_text().splitlines()[:8]
    batched = OnnxMistModel(str(out), precision="int8", threads=1, batch_invariant=False)
    rows = [batched.encode(s) for s in sources[:4]]
    src = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=batched.dict.pad())
    tgt = batched.model.masked_target(torch.tensor([5, 5, 5, 5]))
    with torch.no_grad():
        together = batched.model.decode_target(batched.model.encode_source(src), tgt)[0]
        alone = batched.model.decode_target(batched.model.encode_source(rows[0][None]), tgt[:1])[0]
    assert not torch.equal(together, alone)  # the reason for the default below
    invariant = OnnxMistModel(str(out), precision="int8", threads=1)
    sizes, encode = [], invariant.model.encode_source

    def spy(src_tokens):
        sizes.append(src_tokens.size(0))
        return encode(src_tokens)
    invariant.model.encode_source = spy
    mixed = invariant.generate(sources)
    assert max(sizes) == 1
    assert mixed == [invariant.generate([s])[0] for s in sources]
    assert invariant.generate(sources[::-1]) == mixed[::-1]
    fp32 = OnnxMistModel(str(out), precision="fp32", threads=1)
    assert fp32.pass_size == fp32.batch_size  # fp32 keeps batching


def test_copy_target_input_travels_to_the_runner(trained, data, tmp_path):
    """A --target-input copy checkpoint (here: the trained weights with that option) exports its slot
    rule; the runner fills the slots as PyTorch does and decodes the same text."""
    from mist_fairseq import MistModel
    from mist_fairseq.export import OnnxMistModel

    state = torch.load(trained / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    state["cfg"]["model"]["target_input"] = "copy"
    torch.save(state, tmp_path / "copy.pt")
    out = tmp_path / "export"
    python_cli("mist_fairseq.export", str(tmp_path / "copy.pt"), "--data", str(data / "bin"), "--out", str(out))
    assert json.loads((out / "mist_export.json").read_text())["target_input"] == "copy"
    ref = MistModel.from_pretrained(str(tmp_path), checkpoint_file="copy.pt", data_name_or_path=str(data / "bin"),
                                    threads=1, batch_size=4)
    onnx = OnnxMistModel(str(out), threads=1, batch_size=4)
    assert ref.models[0].target_input == onnx.model.target_input == "copy"
    sources = (data / "raw" / "test.src").read_text().splitlines()
    src = ref.encode(sources[0]).unsqueeze(0)
    lengths = torch.tensor([4])
    copied = ref.models[0].masked_target(lengths, src_tokens=src)
    assert torch.equal(onnx.model.masked_target(lengths, src_tokens=src), copied)
    assert onnx.generate(sources) == ref.generate(sources)


def test_a_shortlist_export_feeds_the_candidates_and_gives_the_pytorch_outputs(trained, data, tmp_path):
    """An output shortlist travels as a table beside the graphs; the runner computes each batch's
    candidates, the target graph projects onto them, and the text equals PyTorch's."""
    from mist_fairseq import MistModel
    from mist_fairseq.export import OnnxMistModel

    python_cli("mist_fairseq.add_shortlist", str(trained / "checkpoint_last.pt"), "--data", str(data / "bin"),
               "--out", str(tmp_path / "sl.pt"), "--output-shortlist", "10", "--shortlist-neighbours", "3")
    out = tmp_path / "onnx"
    res = python_cli("mist_fairseq.export", str(tmp_path / "sl.pt"), "--data", str(data / "bin"), "--out", str(out),
                     "--int8", "--check", str(data / "raw" / "test.src"))
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["fp32"]["n"] == N_TEST and report["fp32"]["identical"] == 1.0
    config = json.loads((out / "mist_export.json").read_text())
    assert config["version"] == 3 and config["shortlist"] == {"file": "shortlist.npz", "size": 10, "neighbours": 3}
    sources = (data / "raw" / "test.src").read_text().splitlines()
    ref = MistModel.from_pretrained(str(tmp_path), checkpoint_file="sl.pt", data_name_or_path=str(data / "bin"),
                                    threads=1, batch_size=4)
    onnx = OnnxMistModel(str(out), threads=1, batch_size=4)
    src = torch.nn.utils.rnn.pad_sequence([ref.encode(s) for s in sources[:5]], batch_first=True)
    model = ref.models[0]
    with torch.no_grad():
        state, ostate = model.encode_source(src), onnx.model.encode_source(src)
        assert ostate.vocab is not None and torch.equal(ostate.vocab, state.vocab)
        assert state.vocab.numel() < len(ref.task.target_dictionary)
        tgt = model.masked_target(torch.tensor([3, 5, 2, 4, 6]))
        torch.testing.assert_close(onnx.model.decode_target(ostate, tgt), model.decode_target(state, tgt),
                                   atol=1e-4, rtol=1e-4)
    assert onnx.generate(sources) == ref.generate(sources)
    assert len(OnnxMistModel(str(out), precision="int8", threads=1).generate(sources)) == N_TEST
    # the table is part of the folder: without it the runner refuses the folder
    (out / "shortlist.npz").unlink()
    with pytest.raises(ValueError, match="shortlist.npz"):
        OnnxMistModel(str(out), threads=1)
