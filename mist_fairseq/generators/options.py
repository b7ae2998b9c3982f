"""The decoding options, one object on every path: fairseq-generate (the task's flags and Fairseq's
generation flags), ``MistModel.generate`` (keyword overrides), the export config and the ONNX
runner, and the service (its start-up flags). Every option has one name everywhere: the task's flag
without dashes (``--mist-decode-iters`` is ``mist_decode_iters``), Fairseq's for the AR beam search
(``beam``, ``lenpen``, ``max_len_a``, ``max_len_b``), and one default.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional

from mist_fairseq.generators.precision import PRECISIONS
from mist_fairseq.generators.rerank import RERANK_CHOICES

DECODE_MODE_NAMES = ("nar", "semi-nar", "ar", "ctc")
STRATEGIES = ("mist", "mask-predict")
# names other releases' APIs and export configs used, mapped to the option's name
RENAMED = {"iterations": "mist_decode_iters", "strategy": "decode_strategy", "mode": "decode_mode",
           "min_length": "min_target_length", "dedup": "no_dedup"}


@dataclass(frozen=True)
class DecodeOptions:
    decode_mode: str = "nar"  # nar | semi-nar | ar | ctc (a --ctc checkpoint's nar is ctc)
    mist_decode_iters: int = 1  # NAR passes; 1 = the single parallel pass
    decode_strategy: str = "mist"  # refinement after the first pass: mist | mask-predict
    length_beam: int = 1  # candidate lengths decoded per input (NAR, semi-NAR)
    min_target_length: int = 2  # final [SEP] included
    no_dedup: bool = False  # keep consecutive duplicate tokens
    block_size: int = 4  # positions per pass with semi-nar
    beam: int = 5  # AR beam width (Fairseq's --beam and its default)
    lenpen: float = 1.0  # AR length penalty
    max_len_a: float = 0.0  # AR output limit: a * source length + b
    max_len_b: int = 200
    ctc_beam: int = 1  # CTC prefix beam size (--decode-mode ctc); 1 = greedy
    rerank: str = "none"  # how length-beam candidates are ranked: none | ar (the checkpoint's AR stream)
    rerank_path: Optional[str] = None  # a separate AR scorer checkpoint
    avoid_copy: bool = False  # a candidate identical to its source wins only where all are
    decode_precision: str = "fp32"  # fp32 | bf16 | int8: the decoding passes' weights and activations

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """ValueError naming the first bad option and its flag."""
        def bad(name, value, want):
            raise ValueError(f"--{name.replace('_', '-')} {value}: {want}")

        if self.decode_mode not in DECODE_MODE_NAMES:
            bad("decode_mode", self.decode_mode, f"choose one of {', '.join(DECODE_MODE_NAMES)}")
        if self.decode_strategy not in STRATEGIES:
            bad("decode_strategy", self.decode_strategy, f"choose one of {', '.join(STRATEGIES)}")
        if self.rerank not in RERANK_CHOICES:
            bad("rerank", self.rerank, f"choose one of {', '.join(RERANK_CHOICES)}")
        if self.decode_precision not in PRECISIONS:
            bad("decode_precision", self.decode_precision, f"choose one of {', '.join(PRECISIONS)}")
        for name in ("mist_decode_iters", "length_beam", "min_target_length", "block_size", "beam", "ctc_beam"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(name, value, "must be an integer >= 1")
        if self.rerank_path and self.rerank == "ar":
            raise ValueError("--rerank ar (the checkpoint scores itself) and --rerank-path CKPT (a separate "
                             "scorer) exclude each other; give one")
        if self.decode_mode == "ar" and (self.rerank != "none" or self.rerank_path):
            raise ValueError("--rerank/--rerank-path rescore the length-beam candidates of --decode-mode nar or "
                             "semi-nar; AR beam search ranks its own hypotheses")
        if self.decode_mode == "ctc" and self.length_beam > 1:
            raise ValueError("--decode-mode ctc has no length candidates: drop --length-beam (--ctc-beam K gives "
                             "K candidates from CTC prefix beam search)")
        if self.decode_mode == "ar" and self.avoid_copy:
            raise ValueError("--avoid-copy chooses among the --length-beam / --ctc-beam candidates of --decode-mode "
                             "nar, semi-nar or ctc; AR beam search ranks its own hypotheses")
        if self.decode_mode in ("semi-nar", "ar") and self.ctc_beam > 1:
            raise ValueError(f"--ctc-beam {self.ctc_beam} is for checkpoints trained with --ctc (--decode-mode ctc)")

    @classmethod
    def names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_task(cls, tcfg, gen=None) -> "DecodeOptions":
        """From the ``mist_nar`` task config and Fairseq's generation options (``gen``: beam, lenpen,
        max_len_a, max_len_b); an option either lacks (an older checkpoint's config) takes the default."""
        defaults = cls()
        values = {}
        for name in cls.names():
            source = gen if name in ("beam", "lenpen", "max_len_a", "max_len_b") else tcfg
            value = getattr(source, name, None) if source is not None else None
            values[name] = getattr(defaults, name) if value is None else value
        values["decode_mode"], values["decode_strategy"] = str(values["decode_mode"]), str(values["decode_strategy"])
        values["rerank"], values["decode_precision"] = str(values["rerank"]), str(values["decode_precision"])
        return cls(**values)

    def replace(self, **overrides) -> "DecodeOptions":
        """A copy with the given options (None = keep this object's); an unknown name is a TypeError
        that names the option to use."""
        for name in overrides:
            if name not in self.names():
                hint = f"; it is named {RENAMED[name]!r}" if name in RENAMED else ""
                raise TypeError(f"unknown decoding option {name!r}{hint} (options: {', '.join(self.names())})")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeOptions":
        """From ``to_dict``'s output; also reads the keys older export configs wrote (``iterations``,
        ``strategy``, ``min_length``, ``dedup``)."""
        d = dict(d)
        if "dedup" in d:
            d["no_dedup"] = not d.pop("dedup")
        for old, new in RENAMED.items():
            if old in d:
                d[new] = d.pop(old)
        return cls().replace(**{k: v for k, v in d.items() if k in cls.names()})
