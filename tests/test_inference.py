"""The Python API (mist_fairseq.inference.MistModel): raw text in, the same text fairseq-generate writes out."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import N_TEST, USER_DIR, run_cli


def load(trained, data, **kw):
    from mist_fairseq import MistModel

    return MistModel.from_pretrained(str(trained), checkpoint_file="checkpoint_last.pt",
                                     data_name_or_path=str(data / "bin"), threads=1, **kw)


def test_generate_matches_fairseq_generate(trained, data):
    model = load(trained, data, batch_size=4)
    sources = (data / "raw" / "test.src").read_text().splitlines()
    assert len(sources) == N_TEST
    got = model.generate(sources)
    gen = run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--path", str(trained / "checkpoint_last.pt"), "--gen-subset", "test", "--batch-size", "8",
                   "--bpe", "bert", "--bpe-vocab-file", str(data / "bin" / "vocab.txt")]).stdout
    want = {int(i): d for i, d in re.findall(r"^D-(\d+)\t\S+\t(.*)$", gen, re.M)}
    assert len(want) == N_TEST
    assert got == [want[i] for i in range(N_TEST)]  # input order, detokenized, identical
    assert not any(" ##" in g for g in got)
    # decoding options reach the generator, and sample() is generate()
    gen = model.generator(mist_decode_iters=3, decode_strategy="mask-predict", length_beam=2)
    assert (gen.decode_iters, gen.strategy, gen.length_beam) == (3, "mask-predict", 2)
    assert len(model.generate(sources, mist_decode_iters=3, decode_strategy="mask-predict", length_beam=2)) == N_TEST
    with pytest.raises(ValueError, match="mist-decode-iters"):
        model.generate(sources, mist_decode_iters=0)
    with pytest.raises(TypeError, match="'iterations'; it is named 'mist_decode_iters'"):
        model.generate(sources, iterations=3)
    assert model.sample(sources[0]) == got[0]


def test_decoding_modes_reach_the_generator(trained, trained_two_stream, data):
    """decode_mode / block_size / beam choose the generator from the same table fairseq-generate uses; AR
    output equals fairseq-generate's --decode-mode ar; a checkpoint trained without the two-stream
    loss is refused semi-NAR and AR decoding."""
    from mist_fairseq.generators.block_generator import ARGenerator, SemiNARGenerator

    nar_only = load(trained, data)
    for mode in ("ar", "semi-nar"):
        with pytest.raises(ValueError, match=f"--decode-mode {mode} needs a checkpoint trained with --block-loss-factor"):
            nar_only.generator(decode_mode=mode)
    trained = trained_two_stream
    model = load(trained, data, batch_size=4)
    sources = (data / "raw" / "test.src").read_text().splitlines()[:6]
    assert isinstance(model.generator(decode_mode="semi-nar", block_size=3), SemiNARGenerator)
    assert model.generator(decode_mode="semi-nar", block_size=3).block_size == 3
    gen = model.generator(decode_mode="ar", beam=3)
    assert isinstance(gen, ARGenerator) and gen.beam == 3
    # a block as wide as any target is the NAR pass
    assert model.generate(sources, decode_mode="semi-nar", block_size=64) == model.generate(sources)
    got = model.generate(sources, decode_mode="ar", beam=2)
    out = run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--path", str(trained / "checkpoint_last.pt"), "--gen-subset", "test", "--batch-size", "8",
                   "--decode-mode", "ar", "--beam", "2", "--bpe", "bert",
                   "--bpe-vocab-file", str(data / "bin" / "vocab.txt")]).stdout
    want = {int(i): d for i, d in re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M)}
    assert got == [want[i] for i in range(6)]
    with pytest.raises(ValueError, match="--decode-mode"):
        model.generate(sources, decode_mode="beam")


def test_concurrent_calls_give_the_serial_results(trained, data):
    model = load(trained, data)
    sources = (data / "raw" / "test.src").read_text().splitlines()
    chunks = [sources[i::4] for i in range(4)]
    serial = [model.generate(c) for c in chunks]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(model.generate, chunks * 2))
    assert parallel == serial * 2


def test_clear_errors(trained, data, tmp_path):
    from mist_fairseq import MistModel

    with pytest.raises(FileNotFoundError, match="data_name_or_path"):
        MistModel.from_pretrained(str(trained), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="checkpoint_file"):
        MistModel.from_pretrained(str(trained), checkpoint_file="nope.pt", data_name_or_path=str(data / "bin"))
    model = load(trained, data)
    with pytest.raises(TypeError, match="list of strings"):
        model.generate("one string")
    assert model.generate([]) == []
