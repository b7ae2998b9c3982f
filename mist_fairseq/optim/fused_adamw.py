"""``--optimizer fused_adamw``: torch's AdamW with its fused kernel, behind Fairseq's optimizer contract.

Fairseq's ``adam`` is already AdamW (decoupled weight decay), but off CUDA it runs its own Python
loop: about ten elementwise passes over every parameter per update. ``torch.optim.AdamW(fused=True)``
does one pass (CPU and CUDA). For MiniLM-L6 at batch 64 the difference was within the noise of a
training step (docs/BENCHMARK.md "Training step"); it grows with the parameter count. The update is Adam's with one difference in where epsilon sits (torch adds it to
sqrt(v / bias_correction2), Fairseq to sqrt(v)), which only matters while v is of the order of eps.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II

logger = logging.getLogger(__name__)


@dataclass
class FusedAdamWConfig(FairseqDataclass):
    adam_betas: Any = field(default=(0.9, 0.999), metadata={"help": "betas for Adam, e.g. '(0.9, 0.98)'"})
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for Adam"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay (AdamW)"})
    lr: List[float] = II("optimization.lr")


def parse_betas(betas) -> tuple:
    """'(0.9, 0.98)' (the command line's form) or a sequence -> (float, float)."""
    if isinstance(betas, str):
        parts = betas.strip().strip("()[]").split(",")
        try:
            values = tuple(float(p) for p in parts if p.strip())
        except ValueError:
            values = ()
        if len(values) != 2:
            raise ValueError(f"--adam-betas {betas!r}: expected two numbers, e.g. '(0.9, 0.999)'")
        return values
    return tuple(float(b) for b in betas)


@register_optimizer("fused_adamw", dataclass=FusedAdamWConfig)
class FusedAdamW(FairseqOptimizer):
    def __init__(self, cfg: FusedAdamWConfig, params):
        super().__init__(cfg)
        params = list(params)
        try:
            self._optimizer = torch.optim.AdamW(params, **self.optimizer_config, fused=True)
        except (RuntimeError, TypeError, ValueError) as e:  # a dtype/device the fused kernel lacks
            logger.warning(f"fused AdamW unavailable ({e}); using the foreach implementation")
            self._optimizer = torch.optim.AdamW(params, **self.optimizer_config, foreach=True)

    @property
    def optimizer_config(self):
        lr = self.cfg.lr  # Fairseq keeps --lr as a list (one value per epoch); the scheduler sets it later
        return {
            "lr": float(lr if isinstance(lr, (int, float)) else lr[0]),
            "betas": parse_betas(self.cfg.adam_betas),
            "eps": self.cfg.adam_eps,
            "weight_decay": self.cfg.weight_decay,
        }

    @property
    def supports_flat_params(self):
        return True
