"""The ``mist`` criterion's passes for a CTC checkpoint (``--ctc``; :mod:`mist_fairseq.models.ctc`).

1. Glancing (no gradient): a draft pass over the all-[MASK] slots; the Viterbi best alignment of the
   gold target onto the slots under the draft's log-probs gives each slot a label (a token or the
   blank); floor(ratio * Hamming(draft argmax, aligned labels)) slots, drawn at random, show their
   aligned label in Y_M (GLAT's rule on CTC's alignment, as in Gu & Kong 2021). With ``--glat-ratio 0``
   the draft and the alignment are skipped in training: Y_M is all [MASK].
2. The graded first pass over the glanced slots gives L_NAT = CTC's negative log-likelihood.
   With ``--layer-loss-layers``, the outputs of those encoder layers go through the same output head
   and their CTC NLLs, averaged, are added (DSLP's deep supervision).
3. MIST (``--mix-mode dynamic``): the graded first pass's argmax, collapsed (repeats merged, blanks
   dropped; no gradient), is the pseudo target Y_p; the graded mixed pass over
   ``[CLS] Y_p [SEP] X [SEP] Y_M`` with the same glanced slots gives L_MIST, CTC's NLL again.

Losses are summed over rows and divided by the batch's gold tokens (the token losses' scale). A
target that needs more slots than the source provides (its length plus one blank between equal
neighbours) has no alignment: it adds nothing and is counted (``ctc_skipped`` in the log).
"""

from typing import Tuple

import torch

from mist_fairseq.criterions.ctc_loss import gathered_ctc_nll
from mist_fairseq.criterions.glancing import glance
from mist_fairseq.models.ctc import best_alignment, collapse, extended_labels, min_slots_needed
from mist_fairseq.models.shortlist import compact, ids_of, index_of, on_candidates
from mist_fairseq.models.vocab_ops import row_logsumexp


def parse_layers(text: str) -> Tuple[int, ...]:
    """'2,4' -> (2, 4): the encoder layers --layer-loss-layers names (1 = the first)."""
    try:
        layers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        layers = (0,)
    if any(n < 1 for n in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"--layer-loss-layers {text!r}: distinct layer numbers >= 1, comma-separated (e.g. 2,4)")
    return layers


def ctc_targets(gold: torch.Tensor, pad: int, eos: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """gold (B, T') right-padded, each row ending in [SEP] -> (targets (B, U) without [SEP], pad after;
    lengths (B,))."""
    real = gold.ne(pad) & gold.ne(eos)
    lengths = real.sum(1)
    return gold.masked_fill(~real, pad)[:, : max(1, int(lengths.max()))], lengths


def ctc_nll(logits: torch.Tensor, n_slots: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
            blank: int) -> torch.Tensor:
    """logits (B, T, V) -> (B,) -log p(target | slots) summed over alignments, in fp32; 0 for a row
    without an alignment. Computed over the blank's and the targets' columns only
    (:mod:`mist_fairseq.criterions.ctc_loss`)."""
    return gathered_ctc_nll(logits, n_slots, targets, lengths, blank)


def aligned_labels(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, n_slots: torch.Tensor,
                   blank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The best alignment's label at every slot. logits (B, T, V) of the draft pass -> (labels (B, T),
    blank beyond n_slots and in rows without an alignment; ok (B,))."""
    B, T, V = logits.shape
    ext = extended_labels(targets, lengths, blank)  # (B, 2U + 1)
    lse = row_logsumexp(logits.reshape(-1, V)).view(B, T, 1)
    label_lp = logits.gather(2, ext[:, None, :].expand(B, T, ext.size(1))).float() - lse
    path, ok = best_alignment(label_lp, ext, n_slots, lengths)
    labels = ext.gather(1, path.clamp(min=0))
    return labels.masked_fill(path.lt(0), blank), ok


def ctc_outputs(crit, model, sample, state, outputs: dict, extras: dict) -> None:
    """Adds ``word_ins`` (and ``mist``) CTC entries to the NAT named-loss dict ``outputs`` and the
    logging extras. state: the source pass of ``sample``'s sources. With an output shortlist
    (``state.vocab``, gold tokens included) the logits hold its columns: targets and blank are mapped to
    them, predictions back to token ids."""
    src, gold = sample["net_input"]["src_tokens"], sample["target"]
    pad, vocab = model.pad, state.vocab
    blank = int(index_of(vocab, torch.tensor(model.blank_idx, device=src.device)))
    targets, lengths = ctc_targets(gold, pad, model.eos)
    targets = index_of(vocab, targets)  # padding maps to some column: read up to lengths only
    y0 = model.slot_target(src)  # (B, T) [MASK] slots
    real = y0.ne(pad)
    n_slots = real.sum(1)
    ratio = crit.current_glat_ratio() if model.training else 0.0
    ok = min_slots_needed(targets, lengths) <= n_slots  # (B,) the target has an alignment
    if model.training and ratio == 0:
        # no glancing (--glat-ratio 0): no draft pass and no alignment, the slots stay [MASK]
        labels = draft = None
        y_in = y0
    else:
        with torch.no_grad():
            draft_logits = model.decode_target(state.detach(), y0, **compact(state))
            draft = ids_of(vocab, draft_logits.max(-1).indices).masked_fill(~real, pad)
            labels, aligned = aligned_labels(draft_logits, targets, lengths, n_slots, blank)
            labels = ids_of(vocab, labels)
            del draft_logits
        ok &= aligned
        labels = labels.masked_fill(~real, pad)
        # rows without an alignment show nothing: their "prediction" is taken as correct
        y_in = glance(labels, torch.where(ok[:, None], draft, labels), ratio, pad, model.mask_idx)
    n_tokens = lengths[ok].sum().clamp(min=1).to(torch.float32)

    if crit.layer_loss_layers:
        n_layers = len(model.encoder.layers)
        if max(crit.layer_loss_layers) >= n_layers:
            raise ValueError(f"--layer-loss-layers {','.join(map(str, crit.layer_loss_layers))}: this model's "
                             f"layers below its last are 1-{n_layers - 1}")
        first, inner = model.decode_target_layers(state, y_in, crit.layer_loss_layers, **compact(state))
        inner_nll = torch.stack([ctc_nll(x, n_slots, targets, lengths, blank) for x in inner]).mean(0)
        outputs["layers"] = {"loss": inner_nll.sum() / n_tokens * crit.nar_loss_factor,
                             "factor": crit.nar_loss_factor, "nll_loss": True}
    else:
        first = model.decode_target(state, y_in, **compact(state))  # (B, T, V), V: the shortlist's C if any
    nll = ctc_nll(first, n_slots, targets, lengths, blank)
    outputs["word_ins"] = {"loss": nll.sum() / n_tokens * crit.nar_loss_factor, "factor": crit.nar_loss_factor,
                           "nll_loss": True}
    if crit.mix_mode == "dynamic":
        pseudo_slots = ids_of(vocab, first.detach().max(-1).indices).masked_fill(~real, pad)
        pseudo, _ = collapse(pseudo_slots, torch.zeros_like(pseudo_slots, dtype=torch.float32), model.blank_idx, pad)
        mixed = on_candidates(model.encode_source(model.mix_source(pseudo, src)), vocab)
        mixed_nll = ctc_nll(model.decode_target(mixed, y_in, **compact(mixed)), n_slots, targets, lengths, blank)
        outputs["mist"] = {"loss": mixed_nll.sum() / n_tokens * crit.mist_loss_factor,
                           "factor": crit.mist_loss_factor, "nll_loss": True}
    extras.update({"_ctc_skipped": int((~ok).sum()), "_ctc_rows": int(ok.numel())})
    if draft is not None:
        extras.update({
            # slot accuracy of the draft against the best alignment (rows with one)
            "_pred_correct": int((draft.eq(labels) & real & ok[:, None]).sum()),
            "_pred_hidden": int((real & ok[:, None]).sum()),
            "_pred_total": int(real.sum()),
            "_revealed": int((y_in.ne(model.mask_idx) & real).sum()),
            "_shown": 0,
        })
