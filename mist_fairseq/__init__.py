"""mist_fairseq: MIST non-autoregressive generation as a Fairseq plugin (``--user-dir mist_fairseq``).

Registers the ``mist_nar`` task, the ``mist_nar`` model (presets ``mist_minilm_l6``,
``mist_bert_small``, ``mist_bert_base``, ``mist_tiny``), the ``mist`` criterion and the ``fused_adamw`` optimizer; ``MistModel`` is the
Python API (:mod:`mist_fairseq.inference`).
"""

import logging

# fairseq.tasks.text_to_speech configures the root logger and announces a missing tensorboardX
# when any fairseq task is imported; that line is noise for text tasks.
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

from mist_fairseq.compat import allow_fairseq_checkpoints, one_line_checkpoint_errors  # noqa: E402

allow_fairseq_checkpoints()
one_line_checkpoint_errors()

from mist_fairseq.tasks import mist_nar as _task  # noqa: E402,F401
from mist_fairseq.models import mist_nar as _model  # noqa: E402,F401
from mist_fairseq.criterions import mist as _criterion  # noqa: E402,F401
from mist_fairseq.optim import fused_adamw as _optimizer  # noqa: E402,F401
from mist_fairseq.inference import MistModel  # noqa: E402,F401  (the Python API)

__version__ = "0.1.0"
