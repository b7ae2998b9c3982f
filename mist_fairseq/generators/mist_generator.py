"""NAR generator used by ``fairseq-generate`` / ``fairseq-interactive`` through ``task.build_generator``.

Single pass (the paper's setting): one source-only pass (length logits + per-layer K/V), then one
target-only pass over ``[MASK] * L`` that reuses those K/V. Optional refinement:
``mist`` feeds the output back as pseudo target (``[CLS] Y_p [SEP] X [SEP] [MASK]..``), and
``mask-predict`` re-masks the least confident tokens (Ghazvininejad et al., linear schedule).
Hypotheses are returned in Fairseq's format, so the usual H-/P-/D- lines come out.
"""

from typing import List

import torch

from mist_fairseq.generators.rerank import choose_candidates, is_copy
from mist_fairseq.models.vocab_ops import choose_rows


def dedup_consecutive(tokens: torch.Tensor, scores: torch.Tensor, pad: int):
    """Removes consecutive repeats of a token (MIST's post-processing). tokens, scores: (B, T),
    right-padded. Returns the same shapes, the kept tokens shifted left, pad/0 after them."""
    keep = tokens.ne(pad)
    keep[:, 1:] &= tokens[:, 1:].ne(tokens[:, :-1])
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)  # kept positions first, in order
    new_tokens = tokens.gather(1, order).masked_fill(~keep.gather(1, order), pad)
    new_scores = scores.gather(1, order).masked_fill(~keep.gather(1, order), 0.0)
    return new_tokens, new_scores


def last_real(real: torch.Tensor) -> torch.Tensor:
    """(B, T) bool real slots (left-aligned) -> (B, T) bool, True at each row's last real slot."""
    return real & ~torch.cat([real[:, 1:], real.new_zeros(real.size(0), 1)], 1)


def to_hypos(tokens, scores, sentence_scores, steps: int, pad: int) -> List[dict]:
    """Fairseq's hypothesis dicts, one per row. tokens, scores: (B, T) right-padded (pad slots are
    dropped); sentence_scores: (B,); steps: target passes the decoding took."""
    hypos = []
    for i in range(tokens.size(0)):
        keep = tokens[i].ne(pad)
        hypos.append({
            "tokens": tokens[i][keep],
            "positional_scores": scores[i][keep],
            "score": sentence_scores[i],
            "alignment": None,
            "attention": None,
            "steps": steps,
        })
    return hypos


class MistGenerator:
    def __init__(self, tgt_dict, decode_iters: int = 1, strategy: str = "mist", length_beam: int = 1,
                 min_length: int = 2, dedup: bool = True, rescorer=None, avoid_copy: bool = False):
        """rescorer: an :class:`~mist_fairseq.generators.rerank.ARRescorer` that picks among the
        length-beam candidates (None: their own mean log-prob); avoid_copy: a candidate identical to
        its source wins only where all are."""
        if decode_iters < 1:
            raise ValueError(f"--mist-decode-iters must be >= 1, got {decode_iters}")
        if length_beam < 1:
            raise ValueError(f"--length-beam must be >= 1, got {length_beam}")
        self.pad, self.eos, self.bos = tgt_dict.pad(), tgt_dict.eos(), tgt_dict.bos()
        self.mask = tgt_dict.mask()
        self.decode_iters, self.strategy = decode_iters, strategy
        self.length_beam, self.min_length, self.dedup = length_beam, min_length, dedup
        self.rescorer, self.avoid_copy = rescorer, avoid_copy
        # never produced inside a target; [SEP] only in the final slot
        self.never_inside = torch.tensor([self.pad, self.bos, self.mask, self.eos])

    def predict_pass(self, model, state, tgt, src):
        """One target pass. tgt (B, T) -> (tokens (B, T), log-probs (B, T)); the last real slot is
        [SEP], the rest avoid special tokens. src (B, S): the source ``state`` was computed from."""
        logits = model.decode_target(state, tgt)
        real = tgt.ne(self.pad)
        return self.choose(logits, real, last_real(real))

    def choose(self, logits, real, last):
        """logits (B, R, V) at R target slots; real, last: (B, R) bool, the slots that exist and the
        one holding the final [SEP]. Returns (tokens (B, R), log-probs (B, R)): [SEP] in the last
        slot, the best non-special token elsewhere, pad/0 where not real."""
        # best - logsumexp in row chunks: no (B, R, V) log-softmax or fp32 copy of the logits is built
        best, tokens, eos_lp = choose_rows(logits.reshape(-1, logits.size(-1)),
                                           self.never_inside.to(logits.device), self.eos)
        best, tokens, eos_lp = (t.view(logits.shape[:-1]) for t in (best, tokens, eos_lp))
        tokens = torch.where(last, torch.full_like(tokens, self.eos), tokens)
        scores = torch.where(last, eos_lp, best)
        return tokens.masked_fill(~real, self.pad), scores.masked_fill(~real, 0.0)

    def predict_lengths(self, model, state) -> torch.Tensor:
        """(B,) source state -> (B, k) the k most likely lengths in [min_length, max_target_positions]."""
        logits = model.length_logits(state).float()
        logits[:, : self.min_length] = float("-inf")
        k = min(self.length_beam, logits.size(1) - self.min_length)
        return logits.topk(k, dim=-1).indices

    @staticmethod
    def check_call(models, prefix_tokens, constraints):
        """The one model of a generate call, after refusing what mist_nar decoding does not do."""
        if len(models) != 1:
            raise ValueError("mist_nar generation does not ensemble models; pass one --path")
        if prefix_tokens is not None or constraints is not None:
            raise ValueError("mist_nar generation supports neither --prefix-size nor constraints")
        return models[0]

    def start(self, model, src):
        """Source pass and length prediction. src (B, S) -> (state, src, tgt) with each source
        repeated k = length-beam times: tgt (B * k, T) all [MASK] up to each candidate length."""
        if getattr(model, "ctc", False):
            raise ValueError("this checkpoint has a CTC output (trained with --ctc): decode it with --decode-mode ctc")
        state = model.encode_source(src)
        lengths = self.predict_lengths(model, state)  # (B, k)
        if lengths.size(1) > 1:
            order = torch.arange(src.size(0), device=src.device).repeat_interleave(lengths.size(1))
            state = state.index_select(order)
            src = src.index_select(0, order)
        return state, src, model.masked_target(lengths.reshape(-1), src_tokens=src)

    def finish(self, tokens, scores, real, bsz: int, steps: int, model=None, state=None,
               src=None) -> List[List[dict]]:
        """tokens, scores (B * k, T) of the k candidate lengths of each source -> Fairseq hypotheses:
        the best mean log-prob per source (the decoding's own, or the rescorer's over the candidates
        as they are output: after dedup; with avoid_copy, among those that are not the source where
        one exists), consecutive repeats removed unless --no-dedup.
        model, state, src (B * k, S): the decoding model and its source pass, for the rescorer."""
        k = tokens.size(0) // bsz
        mean = scores.sum(1) / real.sum(1).to(scores.dtype)
        if self.dedup:
            tokens, scores = dedup_consecutive(tokens, scores, self.pad)
        if k > 1 and self.rescorer is not None:
            mean = self.rescorer.score(model, state, src, tokens, k)
        if k > 1:  # best mean log-prob among each source's k lengths
            copies = is_copy(tokens, src, (self.pad, self.bos, self.eos)) if self.avoid_copy else None
            best = choose_candidates(mean, k, copies)
            tokens, scores, mean = tokens[best], scores[best], mean[best]
        return [[h] for h in to_hypos(tokens, scores, mean, steps, self.pad)]

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **unused) -> List[List[dict]]:
        model = self.check_call(models, prefix_tokens, constraints)
        src = sample["net_input"]["src_tokens"]
        bsz = src.size(0)
        state, src, tgt = self.start(model, src)
        tokens, scores = self.predict_pass(model, state, tgt, src)
        real = tgt.ne(self.pad)
        n_real = real.sum(1)
        for it in range(1, self.decode_iters):
            if self.strategy == "mist":
                mixed_src = model.mix_source(tokens, src)
                mixed = model.encode_source(mixed_src)
                tokens, scores = self.predict_pass(model, mixed, tgt, mixed_src)
            else:  # mask-predict: re-mask the n least confident, n = L * (N - it) / N
                n_mask = (n_real.float() * (self.decode_iters - it) / self.decode_iters).long()
                rank = scores.masked_fill(~real, float("inf")).argsort(1).argsort(1)
                remask = (rank < n_mask.unsqueeze(1)) & real
                # re-masked slots get the first pass's input back: [MASK], or the copied source
                new_tokens, new_scores = self.predict_pass(model, state, torch.where(remask, tgt, tokens), src)
                tokens = torch.where(remask, new_tokens, tokens)
                scores = torch.where(remask, new_scores, scores)
        return self.finish(tokens, scores, real, bsz, self.decode_iters, model, state, src)
