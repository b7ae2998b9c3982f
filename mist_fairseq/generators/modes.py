"""Decoding modes: the table the task's ``--decode-mode`` choices are built from (the generator owns
the loop, the model owns one step: ``decode_target`` for NAR and CTC, ``decode_step`` for semi-NAR and AR).

Each entry builds a generator from the target dictionary, the decoding options
(:class:`~mist_fairseq.generators.options.DecodeOptions`) and the rescorer that picks among
length-beam candidates (:mod:`mist_fairseq.generators.rerank`; NAR and semi-NAR).
"""

from mist_fairseq.generators.block_generator import ARGenerator, SemiNARGenerator
from mist_fairseq.generators.ctc_generator import CTCGenerator
from mist_fairseq.generators.mist_generator import MistGenerator
from mist_fairseq.generators.options import DECODE_MODE_NAMES, DecodeOptions
from mist_fairseq.generators.precision import with_precision


def _nar(tgt_dict, o: DecodeOptions, rescorer):
    if o.ctc_beam > 1:  # a CTC checkpoint's nar has become ctc before this point (task, ONNX runner)
        raise ValueError(f"--ctc-beam {o.ctc_beam} is for checkpoints trained with --ctc")
    return MistGenerator(tgt_dict, decode_iters=o.mist_decode_iters, strategy=o.decode_strategy,
                         length_beam=o.length_beam, min_length=o.min_target_length, dedup=not o.no_dedup,
                         rescorer=rescorer, avoid_copy=o.avoid_copy)


def _semi_nar(tgt_dict, o: DecodeOptions, rescorer):
    return SemiNARGenerator(tgt_dict, block_size=o.block_size, length_beam=o.length_beam,
                            min_length=o.min_target_length, dedup=not o.no_dedup, rescorer=rescorer,
                            avoid_copy=o.avoid_copy)


def _ar(tgt_dict, o: DecodeOptions, rescorer):
    # DecodeOptions refuses --rerank with --decode-mode ar
    return ARGenerator(tgt_dict, beam=o.beam, lenpen=o.lenpen, max_len_a=o.max_len_a, max_len_b=o.max_len_b,
                       min_length=o.min_target_length)


def _ctc(tgt_dict, o: DecodeOptions, rescorer):
    # DecodeOptions refuses --length-beam > 1 with --decode-mode ctc
    return CTCGenerator(tgt_dict, dedup=not o.no_dedup, beam=o.ctc_beam, rescorer=rescorer, avoid_copy=o.avoid_copy)


DECODE_MODES = {
    "nar": _nar,  # one parallel pass (+ --mist-decode-iters refinement)
    "semi-nar": _semi_nar,  # --block-size positions per pass, left to right
    "ar": _ar,  # one position per pass, beam search (--beam)
    "ctc": _ctc,  # --ctc checkpoints: one pass over upsampled slots, repeats merged and blanks dropped
}
assert tuple(DECODE_MODES) == DECODE_MODE_NAMES


def build_generator(tgt_dict, options: DecodeOptions, rescorer=None):
    """The mode's generator, run in ``options.decode_precision``."""
    return with_precision(DECODE_MODES[options.decode_mode](tgt_dict, options, rescorer), options.decode_precision)
