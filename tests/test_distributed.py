"""Fairseq's distributed training with the plugin's task, model and criterion, on CPU: two worker
processes (torchrun, gloo) reach the parameters of one worker with --update-freq 2, and a
two-worker run resumes from its checkpoint."""

import os
import re
import shutil

import pytest
import torch

from conftest import USER_DIR, free_port, run_cli

TORCHRUN = shutil.which("torchrun")
pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")


def train_args(data, save_dir, updates, extra=()):
    # deterministic updates: no dropout, no glancing draw, no random draft corruption, so the two set-ups
    # can differ only by the all-reduce; MIST mixing (its argmax pseudo target) and the two-stream loss on
    return [str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", "mist_tiny",
            "--criterion", "mist", "--mix-mode", "dynamic", "--block-loss-factor", "1", "--block-sizes", "1",
            "--glat-ratio", "0", "--dropout", "0", "--attention-dropout", "0", "--target-keep-prob", "0",
            "--target-random-prob", "0", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4",
            "--max-update", str(updates), "--save-dir", str(save_dir), "--no-epoch-checkpoints",
            "--disable-validation", "--num-workers", "0", "--seed", "1", "--cpu", *extra]


def two_workers(data, save_dir, updates):
    # torchrun starts the workers and sets RANK/WORLD_SIZE/MASTER_*; each passes its own rank to Fairseq
    # (--distributed-init-method env:// and --distributed-no-spawn: Fairseq's own spawn and its
    # torchrun detection count CUDA devices, of which a CPU machine has none)
    args = train_args(data, save_dir, updates, (
        "--distributed-world-size", "2", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
        "--distributed-init-method", "env://", "--distributed-no-spawn", "--device-id", "0",
        # each rank reads the checkpoint itself: Fairseq's CPU broadcast of the loaded state would
        # round-trip its OmegaConf config through torch.load, which torch >= 2.6 refuses (weights_only)
        "--load-checkpoint-on-all-dp-ranks"))
    script = 'exec "$0" "$@" --distributed-rank "$RANK"'
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return run_cli([TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                    "--no-python", "bash", "-c", script, shutil.which("fairseq-train"), *args], env=env)


def params(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_two_workers_equal_one_worker_with_update_freq_2_and_resume(data, tmp_path):
    run_cli(["fairseq-train", *train_args(data, tmp_path / "one", 3, ("--update-freq", "2"))],
            env=dict(os.environ, OMP_NUM_THREADS="1"))
    res = two_workers(data, tmp_path / "two", 3)
    one, two = params(tmp_path / "one" / "checkpoint_last.pt"), params(tmp_path / "two" / "checkpoint_last.pt")
    assert set(one) == set(two)
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert worst < 1e-5, worst  # summed gradients in another order: float rounding only
    assert "world_size=2" in res.stdout + res.stderr or "distributed init (rank 1)" in res.stdout + res.stderr
    # resume: two more updates continue from update 3
    res = two_workers(data, tmp_path / "two", 5)
    log = res.stdout + res.stderr
    assert re.search(r"Loaded checkpoint \S+ \(epoch 1 @ 3 updates\)", log), log[-2000:]
    state = torch.load(tmp_path / "two" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 5
