"""Dictionary and dataset helpers."""

import torch
import pytest

from conftest import small_vocab
from mist_fairseq.data_utils import TruncateKeepEosDataset, read_pseudo_targets
from mist_fairseq.dictionary import BertDictionary


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items
        self.sizes = [len(x) for x in items]

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)


def test_bert_dictionary_keeps_bert_ids(tmp_path):
    d = BertDictionary(small_vocab())
    assert (d.pad(), d.unk(), d.bos(), d.eos(), d.mask()) == (0, 4, 5, 6, 7)
    d.save(str(tmp_path / "dict.txt"))
    again = BertDictionary.load(str(tmp_path / "dict.txt"))
    assert again.symbols == d.symbols  # "token count" lines read back in order
    (tmp_path / "vocab.txt").write_text("\n".join(small_vocab()) + "\n")
    assert BertDictionary.load(str(tmp_path / "vocab.txt")).symbols == d.symbols
    (tmp_path / "bad.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(ValueError, match=r"no \[CLS\], \[SEP\], \[MASK\] token"):
        BertDictionary.load(str(tmp_path / "bad.txt"))
    (tmp_path / "dup.txt").write_text("\n".join(small_vocab() + ["the"]) + "\n")
    with pytest.raises(ValueError, match=r"dup.txt:\d+: token 'the' appears twice"):
        BertDictionary.load(str(tmp_path / "dup.txt"))


def test_truncation_keeps_the_final_sep_and_counts():
    items = [torch.tensor([10, 11, 12, 13, 6]), torch.tensor([10, 6]), torch.tensor([1, 2, 3, 4, 5, 6])]
    ds = TruncateKeepEosDataset(ListDataset(items), max_len=4, eos=6)
    assert ds.num_truncated == 2 and list(ds.sizes) == [4, 2, 4]
    assert ds[0].tolist() == [10, 11, 12, 6] and ds[1].tolist() == [10, 6]


def test_pseudo_targets_from_generate_output(tmp_path):
    d = BertDictionary(small_vocab())
    gen = tmp_path / "gen.txt"
    gen.write_text("S-1\tw1\nH-1\t-0.2\tw3 w4\nH-0\t-0.1\tw1 the a w2 w5\nP-0\t-1\n")
    out = read_pseudo_targets(str(gen), d, max_len=4)
    assert out[1].tolist() == [d.index("w3"), d.index("w4"), d.eos()]
    assert out[0].tolist() == [d.index("w1"), d.index("the"), d.index("a"), d.eos()]  # cut to 4
    gen.write_text("H-0\t-0.1\tw1\nH-0\t-0.1\tw2\n")
    with pytest.raises(ValueError, match="second hypothesis for sample 0"):
        read_pseudo_targets(str(gen), d, 4)


class _Evil:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_checkpoint_loading_allow_list_keeps_the_guard(tmp_path):
    import argparse

    import mist_fairseq  # noqa: F401

    # a legacy Fairseq checkpoint keeps its options as an argparse.Namespace
    state = {"args": argparse.Namespace(lr=[0.1], arch="transformer"), "cfg": None, "model": {"w": torch.ones(2)}}
    torch.save(state, tmp_path / "ck.pt")
    back = torch.load(tmp_path / "ck.pt", weights_only=True)  # torch's default since 2.6
    assert back["args"].lr == [0.1]
    torch.save({"x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        torch.load(tmp_path / "evil.pt", weights_only=True)
