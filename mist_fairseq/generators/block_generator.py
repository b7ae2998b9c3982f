"""Semi-NAR and AR decoding of a ``mist_nar`` checkpoint over the two-stream pattern
(:mod:`mist_fairseq.models.streams`), through the model's ``decode_step`` only.

- :class:`SemiNARGenerator`: predict the length (as NAR does), then fill the [MASK]s block by
  block, ``block_size`` positions per step, each block given the tokens chosen for the earlier ones
  (ceil(L / b) target passes; b >= L is the single NAR pass).
- :class:`ARGenerator`: left to right, one position per step, beam search; no length prediction:
  a hypothesis ends with [SEP]. Each step runs two rows per hypothesis (the last chosen token joins
  the cached main stream; a [MASK] predicts the next one).
"""

from typing import List

import torch

from mist_fairseq.generators.mist_generator import MistGenerator, last_real


class SemiNARGenerator(MistGenerator):
    def __init__(self, tgt_dict, block_size: int, length_beam: int = 1, min_length: int = 2, dedup: bool = True,
                 rescorer=None, avoid_copy: bool = False):
        super().__init__(tgt_dict, length_beam=length_beam, min_length=min_length, dedup=dedup, rescorer=rescorer,
                         avoid_copy=avoid_copy)
        if block_size < 1:
            raise ValueError(f"--block-size must be >= 1, got {block_size}")
        self.block_size = block_size

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **unused) -> List[List[dict]]:
        model = self.check_call(models, prefix_tokens, constraints)
        src = sample["net_input"]["src_tokens"]
        state, src, tgt = self.start(model, src)
        real = tgt.ne(self.pad)
        last = last_real(real)
        tokens = torch.full_like(tgt, self.pad)
        scores = torch.zeros(tgt.shape, device=tgt.device)
        cache, prev, steps = None, tgt[:, :0], 0
        for s in range(0, tgt.size(1), self.block_size):
            e = s + self.block_size
            logits, cache = model.decode_step(state, cache, prev, tgt[:, s:e])
            prev, scores[:, s:e] = self.choose(logits, real[:, s:e], last[:, s:e])
            tokens[:, s:e] = prev
            steps += 1
        return self.finish(tokens, scores, real, sample["net_input"]["src_tokens"].size(0), steps, model, state, src)


class ARGenerator:
    def __init__(self, tgt_dict, beam: int = 1, lenpen: float = 1.0, max_len_a: float = 0.0,
                 max_len_b: int = 200, min_length: int = 2):
        """beam: hypotheses kept per source (fairseq-generate's --beam); lenpen: final scores are
        sum of log-probs / length ** lenpen ([SEP] counted); the output is at most
        min(max_len_a * source length + max_len_b, --max-target-positions) tokens, [SEP] included,
        and at least min_length."""
        if beam < 1:
            raise ValueError(f"--beam must be >= 1, got {beam}")
        self.beam, self.lenpen = beam, lenpen
        self.max_len_a, self.max_len_b, self.min_length = max_len_a, max_len_b, min_length
        self.pad, self.eos, self.mask = tgt_dict.pad(), tgt_dict.eos(), tgt_dict.mask()
        self.never = torch.tensor([self.pad, tgt_dict.bos(), self.mask])

    def max_len(self, model, src) -> int:
        n_src = int(src.ne(self.pad).sum(1).max())
        return max(1, min(int(self.max_len_a * n_src + self.max_len_b), model.max_target_positions))

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **unused) -> List[List[dict]]:
        model = MistGenerator.check_call(models, prefix_tokens, constraints)
        src = sample["net_input"]["src_tokens"]
        B, K, device = src.size(0), self.beam, src.device
        max_len = self.max_len(model, src)
        # every hypothesis row of a source reads the same source state: expanded once, never reordered
        state = model.encode_source(src).index_select(torch.arange(B, device=device).repeat_interleave(K))
        seqs = torch.zeros(B * K, 0, dtype=torch.long, device=device)
        pos_scores = torch.zeros(B * K, 0, device=device)
        beam_scores = torch.zeros(B, K, device=device)
        beam_scores[:, 1:] = float("-inf")  # one live hypothesis per source at the start
        masks = torch.full((B * K, 1), self.mask, dtype=torch.long, device=device)
        finished = [[] for _ in range(B)]
        done = torch.zeros(B, dtype=torch.bool, device=device)
        cache, prev = None, seqs
        for t in range(max_len):
            logits, cache = model.decode_step(state, cache, prev, masks)
            lp = torch.log_softmax(logits[:, 0].float(), -1)  # (B * K, V)
            if t == max_len - 1:  # the last slot holds [SEP] (whatever --min-target-length says)
                eos_lp = lp[:, self.eos].clone()
                lp.fill_(float("-inf"))
                lp[:, self.eos] = eos_lp
            else:
                lp.index_fill_(1, self.never.to(device), float("-inf"))
                if t + 1 < self.min_length:
                    lp[:, self.eos] = float("-inf")
            V = lp.size(1)
            cand = (beam_scores.view(-1, 1) + lp).view(B, K * V)
            top_s, top_i = cand.topk(2 * K, dim=1)
            top_beam, top_tok = top_i // V, top_i % V
            is_eos = top_tok.eq(self.eos)
            # an [SEP] among the K best ends that hypothesis (at most K per source are kept)
            for b, j in (is_eos[:, :K] & ~done[:, None]).nonzero().tolist():
                row = b * K + int(top_beam[b, j])
                finished[b].append((
                    float(top_s[b, j]) / (t + 1) ** self.lenpen,
                    torch.cat([seqs[row], seqs.new_tensor([self.eos])]),
                    torch.cat([pos_scores[row], lp[row, self.eos].view(1)]),
                ))
            done |= torch.tensor([len(f) >= K for f in finished], device=device)
            if bool(done.all()) or t == max_len - 1:
                break
            # the K best continuations that are not [SEP] (there are >= K among 2K: one [SEP] per hypothesis)
            take = ~is_eos & (~is_eos).cumsum(1).le(K)
            rows = (torch.arange(B, device=device).unsqueeze(1) * K + top_beam[take].view(B, K)).view(-1)
            next_tok = top_tok[take].view(-1)
            seqs = torch.cat([seqs[rows], next_tok.unsqueeze(1)], 1)
            pos_scores = torch.cat([pos_scores[rows], lp[rows, next_tok].unsqueeze(1)], 1)
            beam_scores = top_s[take].view(B, K)
            cache, prev = cache.index_select(rows), next_tok.unsqueeze(1)
        hypos = []
        for b in range(B):
            best = sorted(finished[b], key=lambda h: -h[0])[:K]
            assert best, "the last step ends every live hypothesis"
            hypos.append([{
                "tokens": tokens, "positional_scores": scores, "score": torch.tensor(score),
                "alignment": None, "attention": None, "steps": len(tokens),
            } for score, tokens, scores in best])
        return hypos
