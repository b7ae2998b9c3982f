"""--decode-precision int8: weight-only int8 matrices (one scale per output channel), bf16 activations
in the products. Every mode (and an AR rescorer) decodes on an int8 copy, made once; a row's result
never depends on the rows batched with it; a trained model decodes the same text as in fp32."""

import pytest
import torch

from conftest import tiny_cfg
from mist_fairseq.generators.ctc_generator import CTCGenerator
from mist_fairseq.generators.modes import build_generator
from mist_fairseq.generators.options import DecodeOptions
from mist_fairseq.generators.precision import decoding_copy, in_dtype
from mist_fairseq.generators.rerank import ARRescorer
from mist_fairseq.models import bert_encoder, fast_path
from mist_fairseq.models.fast_path import Int8Weight, int8_linear, quantize_int8
from mist_fairseq.models.mist_nar import MistNARModel
from test_criterion import toy_batch
from test_ctc import small, train_copy_model  # noqa: F401  (fixture)
from test_precision import MODES, scores, texts

CTC = {"ctc": True, "upsample_ratio": 2.0, "ctc_min_slots": 4}


def model(d, seed, **cfg):
    torch.manual_seed(seed)
    return MistNARModel(tiny_cfg(**cfg), d).eval()


def test_quantize_int8_keeps_each_channel_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(50, 64) * torch.rand(50, 1)  # channels of very different ranges
    q = quantize_int8(w)
    assert q.q.dtype == torch.int8 and q.scale.dtype == torch.bfloat16 and q.q.shape == w.shape
    back = q.q.float() * q.scale.float()[:, None]
    step = q.scale.float()[:, None]
    assert ((back - w).abs() <= step / 2 + 1e-6).all()
    assert (q.q.abs().amax(1) >= 126).all()  # each channel's largest weight uses the whole int8 range


def test_int8_linear_is_the_dequantized_product_and_each_row_is_its_own():
    torch.manual_seed(0)
    w, b = torch.randn(40, 32) * 0.1, torch.randn(40)
    q = quantize_int8(w)
    x = torch.randn(3, 5, 32)
    y = int8_linear(x, q, b)
    want = x.to(torch.bfloat16).float() @ (q.q.float() * q.scale.float()[:, None]).T + b
    assert y.shape == (3, 5, 40) and y.dtype == torch.float32
    assert torch.allclose(y, want, atol=0.02, rtol=0.01)  # the kernel's output is bf16-rounded
    flat = x.reshape(15, 32)
    for i in (0, 7, 14):  # a row alone gives exactly what it gets inside the batch
        assert torch.equal(int8_linear(flat[i:i + 1], q, b)[0], y.reshape(15, 40)[i])


@pytest.mark.parametrize("options,rescored", MODES)
def test_int8_decodes_like_an_int8_copy_and_leaves_the_model_as_it_was(small, options, rescored):
    decoder = model(small, 0, **(CTC if options["decode_mode"] == "ctc" else {}))
    scorer = model(small, 1) if rescored else None
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    src, _ = toy_batch(small, n=6, seed=3)
    sample = {"net_input": {"src_tokens": src}}
    got = build_generator(small, DecodeOptions(decode_precision="int8", **options),
                          ARRescorer(scorer) if rescored else None).generate([decoder], sample)
    # the reference: the fp32 generator on int8 copies made by hand (the rescorer's too)
    ref_scorer = ARRescorer(decoding_copy(scorer, torch.float32, int8=True)) if rescored else None
    ref = build_generator(small, DecodeOptions(**options), ref_scorer).generate(
        [decoding_copy(decoder, torch.float32, int8=True)], sample)
    assert texts(got) == texts(ref) and scores(got) == scores(ref)
    fp32 = build_generator(small, DecodeOptions(**options), ARRescorer(scorer) if rescored else None)
    assert scores(fp32.generate([decoder], sample)) != scores(got)  # it did not decode in fp32
    assert all(torch.equal(v, decoder.state_dict()[k]) for k, v in before.items())
    assert all(m.packed is None for m in decoder.modules() if "packed" in dir(m))


def test_the_int8_copy_multiplies_by_int8_matrices_only(small):
    m = model(small, 0)
    q = in_dtype(m, torch.float32, int8=True)
    assert q is not m and in_dtype(m, torch.float32, int8=True) is q  # made once, kept
    assert in_dtype(m, torch.float32) is m  # fp32 is the model itself
    slots = [mod for mod in q.modules() if "packed" in dir(mod)]
    assert slots and all(isinstance(mod.packed, Int8Weight) for mod in slots)  # every linear layer and the head
    calls = []
    original = fast_path.int8_linear
    fast_path.int8_linear = bert_encoder.int8_linear = lambda *a: calls.append(1) or original(*a)
    try:
        src, tgt = toy_batch(small, n=2, seed=1)
        with torch.no_grad():
            q.decode_target(q.encode_source(src), tgt.masked_fill(tgt.ne(small.pad()), m.mask_idx))
    finally:
        fast_path.int8_linear = bert_encoder.int8_linear = original
    # four products a layer (query, key and value as one, attention output, feed-forward in and out) in
    # the source pass and again in the target pass, then the head's dense layer and its projection
    assert len(calls) == 2 * 4 * len(m.encoder.layers) + 2


def test_the_fused_query_key_value_product_is_the_three_products(small):
    layer = in_dtype(model(small, 0), torch.float32, int8=True).encoder.layers[0]
    x = torch.randn(2, 5, layer.query.in_features)
    q, k, v = int8_linear(x, *layer.qkv).chunk(3, dim=-1)
    assert torch.equal(q, layer.query(x)) and torch.equal(k, layer.key(x)) and torch.equal(v, layer.value(x))


@pytest.mark.parametrize("options", [{"decode_mode": "nar", "length_beam": 2}, {"decode_mode": "ar", "beam": 2},
                                     {"decode_mode": "ctc", "ctc_beam": 2}])
def test_a_sentence_decodes_the_same_alone_and_in_a_batch(small, options):
    m = model(small, 0, **(CTC if options["decode_mode"] == "ctc" else {}))
    gen = build_generator(small, DecodeOptions(decode_precision="int8", **options))
    src, _ = toy_batch(small, n=6, seed=5)  # sources of different lengths: padding in the batch
    together = texts(gen.generate([m], {"net_input": {"src_tokens": src}}))
    for i in range(src.size(0)):
        row = src[i:i + 1]
        alone = gen.generate([m], {"net_input": {"src_tokens": row[:, row[0].ne(small.pad())]}})
        assert texts(alone)[0] == together[i], i


def test_a_trained_model_decodes_the_same_text_in_int8(small):
    trained, batch, _ = train_copy_model(small)
    fp32 = CTCGenerator(small).generate([trained], batch)
    int8 = build_generator(small, DecodeOptions(decode_mode="ctc", decode_precision="int8")).generate([trained], batch)
    assert texts(int8) == texts(fp32)
    assert scores(int8) != scores(fp32)  # close, not the same numbers: it decoded in int8


def test_a_copy_of_an_int8_copy_is_prepared_for_its_own_precision(small):
    q = decoding_copy(model(small, 0), torch.float32, int8=True)
    back = decoding_copy(q, torch.float32)
    assert all(m.packed is None for m in back.modules() if "packed" in dir(m))
    assert all(layer.qkv is None for layer in back.encoder.layers)
    assert all(isinstance(m.packed, Int8Weight) for m in decoding_copy(q, torch.float32, int8=True).modules()
               if "packed" in dir(m))


def test_int8_refuses_a_model_off_the_cpu(small):
    with pytest.raises(ValueError, match="--decode-precision int8 runs on CPU"):
        decoding_copy(model(small, 0).to("meta"), torch.float32, int8=True)
