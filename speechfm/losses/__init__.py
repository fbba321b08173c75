"""speechfm.losses: training objectives.

- :mod:`speechfm.losses.ctc`: ``ctc_loss`` (validated, infinities reported),
  ``pad_targets``, ``ctc_min_frames``;
- :mod:`speechfm.losses.transducer`: ``transducer_loss`` (pruned or full RNN-T),
  ``TransducerLossConfig``, ``TransducerLossOutput``, ``loss_scales``,
  ``check_transducer_batch``.
"""

from speechfm.losses.ctc import ctc_loss, ctc_min_frames, pad_targets
from speechfm.losses.transducer import (
    TransducerLossConfig,
    TransducerLossOutput,
    check_transducer_batch,
    loss_scales,
    transducer_loss,
)

__all__ = [
    "TransducerLossConfig",
    "TransducerLossOutput",
    "check_transducer_batch",
    "ctc_loss",
    "ctc_min_frames",
    "loss_scales",
    "pad_targets",
    "transducer_loss",
]
