"""The CPU fast path (--cpu-fast-path, --optimizer fused_adamw): same math as fp32 within bf16
rounding, actually in bf16 while training, fp32 everywhere else."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_cfg
from mist_fairseq.criterions.label_smoothed_ce import label_smoothed_nll
from mist_fairseq.criterions.mist import MistCriterion
from mist_fairseq.models.fast_path import Linear, bf16_linear, bf16_matmul_supported
from mist_fairseq.models.mist_nar import MistNARModel

needs_bf16 = pytest.mark.skipif(not bf16_matmul_supported(), reason="CPU without bf16 dot products")
PAD = 0


def rel_err(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def test_bf16_linear_is_close_to_fp32_and_really_rounds():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 48, requires_grad=True)
    w = torch.randn(40, 48, requires_grad=True)
    b = torch.randn(40, requires_grad=True)
    y = bf16_linear(x, w, b)
    g = torch.randn_like(y)
    y.backward(g)
    grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    ref = F.linear(x, w, b)
    ref.backward(g)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert rel_err(y, ref) < 1e-2
    for got, want in zip(grads, (x.grad, w.grad, b.grad)):
        assert rel_err(got, want) < 1e-2
    # the product really ran in bf16 (an fp32 product would agree to ~1e-7)
    assert rel_err(y, ref) > 1e-5
    # bf16 logits on request (the output projection's mode)
    assert bf16_linear(x, w, b, bf16_out=True).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_chunked_label_smoothed_loss_equals_fairseqs(small_dict, dtype, ls):
    """Value and gradient of the chunked loss = Fairseq nat_loss's formula on the same logits
    (more rows than one chunk, so the chunking is exercised)."""
    torch.manual_seed(0)
    logits = (3 * torch.randn(37, 101)).to(dtype)
    target = torch.randint(0, 101, (37,))
    z1 = logits.clone().requires_grad_()
    loss, nll = label_smoothed_nll(z1, target, ls)
    loss.backward()
    crit = MistCriterion(SimpleNamespace(cfg=SimpleNamespace(static_pseudo_targets=None)), ls, 1.0, 1.0,
                         "none", 0.0, None, 0, "first")
    z2 = logits.float().clone().requires_grad_()
    ref = crit._compute_loss(z2, target, None, ls)  # fp32: the parent's own code
    ref["loss"].backward()
    assert loss.item() == pytest.approx(ref["loss"].item(), rel=1e-5)
    assert nll.item() == pytest.approx(ref["nll_loss"].item(), rel=1e-5)
    assert z1.grad.dtype == dtype
    assert rel_err(z1.grad, z2.grad) < (1e-5 if dtype == torch.float32 else 1e-2)
    # bf16 logits go through the chunked loss inside the criterion, with the same value
    got = crit._compute_loss(logits.clone(), target, None, ls)
    assert got["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-5)


def toy(small_dict, B=6, S=9, T=7):
    g = torch.Generator().manual_seed(3)
    nspecial = small_dict.nspecial
    src = torch.randint(nspecial, len(small_dict), (B, S), generator=g)
    tgt = torch.randint(nspecial, len(small_dict), (B, T), generator=g)
    tgt[:, -1] = small_dict.eos()
    tgt[0, 4:] = PAD
    tgt[0, 3] = small_dict.eos()
    src[:, -1] = small_dict.eos()
    return {"id": torch.arange(B), "net_input": {"src_tokens": src, "src_lengths": torch.full((B,), S)},
            "target": tgt, "nsentences": B, "ntokens": int(tgt.ne(PAD).sum())}


def step(model, crit, sample, seed=0):
    torch.manual_seed(seed)  # glancing draws its positions at random
    model.zero_grad()
    loss, _, log = crit(model, sample)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, log


@needs_bf16
@pytest.mark.parametrize("mix_mode", ["none", "dynamic"])
def test_one_fast_step_stays_close_to_fp32(small_dict, mix_mode):
    """Loss and every gradient of one training step on the fast path agree with fp32 within bf16
    rounding: a fast path that changed the math (a wrong gradient, a dropped term) fails here."""
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(), small_dict).train()
    # the criterion's defaults: the authors' corrupted draft input too (drawn alike: step() seeds)
    task = SimpleNamespace(cfg=SimpleNamespace(static_pseudo_targets=None), target_dictionary=small_dict)
    crit = MistCriterion(task, 0.1, 1.0, 1.0, mix_mode, 0.5, None, 0, "first")
    sample = toy(small_dict)
    loss32, grads32, log32 = step(model, crit, sample)
    assert model.set_cpu_fast_path(True)
    loss16, grads16, log16 = step(model, crit, sample)
    assert set(grads16) == set(grads32)
    assert loss16.item() == pytest.approx(loss32.item(), rel=2e-2)
    total = torch.cat([g.flatten() for g in grads32.values()])
    total16 = torch.cat([grads16[n].flatten() for n in grads32])
    assert rel_err(total16, total) < 3e-2
    for n, g in grads32.items():
        if g.norm() > 1e-3 * total.norm():
            assert rel_err(grads16[n], g) < 0.1, n
    # ... and it was not the fp32 path: the output projection ran in bf16
    assert loss16.item() != loss32.item()


@needs_bf16
def test_fast_path_is_on_only_while_training(small_dict):
    torch.manual_seed(0)
    fast = MistNARModel(tiny_cfg(cpu_fast_path=True), small_dict)
    assert all(m.bf16 for m in fast.modules() if isinstance(m, Linear)) and fast.mlm_head.bf16
    plain = MistNARModel(tiny_cfg(), small_dict)
    plain.load_state_dict(fast.state_dict())  # same parameters, same keys
    sample = toy(small_dict)
    src, tgt = sample["net_input"]["src_tokens"], sample["target"]
    fast.train(), plain.train()
    with torch.no_grad():
        assert fast(src, None, tgt)[0].dtype == torch.bfloat16
        assert plain(src, None, tgt)[0].dtype == torch.float32
        # the encoder's own products run in bf16 too: the first layer's keys (a product of the same
        # embeddings; no dropout in tiny_cfg) differ by bf16 rounding, and only by that
        a, b = fast.encode_source(src).kv[0][0], plain.encode_source(src).kv[0][0]
        assert a.dtype == torch.float32 and 1e-4 < rel_err(a, b) < 2e-2
    fast.eval(), plain.eval()
    with torch.no_grad():
        a, b = fast(src, None, tgt)[0], plain(src, None, tgt)[0]
    assert a.dtype == torch.float32 and torch.equal(a, b)  # validation and generation stay fp32


def test_old_config_without_the_key_trains_fp32(small_dict):
    cfg = tiny_cfg()
    del cfg.cpu_fast_path  # a checkpoint saved before the option existed
    model = MistNARModel(cfg, small_dict)
    assert not any(m.bf16 for m in model.modules() if isinstance(m, Linear))


def test_fused_adamw_follows_fairseqs_adam():
    """Same updates as Fairseq's adam (AdamW) up to where epsilon sits; betas parsed from the CLI form."""
    from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

    from mist_fairseq.optim.fused_adamw import FusedAdamW, FusedAdamWConfig, parse_betas

    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(50, 20))
    p2 = torch.nn.Parameter(p1.detach().clone())
    ours = FusedAdamW(FusedAdamWConfig(adam_betas="(0.9, 0.98)", adam_eps=1e-8, weight_decay=0.01, lr=[1e-2]), [p2])
    ref = FairseqAdam(FairseqAdamConfig(adam_betas="(0.9, 0.98)", adam_eps=1e-8, weight_decay=0.01, lr=[1e-2]), [p1])
    start = p1.detach().clone()
    for k in range(5):
        g = torch.randn(50, 20)
        for p, opt in ((p1, ref), (p2, ours)):
            p.grad = g.clone()
            opt.step()
    assert torch.allclose(p1, p2, atol=1e-5)
    assert not torch.allclose(p1, start, atol=1e-3)  # the parameters moved
    assert ours.optimizer.param_groups[0]["betas"] == (0.9, 0.98)
    assert parse_betas([0.8, 0.9]) == (0.8, 0.9)
    with pytest.raises(ValueError, match="adam-betas"):
        parse_betas("(0.9)")


def test_fast_dropout_drops_p_and_keeps_the_expectation():
    from mist_fairseq.models.fast_path import Dropout, fast_dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = fast_dropout(x, 0.1)
    dropped = float((y == 0).float().mean())
    assert dropped == pytest.approx(0.1, abs=0.003)
    assert float(y.detach().mean()) == pytest.approx(1.0, abs=0.005)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient = the same scaled mask
    # independent positions: the 4 lanes of one random word are not the same draw
    assert float((y.view(-1, 4) == 0).all(1).float().mean()) < 0.001
    d = Dropout(0.1).train()
    d.fast = True
    z = torch.zeros(1000)
    assert d(z + 1).eq(0).any() and torch.equal(d.eval()(z + 1), z + 1)


def test_the_bias_gradient_sums_every_row_block_in_fp32():
    """The output bias's gradient is summed a block of rows at a time (column_sum): every block counts,
    and a bf16 gradient is summed in fp32 (its exact sum, not a bf16 rounding of it)."""
    torch.manual_seed(2)
    x = torch.randn(3, 70, 16).bfloat16().requires_grad_()  # 210 rows
    w = torch.randn(30, 16, requires_grad=True)
    b = torch.zeros(30, requires_grad=True)
    y = bf16_linear(x, w, b, bf16_out=True)
    g = torch.randn(y.shape).bfloat16()
    y.backward(g)
    want = g.reshape(-1, 30).double().sum(0)
    assert b.grad.dtype == torch.float32
    assert torch.allclose(b.grad.double(), want, atol=1e-4)
    from mist_fairseq.models.fast_path import column_sum
    got = column_sum(g.reshape(-1, 30), rows=64)  # four blocks of 64, the last short: each counts
    assert torch.allclose(got.double(), want, atol=1e-4)


def test_step_weights_round_each_weight_once_until_it_changes():
    from mist_fairseq.models.fast_path import bf16_weight, step_weights

    w, u = torch.randn(4, 3), torch.randn(2, 3)
    assert bf16_weight((w,)) is not bf16_weight((w,))  # outside a step: a new copy every product
    with step_weights():
        first = bf16_weight((w,))
        assert bf16_weight((w,)) is first and torch.equal(first, w.bfloat16())
        both = bf16_weight((w, u))  # a concatenation is its own entry
        assert both.shape == (6, 3) and torch.equal(both, torch.cat([w, u]).bfloat16())
        w.add_(1.0)  # an in-place change (a new version) is rounded anew
        assert torch.equal(bf16_weight((w,)), w.bfloat16())
    assert bf16_weight((w,)) is not first


@needs_bf16
@pytest.mark.parametrize("mix_mode", ["none", "dynamic"])
def test_a_step_with_kept_bf16_weights_has_the_same_loss_and_gradients(small_dict, mix_mode):
    """Keeping one bf16 copy of each weight for the step's passes changes nothing but the work: the
    loss and every gradient are bit-identical to rounding the weights in every pass."""
    from mist_fairseq.models.fast_path import step_weights

    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(cpu_fast_path=True), small_dict).train()
    task = SimpleNamespace(cfg=SimpleNamespace(static_pseudo_targets=None), target_dictionary=small_dict)
    crit = MistCriterion(task, 0.1, 1.0, 1.0, mix_mode, 0.5, None, 0, "first")
    sample = toy(small_dict)
    loss_a, grads_a, _ = step(model, crit, sample)
    with step_weights():
        loss_b, grads_b, _ = step(model, crit, sample)
    assert loss_a.item() == loss_b.item()
    assert set(grads_a) == set(grads_b) and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


@needs_bf16
def test_the_tasks_train_step_rounds_each_weight_once(small_dict, monkeypatch):
    """MistNARTask.train_step opens the step's bf16 copies: through it, the glancing draft, the graded
    pass and the source pass round each weight (group) once; without the task's block, once a pass."""
    from mist_fairseq.models import fast_path
    from mist_fairseq.tasks.mist_nar import MistNARTask

    rounded = []
    real = fast_path.bf16_weight

    def counting(weights):
        cache = getattr(fast_path._STEP, "weights", None)
        key = fast_path.weight_key(weights)
        if cache is None or key not in cache:
            rounded.append(key)
        return real(weights)
    monkeypatch.setattr(fast_path, "bf16_weight", counting)
    torch.manual_seed(0)
    model = MistNARModel(tiny_cfg(cpu_fast_path=True), small_dict).train()
    task = SimpleNamespace(cfg=SimpleNamespace(static_pseudo_targets=None), target_dictionary=small_dict)
    crit = MistCriterion(task, 0.1, 1.0, 1.0, "none", 0.5, None, 0, "first")
    sample = toy(small_dict)
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    object.__new__(MistNARTask).train_step(sample, model, crit, optimizer, update_num=1)
    once = len(rounded)
    assert once == len(set(rounded))  # no weight rounded twice inside the step
    rounded.clear()
    step(model, crit, sample)  # the same passes without the task's block
    assert len(rounded) > once
