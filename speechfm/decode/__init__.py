"""speechfm.decode: CTC and transducer search, and scoring.

- :mod:`speechfm.decode.ctc`: ``ctc_greedy_search``, ``ctc_greedy_hypotheses``,
  ``ctc_prefix_beam_search``, ``ctc_forced_align``, ``word_timestamps``,
  ``CtcHypothesis``, ``WordTimestamp``;
- :mod:`speechfm.decode.transducer`: ``greedy_search``, ``modified_beam_search``,
  ``TransducerStream``, ``TransducerHypothesis``;
- :mod:`speechfm.decode.asr`: ``decode_manifest`` (hyps, errs files, per-language
  CER/WER/PER of any ASR model directory), ``evaluate_recognizer``, ``load_asr_model``,
  ``format_results_table``;
- :mod:`speechfm.decode.scoring`: ``score``, ``score_by_group``, ``write_errs``,
  ``results_table_markdown``, ``ScoreResult``, ``UttAlignment``.

Names resolve lazily, so scoring text does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CtcHypothesis": "speechfm.decode.ctc",
    "decode_manifest": "speechfm.decode.asr",
    "evaluate_recognizer": "speechfm.decode.asr",
    "format_results_table": "speechfm.decode.asr",
    "load_asr_model": "speechfm.decode.asr",
    "WordTimestamp": "speechfm.decode.ctc",
    "ctc_forced_align": "speechfm.decode.ctc",
    "ctc_greedy_hypotheses": "speechfm.decode.ctc",
    "ctc_greedy_search": "speechfm.decode.ctc",
    "ctc_prefix_beam_search": "speechfm.decode.ctc",
    "word_timestamps": "speechfm.decode.ctc",
    "ScoreResult": "speechfm.decode.scoring",
    "UttAlignment": "speechfm.decode.scoring",
    "results_table_markdown": "speechfm.decode.scoring",
    "score": "speechfm.decode.scoring",
    "score_by_group": "speechfm.decode.scoring",
    "split_units": "speechfm.decode.scoring",
    "write_errs": "speechfm.decode.scoring",
    "TransducerHypothesis": "speechfm.decode.transducer",
    "TransducerStream": "speechfm.decode.transducer",
    "greedy_search": "speechfm.decode.transducer",
    "modified_beam_search": "speechfm.decode.transducer",
}

__all__ = [
    "CtcHypothesis",
    "ScoreResult",
    "TransducerHypothesis",
    "TransducerStream",
    "UttAlignment",
    "WordTimestamp",
    "ctc_forced_align",
    "ctc_greedy_hypotheses",
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "greedy_search",
    "modified_beam_search",
    "decode_manifest",
    "evaluate_recognizer",
    "format_results_table",
    "load_asr_model",
    "results_table_markdown",
    "score",
    "score_by_group",
    "split_units",
    "word_timestamps",
    "write_errs",
]

if TYPE_CHECKING:
    from speechfm.decode.asr import (
        decode_manifest,
        evaluate_recognizer,
        format_results_table,
        load_asr_model,
    )
    from speechfm.decode.ctc import (
        CtcHypothesis,
        WordTimestamp,
        ctc_forced_align,
        ctc_greedy_hypotheses,
        ctc_greedy_search,
        ctc_prefix_beam_search,
        word_timestamps,
    )
    from speechfm.decode.scoring import (
        ScoreResult,
        UttAlignment,
        results_table_markdown,
        score,
        score_by_group,
        split_units,
        write_errs,
    )
    from speechfm.decode.transducer import (
        TransducerHypothesis,
        TransducerStream,
        greedy_search,
        modified_beam_search,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'speechfm.decode' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
