"""--decode-precision bf16: every mode decodes on a bf16 copy of the model (and of an AR rescorer),
made once and kept while the weights are unchanged; the loaded model is left as it was; the ONNX
runner and the service refuse what they do not run."""

import copy

import pytest
import torch

from conftest import tiny_cfg
from mist_fairseq.generators.modes import build_generator
from mist_fairseq.generators.options import DecodeOptions
from mist_fairseq.generators.precision import decoding_copy, in_dtype
from mist_fairseq.generators.rerank import ARRescorer
from mist_fairseq.models import fast_path
from mist_fairseq.models.fast_path import bf16_matmul_supported
from mist_fairseq.models.mist_nar import MistNARModel
from test_criterion import toy_batch

MODES = [
    ({"decode_mode": "nar"}, False),
    ({"decode_mode": "nar", "length_beam": 3, "mist_decode_iters": 2}, False),
    ({"decode_mode": "nar", "length_beam": 3}, True),  # rescored by a separate AR scorer
    ({"decode_mode": "semi-nar", "block_size": 2}, False),
    ({"decode_mode": "ar", "beam": 2}, False),
    ({"decode_mode": "ctc"}, False),
    ({"decode_mode": "ctc", "ctc_beam": 3}, True),
]


def model(small_dict, seed, **cfg):
    torch.manual_seed(seed)
    return MistNARModel(tiny_cfg(**cfg), small_dict).eval()


def texts(hypos):
    return [h[0]["tokens"].tolist() for h in hypos]


def scores(hypos):
    return [h[0]["positional_scores"].float().tolist() + [float(h[0]["score"])] for h in hypos]


@pytest.mark.parametrize("options,rescored", MODES)
def test_bf16_decodes_like_a_bf16_model_and_leaves_the_model_as_it_was(small_dict, options, rescored):
    ctc = options["decode_mode"] == "ctc"
    decoder = model(small_dict, 0, **({"ctc": True, "upsample_ratio": 2.0, "ctc_min_slots": 4} if ctc else {}))
    scorer = model(small_dict, 1) if rescored else None
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    src, _ = toy_batch(small_dict, n=6, seed=3)
    sample = {"net_input": {"src_tokens": src}}

    bf16 = build_generator(small_dict, DecodeOptions(decode_precision="bf16", **options),
                           ARRescorer(scorer) if rescored else None)
    got = bf16.generate([decoder], sample)
    # the reference: the fp32 generator on bf16 copies made by hand
    ref_scorer = ARRescorer(decoding_copy(scorer, torch.bfloat16)) if rescored else None
    ref = build_generator(small_dict, DecodeOptions(**options), ref_scorer).generate(
        [decoding_copy(decoder, torch.bfloat16)], sample)
    assert texts(got) == texts(ref) and scores(got) == scores(ref)
    fp32 = build_generator(small_dict, DecodeOptions(**options), ARRescorer(scorer) if rescored else None)
    assert scores(fp32.generate([decoder], sample)) != scores(got)  # it did not decode in fp32
    assert all(h[0]["score"].dtype == torch.float32 and h[0]["positional_scores"].dtype == torch.float32 for h in got)
    # the loaded models are untouched: fp32, the same weights
    assert all(torch.equal(v, decoder.state_dict()[k]) for k, v in before.items())
    assert next(decoder.parameters()).dtype == torch.float32
    if rescored:
        assert next(scorer.parameters()).dtype == torch.float32


def test_fp32_decodes_the_model_itself(small_dict):
    m = model(small_dict, 0)
    assert in_dtype(m, torch.float32) is m
    assert build_generator(small_dict, DecodeOptions()).__class__.__name__ == "MistGenerator"


def test_the_copy_is_kept_and_made_anew_when_a_weight_changes(small_dict):
    m = model(small_dict, 0)
    m.make_generation_fast_()  # as fairseq-generate prepares it (its train() then returns None)
    first = in_dtype(m, torch.bfloat16)
    assert first is not m and next(first.parameters()).dtype == torch.bfloat16
    assert in_dtype(m, torch.bfloat16) is first  # kept
    with torch.no_grad():
        next(m.parameters()).add_(1.0)
    second = in_dtype(m, torch.bfloat16)
    assert second is not first  # the training step changed a weight: a fresh copy
    for (name, p), q in zip(m.named_parameters(), second.parameters()):
        assert torch.equal(p.detach().to(torch.bfloat16), q), name


def test_bad_precision_names_the_flag():
    with pytest.raises(ValueError, match="--decode-precision fp16: choose one of fp32, bf16, int8"):
        DecodeOptions(decode_precision="fp16")


def test_the_onnx_runner_and_the_service_refuse_what_they_do_not_run(tmp_path):
    from mist_fairseq.export.runner import refuse_unexported
    from mist_fairseq.serve.backends import load_backend

    with pytest.raises(ValueError, match="decode_precision='bf16' is PyTorch decoding's"):
        refuse_unexported(DecodeOptions(decode_precision="bf16"))
    with pytest.raises(ValueError, match="--backend onnx runs fp32 or int8, not bf16"):
        load_backend("onnx", str(tmp_path), precision="bf16")
    with pytest.raises(ValueError, match="--backend torch runs fp32, bf16, int8, not fp16"):
        load_backend("torch", str(tmp_path), precision="fp16", data=str(tmp_path))


@pytest.mark.skipif(not bf16_matmul_supported(), reason="CPU without bf16 dot products")
def test_the_decoding_copy_packs_its_matrices_and_computes_what_the_plain_bf16_model_does(small_dict):
    m = model(small_dict, 0)
    packed, plain = decoding_copy(m, torch.bfloat16), copy.deepcopy(m).to(torch.bfloat16).eval()
    slots = [mod for mod in packed.modules() if "packed" in dir(mod)]
    assert slots and all(mod.packed is not None for mod in slots)  # every linear layer and the output head
    src, tgt = toy_batch(small_dict, n=6, seed=3)
    masks = tgt.masked_fill(tgt.ne(small_dict.pad()), m.mask_idx)
    with torch.no_grad():
        got = packed.decode_target(packed.encode_source(src), masks).float()
        want = plain.decode_target(plain.encode_source(src), masks).float()
        exact = m.decode_target(m.encode_source(src), masks)
    assert torch.allclose(got, want, atol=0.05, rtol=0.02)
    assert (got - exact).abs().max() < 0.1  # bf16 rounding, not another function
    calls = []
    original = fast_path.packed_linear
    fast_path.packed_linear = lambda *a: calls.append(1) or original(*a)
    try:
        with torch.no_grad():
            packed.decode_target(packed.encode_source(src), masks)
    finally:
        fast_path.packed_linear = original
    assert calls  # the packed weights are what the pass multiplies by
