"""CTC prefix beam search over one pass's slot log-probs (``--ctc-beam K``).

The greedy CTC output takes each slot's best class; the most probable *output* sums over every slot
sequence that collapses to it. Prefix beam search keeps the K best output prefixes slot by slot, each
with two log-probs -- of its slot sequences ending in a blank and ending in its last token -- so that a
repeated token is a new token only after a blank (Hannun et al. 2014). Per slot only the ``width``
most likely non-blank tokens are tried. Candidates are ranked by log-prob per output token
(length-normalised, so short outputs are not favoured) and handed to the generator, which can let an
AR scorer choose among them (``--rerank-path``).

Pure Python over small per-sentence tables: T slots x K prefixes x width tokens (48 x 5 x 6 at most
on Quora), run after the model's single pass.
"""

import math
from typing import Dict, List, Sequence, Tuple

NEG = float("-inf")


def logaddexp(a: float, b: float) -> float:
    if a == NEG:
        return b
    if b == NEG:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def prefix_beam_search(top_ids: Sequence[Sequence[int]], top_lp: Sequence[Sequence[float]],
                       blank_lp: Sequence[float], beam: int) -> List[Tuple[Tuple[int, ...], float]]:
    """One sentence. top_ids, top_lp: per slot (T of them) the candidate non-blank tokens and their
    log-probs; blank_lp: per slot the blank's log-prob. Returns up to ``beam`` (output tokens, log-prob
    summed over their alignments), best first by log-prob per token (the empty output counts one)."""
    beams: Dict[Tuple[int, ...], List[float]] = {(): [0.0, NEG]}  # prefix -> [ends in blank, ends in token]
    for ids, lps, b_lp in zip(top_ids, top_lp, blank_lp):
        new: Dict[Tuple[int, ...], List[float]] = {}

        def add(prefix, blank_end, token_end):
            if blank_end == NEG and token_end == NEG:
                return  # no slot sequence reaches it (e.g. merging into a prefix that ends in a blank)
            cur = new.setdefault(prefix, [NEG, NEG])
            cur[0], cur[1] = logaddexp(cur[0], blank_end), logaddexp(cur[1], token_end)

        for prefix, (pb, pt) in beams.items():
            add(prefix, logaddexp(pb, pt) + b_lp, NEG)  # a blank keeps the prefix
            last = prefix[-1] if prefix else None
            for c, lp in zip(ids, lps):
                if c == last:
                    add(prefix, NEG, pt + lp)  # the same token again merges into it ...
                    add(prefix + (c,), NEG, pb + lp)  # ... unless a blank came between
                else:
                    add(prefix + (c,), NEG, logaddexp(pb, pt) + lp)
        beams = dict(sorted(new.items(), key=lambda kv: -logaddexp(*kv[1]))[:beam])
    ranked = [(p, logaddexp(*v)) for p, v in beams.items()]
    ranked.sort(key=lambda x: -x[1] / max(1, len(x[0])))
    return ranked
