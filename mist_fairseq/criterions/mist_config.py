"""The ``mist`` criterion's options (:class:`MistCriterionConfig`); the criterion itself is in
:mod:`mist_fairseq.criterions.mist`."""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.criterions.nat_loss import LabelSmoothedDualImitationCriterionConfig
from fairseq.dataclass import ChoiceEnum

MIX_MODES = ChoiceEnum(["none", "dynamic", "static"])
HAMMING_FROM = ChoiceEnum(["first", "mixed"])
PSEUDO_FROM = ChoiceEnum(["glanced", "masked"])
SCORE_POSITIONS = ChoiceEnum(["all", "masked"])


@dataclass
class MistCriterionConfig(LabelSmoothedDualImitationCriterionConfig):
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of the token losses"})
    length_loss_factor: float = field(
        default=1.0, metadata={"help": "weight of the length loss (the authors': 1; the plugin recipe: 0.1)"}
    )
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
        default="mixed",
        metadata={
            "help": "which no-grad prediction over an all-[MASK] target sets the Hamming distance of the "
            "glanced Y_M that both loss terms share: 'mixed' (the authors'): the mixed pass given the "
            "first pass's draft as Y_p (one more no-grad pass); 'first': the first pass's own draft "
            "(GLAT's). Plain NAT (--mix-mode none) always uses 'first'"
        },
    )
    pseudo_from: PSEUDO_FROM = field(
        default="glanced",
        metadata={
            "help": "where MIST's pseudo target Y_p comes from: 'glanced' (the authors'): the argmax of "
            "the graded first pass over the glanced Y_M, at every real target position; 'masked': the "
            "argmax of the no-grad draft pass over Y_0 (all [MASK] with --target-keep-prob 0 "
            "--target-random-prob 0); at "
            "revealed positions the mixed pass then sees gold in Y_M that contradicts Y_p"
        },
    )
    score_positions: SCORE_POSITIONS = field(
        default="all",
        metadata={
            "help": "target positions that carry the token losses (both terms): 'all' (the authors'): "
            "every real position, revealed ones too; 'masked': only positions left as [MASK] by glancing"
        },
    )
    target_keep_prob: float = field(
        default=0.1,
        metadata={
            "help": "Y_M corruption before glancing, as the authors' data loader does it (kongds/MIST "
            "data.py, train.py's --keep_prob default): each real target position shows its gold token with "
            "this probability. Training only; decoding starts from [MASK]s. 0 (with --target-random-prob 0) "
            "= an all-[MASK] Y_M"
        },
    )
    target_random_prob: float = field(
        default=0.1,
        metadata={
            "help": "Y_M corruption before glancing (the authors' --random_prob default): each real target "
            "position shows a uniformly drawn vocabulary token (never padding) with this probability; "
            "[MASK] with 1 - keep - random. Training only"
        },
    )
    nar_loss_factor: float = field(
        default=1.0,
        metadata={
            "help": "weight of the NAR token loss (L_NAT); 0 skips the NAR passes (glancing, the MIST term), "
            "e.g. for an AR-only model with --block-loss-factor 1 --block-sizes 1"
        },
    )
    block_loss_factor: float = field(
        default=0.0,
        metadata={
            "help": "weight of the two-stream (BANG-style) loss: each target position predicted from the "
            "gold tokens before its block and [MASK]s over the block; makes the checkpoint decode with "
            "--decode-mode semi-nar and ar too. 0 = off"
        },
    )
    block_sizes: str = field(
        default="1",
        metadata={
            "help": "comma-separated block sizes of the two-stream loss, one drawn per batch (the first at "
            "validation): 1 = autoregressive, b > 1 semi-NAR, b >= the target length the NAR pass"
        },
    )
    layer_loss_layers: str = field(
        default="",
        metadata={
            "help": "--ctc: also the CTC loss of the outputs of these encoder layers (comma-separated, 1 = the "
            "first, below the last) through the same output head, averaged over them and weighted like "
            "--nar-loss-factor (DSLP's deep supervision); empty = off"
        },
    )
    janus_kl_factor: float = field(
        default=0.0,
        metadata={
            "help": "JANUS-style joint training: weight of the symmetric KL between the two-stream "
            "(AR/semi-NAR) and the NAR first-pass distributions at every real target position; needs "
            "both --nar-loss-factor and --block-loss-factor > 0. 0 = off"
        },
    )
