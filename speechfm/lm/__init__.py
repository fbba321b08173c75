"""N-gram language models: modified Kneser-Ney estimation, ARPA files, G.fst.

See :mod:`speechfm.lm.ngram` for the estimator's exact semantics. All log
probabilities are log10, as in ARPA files.
"""

from speechfm.lm.ngram import (
    ARPA_LOG_ZERO,
    BOS,
    DISAMBIG,
    EOS,
    EPS,
    FALLBACK_DISCOUNTS,
    UNK,
    Discounts,
    NgramCounts,
    NgramLM,
    compile_arpa,
    count_of_counts,
    estimate_kneser_ney,
    kneser_ney_discounts,
    make_symbol_table,
    read_arpa,
    read_symbol_table,
    write_symbol_table,
)

__all__ = [
    "ARPA_LOG_ZERO",
    "BOS",
    "DISAMBIG",
    "EOS",
    "EPS",
    "FALLBACK_DISCOUNTS",
    "UNK",
    "Discounts",
    "NgramCounts",
    "NgramLM",
    "compile_arpa",
    "count_of_counts",
    "estimate_kneser_ney",
    "kneser_ney_discounts",
    "make_symbol_table",
    "read_arpa",
    "read_symbol_table",
    "write_symbol_table",
]
