"""Interpolated modified Kneser-Ney n-gram LMs: estimation, ARPA I/O, queries, G.fst.

No pip package builds ARPA files (kaldilm compiles ARPA -> FST, pip's ``kenlm`` only
queries), so this module estimates them, with KenLM ``lmplz`` semantics (Chen & Goodman
1998, section 3 / eq. 26; Heafield et al. 2013):

* **Padding.** A sentence ``w1 .. wn`` is scored as ``<s> w1 .. wn </s>``: ``<s>`` is only
  ever a context, ``</s>`` is an ordinary predicted token. Sentences of any length are
  fine (an empty one contributes the bigram ``<s> </s>``).
* **Counts.** The highest order uses raw counts. Every lower order k uses *continuation
  counts* (adjusted counts): the number of distinct tokens ``v`` for which ``v g`` was
  seen, except for n-grams that start with ``<s>``, which cannot be extended on the left
  and keep their raw count.
* **Discounts.** Per order, from the count-of-counts ``n1..n4`` of that order's (adjusted)
  counts: ``Y = n1/(n1+2 n2)``, ``D1 = 1-2Y n2/n1``, ``D2 = 2-3Y n3/n2``,
  ``D3+ = 3-4Y n4/n3``.
* **Interpolation.** ``p(w|h) = (a(hw) - D(a(hw))) / S(h) + gamma(h) p(w|h')`` with
  ``S(h) = sum_w a(hw)``, ``gamma(h) = sum_w D(a(hw)) / S(h)`` and ``h'`` ``h`` minus its
  first token. The unigram level is interpolated with the uniform distribution over the
  predicted vocabulary W = every token seen, ``</s>`` and ``<unk>`` (``<s>`` excluded), as
  ``lmplz`` does by default (``--interpolate_unigrams``).
* **<unk>.** Never seen in training (unless the text contains it or a closed ``vocab``
  maps tokens to it), so its adjusted count is 0 and it gets exactly the uniform share
  ``gamma(()) / |W|``, as in ``lmplz``. With ``vocab=``, out-of-vocabulary training tokens
  are counted as ``<unk>`` and vocabulary words never seen get the uniform share too.
* **<s>.** Written with log10 probability -99 (the ARPA "log 0" SRILM writes; current
  ``lmplz`` writes 0 there, which readers ignore as well) and with its backoff weight.
* **Backoff weights** are the weights that make every context's distribution sum to 1.
  Without pruning they equal ``gamma(h)`` exactly (an unseen ``w`` gets
  ``gamma(h) p(w|h')``, which is what the interpolation formula gives).

**Fallback discounts.** Tiny or artificial corpora often give count-of-counts from which
no valid discount follows (``lmplz`` stops with "Is this small or artificial data?").
Here, for each order independently: if any of ``n1..n4`` is 0, or any ``D_j`` is not in
``(0, j]``, the order uses the fixed discounts ``FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)``
(``lmplz --discount_fallback``'s defaults) and its :class:`Discounts` says
``fallback=True``. Note ``n4 = 0`` gives ``D3+ = 3`` (valid in ``lmplz``, which would let a
thrice-seen n-gram keep no mass of its own); it falls back here.

**Pruning** (``min_count``, off by default) drops n-grams of order >= 2 seen fewer than
``min_count`` times (raw counts), keeps every prefix and suffix of a kept n-gram (an ARPA
file needs them), keeps the surviving n-grams' probabilities and recomputes the
backoff weights so that every distribution still sums to 1 (SRILM-style renormalisation;
``lmplz --prune`` instead folds the pruned mass into ``gamma`` before interpolating).

**Log base.** Everything in this module is **log10**, as in ARPA files. Kaldi's G.fst
carries costs ``-ln p = -log10 p * ln 10``.

Tokens are opaque strings (words, characters, subword pieces); they must be non-empty and
contain no whitespace. Estimation runs in memory on Python dicts: fine for transcripts and
LM corpora up to tens of millions of tokens; use KenLM for web-scale text.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from speechfm.errors import DataError

BOS = "<s>"
"""Sentence start: a context only, never predicted."""
EOS = "</s>"
"""Sentence end: predicted like any token."""
UNK = "<unk>"
"""Default unknown-token symbol."""
EPS = "<eps>"
"""Epsilon symbol, id 0 of every symbol table."""
DISAMBIG = "#0"
"""Disambiguation symbol on G.fst's backoff arcs."""
ARPA_LOG_ZERO = -99.0
"""log10 probability written for ``<s>`` (the conventional ARPA "log 0")."""
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
"""D1, D2, D3+ used for an order whose count-of-counts give no valid discounts."""

Ngram = tuple[str, ...]


@dataclass(frozen=True)
class Discounts:
    """Modified Kneser-Ney discounts of one order, for counts 1, 2 and 3 or more."""

    d1: float
    """Discount of n-grams with (adjusted) count 1, in (0, 1]."""
    d2: float
    """Discount of n-grams with count 2, in (0, 2]."""
    d3: float
    """Discount of n-grams with count 3 or more, in (0, 3]."""
    fallback: bool = False
    """True when the count-of-counts gave no valid discounts and FALLBACK_DISCOUNTS were used."""

    def __call__(self, count: int) -> float:
        """The discount subtracted from an n-gram seen ``count`` times (0 for count 0)."""
        if count <= 0:
            return 0.0
        return self.d1 if count == 1 else self.d2 if count == 2 else self.d3

    def is_valid(self) -> bool:
        """Every D_j finite and in (0, j]: numerators stay >= 0 and gamma > 0."""
        return all(math.isfinite(d) and 0.0 < d <= j for j, d in enumerate(self.as_tuple(), 1))

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.d1, self.d2, self.d3)


def kneser_ney_discounts(n: Sequence[int]) -> Discounts | None:
    """Chen & Goodman's eq. 26 from count-of-counts ``n = (n1, n2, n3, n4)``.

    Returns None when the discounts are undefined (some ``n_k == 0``) or invalid (a
    ``D_j`` outside ``(0, j]``).
    """
    n1, n2, n3, n4 = (int(x) for x in n)
    if min(n1, n2, n3, n4) <= 0:
        return None
    y = n1 / (n1 + 2 * n2)
    d = Discounts(1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    return d if d.is_valid() else None


class NgramCounts:
    """Raw n-gram counts of padded sentences ``<s> w1 .. wn </s>``, orders 1..N.

    ``counts[k - 1]`` maps each k-gram (a tuple of k tokens) to its count; the unigram
    ``<s>`` is not counted (it is never predicted). With ``vocab`` given, tokens outside
    it are counted as ``unk``.
    """

    def __init__(self, order: int, *, vocab: Iterable[str] | None = None, unk: str = UNK) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        self.unk = unk
        self.vocab: frozenset[str] | None = None
        if vocab is not None:
            self.vocab = frozenset(vocab) - {BOS, EOS}
            _check_tokens(self.vocab, "vocab")
        self.counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
        self.num_sentences = 0
        self.num_tokens = 0
        """Tokens counted, ``</s>`` included (one per sentence)."""

    @classmethod
    def from_sentences(
        cls,
        sentences: Iterable[Sequence[str]],
        order: int,
        *,
        vocab: Iterable[str] | None = None,
        unk: str = UNK,
    ) -> NgramCounts:
        counts = cls(order, vocab=vocab, unk=unk)
        for s in sentences:
            counts.add(s)
        return counts

    def add(self, sentence: Sequence[str]) -> None:
        """Count one sentence (a sequence of tokens, without ``<s>``/``</s>``)."""
        if isinstance(sentence, str):
            raise TypeError("a sentence is a sequence of tokens, not a str (split it first)")
        toks = list(sentence)
        if BOS in toks or EOS in toks:
            raise DataError(f"sentence {' '.join(toks)!r} contains {BOS} or {EOS}")
        if self.vocab is not None:
            toks = [t if t in self.vocab else self.unk for t in toks]
        padded = (BOS, *toks, EOS)
        counts, order = self.counts, self.order
        for i in range(1, len(padded)):
            for k in range(1, min(order, i + 1) + 1):
                counts[k - 1][padded[i - k + 1 : i + 1]] += 1
        self.num_sentences += 1
        self.num_tokens += len(padded) - 1

    def adjusted(self) -> list[dict[Ngram, int]]:
        """Counts the estimator discounts: continuation counts below the top order.

        For order k < N and an n-gram ``g`` not starting with ``<s>``: the number of
        distinct ``v`` with ``v g`` seen. N-grams starting with ``<s>`` and the top order
        keep their raw counts.
        """
        out: list[dict[Ngram, int]] = []
        for k in range(1, self.order):
            adj: dict[Ngram, int] = defaultdict(int)
            for g in self.counts[k]:  # each distinct (k+1)-gram is one left extension
                adj[g[1:]] += 1
            for g, c in self.counts[k - 1].items():
                if g[0] == BOS:
                    adj[g] = c
            out.append(dict(adj))
        out.append(dict(self.counts[-1]))
        return out

    def words(self) -> set[str]:
        """Predicted vocabulary W: tokens seen (or in ``vocab``), ``</s>`` and ``unk``."""
        words = {g[0] for g in self.counts[0]} | {EOS, self.unk}
        if self.vocab is not None:
            words |= self.vocab
        return words


def count_of_counts(adjusted: Mapping[Ngram, int]) -> tuple[int, int, int, int]:
    """``(n1, n2, n3, n4)``: how many n-grams have (adjusted) count 1, 2, 3, 4."""
    n = [0, 0, 0, 0]
    for c in adjusted.values():
        if 1 <= c <= 4:
            n[c - 1] += 1
    return n[0], n[1], n[2], n[3]


def estimate_kneser_ney(
    sentences: Iterable[Sequence[str]] | NgramCounts,
    order: int,
    *,
    discounts: Sequence[Sequence[float]] | None = None,
    min_count: int | Sequence[int] = 1,
    vocab: Iterable[str] | None = None,
    unk: str = UNK,
    fallback_discounts: Sequence[float] = FALLBACK_DISCOUNTS,
) -> NgramLM:
    """Estimate an interpolated modified Kneser-Ney LM (see the module docstring).

    Args:
        sentences: token sequences (words, characters or subword pieces), without
            ``<s>``/``</s>``; or an :class:`NgramCounts` of the same ``order``.
        order: N, the highest n-gram order (1 = unigram LM).
        discounts: ``order`` triples ``(D1, D2, D3+)``, index 0 for unigrams, each
            ``D_j`` in ``(0, j]``; None estimates them from count-of-counts.
        min_count: n-grams of order >= 2 seen fewer times are pruned; an int applies to
            every order, a sequence gives one value per order (index 0, the unigrams,
            must be 1: unigrams are never pruned).
        vocab: closed vocabulary; training tokens outside it count as ``unk`` and its
            unseen words still get a unigram probability. None: every token seen.
        unk: the unknown-token symbol (e.g. ``<UNK>`` for a Kaldi lexicon); ignored
            when ``sentences`` is an :class:`NgramCounts` (its own ``unk`` is used).
        fallback_discounts: ``(D1, D2, D3+)`` for orders whose count-of-counts give no
            valid discounts.

    Returns:
        The LM; ``lm.discounts`` holds the discounts used, per order.
    """
    if isinstance(sentences, NgramCounts):
        counts = sentences
        if counts.order != order:
            raise ValueError(f"counts have order {counts.order}, asked for {order}")
    else:
        counts = NgramCounts.from_sentences(sentences, order, vocab=vocab, unk=unk)
    if counts.num_sentences == 0:
        raise DataError("no sentences to estimate an n-gram LM from")
    unk = counts.unk
    _check_tokens((g[0] for g in counts.counts[0]), "training text")
    fallback = Discounts(*(float(d) for d in fallback_discounts), fallback=True)
    if not fallback.is_valid():
        raise ValueError(f"fallback_discounts must have D_j in (0, j], got {fallback_discounts}")
    min_counts = _min_counts(min_count, order)

    adjusted = counts.adjusted()
    if discounts is None:
        used = [kneser_ney_discounts(count_of_counts(a)) or fallback for a in adjusted]
    else:
        if len(discounts) != order:
            raise ValueError(f"discounts needs {order} (D1, D2, D3+) triples, got {len(discounts)}")
        used = [Discounts(*(float(x) for x in d)) for d in discounts]
        for k, d in enumerate(used, 1):
            if not d.is_valid():
                raise ValueError(f"{k}-gram discounts {d.as_tuple()} not in (0, 1], (0, 2], (0, 3]")

    # Interpolated probabilities (linear, float64) and gamma of every context, by order.
    words = counts.words()
    probs: list[dict[Ngram, float]] = []
    gammas: list[dict[Ngram, float]] = []
    for k, (adj, disc) in enumerate(zip(adjusted, used, strict=True), 1):
        totals: dict[Ngram, list[float]] = {}  # context -> [S(h), sum of discounts]
        for g, c in adj.items():
            t = totals.setdefault(g[:-1], [0.0, 0.0])
            t[0] += c
            t[1] += disc(c)
        gamma = {h: dsum / s for h, (s, dsum) in totals.items()}
        if k == 1:
            s, dsum = totals[()]
            uniform = gamma[()] / len(words)
            p = {(w,): (adj.get((w,), 0) - disc(adj.get((w,), 0))) / s + uniform for w in words}
        else:
            lower = probs[-1]
            p = {
                g: (c - disc(c)) / totals[g[:-1]][0] + gamma[g[:-1]] * lower[g[1:]]
                for g, c in adj.items()
            }
        probs.append(p)
        gammas.append(gamma)

    kept = _prune(counts, probs, min_counts)
    # Unigrams: <unk>, <s>, </s> first (as lmplz), then by code point; others sorted.
    first = [(unk,), (EOS,)]
    ordered = [first + sorted(kept[0] - set(first))]
    ordered += [sorted(kept[k]) for k in range(1, order)]
    logprobs = [{g: min(0.0, math.log10(probs[k][g])) for g in ordered[k]} for k in range(order)]
    logprobs[0] = {(unk,): logprobs[0][(unk,)], (BOS,): ARPA_LOG_ZERO} | logprobs[0]
    backoffs = [
        _backoffs(probs[k], probs[k + 1], kept[k + 1], gammas[k + 1]) for k in range(order - 1)
    ]
    return NgramLM(logprobs, backoffs, unk=unk, discounts=used)


def _min_counts(min_count: int | Sequence[int], order: int) -> list[int]:
    if isinstance(min_count, int):
        return [1] + [max(1, min_count)] * (order - 1)
    m = [int(x) for x in min_count]
    if len(m) != order or m[0] > 1:
        raise ValueError(f"min_count needs {order} values with the first (unigrams) 1, got {m}")
    return m


def _prune(
    counts: NgramCounts, probs: list[dict[Ngram, float]], min_counts: list[int]
) -> list[set[Ngram]]:
    """N-grams to write: count >= min_count, plus prefixes and suffixes of kept ones."""
    order = counts.order
    kept: list[set[Ngram]] = [set() for _ in range(order)]
    kept[0] = set(probs[0])
    need: set[Ngram] = set()
    for k in range(order, 1, -1):
        raw, m = counts.counts[k - 1], min_counts[k - 1]
        kept[k - 1] = need | {g for g in probs[k - 1] if m <= 1 or raw[g] >= m}
        need = {g[:-1] for g in kept[k - 1]} | {g[1:] for g in kept[k - 1]}
    return kept


def _backoffs(
    lower: dict[Ngram, float],
    higher: dict[Ngram, float],
    kept: set[Ngram],
    gamma: dict[Ngram, float],
) -> dict[Ngram, float]:
    """log10 backoff weight of every context of a kept higher-order n-gram.

    A context none of whose successors was pruned gets ``gamma(h)``; otherwise
    ``(1 - sum_kept p(w|h)) / (1 - sum_kept p(w|h'))`` restores the sum to 1.
    """
    kept_sum: dict[Ngram, float] = defaultdict(float)
    low_sum: dict[Ngram, float] = defaultdict(float)
    for g in kept:
        kept_sum[g[:-1]] += higher[g]
        low_sum[g[:-1]] += lower[g[1:]]
    all_kept = Counter(g[:-1] for g in kept)
    all_seen = Counter(g[:-1] for g in higher)
    out: dict[Ngram, float] = {}
    for h in sorted(kept_sum):
        if all_kept[h] == all_seen[h]:
            bow = gamma[h]
        else:
            num, den = 1.0 - kept_sum[h], 1.0 - low_sum[h]
            bow = num / den if den > 1e-12 and num > 0.0 else 1.0
        out[h] = math.log10(bow)
    return out


class NgramLM:
    """A backoff n-gram LM as an ARPA file holds it: log10 probabilities and backoffs.

    Args:
        logprobs: per order k (index k-1), n-gram -> log10 p(w | context).
        backoffs: per order k < N (index k-1), context n-gram -> log10 backoff weight;
            missing means 0 (weight 1).
        unk: the unknown-token symbol; queries map unknown tokens to it when present.
        discounts: the discounts used, per order (None for a model read from ARPA).
    """

    def __init__(
        self,
        logprobs: Sequence[Mapping[Ngram, float]],
        backoffs: Sequence[Mapping[Ngram, float]],
        *,
        unk: str = UNK,
        discounts: Sequence[Discounts] | None = None,
    ) -> None:
        if not logprobs or not logprobs[0]:
            raise DataError("an n-gram LM needs at least one unigram")
        self.order = len(logprobs)
        self._probs = [dict(p) for p in logprobs]
        self._backoffs = [dict(b) for b in backoffs] + [{}] * (self.order - len(backoffs))
        self.unk = unk
        self.discounts = list(discounts) if discounts is not None else None
        self._unigrams = {g[0] for g in self._probs[0]}

    @property
    def vocab(self) -> list[str]:
        """Every unigram (``<s>``, ``</s>`` and ``<unk>`` included), in stored order."""
        return [g[0] for g in self._probs[0]]

    @property
    def num_ngrams(self) -> list[int]:
        """Number of n-grams per order (index k-1 for order k)."""
        return [len(p) for p in self._probs]

    def ngrams(self, order: int) -> Iterator[tuple[Ngram, float, float | None]]:
        """``(ngram, log10 p, log10 backoff or None)`` for every n-gram of ``order``."""
        bows = self._backoffs[order - 1]
        for g, p in self._probs[order - 1].items():
            yield g, p, bows.get(g)

    def _map(self, token: str) -> str:
        return token if token in self._unigrams or self.unk not in self._unigrams else self.unk

    def logprob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context) by ARPA backoff; ``context`` is oldest first.

        Pass ``("<s>", ...)`` for a sentence start. Tokens not in the vocabulary are
        scored as ``unk``; with no ``unk`` in the model an unknown ``word`` gives -inf.
        ``<s>`` as ``word`` gives its stored value (-99 for estimated models).
        """
        word = self._map(word)
        n = self.order - 1
        ctx = tuple(self._map(t) for t in context[len(context) - n :]) if n > 0 else ()
        bow = 0.0
        while True:
            p = self._probs[len(ctx)].get((*ctx, word))
            if p is not None:
                return bow + p
            if not ctx:
                return -math.inf
            bow += self._backoffs[len(ctx) - 1].get(ctx, 0.0)
            ctx = ctx[1:]

    def sentence_logprob(
        self, sentence: Sequence[str], *, bos: bool = True, eos: bool = True
    ) -> float:
        """log10 probability of a token sequence (``</s>`` scored when ``eos``)."""
        context: list[str] = [BOS] if bos else []
        total = 0.0
        for t in [*sentence, EOS] if eos else sentence:
            total += self.logprob(t, context)
            context.append(t)
        return total

    def perplexity(self, sentences: Iterable[Sequence[str]], *, include_oov: bool = True) -> float:
        """``10 ** (-sum log10 p / tokens)`` over the tokens and one ``</s>`` per sentence.

        Unknown tokens are scored as ``unk`` (KenLM's "including OOVs"); with
        ``include_oov=False`` they are left out of the sum and the count (SRILM's ppl),
        though they stay in the context of the next token.
        """
        total, n = 0.0, 0
        for s in sentences:
            context = [BOS]
            for t in [*s, EOS]:
                if include_oov or t in self._unigrams:
                    total += self.logprob(t, context)
                    n += 1
                context.append(t)
        if n == 0:
            raise DataError("perplexity of no tokens")
        return 10.0 ** (-total / n)

    def symbol_table(self, *, disambig: Sequence[str] = (DISAMBIG,)) -> dict[str, int]:
        """The words.txt mapping for this LM's vocabulary (see :func:`make_symbol_table`)."""
        return make_symbol_table(self.vocab, unk=self.unk, disambig=disambig)

    def write_arpa(self, path: str | os.PathLike, *, precision: int | None = None) -> None:
        """Write an ARPA file (gzip when ``path`` ends in .gz).

        ``precision=None`` writes each float's shortest exact representation, so
        :func:`read_arpa` gives back identical values; an int writes that many
        significant digits (KenLM writes about 7).
        """
        fmt = repr if precision is None else (lambda x: f"{x:.{precision}g}")
        with _open(path, "wt") as f:
            f.write("\\data\\\n")
            for k, n in enumerate(self.num_ngrams, 1):
                f.write(f"ngram {k}={n}\n")
            for k in range(1, self.order + 1):
                f.write(f"\n\\{k}-grams:\n")
                for g, p, bow in self.ngrams(k):
                    line = f"{fmt(float(p))}\t{' '.join(g)}"
                    f.write(f"{line}\t{fmt(float(bow))}\n" if bow is not None else f"{line}\n")
            f.write("\n\\end\\\n")


def read_arpa(path: str | os.PathLike, *, unk: str = UNK) -> NgramLM:
    """Read an ARPA file (plain or .gz) into an :class:`NgramLM` that answers queries."""
    counts: dict[int, int] = {}
    probs: list[dict[Ngram, float]] = []
    backoffs: list[dict[Ngram, float]] = []
    section = None  # None: before \data\; 0: in \data\; k: in \k-grams:
    with _open(path, "rt") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            where = f"{path}:{lineno}"
            if line == "\\data\\":
                section = 0
            elif line == "\\end\\":
                break
            elif line.startswith("\\") and line.endswith("-grams:"):
                try:
                    k = int(line[1 : -len("-grams:")])
                except ValueError:
                    raise DataError(f"{where}: bad section header {line!r}") from None
                if k != len(probs) + 1:
                    raise DataError(f"{where}: expected \\{len(probs) + 1}-grams:, got {line!r}")
                section = k
                probs.append({})
                backoffs.append({})
            elif section == 0:
                if line.startswith("ngram ") and "=" in line:
                    k, n = line[len("ngram ") :].split("=", 1)
                    counts[int(k)] = int(n)
                else:
                    raise DataError(f"{where}: expected 'ngram K=N' in \\data\\, got {line!r}")
            elif section:
                fields = line.split()
                if len(fields) not in (section + 1, section + 2):
                    raise DataError(f"{where}: expected a {section}-gram line, got {line!r}")
                try:
                    p = float(fields[0])
                    g = tuple(fields[1 : section + 1])
                    probs[-1][g] = p
                    if len(fields) == section + 2:
                        backoffs[-1][g] = float(fields[-1])
                except ValueError:
                    raise DataError(f"{where}: bad number in {line!r}") from None
    if section is None or not probs:
        raise DataError(f"{path}: not an ARPA file (no \\data\\ or no n-grams)")
    for k, p in enumerate(probs, 1):
        if counts.get(k, len(p)) != len(p):
            raise DataError(f"{path}: header says ngram {k}={counts[k]}, found {len(p)}")
    return NgramLM(probs, backoffs[:-1], unk=unk)


def _open(path: str | os.PathLike, mode: str):
    if str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    try:
        return open(path, mode, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from e


def _check_tokens(tokens: Iterable[str], what: str) -> None:
    bad = [t for t in tokens if not t or len(t.split()) != 1 or t.strip() != t]
    if bad:
        raise DataError(f"{what}: tokens must be non-empty and free of whitespace, got {bad[:5]!r}")


# ---- symbol tables and G.fst ------------------------------------------------------------


def make_symbol_table(
    words: Iterable[str], *, unk: str = UNK, disambig: Sequence[str] = (DISAMBIG,)
) -> dict[str, int]:
    """A Kaldi/icefall words.txt mapping: ``<eps>`` 0, words, ``#0``, ``<s>``, ``</s>``.

    ``unk`` (when among ``words``) gets id 1, the other words follow sorted by code
    point, then the disambiguation symbols, ``<s>`` and ``</s>`` come last.
    """
    specials = {EPS, BOS, EOS, *disambig}
    rest = set(words) - specials
    _check_tokens(rest, "symbol table")
    clash = sorted(w for w in rest if w.startswith("#") and w[1:].isdigit())
    if clash:
        raise DataError(f"symbol table: words {clash} look like disambiguation symbols")
    ordered = ([unk] if unk in rest else []) + sorted(rest - {unk})
    symbols = [EPS, *ordered, *disambig, BOS, EOS]
    return {s: i for i, s in enumerate(symbols)}


def write_symbol_table(table: Mapping[str, int], path: str | os.PathLike) -> None:
    """Write ``symbol id`` lines, by id."""
    with open(path, "w", encoding="utf-8") as f:
        for s, i in sorted(table.items(), key=lambda kv: kv[1]):
            f.write(f"{s} {i}\n")


def read_symbol_table(path: str | os.PathLike) -> dict[str, int]:
    """Read a words.txt (``symbol id`` per line)."""
    table: dict[str, int] = {}
    with _open(path, "rt") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[1].isdigit():
                raise DataError(f"{path}:{lineno}: expected 'symbol id', got {line.rstrip()!r}")
            table[fields[0]] = int(fields[1])
    return table


def _arpa_unigrams(path: str | os.PathLike) -> set[str]:
    words: set[str] = set()
    in_unigrams = False
    with _open(path, "rt") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif line.startswith("\\"):
                if in_unigrams:
                    break
            elif in_unigrams and line:
                words.add(line.split()[1])
    return words


_ARPA2FST = """
import json, sys
import kaldilm
args = json.loads(sys.argv[1])
text = kaldilm.arpa2fst(**args["kwargs"])
with open(args["out"], "w", encoding="utf-8") as f:
    f.write(text)
"""


def run_arpa2fst(arpa: str | os.PathLike, kwargs: dict, out: str | os.PathLike) -> str:
    """``kaldilm.arpa2fst(**kwargs)`` in a child process; returns G as text (also written
    to ``out``). kaldilm aborts the whole process on a malformed ARPA (a C++ abort, not an
    exception) and logs every section it reads to stderr, so it runs apart.

    Raises:
        DataError: kaldilm failed (its last error line in the message).
    """
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _ARPA2FST,
                           json.dumps({"kwargs": kwargs, "out": str(out)})],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "[E]" in line or "Error" in line]
        raise DataError(f"{arpa}: kaldilm cannot compile this ARPA: "
                        f"{errors[-1].strip() if errors else proc.stderr.strip()[-300:]}")
    return Path(out).read_text(encoding="utf-8")


def compile_arpa(
    arpa_path: str | os.PathLike,
    words: str | os.PathLike | Mapping[str, int],
    fst_path: str | os.PathLike,
    *,
    disambig_symbol: str = DISAMBIG,
    max_order: int | None = None,
    text_fst_path: str | os.PathLike | None = None,
) -> str:
    """Compile an ARPA file into Kaldi's G.fst with ``kaldilm.arpa2fst``.

    G is a binary OpenFst VectorFst (tropical semiring, costs ``-ln p``), ilabel-sorted.
    With ``disambig_symbol`` (``#0``), backoff arcs read ``#0`` and write ``<eps>``, and
    ``<s>``/``</s>`` never appear as labels: the start state is the ``<s>`` history and
    ``p(</s> | h)`` is the final weight of ``h``'s state. Word arcs are ``w:w``.

    Args:
        arpa_path: the ARPA file.
        words: words.txt path or mapping; must hold every ARPA unigram, ``<s>``, ``</s>``
            and ``disambig_symbol`` (kaldilm would otherwise silently drop n-grams).
        fst_path: where G.fst goes.
        max_order: use n-grams up to this order only (None: all).
        text_fst_path: also write the text form (integer labels) there.

    Returns:
        The text form of G, with integer labels.
    """

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(words, Mapping):
            table = dict(words)
            words_path = Path(tmp) / "words.txt"
            write_symbol_table(table, words_path)
        else:
            words_path = Path(words)
            if not words_path.is_file():
                raise DataError(f"{words_path}: symbol table not found")
            table = read_symbol_table(words_path)
        if table.get(EPS) != 0:
            raise DataError(f"{words_path}: {EPS} must have id 0")
        missing = sorted((_arpa_unigrams(arpa_path) | {BOS, EOS, disambig_symbol}) - set(table))
        if missing:
            raise DataError(f"{words_path}: no id for {missing[:10]} (from {arpa_path})")
        text = run_arpa2fst(arpa_path, {
            "input_arpa": str(arpa_path),
            "output_fst": str(fst_path),
            "disambig_symbol": disambig_symbol,
            "read_symbol_table": str(words_path),
            "max_order": -1 if max_order is None else max_order,
        }, Path(tmp) / "G.txt")
    if text_fst_path is not None:
        Path(text_fst_path).write_text(text, encoding="utf-8")
    return text
