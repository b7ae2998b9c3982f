"""Sequence-level knowledge distillation (Kim & Rush 2016): a teacher decodes the training sources and
its outputs become the training targets of a new data folder.

    python -m mist_fairseq.distill TEACHER.pt --data PREP --out PREP_KD [--decode-mode ar --beam 1]
        [--splits train valid] [--keep-raw] [--copy-fallback] [--batch-size 64] [--shard 0/2] [--overwrite]

PREP is a ``python -m mist_fairseq.prepare`` folder (raw/, tok/, bin/). The teacher is a checkpoint of
this plugin (any ``--decode-mode``: ``ar`` for the same-encoder AR model) or any Fairseq model on the
same dictionary (refused with one line otherwise). OUT gets the same layout: ``tok/`` and ``bin/`` with
the distilled targets of the distilled splits (``--keep-raw``: the original train pairs plus the
distilled ones; ``--copy-fallback``: a distilled target identical to its source keeps its reference),
``raw/train.*`` the training pairs as text, ``raw/valid.*`` and ``raw/test.*`` the
original references untouched (dev selection and test scoring read the real references), the same
dictionary and vocab.txt, and ``manifest.json`` (teacher,
options, counts, BLEU-4 / self-BLEU of the distilled targets against the references / sources, wall
time). Work goes to ``OUT.work/`` in chunks of ``--chunk-size`` sentences: a killed run continues
where it stopped; ``--shard i/N`` lets N processes share the chunks (the one that completes the set
assembles). OUT appears whole (built beside it, then renamed) or not at all.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import Dict, List

from mist_fairseq.generators.precision import PRECISIONS

logger = logging.getLogger("mist_fairseq.distill")
HERE = os.path.dirname(os.path.abspath(__file__))


class DistillError(ValueError):
    """Bad input or teacher; the message says what to do."""


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [ln.rstrip("\n") for ln in f]


def write_lines(path: str, lines: List[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(ln + "\n" for ln in lines)
    os.replace(tmp, path)


def load_teacher(path: str, bin_dir: str, overrides: Dict):
    """(models, task) of the teacher checkpoint on bin_dir, after checking its dictionary is bin_dir's."""
    from fairseq import checkpoint_utils

    import mist_fairseq  # noqa: F401  (registers the plugin; allow-lists Fairseq checkpoint classes)
    from mist_fairseq.dictionary import BertDictionary

    if not os.path.isfile(path):
        raise DistillError(f"{path}: no such teacher checkpoint")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        task_name = state["cfg"]["task"]["_name"]
    except Exception as e:  # a file that is not a Fairseq checkpoint
        raise DistillError(f"{path}: not a readable Fairseq checkpoint ({type(e).__name__})") from None
    del state
    over = {"data": bin_dir}
    if task_name == "mist_nar":
        over.update(overrides)
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=over)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistillError(f"teacher {path} does not load on {bin_dir}: {first}") from None
    ours = BertDictionary.load(os.path.join(bin_dir, "dict.tgt.txt"))
    for side, d in (("source", task.source_dictionary), ("target", task.target_dictionary)):
        if d is None or d.symbols != ours.symbols:
            raise DistillError(
                f"teacher {path} ({task_name} task): its {side} dictionary ({len(d) if d else 0} tokens) differs "
                f"from {bin_dir}/dict.tgt.txt ({len(ours)} tokens); distill with a teacher trained on this "
                "data folder's vocabulary")
    return models, task


def copies(src_wordpieces: List[str], distilled_wordpieces: List[str]) -> List[int]:
    """Indices i where the distilled target is its source itself (the same WordPieces). With
    ``--copy-fallback`` such a pair keeps its reference: a copy teaches a paraphrase model nothing but
    copying, and a NAR student already copies more often than its teacher."""
    return [i for i, (s, d) in enumerate(zip(src_wordpieces, distilled_wordpieces)) if s.split() == d.split()]


def generation_config(args):
    from fairseq.dataclass.configs import GenerationConfig

    return GenerationConfig(beam=args.beam, lenpen=args.lenpen, max_len_a=args.max_len_a, max_len_b=args.max_len_b)


def chunk_path(work: str, split: str, c: int) -> str:
    return os.path.join(work, "chunks", f"{split}.{c:05d}.tsv")


def decode_chunks(models, task, gen, split: str, args, work: str) -> None:
    """Decodes this shard's missing chunks of ``split`` on ``args.device``; each chunk file
    ``id<TAB>wordpieces`` is written whole (tmp + rename)."""
    import torch
    from fairseq import utils

    task.load_dataset(split)
    ds = task.dataset(split)
    n = len(ds)
    n_chunks = -(-n // args.chunk_size)
    mine = [c for c in range(n_chunks) if c % args.num_shards == args.shard_id
            and not os.path.exists(chunk_path(work, split, c))]
    todo = sum(min(args.chunk_size, n - c * args.chunk_size) for c in mine)
    done, t0, last = 0, time.time(), 0.0
    tgt_dict = task.target_dictionary
    logger.info(f"{split}: {n} sentences in {n_chunks} chunks; this shard decodes {len(mine)} chunks ({todo} sentences)")
    for c in mine:
        ids = list(range(c * args.chunk_size, min(n, (c + 1) * args.chunk_size)))
        ids.sort(key=lambda i: int(ds.src_sizes[i]))  # similar lengths batch together
        lines = []
        for b in range(0, len(ids), args.batch_size):
            sample = ds.collater([ds[i] for i in ids[b : b + args.batch_size]])
            sample = utils.apply_to_sample(lambda t: t.to(args.device), sample)
            with torch.inference_mode():
                hypos = task.inference_step(gen, models, sample)
            for sid, h in zip(sample["id"].tolist(), hypos):
                toks = h[0]["tokens"]
                toks = toks[toks.ne(tgt_dict.eos()) & toks.ne(tgt_dict.pad())]
                lines.append(f"{sid}\t{tgt_dict.string(toks)}")
            done += len(sample["id"])
            now = time.time()
            if now - last >= args.progress_seconds or done == todo:
                rate = done / max(now - t0, 1e-9)
                left = int((todo - done) / rate) if rate > 0 else 0
                print(f"  {split}: {done}/{todo} sentences | {rate:.1f} sentences/s | "
                      f"{left // 60}:{left % 60:02d} left", file=sys.stderr, flush=True)
                last = now
        write_lines(chunk_path(work, split, c), lines)


def read_chunks(work: str, split: str, n: int, chunk_size: int):
    """The distilled WordPiece lines of split in id order, or None while a chunk is missing."""
    out = [None] * n
    for c in range(-(-n // chunk_size)):
        path = chunk_path(work, split, c)
        if not os.path.exists(path):
            return None
        for ln in read_lines(path):
            sid, _, wp = ln.partition("\t")
            out[int(sid)] = wp
    return out


def assemble(args, work: str, splits: List[str], teacher_info: Dict, decode_s: float) -> Dict:
    """Builds OUT from PREP and the chunks (in OUT.work/build, then renamed); returns the manifest."""
    from fairseq.data.encoders.hf_bert_bpe import BertBPE, BertBPEConfig

    from mist_fairseq.prepare import binarize
    from mist_fairseq.score import score

    build = os.path.join(work, "build")
    shutil.rmtree(build, ignore_errors=True)
    for sub in ("raw", "tok"):
        shutil.copytree(os.path.join(args.data, sub), os.path.join(build, sub))
    vocab = os.path.join(args.data, "bin", "vocab.txt")
    bpe = BertBPE(BertBPEConfig(bpe_vocab_file=vocab))
    manifest = {"teacher": teacher_info, "data": os.path.abspath(args.data), "splits": {}, "keep_raw": args.keep_raw,
                "copy_fallback": args.copy_fallback,
                "device": str(args.device), "decode_seconds": round(decode_s, 1)}
    for split in splits:
        src_raw = read_lines(os.path.join(args.data, "raw", f"{split}.src"))
        tgt_raw = read_lines(os.path.join(args.data, "raw", f"{split}.tgt"))
        src_tok = read_lines(os.path.join(args.data, "tok", f"{split}.src"))
        tgt_tok = read_lines(os.path.join(args.data, "tok", f"{split}.tgt"))
        wp = read_chunks(work, split, len(src_tok), args.chunk_size)
        empty = [i for i, w in enumerate(wp) if not w.strip()]
        for i in empty:  # a teacher output of [SEP] alone: the pair keeps its reference
            wp[i] = tgt_tok[i]
        copied = copies(src_tok, wp) if args.copy_fallback else []
        for i in copied:
            wp[i] = tgt_tok[i]
        text = [bpe.decode(w) for w in wp]
        quality = score(args.score_task, text, tgt_raw, src_raw, meteor=False)
        manifest["splits"][split] = {
            "pairs": len(wp), "empty_outputs_kept_reference": len(empty),
            "copies_kept_reference": len(copied) if args.copy_fallback else None,
            "identical_to_reference": sum(w == t for w, t in zip(wp, tgt_tok)),
            **{f"distilled {k}": round(v, 2) for k, v in quality.items() if k != "n"},
        }
        if split == "train":  # raw/train.* hold the training pairs as text (valid/test keep their references)
            if args.keep_raw:
                src_tok, wp, src_raw, text = src_tok + src_tok, tgt_tok + wp, src_raw + src_raw, tgt_raw + text
            write_lines(os.path.join(build, "raw", "train.src"), src_raw)
            write_lines(os.path.join(build, "raw", "train.tgt"), text)
        write_lines(os.path.join(build, "tok", f"{split}.src"), src_tok)
        write_lines(os.path.join(build, "tok", f"{split}.tgt"), wp)
        manifest["splits"][split]["written_pairs"] = len(wp)
    present = [s for s in ("train", "valid", "test") if os.path.exists(os.path.join(build, "tok", f"{s}.src"))]
    binarize(os.path.join(build, "tok"), os.path.join(build, "bin"), present, vocab, args.workers)
    decoded = sum(len(read_chunks(work, s, manifest["splits"][s]["pairs"], args.chunk_size)) for s in splits)
    manifest["sentences_per_second"] = round(decoded / max(decode_s, 1e-9), 2)
    manifest["wall_seconds"] = round(time.time() - args.t0, 1)
    with open(os.path.join(build, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    old = args.out + ".old"
    if os.path.exists(args.out):
        os.replace(args.out, old)  # --overwrite (checked at the start): the old folder goes only once the new one is whole
    os.replace(build, args.out)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher", help="teacher checkpoint (.pt)")
    p.add_argument("--data", required=True, help="a python -m mist_fairseq.prepare folder (raw/, tok/, bin/)")
    p.add_argument("--out", required=True, help="the distilled data folder to write")
    p.add_argument("--splits", nargs="+", default=["train"], choices=["train", "valid"],
                   help="splits whose targets the teacher replaces (test never)")
    p.add_argument("--keep-raw", action="store_true", help="train on the original pairs plus the distilled ones")
    p.add_argument("--copy-fallback", action="store_true",
                   help="a distilled target identical to its source keeps the reference (fewer copies to learn)")
    p.add_argument("--decode-mode", default="ar", help="mist_nar teachers: nar | semi-nar | ar")
    p.add_argument("--beam", type=int, default=1, help="beam size (AR teachers; 1 = greedy)")
    p.add_argument("--lenpen", type=float, default=1.0, help="length penalty of the beam search")
    p.add_argument("--max-len-a", type=float, default=0.0, help="output length limit: a * source length + b")
    p.add_argument("--max-len-b", type=int, default=200, help="output length limit: a * source length + b")
    p.add_argument("--length-beam", type=int, default=1, help="mist_nar NAR/semi-NAR teachers: candidate lengths")
    p.add_argument("--decode-precision", default="fp32", choices=list(PRECISIONS),
                   help="mist_nar teachers: decode in fp32, on a bf16 copy (faster on CPUs with bf16 units) or on "
                   "a weight-only int8 copy (CPU; faster than fp32 at batch 1, about even for AR greedy at batch 16)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per teacher batch")
    p.add_argument("--chunk-size", type=int, default=2000, help="sentences per resumable chunk")
    p.add_argument("--shard", default="0/1", help="i/N: this process decodes the chunks c with c %% N == i")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cpu", action="store_true", help="decode on the CPU even where a CUDA device is available")
    p.add_argument("--workers", type=int, default=2, help="fairseq-preprocess workers")
    p.add_argument("--score-task", default="quora", choices=["quora", "squad-qg", "xsum"],
                   help="scorer of the manifest's distilled-vs-reference and self-BLEU figures")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT (only once the new one is whole)")
    p.add_argument("--progress-seconds", type=float, default=10.0, help="seconds between progress lines")
    args = p.parse_args(argv)
    try:
        args.shard_id, args.num_shards = (int(x) for x in args.shard.split("/"))
        assert 0 <= args.shard_id < args.num_shards
    except (ValueError, AssertionError):
        p.error(f"--shard {args.shard}: give i/N with 0 <= i < N, e.g. 0/2")
    args.out = os.path.abspath(args.out.rstrip("/"))
    return args


def run(args) -> Dict:
    """Decodes this shard's chunks, then assembles OUT once every chunk exists; returns the manifest
    (or {} while other shards still have chunks to decode)."""
    import torch

    args.t0 = time.time()
    for sub in ("raw", "tok", "bin"):
        if not os.path.isdir(os.path.join(args.data, sub)):
            raise DistillError(f"{args.data}/{sub}: missing; --data is a python -m mist_fairseq.prepare output folder")
    if os.path.exists(args.out) and not args.overwrite:
        raise DistillError(f"{args.out} exists; pass --overwrite to replace it (once the new one is whole)")
    if os.path.abspath(args.data) == args.out:
        raise DistillError("--out must differ from --data (the original references are copied from --data)")
    if args.threads:
        torch.set_num_threads(args.threads)
    # the teacher is checked before anything is written: a refused one leaves no folder behind
    overrides = {"decode_mode": args.decode_mode, "length_beam": args.length_beam,
                 "decode_precision": args.decode_precision}
    models, task = load_teacher(args.teacher, os.path.join(args.data, "bin"), overrides)
    work = args.out + ".work"
    os.makedirs(os.path.join(work, "chunks"), exist_ok=True)
    options = {k: getattr(args, k) for k in ("teacher", "splits", "decode_mode", "beam", "lenpen", "max_len_a",
                                            "max_len_b", "length_beam", "decode_precision", "chunk_size")}
    options["teacher"] = os.path.abspath(options["teacher"])
    opt_path = os.path.join(work, "options.json")
    if os.path.exists(opt_path):
        with open(opt_path) as f:
            if json.load(f) != options:
                raise DistillError(f"{work} holds a run with other options; remove it or pass the same options")
    else:
        with open(opt_path, "w") as f:
            json.dump(options, f, indent=2)
    # the first CUDA device where there is one (as fairseq-generate does), else the CPU
    args.device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    for m in models:
        m.eval().to(args.device)
    gen = task.build_generator(models, generation_config(args))
    t_dec = time.time()
    for split in args.splits:
        decode_chunks(models, task, gen, split, args, work)
    decode_s = time.time() - t_dec
    time_path = os.path.join(work, f"decode_seconds.{args.shard_id}")
    prev = float(open(time_path).read()) if os.path.exists(time_path) else 0.0
    with open(time_path, "w") as f:
        f.write(str(prev + decode_s))
    sizes = {s: len(task.dataset(s)) for s in args.splits}
    if any(read_chunks(work, s, sizes[s], args.chunk_size) is None for s in args.splits):
        logger.info("shard done; other shards still have chunks to decode (the last one assembles OUT)")
        return {}
    total_decode = sum(float(open(os.path.join(work, f)).read()) for f in os.listdir(work)
                       if f.startswith("decode_seconds."))
    teacher = {"checkpoint": options["teacher"], "task": task.cfg._name if hasattr(task.cfg, "_name") else None,
               "options": {k: v for k, v in options.items() if k != "teacher"}}
    manifest = assemble(args, work, args.splits, teacher, total_decode)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    args = parse_args(argv)
    try:
        manifest = run(args)
    except DistillError as e:
        sys.exit(f"error: {e}")
    if manifest:
        for split, m in manifest["splits"].items():
            print(f"{split}: {m['pairs']} distilled targets; BLEU-4 vs references {m.get('distilled BLEU-4')}, "
                  f"self-BLEU {m.get('distilled self-BLEU')}; decoding {manifest['decode_seconds']} s")
        print(f"wrote {args.out} (manifest.json)")


if __name__ == "__main__":
    main()
