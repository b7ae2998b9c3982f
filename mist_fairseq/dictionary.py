"""A Fairseq dictionary whose ids are the BERT checkpoint's ids.

Fairseq puts its specials at 0..3 (<s> <pad> </s> <unk>); a BERT vocabulary has [PAD]=0,
[UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103 (bert-base-uncased). We keep BERT's order so the
embedding matrix needs no remapping, and point Fairseq's roles at BERT's tokens:
bos -> [CLS], pad -> [PAD], eos -> [SEP] (every binarized line ends in [SEP]), unk -> [UNK].
"""

from typing import List

from fairseq.data import Dictionary

SPECIALS = {"bos": "[CLS]", "pad": "[PAD]", "eos": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}


class BertDictionary(Dictionary):
    def __init__(self, tokens: List[str], source: str = "<memory>"):
        super().__init__(
            bos=SPECIALS["bos"], pad=SPECIALS["pad"], eos=SPECIALS["eos"], unk=SPECIALS["unk"],
            add_special_symbols=False,
        )
        for i, tok in enumerate(tokens):
            if tok in self.indices:
                raise ValueError(f"{source}:{i + 1}: token {tok!r} appears twice; a BERT vocab.txt has unique lines")
            self.add_symbol(tok)
        missing = [t for t in SPECIALS.values() if t not in self.indices]
        if missing:
            raise ValueError(
                f"{source}: no {', '.join(missing)} token; --srcdict/--tgtdict must be a BERT vocab.txt "
                "(or the dict.*.txt that fairseq-preprocess wrote from one)"
            )
        self.bos_index = self.indices[SPECIALS["bos"]]
        self.pad_index = self.indices[SPECIALS["pad"]]
        self.eos_index = self.indices[SPECIALS["eos"]]
        self.unk_index = self.indices[SPECIALS["unk"]]
        self.mask_index = self.indices[SPECIALS["mask"]]
        # Nothing is "special" in Fairseq's sense: save() must write every token, in order.
        self.nspecial = 0

    def mask(self) -> int:
        return self.mask_index

    @classmethod
    def load(cls, f, add_special_symbols=True):
        """Reads a BERT ``vocab.txt`` (one token a line) or a Fairseq ``dict.txt`` written by
        :meth:`save` (``token count``). ``f``: a path."""
        tokens = []
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if line == "":
                    raise ValueError(f"{f}:{n}: empty line; a BERT vocab.txt has one token a line")
                parts = line.rsplit(" ", 1)
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    line = parts[0]
                tokens.append(line)
        return cls(tokens, source=str(f))

    def save(self, f):
        # Fairseq's format ("token count") so other Fairseq tools can read it; counts are 1.
        with open(f, "w", encoding="utf-8") as fh:
            for tok in self.symbols:
                fh.write(f"{tok} 1\n")
