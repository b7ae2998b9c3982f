"""python -m mist_fairseq.distill: the distilled folder holds the teacher's outputs as train targets
(the very ones fairseq-generate prints), keeps valid/test references untouched, resumes and shards by
chunk, appears whole or not at all, and refuses a teacher on another vocabulary in one line."""

import json
import os
import re
import shutil

import pytest

from conftest import USER_DIR, python_cli, run_cli
from mist_fairseq import distill


@pytest.fixture
def teacher(ar_teacher):
    return ar_teacher


def distill_args(teacher, data, out, *extra):
    return distill.parse_args([str(teacher), "--data", str(data), "--out", str(out), "--chunk-size", "20",
                               "--batch-size", "8", "--max-len-b", "12", "--progress-seconds", "0", *extra])


def lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_distilled_targets_are_the_teachers_outputs(teacher, data, tmp_path):
    out = tmp_path / "kd"
    manifest = distill.run(distill_args(teacher, data, out, "--splits", "train", "valid"))
    gen = run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--path", str(teacher), "--gen-subset", "train", "--batch-size", "8", "--decode-mode", "ar",
                   "--beam", "1", "--max-len-b", "12"])
    hyps = {int(i): h for i, h in re.findall(r"^H-(\d+)\t\S+\t(.*)$", gen.stdout, re.M)}
    kd = lines(out / "tok" / "train.tgt")
    assert len(kd) == len(hyps) == 64
    assert kd == [hyps[i] for i in range(64)]
    assert lines(out / "tok" / "train.src") == lines(data / "tok" / "train.src")
    assert lines(out / "tok" / "valid.tgt") != lines(data / "tok" / "valid.tgt")  # valid distilled too
    for split in ("valid", "test"):  # the real references stay for scoring
        for side in ("src", "tgt"):
            assert lines(out / "raw" / f"{split}.{side}") == lines(data / "raw" / f"{split}.{side}")
    assert lines(out / "tok" / "test.tgt") == lines(data / "tok" / "test.tgt")
    assert lines(out / "bin" / "dict.tgt.txt") == lines(data / "bin" / "dict.tgt.txt")
    assert (out / "bin" / "vocab.txt").read_bytes() == (data / "bin" / "vocab.txt").read_bytes()
    assert (out / "bin" / "train.src-tgt.tgt.bin").exists()
    saved = json.loads((out / "manifest.json").read_text())
    assert saved == manifest and saved["splits"]["train"]["pairs"] == 64
    assert {"distilled BLEU-4", "distilled self-BLEU"} <= set(saved["splits"]["train"])
    assert saved["teacher"]["options"]["decode_mode"] == "ar" and saved["wall_seconds"] > 0
    assert saved["sentences_per_second"] > 0
    assert not os.path.exists(str(out) + ".work")


def test_bf16_distillation_writes_what_bf16_generation_prints(teacher, data, tmp_path):
    out = tmp_path / "kd16"
    manifest = distill.run(distill_args(teacher, data, out, "--decode-precision", "bf16"))
    gen = run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                   "--path", str(teacher), "--gen-subset", "train", "--batch-size", "8", "--decode-mode", "ar",
                   "--beam", "1", "--max-len-b", "12", "--decode-precision", "bf16"])
    hyps = {int(i): h for i, h in re.findall(r"^H-(\d+)\t\S+\t(.*)$", gen.stdout, re.M)}
    assert lines(out / "tok" / "train.tgt") == [hyps[i] for i in range(64)]
    assert manifest["teacher"]["options"]["decode_precision"] == "bf16"


def test_shards_resume_and_assemble_once_complete(teacher, data, tmp_path, capsys):
    out = tmp_path / "kd"
    assert distill.run(distill_args(teacher, data, out, "--shard", "0/2")) == {}
    assert not out.exists()  # half the chunks: nothing a trainer could pick up
    chunks = sorted(os.listdir(str(out) + ".work/chunks"))
    assert chunks == ["train.00000.tsv", "train.00002.tsv"]
    os.remove(str(out) + ".work/chunks/train.00002.tsv")  # as if killed before that chunk was written
    capsys.readouterr()
    manifest = distill.run(distill_args(teacher, data, out, "--shard", "0/1"))
    err = capsys.readouterr().err
    assert re.search(r"train: 44/44 sentences \| [\d.]+ sentences/s \| \d+:\d\d left", err)  # 3 missing chunks
    assert manifest["splits"]["train"]["pairs"] == 64 and (out / "bin" / "train.src-tgt.tgt.bin").exists()
    assert not os.path.exists(str(out) + ".work")


def test_device_follows_cuda_unless_cpu(teacher, data, tmp_path, monkeypatch):
    """Where CUDA is available the teacher decodes there (as fairseq-generate does); --cpu keeps it on
    the CPU. Faked here: a machine without CUDA would fail at the first move if --cpu were ignored."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    manifest = distill.run(distill_args(teacher, data, tmp_path / "kd", "--cpu"))
    assert manifest["device"] == "cpu" and manifest["splits"]["train"]["pairs"] == 64
    if not torch.backends.cuda.is_built():
        with pytest.raises((AssertionError, RuntimeError)):
            distill.run(distill_args(teacher, data, tmp_path / "kd2"))


def test_keep_raw_and_existing_output(teacher, data, tmp_path):
    out = tmp_path / "kd"
    distill.run(distill_args(teacher, data, out, "--keep-raw"))
    tgt, src = lines(out / "tok" / "train.tgt"), lines(out / "tok" / "train.src")
    assert len(tgt) == len(src) == 128
    assert tgt[:64] == lines(data / "tok" / "train.tgt") and src[64:] == lines(data / "tok" / "train.src")
    assert len(lines(out / "raw" / "train.tgt")) == 128
    with pytest.raises(distill.DistillError, match="exists; pass --overwrite"):
        distill.run(distill_args(teacher, data, out))
    distill.run(distill_args(teacher, data, out, "--overwrite"))
    assert len(lines(out / "tok" / "train.tgt")) == 64


def test_copy_fallback_gives_copied_pairs_their_reference(teacher, data, tmp_path):
    """Chunks left by an earlier run (the resume path) hold the source itself for even ids: with
    --copy-fallback those pairs keep the reference, the others keep the teacher's output."""
    src, ref = lines(data / "tok" / "train.src"), lines(data / "tok" / "train.tgt")
    other = [" ".join(reversed(r.split())) for r in ref]  # stands for a teacher output that is no copy
    distilled = [src[i] if i % 2 == 0 else other[i] for i in range(64)]
    for flag, want in (([], distilled), (["--copy-fallback"], [ref[i] if i % 2 == 0 else other[i] for i in range(64)])):
        out = tmp_path / f"kd{len(flag)}"
        os.makedirs(f"{out}.work/chunks")
        for c in range(4):
            (out.parent / f"{out.name}.work" / "chunks" / f"train.{c:05d}.tsv").write_text(
                "".join(f"{i}\t{distilled[i]}\n" for i in range(c * 20, min(64, c * 20 + 20))))
        manifest = distill.run(distill_args(teacher, data, out, *flag))
        assert lines(out / "tok" / "train.tgt") == want
        assert manifest["copy_fallback"] == bool(flag)
        assert manifest["splits"]["train"]["copies_kept_reference"] == (32 if flag else None)


def test_teacher_on_another_vocabulary_is_refused_in_one_line(teacher, data, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(data, swapped)
    for name in ("dict.src.txt", "dict.tgt.txt"):  # same size, two entries swapped
        d = lines(swapped / "bin" / name)
        d[2000], d[2001] = d[2001], d[2000]
        (swapped / "bin" / name).write_text("\n".join(d) + "\n")
    bad = python_cli("mist_fairseq.distill", str(teacher), "--data", str(swapped), "--out", str(tmp_path / "kd"),
                     check=False)
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: teacher") and "not the one this checkpoint was trained on" in last
    assert not (tmp_path / "kd").exists() and not (tmp_path / "kd.work").exists()
    notckpt = tmp_path / "text.pt"
    notckpt.write_text("not a checkpoint\n")
    bad = python_cli("mist_fairseq.distill", str(notckpt), "--data", str(data), "--out", str(tmp_path / "kd"),
                     check=False)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a readable Fairseq checkpoint" in bad.stderr
