"""AR rescoring of the length-beam candidates: the one-pass teacher-forced scores equal a step-by-step
AR computation, the rescored generator returns the candidate the scorer prefers, and the checks
that refuse a scorer that cannot score."""

import types

import pytest
import torch

from conftest import tiny_cfg
from mist_fairseq.generators.mist_generator import MistGenerator, dedup_consecutive
from mist_fairseq.generators.rerank import ARRescorer, build_rescorer
from mist_fairseq.models.mist_nar import MistNARModel
from test_criterion import make_sample, toy_batch


@torch.no_grad()
def stepwise_logprobs(model, src_row, tokens):
    """Slow reference: log p(tokens_t | source, tokens_<t) one AR step at a time over the cache
    (decode_step), for one source (1, S) and one candidate (T,)."""
    state = model.encode_source(src_row)
    cache, prev, out = None, tokens[:0].unsqueeze(0), []
    mask = torch.full((1, 1), model.mask_idx)
    for t in range(tokens.numel()):
        logits, cache = model.decode_step(state, cache, prev, mask)
        out.append(logits[0, 0].float().log_softmax(-1)[tokens[t]])
        prev = tokens[t : t + 1].unsqueeze(0)
    return torch.stack(out)


def models(small_dict, seeds=(0, 1)):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(MistNARModel(tiny_cfg(), small_dict).eval())
    return out


def test_score_targets_equals_step_by_step_ar(small_dict):
    (model,) = models(small_dict, (0,))
    src, tgt = toy_batch(small_dict, n=4, seed=5)
    lp = model.score_targets(model.encode_source(src), tgt)
    for i in range(src.size(0)):
        real = tgt[i].ne(small_dict.pad())
        ref = stepwise_logprobs(model, src[i : i + 1], tgt[i][real])
        assert torch.allclose(lp[i][real], ref, atol=1e-5)
        assert lp[i][~real].abs().sum() == 0


def candidates(gen, model, src):
    """The k candidates of each source as the generator outputs them (after dedup): (B * k, T)."""
    state, src_k, tgt = gen.start(model, src)
    tokens, scores = gen.predict_pass(model, state, tgt, src_k)
    return dedup_consecutive(tokens, scores, gen.pad)[0], src_k


@pytest.mark.parametrize("separate", [False, True])
def test_rescoring_picks_the_candidate_the_scorer_prefers(small_dict, separate):
    decoder, other = models(small_dict)
    scorer = other if separate else decoder
    src, _ = toy_batch(small_dict, n=12, seed=2)
    sample = make_sample(src, src)
    k = 4
    own = MistGenerator(small_dict, length_beam=k).generate([decoder], sample)
    rescored = MistGenerator(small_dict, length_beam=k, rescorer=ARRescorer(other if separate else None))
    hyps = rescored.generate([decoder], sample)
    cands, src_k = candidates(rescored, decoder, src)
    changed = 0
    for b in range(src.size(0)):
        best, best_score = None, None
        for j in range(k):
            c = cands[b * k + j]
            c = c[c.ne(small_dict.pad())]
            s = float(stepwise_logprobs(scorer, src_k[b * k + j : b * k + j + 1], c).mean())
            if best_score is None or s > best_score:
                best, best_score = c, s
        assert torch.equal(hyps[b][0]["tokens"], best)
        assert abs(float(hyps[b][0]["score"]) - best_score) < 1e-4
        changed += not torch.equal(hyps[b][0]["tokens"], own[b][0]["tokens"])
    assert changed > 0  # the scorer's choice is not the NAR pass's own on these inputs


def test_a_separate_scorer_encodes_each_source_once(small_dict):
    """k candidates of a source share one source pass of the scorer: it sees B rows, not B * k, and
    the scores equal those of the pass over the repeated rows."""
    decoder, other = models(small_dict)
    src, _ = toy_batch(small_dict, n=6, seed=3)
    k = 3
    gen = MistGenerator(small_dict, length_beam=k)
    cands, src_k = candidates(gen, decoder, src)
    seen = []
    encode = other.encode_source
    other.encode_source = lambda s: seen.append(s.size(0)) or encode(s)
    fast = ARRescorer(other).score(decoder, None, src_k, cands, k)
    assert seen == [src.size(0)]
    slow = ARRescorer(other).score(decoder, None, src_k, cands)  # k = 1: every row its own pass
    assert seen[-1] == src.size(0) * k
    assert torch.allclose(fast, slow, atol=1e-5)


def fake_task(two_stream_blocks):
    from mist_fairseq.tasks.mist_nar import MistNARTask

    task = types.SimpleNamespace(two_stream_blocks=two_stream_blocks, cfg=types.SimpleNamespace(data="DATA"))
    task.require_two_stream = types.MethodType(MistNARTask.require_two_stream, task)
    return task


def test_rerank_options_are_checked(tmp_path):
    assert build_rescorer(fake_task([]), "none") is None
    assert isinstance(build_rescorer(fake_task([1, 2]), "ar"), ARRescorer)
    assert isinstance(build_rescorer(fake_task(None), "ar"), ARRescorer)  # an older checkpoint: not recorded
    with pytest.raises(ValueError, match="--rerank ar needs a checkpoint trained with --block-loss-factor > 0"):
        build_rescorer(fake_task([]), "ar")
    with pytest.raises(ValueError, match="including 1; this one was trained with block sizes 2,4"):
        build_rescorer(fake_task([2, 4]), "ar")
    with pytest.raises(ValueError, match="no such file"):
        build_rescorer(fake_task([]), "none", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="exclude each other"):
        build_rescorer(fake_task([1]), "ar", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="choose one of"):
        build_rescorer(fake_task([1]), "best")


def generate_cli(data, ckpt, *extra, check=True):
    from conftest import USER_DIR, run_cli

    return run_cli(["fairseq-generate", str(data / "bin"), "--user-dir", USER_DIR, "--task", "mist_nar",
                    "--path", str(ckpt), "--gen-subset", "test", "--batch-size", "8", "--bpe", "bert",
                    "--bpe-vocab-file", str(data / "bin" / "vocab.txt"), *extra], check=check)


def detok(stdout):
    import re

    return {int(i): d for i, d in re.findall(r"^D-(\d+)\t\S+\t(.*)$", stdout, re.M)}


def test_rerank_through_fairseq_generate_and_the_api(trained, trained_two_stream, ar_teacher, data):
    from conftest import N_TEST
    from mist_fairseq import MistModel

    sources = (data / "raw" / "test.src").read_text().splitlines()
    for ckpt_dir, options, api in (
        (trained, ["--rerank-path", str(ar_teacher)], {"rerank_path": str(ar_teacher)}),
        (trained_two_stream, ["--rerank", "ar"], {"rerank": "ar"}),
    ):
        want = detok(generate_cli(data, ckpt_dir / "checkpoint_last.pt", "--length-beam", "3", *options).stdout)
        assert sorted(want) == list(range(N_TEST))
        model = MistModel.from_pretrained(str(ckpt_dir), checkpoint_file="checkpoint_last.pt",
                                          data_name_or_path=str(data / "bin"), threads=1)
        assert model.generate(sources, length_beam=3, **api) == [want[i] for i in range(N_TEST)]
        model.decode_options = model.decode_options.replace(length_beam=3, **api)  # as the service sets them
        assert model.generate(sources) == [want[i] for i in range(N_TEST)]


def test_rerank_refusals_name_the_fix(trained, data, tmp_path):
    bad = generate_cli(data, trained / "checkpoint_last.pt", "--length-beam", "3", "--rerank", "ar", check=False)
    assert bad.returncode != 0
    assert "--rerank ar needs a checkpoint trained with --block-loss-factor > 0 --block-sizes including 1" in bad.stderr
    # a NAR-only checkpoint cannot score AR either
    bad = generate_cli(data, trained / "checkpoint_last.pt", "--length-beam", "3", "--rerank-path",
                       str(trained / "checkpoint_last.pt"), check=False)
    assert bad.returncode != 0 and "--rerank-path" in bad.stderr and "no two-stream loss" in bad.stderr
    bad = generate_cli(data, trained / "checkpoint_last.pt", "--decode-mode", "ar", check=False)
    assert bad.returncode != 0 and "--decode-mode ar needs a checkpoint trained with" in bad.stderr


def test_a_data_folder_with_another_vocabulary_is_refused(trained, data, tmp_path):
    """Same size, two entries swapped: the checkpoint's recorded fingerprint no longer matches."""
    import shutil

    swapped = tmp_path / "swapped"
    shutil.copytree(data, swapped)
    for name in ("dict.src.txt", "dict.tgt.txt"):
        d = (swapped / "bin" / name).read_text().splitlines()
        d[2000], d[2001] = d[2001], d[2000]
        (swapped / "bin" / name).write_text("\n".join(d) + "\n")
    bad = generate_cli(swapped, trained / "checkpoint_last.pt", check=False)
    assert bad.returncode != 0 and "is not the one this checkpoint was trained on" in bad.stderr
    assert generate_cli(data, trained / "checkpoint_last.pt").returncode == 0


def test_the_service_takes_rerank_on_the_torch_backend_only(tmp_path):
    from mist_fairseq.serve.backends import load_backend

    with pytest.raises(ValueError, match="use mist_fairseq.MistModel"):
        load_backend("onnx", str(tmp_path), decode={"rerank": "ar"})
    with pytest.raises(ValueError, match="use mist_fairseq.MistModel"):
        load_backend("onnx", str(tmp_path), decode={"rerank_path": "x.pt", "length_beam": 3})
