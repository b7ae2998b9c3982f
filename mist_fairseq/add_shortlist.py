"""Give a trained checkpoint an output shortlist for decoding (``--output-shortlist``'s table, built
from a train split) without retraining: every decoding path then projects onto the batch's
candidates (:mod:`mist_fairseq.models.shortlist`) instead of the whole vocabulary.

    python -m mist_fairseq.add_shortlist CKPT --data DATA_BIN --out NEW.pt [--output-shortlist 2000]
        [--shortlist-neighbours 8]

DATA_BIN: the binarized folder the checkpoint was trained on (its train split gives the table). The
new checkpoint is written beside, then renamed into place; CKPT is never modified. A model trained on
the whole vocabulary may prefer a token outside the candidates: measure BLEU against the original.
"""

import argparse
import os
import sys
from typing import Optional

import torch


def add_shortlist(checkpoint: str, data: str, out: str, size: int = 2000, neighbours: int = 8,
                  train_subset: Optional[str] = None) -> dict:
    """Writes ``out``: checkpoint with the table of an output shortlist of ``size`` frequent target
    WordPieces and ``neighbours`` per source WordPiece, built from ``data``'s train split. Returns
    {"pairs", "size", "neighbours"}."""
    import mist_fairseq  # noqa: F401  (registers the task and model)
    from fairseq import checkpoint_utils, tasks
    from omegaconf import OmegaConf, open_dict

    if size <= 0 or neighbours < 0:
        raise ValueError(f"--output-shortlist {size} must be > 0 and --shortlist-neighbours {neighbours} >= 0")
    if os.path.abspath(out) == os.path.abspath(checkpoint):
        raise ValueError(f"--out {out} is the checkpoint itself: give the new checkpoint its own name")
    state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint)
    cfg = state["cfg"]
    if cfg.task._name != "mist_nar":
        raise ValueError(f"{checkpoint} was trained with --task {cfg.task._name}: only mist_nar checkpoints "
                         "take a shortlist")
    with open_dict(cfg):
        cfg.model.output_shortlist, cfg.model.shortlist_neighbours = size, neighbours
        cfg.task.data = data
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    fresh = {"shortlist_frequent", "shortlist_neighbours", "shortlist_ready"}
    if unexpected or set(missing) - fresh:
        raise ValueError(f"{checkpoint}: weights do not match its own config (missing {sorted(set(missing) - fresh)}, "
                         f"unexpected {sorted(unexpected)})")
    split = train_subset or cfg.dataset.train_subset
    task.load_dataset(split)
    ds = task.dataset(split)
    model.fill_shortlist((ds.src[i], ds.tgt[i]) for i in range(len(ds)))
    state["model"] = model.state_dict()
    state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tmp = out + ".partial"
    torch.save(state, tmp)
    os.replace(tmp, out)
    return {"pairs": len(ds), "size": size, "neighbours": neighbours}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a trained mist_nar checkpoint")
    p.add_argument("--data", required=True, help="its binarized data folder (the table comes from its train split)")
    p.add_argument("--out", required=True, help="the new checkpoint file")
    p.add_argument("--output-shortlist", type=int, default=2000, help="most frequent train target WordPieces kept")
    p.add_argument("--shortlist-neighbours", type=int, default=8,
                   help="target WordPieces kept per source WordPiece (those co-occurring in the most train pairs)")
    args = p.parse_args(argv)
    try:
        info = add_shortlist(args.checkpoint, args.data, args.out, args.output_shortlist, args.shortlist_neighbours)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"{args.out}: output shortlist of {info['size']} frequent WordPieces and {info['neighbours']} "
          f"neighbours per source WordPiece, from {info['pairs']} train pairs")


if __name__ == "__main__":
    main()
