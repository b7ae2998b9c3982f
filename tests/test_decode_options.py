"""DecodeOptions: one name and one default per decoding option on every path."""
import dataclasses
from types import SimpleNamespace

import pytest
from fairseq.dataclass.configs import GenerationConfig

from mist_fairseq.generators.options import DecodeOptions
from mist_fairseq.tasks.mist_nar import MistNARTaskConfig

FAIRSEQ_GENERATION = ("beam", "lenpen", "max_len_a", "max_len_b")


def test_every_option_is_a_task_or_generation_flag_with_the_same_default():
    task = {f.name: f.default for f in dataclasses.fields(MistNARTaskConfig)}
    gen = {f.name: f.default for f in dataclasses.fields(GenerationConfig)}
    for f in dataclasses.fields(DecodeOptions):
        where = gen if f.name in FAIRSEQ_GENERATION else task
        assert f.name in where, f"{f.name}: no flag of that name"
        assert f.default == where[f.name] or str(where[f.name]) == str(f.default), f.name


def test_from_task_reads_the_task_and_the_generation_options():
    tcfg = SimpleNamespace(decode_mode="semi-nar", mist_decode_iters=2, decode_strategy="mask-predict",
                           length_beam=3, min_target_length=4, no_dedup=True, block_size=2, rerank="none",
                           rerank_path=None)
    o = DecodeOptions.from_task(tcfg, SimpleNamespace(beam=2, lenpen=0.5, max_len_a=1.5, max_len_b=10))
    assert (o.decode_mode, o.mist_decode_iters, o.decode_strategy, o.length_beam, o.min_target_length,
            o.no_dedup, o.block_size, o.beam, o.lenpen, o.max_len_a, o.max_len_b) == (
        "semi-nar", 2, "mask-predict", 3, 4, True, 2, 2, 0.5, 1.5, 10)
    # a config without the newer fields (an older checkpoint's) takes the defaults
    assert DecodeOptions.from_task(SimpleNamespace(length_beam=5)) == DecodeOptions(length_beam=5)


def test_replace_names_the_option_to_use():
    o = DecodeOptions()
    assert o.replace(length_beam=3, beam=None).length_beam == 3 and o.replace(beam=None).beam == o.beam
    with pytest.raises(TypeError, match="'mode'; it is named 'decode_mode'"):
        o.replace(mode="ar")
    with pytest.raises(TypeError, match="unknown decoding option 'beam_size'"):
        o.replace(beam_size=2)


@pytest.mark.parametrize("bad,flag", [
    (dict(decode_mode="beam"), "--decode-mode beam"),
    (dict(decode_strategy="x"), "--decode-strategy x"),
    (dict(mist_decode_iters=0), "--mist-decode-iters 0"),
    (dict(length_beam=0), "--length-beam 0"),
    (dict(rerank="gpt"), "--rerank gpt"),
    (dict(rerank="ar", rerank_path="x.pt"), "exclude each other"),
    (dict(decode_mode="ar", rerank_path="x.pt"), "AR beam search ranks its own"),
])
def test_bad_values_are_refused_with_their_flag(bad, flag):
    with pytest.raises(ValueError, match=flag):
        DecodeOptions(**bad)


def test_dict_round_trip_and_the_keys_of_older_export_configs():
    o = DecodeOptions(length_beam=3, no_dedup=True)
    assert DecodeOptions.from_dict(o.to_dict()) == o
    old = {"iterations": 3, "strategy": "mask-predict", "length_beam": 2, "min_length": 3, "dedup": False}
    assert DecodeOptions.from_dict(old) == DecodeOptions(mist_decode_iters=3, decode_strategy="mask-predict",
                                                         length_beam=2, min_target_length=3, no_dedup=True)
