"""``mist`` criterion: L = L_NAT + factor * L_length + L_MIST, with GLAT glancing.

One step (dynamic mixing, default options) costs one source pass with gradient, one target-only
pass without gradient (the glancing/pseudo-target prediction, reusing the cached source K/V), one
target pass with gradient, and one full pass with gradient over the mixed input
``[CLS] Y_p [SEP] X [SEP] Y_M [SEP]``. Only scored positions are projected onto the vocabulary.

The losses are returned as Fairseq's NAT named-loss dict (``word_ins``, ``length``, ``mist``), and
the summing/logging is the parent ``nat_loss`` criterion's own.
"""

from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.nat_loss import (
    LabelSmoothedDualImitationCriterion,
    LabelSmoothedDualImitationCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum

MIX_MODES = ChoiceEnum(["none", "dynamic", "static"])
HAMMING_FROM = ChoiceEnum(["first", "mixed"])


@dataclass
class MistCriterionConfig(LabelSmoothedDualImitationCriterionConfig):
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of the token losses"})
    length_loss_factor: float = field(default=0.1, metadata={"help": "weight of the length loss"})
    mist_loss_factor: float = field(default=1.0, metadata={"help": "weight of the loss on the mixed input"})
    mix_mode: MIX_MODES = field(
        default="dynamic",
        metadata={
            "help": "'dynamic' (MIST): the model's own prediction becomes extra source; 'none': plain "
            "encoder NAT (the paper's 'Encoder init'); 'static': pseudo targets from "
            "--static-pseudo-targets (the static-mixing ablation)"
        },
    )
    glat_ratio: float = field(
        default=0.5, metadata={"help": "glancing: reveal floor(ratio * Hamming(pred, gold)) gold tokens; 0 = off"}
    )
    glat_ratio_end: Optional[float] = field(
        default=None, metadata={"help": "anneal the glancing ratio linearly to this value (default: no anneal)"}
    )
    glat_anneal_updates: int = field(
        default=0, metadata={"help": "updates over which --glat-ratio goes to --glat-ratio-end"}
    )
    glat_hamming: HAMMING_FROM = field(
        default="first",
        metadata={
            "help": "Hamming distance for the mixed pass's glancing: 'first' reuses the first pass's "
            "(one no-grad pass per step), 'mixed' predicts again on the mixed input (one more)"
        },
    )


def glance(gold: torch.Tensor, pred: torch.Tensor, ratio: float, pad: int, mask: int) -> torch.Tensor:
    """GLAT's glancing input. gold, pred: (B, T) (pred is only read at non-pad positions of gold).
    Reveals floor(ratio * Hamming(pred, gold)) gold tokens per row at random target positions;
    every other real position becomes [MASK]. Returns (B, T)."""
    real = gold.ne(pad)
    hamming = (pred.ne(gold) & real).sum(1)
    n_reveal = torch.floor(hamming.to(torch.float) * ratio).long()  # (B,)
    scores = torch.rand(gold.shape, device=gold.device).masked_fill(~real, 2.0)
    rank = scores.argsort(1).argsort(1)  # rank of each position among the row's random scores
    reveal = (rank < n_reveal.unsqueeze(1)) & real
    return gold.masked_fill(real & ~reveal, mask)


@register_criterion("mist", dataclass=MistCriterionConfig)
class MistCriterion(LabelSmoothedDualImitationCriterion):
    def __init__(self, task, label_smoothing, length_loss_factor, mist_loss_factor, mix_mode,
                 glat_ratio, glat_ratio_end, glat_anneal_updates, glat_hamming):
        super().__init__(task, label_smoothing)
        self.length_loss_factor = length_loss_factor
        self.mist_loss_factor = mist_loss_factor
        self.mix_mode = mix_mode
        self.glat_ratio, self.glat_ratio_end = glat_ratio, glat_ratio_end
        self.glat_anneal_updates = glat_anneal_updates
        self.glat_hamming = glat_hamming
        self.update_num = 0
        if mix_mode == "static" and not getattr(task.cfg, "static_pseudo_targets", None):
            raise ValueError("--mix-mode static needs --static-pseudo-targets FILE (fairseq-generate output on train)")

    def set_update_num(self, update_num: int) -> None:
        self.update_num = update_num

    def current_glat_ratio(self) -> float:
        if self.glat_ratio_end is None or self.glat_anneal_updates <= 0:
            return self.glat_ratio
        frac = min(1.0, self.update_num / self.glat_anneal_updates)
        return self.glat_ratio + (self.glat_ratio_end - self.glat_ratio) * frac

    def _predict(self, model, state, lengths, width, real):
        """No-grad argmax over an all-[MASK] target of the gold lengths -> (B, T) (pad elsewhere)."""
        with torch.no_grad():
            logits = model.decode_target(state.detach(), model.masked_target(lengths, width), real)
            pred = torch.full(real.shape, model.pad, dtype=torch.long, device=real.device)
            pred[real] = logits.argmax(-1)
        return pred

    def _token_loss(self, model, state, gold, y_in):
        scored = y_in.eq(model.mask_idx)
        logits = model.decode_target(state, y_in, scored)
        return {"out": logits, "tgt": gold[scored], "ls": self.label_smoothing, "nll_loss": True}

    def mist_outputs(self, model, sample):
        """Runs the MIST passes; returns the NAT named-loss dict and logging extras."""
        src, gold = sample["net_input"]["src_tokens"], sample["target"]
        real = gold.ne(model.pad)
        lengths, width = real.sum(1), gold.size(1)
        ratio = self.current_glat_ratio() if model.training else 0.0

        state = model.encode_source(src)
        pred = self._predict(model, state, lengths, width, real)
        y_in = glance(gold, pred, ratio, model.pad, model.mask_idx)
        outputs = {
            "word_ins": self._token_loss(model, state, gold, y_in),
            "length": {
                "out": model.length_logits(state),
                "tgt": lengths.clamp(max=model.max_target_positions),
                "factor": self.length_loss_factor,
            },
        }
        if self.mix_mode != "none":
            pseudo = pred if self.mix_mode == "dynamic" else self.task.static_pseudo_batch(sample)
            mixed = model.encode_source(model.mix_source(pseudo, src))
            if self.glat_hamming == "mixed" and ratio > 0:
                y_in = glance(gold, self._predict(model, mixed, lengths, width, real), ratio,
                              model.pad, model.mask_idx)
            outputs["mist"] = dict(self._token_loss(model, mixed, gold, y_in), factor=self.mist_loss_factor)
        extras = {
            "_pred_correct": int(((pred == gold) & real).sum()),
            "_pred_total": int(real.sum()),
            "_revealed": int((real & y_in.ne(model.mask_idx)).sum()),
        }
        return outputs, extras

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
        total = sum(log.get("_pred_total", 0) for log in logging_outputs)
        if total > 0:
            correct = sum(log.get("_pred_correct", 0) for log in logging_outputs)
            revealed = sum(log.get("_revealed", 0) for log in logging_outputs)
            # accuracy of the first-pass prediction = quality of MIST's pseudo target
            metrics.log_scalar("pred_acc", 100.0 * correct / total, total, round=2)
            metrics.log_scalar("glanced", 100.0 * revealed / total, total, round=2)
