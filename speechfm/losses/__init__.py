"""speechfm.losses: training objectives.

- :mod:`speechfm.losses.ctc`: ``ctc_loss`` (validated, infinities reported),
  ``pad_targets``, ``ctc_min_frames``.
"""

from speechfm.losses.ctc import ctc_loss, ctc_min_frames, pad_targets

__all__ = ["ctc_loss", "ctc_min_frames", "pad_targets"]
