import os
import socket
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "mist_fairseq")
QUORA_SMALL = os.path.join(USER_DIR, "resources", "quora_small")

# a BERT-style vocabulary small enough for unit tests: specials where bert-base-uncased has them
SMALL_WORDS = [f"w{i}" for i in range(40)] + ["##s", "the", "a", "?", "."]


def small_vocab():
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return vocab + SMALL_WORDS


@pytest.fixture
def small_dict():
    from mist_fairseq.dictionary import BertDictionary

    return BertDictionary(small_vocab())


def tiny_cfg(**over):
    from mist_fairseq.models.mist_nar import MistNARConfig

    cfg = MistNARConfig(
        encoder_layers=2, encoder_embed_dim=32, encoder_attention_heads=4, encoder_ffn_embed_dim=64,
        max_positions=64, dropout=0.0, attention_dropout=0.0,
    )
    cfg.max_source_positions = 40
    cfg.max_target_positions = 16
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
def tiny_model(small_dict):
    from mist_fairseq.models.mist_nar import MistNARModel

    torch.manual_seed(0)
    return MistNARModel(tiny_cfg(), small_dict).eval()


def run_cli(args, cwd=None, check=True, env=None):
    """Runs a console command the way a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def python_cli(module, *args, **kw):
    return run_cli([sys.executable, "-m", module, *args], **kw)


N_TEST = 21  # not a multiple of 8: Fairseq's default batch multiple would lose sentences


def head(path, n, out):
    with open(path, encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return str(out)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    args = []
    for split, n in (("train", 64), ("valid", 16), ("test", N_TEST)):
        for side in ("src", "tgt"):
            args += [f"--{split}-{side}", head(os.path.join(QUORA_SMALL, f"{split}.{side}"), n, tmp / f"{split}.{side}")]
    python_cli("mist_fairseq.prepare", "parallel", *args, "--out", str(tmp / "prep"))
    return tmp / "prep"




@pytest.fixture(scope="session")
def trained(data, tmp_path_factory):
    """A mist_tiny checkpoint folder (checkpoint_last.pt) trained for 6 updates on ``data``: the
    Python API, the export and the service are tested on it."""
    ck = tmp_path_factory.mktemp("api_ck")
    run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", "mist_tiny",
             "--criterion", "mist", "--optimizer", "adam", "--lr", "5e-4", "--batch-size", "8", "--max-update", "6",
             "--save-dir", str(ck), "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0",
             "--seed", "1"])
    return ck


@pytest.fixture(scope="session")
def trained_two_stream(data, tmp_path_factory):
    """A mist_tiny checkpoint folder trained 6 updates with the two-stream loss too (blocks of 1, 2
    and 16): it decodes NAR, semi-NAR and AR and can rescore (--rerank ar)."""
    ck = tmp_path_factory.mktemp("two_stream_ck")
    run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", "mist_tiny",
             "--criterion", "mist", "--block-loss-factor", "1", "--block-sizes", "1,2,16", "--optimizer", "adam",
             "--lr", "5e-4", "--batch-size", "8", "--max-update", "6", "--save-dir", str(ck), "--no-epoch-checkpoints",
             "--disable-validation", "--num-workers", "0", "--seed", "1"])
    return ck


@pytest.fixture(scope="session")
def ar_teacher(data, tmp_path_factory):
    """A mist_tiny AR-only checkpoint (two-stream loss at blocks of 1, no NAR passes), 3 updates."""
    ck = tmp_path_factory.mktemp("ar_teacher")
    run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", "mist_tiny",
             "--criterion", "mist", "--mix-mode", "none", "--nar-loss-factor", "0", "--block-loss-factor", "1",
             "--block-sizes", "1", "--optimizer", "adam", "--lr", "5e-4", "--batch-size", "8", "--max-update", "3",
             "--save-dir", str(ck), "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0",
             "--seed", "1"])
    return ck / "checkpoint_last.pt"


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers started by the tests)."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]
