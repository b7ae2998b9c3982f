"""Decoding modes: the table the task's ``--decode-mode`` choices are built from (the generator owns
the loop, the model owns one step: ``decode_target`` for NAR, ``decode_step`` for semi-NAR and AR).

Each entry builds a generator from the target dictionary, the task's options (``cfg``: the
``mist_nar`` task config) and fairseq-generate's generation options (``gen``: ``beam``, ``lenpen``,
``max_len_a``, ``max_len_b``; absent ones take Fairseq's defaults) and the rescorer that picks among
length-beam candidates (:mod:`mist_fairseq.generators.rerank`; NAR and semi-NAR).
"""

from mist_fairseq.generators.block_generator import ARGenerator, SemiNARGenerator
from mist_fairseq.generators.mist_generator import MistGenerator


def _nar(tgt_dict, cfg, gen, rescorer):
    return MistGenerator(tgt_dict, decode_iters=cfg.mist_decode_iters, strategy=cfg.decode_strategy,
                         length_beam=cfg.length_beam, min_length=cfg.min_target_length, dedup=not cfg.no_dedup,
                         rescorer=rescorer)


def _semi_nar(tgt_dict, cfg, gen, rescorer):
    return SemiNARGenerator(tgt_dict, block_size=getattr(cfg, "block_size", 4), length_beam=cfg.length_beam,
                            min_length=cfg.min_target_length, dedup=not cfg.no_dedup, rescorer=rescorer)


def _ar(tgt_dict, cfg, gen, rescorer):
    if rescorer is not None:
        raise ValueError("--rerank/--rerank-path rescore the length-beam candidates of --decode-mode nar or "
                         "semi-nar; AR beam search ranks its own hypotheses")
    return ARGenerator(tgt_dict, beam=getattr(gen, "beam", 5), lenpen=getattr(gen, "lenpen", 1.0),
                       max_len_a=getattr(gen, "max_len_a", 0.0), max_len_b=getattr(gen, "max_len_b", 200),
                       min_length=cfg.min_target_length)


DECODE_MODES = {
    "nar": _nar,  # one parallel pass (+ --mist-decode-iters refinement)
    "semi-nar": _semi_nar,  # --block-size positions per pass, left to right
    "ar": _ar,  # one position per pass, beam search (--beam)
}


def build_generator(mode: str, tgt_dict, cfg, gen, rescorer=None):
    if mode not in DECODE_MODES:
        raise ValueError(f"--decode-mode {mode}: choose one of {', '.join(DECODE_MODES)}")
    return DECODE_MODES[mode](tgt_dict, cfg, gen, rescorer)


def call_options(defaults: dict, **given) -> dict:
    """A generate call's decoding options: ``defaults`` (e.g. the service's) overridden by every
    option the call gives (None = not given)."""
    return dict(defaults, **{k: v for k, v in given.items() if v is not None})
