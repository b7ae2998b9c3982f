"""CTC decoding (``--decode-mode ctc``, the default for a checkpoint trained with ``--ctc``).

One source-only pass, then one target-only pass over the source's [MASK] slots
(``model.slot_target``) that reuses its keys/values -- the same two calls of the inference contract
as the length-head single pass, with no length to predict. Each slot takes its best token (the blank
included, special tokens excluded); repeats are merged and blanks dropped (:func:`collapse`), then
consecutive duplicates removed as MIST's post-processing does (unless --no-dedup). The sentence
score is the mean log-prob of the chosen slots (the best path's, per slot).

``--ctc-beam K`` > 1 runs CTC prefix beam search over the same pass's log-probs
(:mod:`mist_fairseq.generators.ctc_beam`) and keeps K candidates per source; the best by log-prob per
token wins, or, with ``--rerank-path CKPT``, the one a separate AR scorer prefers (all candidates
teacher-forced in one parallel pass, :mod:`mist_fairseq.generators.rerank`); ``--avoid-copy`` passes
over a candidate that is its source where another exists.
"""

from typing import List

import torch

from mist_fairseq.generators.ctc_beam import prefix_beam_search
from mist_fairseq.generators.mist_generator import MistGenerator, dedup_consecutive, to_hypos
from mist_fairseq.generators.rerank import choose_candidates, is_copy
from mist_fairseq.models.ctc import collapse
from mist_fairseq.models.vocab_ops import choose_rows, row_logsumexp


def append_eos(tokens: torch.Tensor, scores: torch.Tensor, pad: int, eos: int):
    """tokens, scores (B, W) left-aligned, pad after -> (B, W + 1) with [SEP] (score 0) after each row's
    last token."""
    n = tokens.ne(pad).sum(1)
    tokens = torch.cat([tokens, tokens.new_full((tokens.size(0), 1), pad)], 1)
    scores = torch.cat([scores, scores.new_zeros(scores.size(0), 1)], 1)
    return tokens.scatter(1, n[:, None], eos), scores


class CTCGenerator:
    def __init__(self, tgt_dict, dedup: bool = True, beam: int = 1, width: int = 6, rescorer=None,
                 avoid_copy: bool = False):
        """beam: CTC prefix beam size (1 = greedy); width: non-blank tokens tried per slot by the beam
        search; rescorer: an :class:`~mist_fairseq.generators.rerank.ARRescorer` choosing among the
        beam's candidates (None: their own log-prob per token); avoid_copy: a candidate identical to
        its source wins only where all are."""
        if beam < 1:
            raise ValueError(f"--ctc-beam must be >= 1, got {beam}")
        self.pad, self.eos, self.bos = tgt_dict.pad(), tgt_dict.eos(), tgt_dict.bos()
        self.dedup, self.beam, self.width, self.rescorer = dedup, beam, width, rescorer
        self.avoid_copy = avoid_copy
        # never output by a slot; the blank is a normal class until the collapse
        self.banned = torch.tensor([tgt_dict.pad(), tgt_dict.bos(), tgt_dict.mask(), tgt_dict.eos()])

    def slot_pass(self, model, src: torch.Tensor):
        """src (B, S) -> (source state, slot input (B, T), slot logits (B, T, V))."""
        if not getattr(model, "ctc", False):
            raise ValueError("--decode-mode ctc needs a checkpoint trained with --ctc; decode this one with "
                             "--decode-mode nar")
        state = model.encode_source(src)
        tgt = model.slot_target(src)
        return state, tgt, model.decode_target(state, tgt)

    def greedy(self, model, tgt, logits):
        """Every slot's best class, collapsed -> (tokens (B, W), log-probs (B, W), sentence scores (B,):
        the mean log-prob of the chosen slots)."""
        best, tokens, _ = choose_rows(logits.reshape(-1, logits.size(-1)), self.banned.to(logits.device), self.eos)
        real = tgt.ne(self.pad)
        tokens = tokens.view(tgt.shape).masked_fill(~real, self.pad)
        best = best.view(tgt.shape).masked_fill(~real, 0.0)
        sentence = best.sum(1) / real.sum(1).clamp(min=1).to(best.dtype)
        out, scores = collapse(tokens, best, model.blank_idx, self.pad)
        return out, scores, sentence

    def beam_candidates(self, model, tgt, logits):
        """Prefix beam search per source -> (tokens (B * K, W) with K = self.beam candidates per source,
        best first (the last repeated where fewer exist), per-token scores (B * K, W), their log-prob
        per token (B * K,))."""
        B, T, V = logits.shape
        lse = row_logsumexp(logits.reshape(-1, V)).view(B, T, 1)
        banned = set(self.banned.tolist()) | {model.blank_idx}
        vals, ids = logits.topk(min(V, self.width + len(banned)), dim=-1)
        top_lp, blank_lp = (vals.float() - lse).tolist(), (logits[..., model.blank_idx].float() - lse[..., 0]).tolist()
        ids, n_slots = ids.tolist(), tgt.ne(self.pad).sum(1).tolist()
        rows, norm = [], []
        for b in range(B):
            per_slot = [[(i, lp) for i, lp in zip(ids[b][t], top_lp[b][t]) if i not in banned][: self.width]
                        for t in range(n_slots[b])]
            ranked = prefix_beam_search([[i for i, _ in c] for c in per_slot], [[lp for _, lp in c] for c in per_slot],
                                        blank_lp[b][: n_slots[b]], self.beam)
            ranked += [ranked[-1]] * (self.beam - len(ranked))
            for prefix, lp in ranked:
                rows.append(torch.tensor(prefix, dtype=torch.long))
                norm.append(lp / max(1, len(prefix)))
        width = max(1, max(r.numel() for r in rows))
        tokens = torch.full((len(rows), width), self.pad, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : r.numel()] = r
        norm = torch.tensor(norm, dtype=torch.float32)
        scores = torch.where(tokens.ne(self.pad), norm[:, None], torch.zeros(()))
        return tokens.to(tgt.device), scores.to(tgt.device), norm.to(tgt.device)

    def decode(self, model, src: torch.Tensor):
        """src (B, S) -> (tokens (B, W) collapsed, ending in [SEP], pad after; their scores (B, W);
        sentence scores (B,))."""
        state, tgt, logits = self.slot_pass(model, src)
        if self.beam == 1:
            out, scores, sentence = self.greedy(model, tgt, logits)
        else:
            out, scores, sentence = self.beam_candidates(model, tgt, logits)
        if self.dedup:
            out, scores = dedup_consecutive(out, scores, self.pad)
        out, scores = append_eos(out, scores, self.pad, self.eos)
        if self.beam > 1:
            k, bsz = self.beam, src.size(0)
            if self.rescorer is not None:  # the AR scorer's mean log-prob over the candidates as output
                order = torch.arange(bsz, device=src.device).repeat_interleave(k)
                sentence = self.rescorer.score(model, state.index_select(order), src.index_select(0, order), out, k)
            copies = None
            if self.avoid_copy:
                copies = is_copy(out, src.repeat_interleave(k, 0), (self.pad, self.bos, self.eos))
            best = choose_candidates(sentence, k, copies)
            out, scores, sentence = out[best], scores[best], sentence[best]
        return out, scores, sentence

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **unused) -> List[List[dict]]:
        model = MistGenerator.check_call(models, prefix_tokens, constraints)
        tokens, scores, sentence = self.decode(model, sample["net_input"]["src_tokens"])
        return [[h] for h in to_hypos(tokens, scores, sentence, 1, self.pad)]
