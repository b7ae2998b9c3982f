"""AR rescoring of NAR candidates (noisy parallel decoding, Gu et al. 2018): the k candidates of each
source (``--length-beam k``, one per predicted length) are scored by an autoregressive scorer
teacher-forced -- every position of every candidate in ONE parallel pass (the two-stream pattern with
blocks of 1, :meth:`MistNARModel.score_targets`), not an AR loop -- and the candidate with the best
mean log-prob under the scorer wins.

- ``--rerank ar``: the decoding checkpoint scores its own candidates (it must have been trained with
  the two-stream loss at block size 1); the scorer reuses the source pass of the decoding.
- ``--rerank-path CKPT``: a separate ``mist_nar`` checkpoint on the same dictionary (e.g. the
  same-encoder AR model) scores them; its own source pass runs once per source.
- ``--rerank none`` (default): the NAR pass's own mean log-prob picks the candidate.

``--avoid-copy``: a candidate that is its source itself wins only where every candidate of that
source is one (paraphrase and query rewriting want a different sentence; the copies of a NAR
student of distilled targets outnumber its teacher's, docs/RESULTS.md).
"""

from typing import Optional

import torch

from mist_fairseq.generators.precision import in_dtype, is_int8_copy

RERANK_CHOICES = ["none", "ar"]


class ARRescorer:
    def __init__(self, scorer=None):
        """scorer: a separate model implementing ``encode_source`` and ``score_targets``, or None
        for the decoding model itself."""
        self.scorer = scorer
        self._placed = False

    def _model(self, decoder):
        if self.scorer is None:
            return decoder
        p = next(decoder.parameters(), None)
        if not self._placed:  # the decoding model's device (fairseq-generate moves it to the GPU)
            if p is not None:
                self.scorer.to(device=p.device)
            self.scorer.eval()
            self._placed = True
        # and its precision (--fp16 halves the decoder, --decode-precision bf16|int8 decodes a bf16 or int8
        # copy): a kept copy of the scorer in that precision, the loaded scorer left as it is for calls in its own
        return self.scorer if p is None else in_dtype(self.scorer, p.dtype, is_int8_copy(decoder))

    @torch.no_grad()
    def score(self, decoder, state, src: torch.Tensor, tokens: torch.Tensor, k: int = 1) -> torch.Tensor:
        """tokens: (N, T) right-padded candidates, each ending in [SEP]; src: (N, S) their sources,
        each source repeated on k consecutive rows (N = B * k); state: the decoding model's source
        state of src (reused when the scorer is that model). Returns (N,) the scorer's mean log-prob
        per real token ([SEP] counted)."""
        model = self._model(decoder)
        if model is decoder:
            scorer_state = state
        else:  # the scorer's own source pass, once per source, read by its k candidates
            order = torch.arange(src.size(0) // k, device=src.device).repeat_interleave(k)
            scorer_state = model.encode_source(src[::k]).index_select(order)
        lp = model.score_targets(scorer_state, tokens)
        real = tokens.ne(model.pad)
        return lp.masked_fill(~real, 0.0).sum(1) / real.sum(1).clamp(min=1).to(lp.dtype)


def is_copy(tokens: torch.Tensor, src: torch.Tensor, specials) -> torch.Tensor:
    """tokens (N, W) candidates, src (N, S) their sources -> (N,) bool: the candidate's tokens, special
    ones (pad, [CLS], [SEP]) left out, are the source's."""
    drop = torch.tensor(sorted(specials), device=tokens.device)

    def words(row):
        return row[~torch.isin(row, drop)].tolist()

    return torch.tensor([words(t) == words(s) for t, s in zip(tokens, src)], dtype=torch.bool, device=tokens.device)


def choose_candidates(scores: torch.Tensor, k: int, copies: Optional[torch.Tensor] = None) -> torch.Tensor:
    """scores (B * k,) of each source's k consecutive candidates; copies (B * k,) bool or None ->
    (B,) row index of each source's winner: the best score, among the candidates that are not
    copies of the source where ``copies`` is given and such a candidate exists."""
    s = scores.view(-1, k)
    if copies is not None:
        c = copies.view(-1, k)
        s = s.masked_fill(c & ~c.all(1, keepdim=True), float("-inf"))
    return s.argmax(1) + torch.arange(s.size(0), device=scores.device) * k


def load_scorer(path: str, task):
    """A separate ``mist_nar`` checkpoint as AR scorer, on ``task``'s data folder (so its dictionary
    is checked against the checkpoint's recorded fingerprint) and trained with blocks of 1."""
    import os

    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise ValueError(f"--rerank-path {path}: no such file; give a mist_nar checkpoint trained with the "
                         "two-stream loss (--block-loss-factor > 0 --block-sizes 1)")
    try:
        models, _, scorer_task = checkpoint_utils.load_model_ensemble_and_task(
            [path], arg_overrides={"data": task.cfg.data})
    except ValueError as e:
        raise ValueError(f"--rerank-path {path}: {e}") from None
    model = models[0]
    if not hasattr(model, "score_targets") or not hasattr(scorer_task, "require_two_stream"):
        raise ValueError(f"--rerank-path {path}: not a mist_nar checkpoint; AR rescoring needs one trained with "
                         "--block-loss-factor > 0 --block-sizes 1 on the same dictionary")
    if scorer_task.target_dictionary.symbols != task.target_dictionary.symbols:
        raise ValueError(f"--rerank-path {path}: its dictionary differs from the decoding model's")
    scorer_task.require_two_stream(f"--rerank-path {path}", block=1)
    return model


def build_rescorer(task, rerank: str = "none", rerank_path: Optional[str] = None) -> Optional[ARRescorer]:
    """The rescorer of ``--rerank`` / ``--rerank-path`` (None: the NAR pass's own scores). Separate
    scorers are loaded once per task and path."""
    if rerank not in RERANK_CHOICES:
        raise ValueError(f"--rerank {rerank}: choose one of {', '.join(RERANK_CHOICES)}")
    if rerank_path:
        if rerank == "ar":
            raise ValueError("--rerank ar (the checkpoint scores itself) and --rerank-path CKPT (a separate "
                             "scorer) exclude each other; give one")
        cache = task.__dict__.setdefault("_rerank_scorers", {})
        if rerank_path not in cache:
            cache[rerank_path] = load_scorer(rerank_path, task)
        return ARRescorer(cache[rerank_path])
    if rerank == "ar":
        task.require_two_stream("--rerank ar", block=1)
        return ARRescorer()
    return None
