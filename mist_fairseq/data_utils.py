"""Dataset helpers: length truncation that keeps the final [SEP] and is counted, never silent;
pseudo targets for static mixing read from ``fairseq-generate`` output."""

import logging
import re
from typing import Dict

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset

logger = logging.getLogger(__name__)


class TruncateKeepEosDataset(BaseWrapperDataset):
    """Cuts items longer than ``max_len`` to ``max_len`` tokens, the last one being ``eos``.

    ``sizes`` reports the truncated lengths, so Fairseq's size filter never drops an example.
    """

    def __init__(self, dataset, max_len: int, eos: int):
        super().__init__(dataset)
        self.max_len, self.eos = max_len, eos
        orig = np.asarray(dataset.sizes)
        self.num_truncated = int((orig > max_len).sum())
        self._sizes = np.minimum(orig, max_len)

    def __getitem__(self, index):
        item = self.dataset[index]
        if item.numel() > self.max_len:
            item = torch.cat([item[: self.max_len - 1], item.new_tensor([self.eos])])
        return item

    @property
    def sizes(self):
        return self._sizes

    def size(self, index):
        return int(self._sizes[index])

    def num_tokens(self, index):
        return int(self._sizes[index])


_HYPO = re.compile(r"^H-(\d+)\t[^\t]*\t(.*)$")


def read_pseudo_targets(path: str, dictionary, max_len: int) -> Dict[int, torch.Tensor]:
    """Reads ``H-<id>\\t<score>\\t<wordpieces>`` lines of ``fairseq-generate`` output (run without
    ``--bpe`` so hypotheses stay WordPiece tokens). Returns sample id -> token ids ending in [SEP]."""
    out: Dict[int, torch.Tensor] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = _HYPO.match(line.rstrip("\n"))
            if not m:
                continue
            sid = int(m.group(1))
            if sid in out:
                raise ValueError(f"{path}:{n}: second hypothesis for sample {sid}; generate with --nbest 1")
            ids = dictionary.encode_line(m.group(2), add_if_not_exist=False, append_eos=True).long()
            if ids.numel() > max_len:
                ids = torch.cat([ids[: max_len - 1], ids.new_tensor([dictionary.eos()])])
            out[sid] = ids
    if not out:
        raise ValueError(f"{path}: no 'H-<id>' lines; pass the output of fairseq-generate on the train split")
    return out
