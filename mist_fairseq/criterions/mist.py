"""``mist`` criterion: L = L_NAT + factor * L_length + L_MIST, with GLAT glancing.

Defaults follow the authors' method (Jiang et al. 2022; kongds/MIST ``model_mist.py``):

0. The draft input Y_0 is the authors' data loader's corrupted target (UniLM fine-tuning's): each real
   position shows its gold token with ``--target-keep-prob``, a random token with
   ``--target-random-prob``, [MASK] otherwise (training only; both 0 = all [MASK]; decoding always
   starts from [MASK]s).
1. Glancing (no gradient): a first pass over Y_0 gives a draft; with ``--glat-hamming mixed`` that
   draft is mixed into the source and the *mixed* pass's prediction over Y_0 gives the Hamming
   distance (``first``: the first pass's own, one no-grad pass fewer). One glanced Y_M (Y_0 with
   floor(ratio * Hamming) gold tokens revealed at random real positions) feeds both graded passes.
2. The graded first pass over ``[CLS] X [SEP] Y_M [SEP]`` gives L_NAT; with ``--pseudo-from glanced``
   its argmax over every real target position (no gradient through the argmax) is the pseudo target
   Y_p (``masked``: the argmax of the no-grad all-[MASK] draft pass).
3. The graded mixed pass over ``[CLS] Y_p [SEP] X [SEP] Y_M [SEP]`` gives L_MIST.
4. ``--score-positions all``: both token losses cover every real target position, revealed ones
   too (``masked``: only the [MASK] positions, GLAT's choice).

Optional terms (:mod:`mist_fairseq.criterions.block_loss`): ``--block-loss-factor`` adds the
two-stream (BANG-style) loss that makes a checkpoint decode semi-NAR and AR too, ``--janus-kl-factor``
the symmetric KL between it and the graded first pass (JANUS-style), and ``--nar-loss-factor 0``
drops the NAR passes (an AR-only model on the same encoder). A CTC checkpoint (the model's ``--ctc``)
takes the CTC passes of :mod:`mist_fairseq.criterions.ctc_passes` instead of steps 0-4.

The source block is encoded once per input and its keys/values reused by every target pass. Only
scored positions (plus, for Y_p, the real ones) are projected onto the vocabulary. With an output
shortlist (the model's ``--output-shortlist``, built from the train split at the first training step)
every pass projects onto the batch's candidates plus its gold tokens, and the losses and argmaxes are
over those columns (:mod:`mist_fairseq.models.shortlist`). The losses are
returned as Fairseq's NAT named-loss dict (``word_ins``, ``length``, ``mist``); the summing and
logging are the parent ``nat_loss`` criterion's own.
"""

import logging
import time

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.nat_loss import LabelSmoothedDualImitationCriterion

from mist_fairseq.criterions.block_loss import block_entry, draw_block, parse_block_sizes, symmetric_kl
from mist_fairseq.criterions.ctc_passes import ctc_outputs, parse_layers
from mist_fairseq.criterions.glancing import glance
from mist_fairseq.criterions.label_smoothed_ce import label_smoothed_nll
from mist_fairseq.criterions.mist_config import MistCriterionConfig
from mist_fairseq.models.shortlist import compact, ids_of, index_of, on_candidates

logger = logging.getLogger(__name__)


def corrupt_target(gold: torch.Tensor, keep: float, random: float, pad: int, mask: int,
                   vocab_size: int) -> torch.Tensor:
    """The authors' draft input Y_0 (their loader's UniLM-style corruption). gold: (B, T). Each real
    position independently: gold with probability keep, a token drawn uniformly from the vocabulary
    except padding with probability random, [MASK] otherwise; pad stays pad. Returns (B, T)."""
    real = gold.ne(pad)
    u = torch.rand(gold.shape, device=gold.device)
    drawn = torch.randint(0, vocab_size - 1, gold.shape, device=gold.device)
    drawn = drawn + drawn.ge(pad).long()  # skip the padding id: it would hide the position as a key
    y = torch.where(u < keep, gold, torch.where(u < keep + random, drawn, torch.full_like(gold, mask)))
    return y.masked_fill(~real, pad)


def scatter_argmax(logits: torch.Tensor, where: torch.Tensor, pad: int, vocab=None) -> torch.Tensor:
    """logits: (N, V) at the N True positions of where (B, T) -> (B, T) argmax ids, pad elsewhere;
    vocab (V,): the token ids of an output shortlist's columns (None: columns are ids).
    Detached: no gradient ever flows through a pseudo target."""
    out = torch.full(where.shape, pad, dtype=torch.long, device=where.device)
    # max(-1).indices, not argmax: the same first-maximum index, several times faster on bf16 logits
    out[where] = ids_of(vocab, logits.detach().max(-1).indices)
    return out


@register_criterion("mist", dataclass=MistCriterionConfig)
class MistCriterion(LabelSmoothedDualImitationCriterion):
    def __init__(self, task, label_smoothing, length_loss_factor, mist_loss_factor, mix_mode,
                 glat_ratio, glat_ratio_end, glat_anneal_updates, glat_hamming,
                 pseudo_from="glanced", score_positions="all", nar_loss_factor=1.0,
                 block_loss_factor=0.0, block_sizes="1", janus_kl_factor=0.0,
                 target_keep_prob=0.1, target_random_prob=0.1, layer_loss_layers=""):
        super().__init__(task, label_smoothing)
        self.length_loss_factor = length_loss_factor
        self.mist_loss_factor = mist_loss_factor
        self.mix_mode = mix_mode
        self.glat_ratio, self.glat_ratio_end = glat_ratio, glat_ratio_end
        self.glat_anneal_updates = glat_anneal_updates
        self.glat_hamming = glat_hamming
        self.pseudo_from = pseudo_from
        self.score_positions = score_positions
        self.update_num = 0
        self.nar_loss_factor, self.block_loss_factor = nar_loss_factor, block_loss_factor
        self.block_sizes = parse_block_sizes(block_sizes)
        self.janus_kl_factor = janus_kl_factor
        self.layer_loss_layers = parse_layers(layer_loss_layers)
        self.target_keep_prob, self.target_random_prob = target_keep_prob, target_random_prob
        if not (0 <= target_keep_prob and 0 <= target_random_prob and target_keep_prob + target_random_prob <= 1):
            raise ValueError(f"--target-keep-prob {target_keep_prob} and --target-random-prob {target_random_prob}: "
                             "each must be >= 0 and together <= 1")
        if nar_loss_factor <= 0 and block_loss_factor <= 0:
            raise ValueError("--nar-loss-factor and --block-loss-factor are both 0: nothing to train")
        if janus_kl_factor > 0 and (nar_loss_factor <= 0 or block_loss_factor <= 0):
            raise ValueError("--janus-kl-factor ties the NAR and two-stream passes: set --nar-loss-factor and "
                             "--block-loss-factor > 0")
        if mix_mode == "static" and not getattr(task.cfg, "static_pseudo_targets", None):
            raise ValueError("--mix-mode static needs --static-pseudo-targets FILE (fairseq-generate output on train)")

    def set_update_num(self, update_num: int) -> None:
        self.update_num = update_num

    def current_glat_ratio(self) -> float:
        if self.glat_ratio_end is None or self.glat_anneal_updates <= 0:
            return self.glat_ratio
        frac = min(1.0, self.update_num / self.glat_anneal_updates)
        return self.glat_ratio + (self.glat_ratio_end - self.glat_ratio) * frac

    def _predict(self, model, state, y0, real):
        """No-grad argmax over the target input y0 (B, T) -> (B, T) (pad elsewhere)."""
        with torch.no_grad():
            logits = model.decode_target(state.detach(), y0, real, **compact(state))
        return scatter_argmax(logits, real, model.pad, state.vocab)

    def ensure_shortlist(self, model) -> None:
        """A model with an output shortlist (--output-shortlist) but no table yet gets it from the train
        split (at the first training step; a checkpoint keeps it)."""
        if getattr(model, "shortlist_size", 0) and model.training and not bool(model.shortlist_ready):
            split = self.task.cfg.train_subset
            if split not in self.task.datasets:
                self.task.load_dataset(split)
            ds, t0 = self.task.datasets[split], time.time()
            model.fill_shortlist((ds.src[i], ds.tgt[i]) for i in range(len(ds)))
            logger.info(f"output shortlist: {model.shortlist_size} frequent target WordPieces and "
                        f"{model.shortlist_neighbours.size(1)} neighbours per source WordPiece, from "
                        f"{len(ds)} {split} pairs in {time.time() - t0:.1f} s")

    @staticmethod
    def batch_shortlist(model, state, gold):
        """state with its output shortlist (if any) extended by the batch's gold tokens gold (B, T), so
        that every loss is defined."""
        if state.vocab is None:
            return state
        return on_candidates(state, torch.unique(torch.cat([state.vocab, gold[gold.ne(model.pad)]])))

    def draft_input(self, model, gold, src):
        """Y_0 (B, T): the authors' corrupted target while training with --target-keep-prob/
        --target-random-prob > 0, else the model's target input up to each gold length (all [MASK],
        or the copied source src (B, S) under --target-input copy)."""
        real = gold.ne(model.pad)
        copy = model.target_input == "copy"
        if model.training and (self.target_keep_prob > 0 or self.target_random_prob > 0):
            if copy:
                raise ValueError("--target-input copy replaces the [MASK]s that --target-keep-prob/"
                                 "--target-random-prob corrupt: set both to 0")
            vocab = len(self.task.target_dictionary)
            return corrupt_target(gold, self.target_keep_prob, self.target_random_prob, model.pad,
                                  model.mask_idx, vocab)
        if copy and self.score_positions != "all":
            raise ValueError("--target-input copy leaves no [MASK] to score: use --score-positions all")
        return model.masked_target(real.sum(1), gold.size(1), src_tokens=src)

    def _token_loss(self, model, state, gold, y_in, scored, project=None):
        """Graded target pass. scored (B, T) bool: positions in the loss; project (B, T) bool, a
        superset of scored: positions projected onto the vocabulary (default: scored). Returns the
        NAT loss entry and the logits at the projected positions, (N, V)."""
        project = scored if project is None else project
        logits = model.decode_target(state, y_in, project, **compact(state))  # shortlist columns, if any
        in_loss = scored[project]  # which projected rows are scored
        out = logits if bool(in_loss.all()) else logits.index_select(0, in_loss.nonzero().squeeze(1))
        entry = {"out": out, "tgt": index_of(state.vocab, gold[scored]), "ls": self.label_smoothing, "nll_loss": True}
        return entry, logits

    def mist_outputs(self, model, sample):
        """Runs the passes; returns the NAT named-loss dict and logging extras."""
        src, gold = sample["net_input"]["src_tokens"], sample["target"]
        real = gold.ne(model.pad)
        lengths = real.sum(1)
        self.ensure_shortlist(model)
        state = self.batch_shortlist(model, model.encode_source(src), gold)
        outputs = {
            "length": {
                "out": model.length_logits(state),
                "tgt": lengths.clamp(max=model.max_target_positions),
                "factor": self.length_loss_factor,
            },
        }
        extras, nar_logits = {}, None
        if getattr(model, "ctc", False):
            self.check_ctc()
            ctc_outputs(self, model, sample, state, outputs, extras)
            return outputs, extras
        if self.layer_loss_layers:
            raise ValueError("--layer-loss-layers supervises a CTC output's layers: train with --ctc or drop it")
        if self.nar_loss_factor > 0:
            nar_logits = self.nar_outputs(model, sample, state, outputs, extras)
        if self.block_loss_factor > 0:
            block = draw_block(self.block_sizes, model.training)
            entry, block_logits = block_entry(model, state, gold, real, block, self.label_smoothing,
                                              self.block_loss_factor)
            # with no NAR term the two-stream loss is the model's NLL
            outputs["block"] = dict(entry, nll_loss=self.nar_loss_factor <= 0)
            predicted = ids_of(state.vocab, block_logits.detach().max(-1).indices)
            extras["_block_correct"] = int((predicted == gold[real]).sum())
            extras["_block_total"] = int(real.sum())
            if self.janus_kl_factor > 0:
                at, nar = nar_logits  # the NAR first pass's projected positions (a subset of the real ones)
                # the parent's custom-loss entries are summed as given (and logged divided by factor)
                kl = symmetric_kl(block_logits.index_select(0, at[real].nonzero().squeeze(1)), nar)
                outputs["janus_kl"] = {"loss": kl * self.janus_kl_factor, "factor": self.janus_kl_factor}
        return outputs, extras

    def check_ctc(self) -> None:
        """ValueError for the options a CTC checkpoint is not trained with (and --layer-loss-layers for
        the others: see mist_outputs)."""
        if self.block_loss_factor > 0 or self.janus_kl_factor > 0 or self.nar_loss_factor <= 0:
            raise ValueError("--ctc trains the NAR passes only: drop --block-loss-factor/--janus-kl-factor "
                             "and keep --nar-loss-factor > 0")
        if self.mix_mode == "static":
            raise ValueError("--ctc supports --mix-mode dynamic (MIST) or none, not static")

    def nar_outputs(self, model, sample, state, outputs, extras):
        """The NAR (+ MIST) passes: adds ``word_ins`` (and ``mist``) to outputs and the logging
        extras; returns (projected positions (B, T) bool, the graded first pass's logits there (N, V))."""
        src, gold = sample["net_input"]["src_tokens"], sample["target"]
        real = gold.ne(model.pad)
        ratio = self.current_glat_ratio() if model.training else 0.0
        mixing = self.mix_mode != "none"
        dynamic = self.mix_mode == "dynamic"

        y0 = self.draft_input(model, gold, src)
        glanced_pseudo = dynamic and self.pseudo_from == "glanced"
        static = self.task.static_pseudo_batch(sample) if self.mix_mode == "static" else None
        # the no-grad draft pass over Y_0 feeds glancing's Hamming distance and, with --pseudo-from
        # masked, MIST's pseudo target; without either (--glat-ratio 0) the graded first pass runs over
        # the same Y_0, so its argmax stands in for the draft and the pass is not run twice
        draft = self._predict(model, state, y0, real) if ratio > 0 or (dynamic and not glanced_pseudo) else None
        if draft is None:
            y_in = y0.masked_fill(~real, model.pad)
        else:
            hamming_pred = draft
            if mixing and self.glat_hamming == "mixed" and ratio > 0:
                # the authors' Hamming: the mixed pass's prediction given the draft (and [MASK]s)
                pseudo0 = draft if dynamic else static
                with torch.no_grad():
                    mixed0 = on_candidates(model.encode_source(model.mix_source(pseudo0, src)), state.vocab)
                hamming_pred = self._predict(model, mixed0, y0, real)
            y_in = glance(gold, hamming_pred, ratio, model.pad, model.mask_idx, y0)
        scored = real if self.score_positions == "all" else y_in.eq(model.mask_idx) & real
        project = real if glanced_pseudo or self.janus_kl_factor > 0 else scored
        word_ins, first_logits = self._token_loss(model, state, gold, y_in, scored, project=project)
        if draft is None:  # every position the draft's accuracy is logged at ([MASK] in Y_0) is projected
            draft = scatter_argmax(first_logits, project, model.pad, state.vocab)
        outputs["word_ins"] = dict(word_ins, factor=self.nar_loss_factor)
        pseudo = draft
        if mixing:
            if glanced_pseudo:
                pseudo = scatter_argmax(first_logits, real, model.pad, state.vocab)
            elif not dynamic:
                pseudo = static
            mixed = on_candidates(model.encode_source(model.mix_source(pseudo, src)), state.vocab)
            entry, _ = self._token_loss(model, mixed, gold, y_in, scored)
            outputs["mist"] = dict(entry, factor=self.mist_loss_factor)
        # all real positions unless Y_0 is corrupted (a copied source hides the target as [MASK]s do)
        hidden = real if model.target_input == "copy" else y0.eq(model.mask_idx)
        extras.update({
            # the first pass's accuracy where its input showed [MASK]: with an all-[MASK] Y_0, what one-pass
            # decoding would output
            "_pred_correct": int(((draft == gold) & hidden).sum()),
            "_pred_total": int(real.sum()),
            "_pred_hidden": int(hidden.sum()),
            # gold tokens glancing revealed where Y_0 showed [MASK] (plus the kept/random ones Y_0 showed)
            "_revealed": int((hidden & y_in.ne(y0)).sum()),
            "_shown": int((real & ~hidden).sum()),
        })
        if mixing:
            # static pseudo targets come at their own width: compare position by position up to gold's
            T = gold.size(1)
            aligned = pseudo[:, :T] if pseudo.size(1) >= T else torch.nn.functional.pad(
                pseudo, (0, T - pseudo.size(1)), value=model.pad)
            extras["_pseudo_correct"] = int(((aligned == gold) & real).sum())
        return project, first_logits

    def _custom_loss(self, loss, name="loss", factor=1.0):
        # the parent's, plus the unweighted loss as nll_loss (the CTC entries are negative log-likelihoods)
        return {"name": name, "loss": loss, "factor": factor, "nll_loss": loss / factor if factor else loss}

    def _compute_loss(self, outputs, targets, masks=None, label_smoothing=0.0, name="loss", factor=1.0):
        """The parent's label-smoothed NLL. fp32 logits take the parent's own code; bf16 logits (the
        CPU fast path) take a chunked fp32 computation of the same formula that never materialises
        an fp32 (N, V) log-probability tensor (criterions/label_smoothed_ce.py)."""
        if masks is not None or outputs.dtype == torch.float32:
            return super()._compute_loss(outputs, targets, masks, label_smoothing, name, factor)
        loss, nll_loss = label_smoothed_nll(outputs, targets, label_smoothing)
        return {"name": name, "loss": loss * factor, "nll_loss": nll_loss, "factor": factor}

    def forward(self, model, sample, reduce=True):
        extras = {}

        def run_model(*unused):
            outputs, more = self.mist_outputs(model, sample)
            extras.update(more)
            return outputs

        # the parent sums and logs the named losses; it reads the (unused here) prev_target
        loss, sample_size, logging_output = super().forward(run_model, dict(sample, prev_target=None), reduce)
        logging_output.update(extras)
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        LabelSmoothedDualImitationCriterion.reduce_metrics(logging_outputs)
        block_total = sum(log.get("_block_total", 0) for log in logging_outputs)
        if block_total > 0:
            # teacher-forced accuracy of the two-stream pass (AR when the block size is 1)
            block_correct = sum(log.get("_block_correct", 0) for log in logging_outputs)
            metrics.log_scalar("block_acc", 100.0 * block_correct / block_total, block_total, round=2)
        ctc_rows = sum(log.get("_ctc_rows", 0) for log in logging_outputs)
        if ctc_rows > 0:
            # CTC: share of targets with no alignment onto their slots (longer than the slots allow)
            skipped = sum(log.get("_ctc_skipped", 0) for log in logging_outputs)
            metrics.log_scalar("ctc_skipped", 100.0 * skipped / ctc_rows, ctc_rows, round=2)
        total = sum(log.get("_pred_total", 0) for log in logging_outputs)
        if total > 0:
            correct = sum(log.get("_pred_correct", 0) for log in logging_outputs)
            revealed = sum(log.get("_revealed", 0) for log in logging_outputs)
            hidden = sum(log.get("_pred_hidden", 0) for log in logging_outputs)
            # accuracy of the first pass where its input showed [MASK] (all-[MASK] input: = one-pass
            # decoding with gold lengths)
            metrics.log_scalar("pred_acc", 100.0 * correct / max(hidden, 1), hidden, round=2)
            metrics.log_scalar("glanced", 100.0 * revealed / total, total, round=2)
            shown = sum(log.get("_shown", 0) for log in logging_outputs)
            if shown > 0:
                # share of target positions the corrupted Y_0 showed as a token (kept gold or random)
                metrics.log_scalar("y0_shown", 100.0 * shown / total, total, round=2)
            if any("_pseudo_correct" in log for log in logging_outputs):
                pseudo = sum(log.get("_pseudo_correct", 0) for log in logging_outputs)
                # accuracy of the Y_p actually mixed in (with --pseudo-from glanced it saw revealed gold)
                metrics.log_scalar("pseudo_acc", 100.0 * pseudo / total, total, round=2)
