"""Word-level decoding of CTC models through a lexicon + n-gram graph (TLG), or through a
token-level n-gram (TG), built with kaldifst and searched with kaldi-decoder.

Like icefall's HLG / sherpa-onnx's TLG decoding, built the Kaldi way::

    T    CTC topology over the model's tokens (blank self-loops, repeats collapse)
    L    lexicon: token sequences -> words, with disambiguation symbols #1, #2, ...
    G    n-gram LM from an ARPA (kaldilm.arpa2fst with ``#0`` on backoff arcs)

    LG  = minimize_encoded(determinize_star(L o G))       (#0 self-loops added to L)
    TLG = minimize_encoded(determinize_star(T o LG))      (#k:#k self-loops on T)
          then the disambiguation symbols on TLG's input side are replaced by epsilon
          (kaldifst: compose, determinize_star, minimize_encoded, add_self_loops, arcsort)

Lexicon-free mode (:func:`build_tg`): the ARPA's "words" are the tokens themselves
(characters or subwords, the word-boundary token a token like any other) and TG = T o G.

Labels, one convention everywhere (the one kaldi-decoder's ``DecodableCtc`` expects):

* **input labels** (T, TLG): 0 is epsilon and model token id ``t`` is label ``t + 1``
  (:data:`LABEL_OFFSET`), so the blank (id 0) is label 1. ``DecodableCtc(x)`` scores
  label ``l`` at frame ``f`` with ``x[f, l - 1]``, i.e. it undoes the offset: the search
  takes the model's (T, V) log-probs unchanged. While building, token-side
  disambiguation symbols #0, #1, ... take labels V+1, V+2, ...; none is left in the
  final graph.
* **output labels**: TLG: word ids of the words table (``<eps>`` 0; G's own ids, e.g.
  the words.txt kaldilm wrote); TG: label ``t + 1`` is token ``t`` (words table
  ``["<eps>", *tokens]``). ``<s>``/``</s>`` never appear on arcs: with a disambiguation
  symbol, arpa2fst turns ``<s>`` into the start state and ``</s>`` into final weights
  (as in icefall's compile_hlg and sherpa-onnx's TLG recipes).

T topology (``topo=``):

* ``"standard"`` (default; icefall's ``build_standard_ctc_topo``): exact CTC. One state
  per token (state k: "the last frame was token k"; state 0 also the start), every state
  final, fully connected: V^2 arcs. A token is output on its first frame, a repeat of the
  same label without a blank in between is the same token. Fine up to V of a few
  thousand (characters, phones, BPE-500: 250k arcs).
* ``"compact"``: 4V arcs (k2's "modified" topology): from a token's state an epsilon
  arc returns to the blank state, so two frames of ``a`` may also read as ``a a``
  (the lexicon and LM decide). That ambiguity makes T o LG non-functional, so it is
  not determinized (searched as composed; disambiguation symbols still removed). For
  large subword vocabularies, where V^2 arcs are too many.

Word boundaries: char and IPA models emit a word-boundary token (``▁`` / ``|``) between
words that lexicon pronunciations do not contain. :func:`build_tlg` adds it as an
optional self-loop at the lexicon's word-end state (like Kaldi's optional silence), so
the model may emit it between words (or not). Sentencepiece lexicons carry ``▁`` inside
their first piece and need nothing.

Weights are natural-log costs (arpa2fst converts log10). The search adds the acoustic
log-probs scaled by ``acoustic_scale`` to the graph costs, so ``1 / acoustic_scale`` is
the LM weight.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechfm.errors import DataError
from speechfm.lm.ngram import read_symbol_table, run_arpa2fst, write_symbol_table
from speechfm.text.base import BLANK, UNK, UNK_SURFACE

__all__ = [
    "LABEL_OFFSET",
    "TOPOS",
    "DecodingGraph",
    "GraphHypothesis",
    "build_tg",
    "build_tlg",
    "compile_arpa",
    "decode_graph",
    "extend_lexicon",
    "graph_for_model",
    "graph_hypotheses",
    "oov_rate",
    "read_symbols",
    "spelled_lexicon",
    "write_symbols",
]

log = logging.getLogger("speechfm.decode")

LABEL_OFFSET = 1
"""Graph input label of token id ``t`` is ``t + LABEL_OFFSET`` (0 is epsilon)."""
TOPOS = ("standard", "compact")
EPS = "<eps>"
BACKOFF = "#0"
BOS, EOS = "<s>", "</s>"
GRAPH_JSON = "graph.json"
WORDS_TXT = "words.txt"
TOKENS_TXT = "tokens.txt"
_FST_FILE = {"tlg": "TLG.fst", "tg": "TG.fst"}
_SPECIAL_WORDS = frozenset({EPS, BACKOFF, BOS, EOS})
# OpenFst's trinary property bits: cleared after relabelling arcs in place, so that
# nothing trusts a cached "no input epsilons" / "ilabel sorted" that no longer holds.
_ALL_PROPERTIES = 0x0000FFFFFFFF0000

Lexicon = Mapping[str, Sequence[Sequence[str]]]
"""``{word: [[token, ...], ...]}``: one or more pronunciations (spellings) per word."""


# ------------------------------------------------------------------------ symbols


def read_symbols(path: str | os.PathLike) -> list[str]:
    """A Kaldi/OpenFst symbol table ("symbol id" per line) as a list indexed by id."""
    table = {i: sym for sym, i in read_symbol_table(path).items()}
    if sorted(table) != list(range(len(table))):
        raise DataError(f"{path}: symbol ids must be 0..{len(table) - 1} without gaps")
    return [table[i] for i in range(len(table))]


def write_symbols(symbols: Sequence[str], path: str | os.PathLike) -> None:
    """Write ``symbols`` (index = id) as a symbol table."""
    write_symbol_table({s: i for i, s in enumerate(symbols)}, path)


def _as_symbols(words: Sequence[str] | Mapping[str, int] | str | os.PathLike) -> list[str]:
    if isinstance(words, (str, os.PathLike)):
        return read_symbols(words)
    if isinstance(words, Mapping):
        out = [""] * len(words)
        for w, i in words.items():
            if not 0 <= i < len(words) or out[i]:
                raise DataError(f"words table: ids must be 0..{len(words) - 1}, unique")
            out[i] = w
        return out
    return list(words)


def _token_list(tokens: Any) -> tuple[list[str], str | None, str | None]:
    """(tokens, the tokenizer's word-boundary token, its kind) of a list or a Tokenizer."""
    if hasattr(tokens, "kind") and hasattr(tokens, "tokens"):
        word_id = getattr(tokens, "word_id", None)
        toks = list(tokens.tokens)
        return toks, (toks[word_id] if word_id is not None else None), tokens.kind
    toks = list(tokens)
    # The house layout (speechfm.text): char and IPA tokenizers put "▁" / "|" at id 2; a
    # sentencepiece vocabulary may have a "▁" piece too, but also "▁xyz" pieces.
    boundary = None
    if len(toks) > 2 and toks[2] in ("▁", "|"):
        if not any(len(t) > 1 and t.startswith("▁") for t in toks):
            boundary = toks[2]
    return toks, boundary, None


def _check_tokens(tokens: list[str]) -> None:
    if not tokens or tokens[0] != BLANK:
        raise DataError(f"token list must start with the blank {BLANK!r} (id 0)")
    if len(set(tokens)) != len(tokens):
        raise DataError("token list has duplicates")
    bad = [t for t in tokens if not t or any(c.isspace() for c in t)]
    if bad:
        raise DataError(f"tokens must be non-empty and without whitespace: {bad[:5]!r}")


# ------------------------------------------------------------------------ G


def compile_arpa(arpa: str | os.PathLike, words: Sequence[str] | None = None, *,
                 max_order: int = -1) -> tuple[Any, list[str]]:
    """Compile an ARPA file into G with kaldilm (``#0`` on backoff arcs).

    Args:
        arpa: the ARPA file.
        words: the symbol table to use (index = id; must hold ``<eps>`` at 0 and ``#0``);
            n-grams with other words are skipped. None: the ARPA's own words, numbered
            by kaldilm (``<eps>`` 0, ``#0`` 1, ``<s>``, ``</s>``, then in ARPA order).
        max_order: use n-grams up to this order (-1: all).

    Returns:
        ``(G, words)``: a ``kaldifst.StdVectorFst`` (input ``#0`` on backoff arcs, output
        epsilon there; ``<s>``/``</s>`` on no arc) and its symbol table.
    """
    import kaldifst

    if not Path(arpa).is_file():
        raise DataError(f"{arpa}: no such ARPA file")
    with tempfile.TemporaryDirectory() as tmp:
        table = os.path.join(tmp, WORDS_TXT)
        kwargs: dict[str, Any] = {"input_arpa": str(arpa), "disambig_symbol": BACKOFF,
                                  "max_order": max_order}
        if words is None:
            kwargs["write_symbol_table"] = table
        else:
            words = list(words)
            if not words or words[0] != EPS or BACKOFF not in words:
                raise DataError(f"words table must have {EPS!r} at id 0 and contain {BACKOFF!r}")
            words = words + [s for s in (BOS, EOS) if s not in words]
            write_symbols(words, table)
            kwargs["read_symbol_table"] = table
        text = run_arpa2fst(arpa, kwargs, os.path.join(tmp, "G.txt"))
        if words is None:
            words = read_symbols(table)
    if not text.strip():
        raise DataError(f"{arpa}: kaldilm produced an empty G (no n-grams over the words table?)")
    return kaldifst.compile(s=text, acceptor=False), words


def _load_g(g: Any, words: Any) -> tuple[Any, list[str] | None]:
    import kaldifst

    if isinstance(g, (str, os.PathLike)):
        path = Path(g)
        if path.suffix == ".arpa":
            return compile_arpa(path, None if words is None else _as_symbols(words))
        if not path.is_file():
            raise DataError(f"{path}: no such G.fst")
        fst = kaldifst.StdVectorFst.read(str(path))
        if fst is None:
            raise DataError(f"{path}: not an OpenFst binary FST")
        return fst, None if words is None else _as_symbols(words)
    if isinstance(g, kaldifst.StdVectorFst):
        return g.copy(), None if words is None else _as_symbols(words)
    raise TypeError(f"G must be a kaldifst.StdVectorFst, a G.fst path or an .arpa path, got {type(g)}")


# ------------------------------------------------------------------------ T and L


def _ctc_topo_text(vocab_size: int, topo: str) -> list[str]:
    """Text arcs of T over labels 1..V (token t = label t + 1; blank = label 1)."""
    lines: list[str] = []
    v = vocab_size
    if topo == "standard":
        for i in range(v):
            for k in range(v):
                out = 0 if (k == 0 or k == i) else k + LABEL_OFFSET
                lines.append(f"{i} {k} {k + LABEL_OFFSET} {out}")
        lines.extend(str(i) for i in range(v))
    else:  # compact: state 0 = after blank/start, state k = inside token k
        lines.append(f"0 0 {LABEL_OFFSET} 0")
        for k in range(1, v):
            lab = k + LABEL_OFFSET
            lines += [f"0 {k} {lab} {lab}", f"{k} {k} {lab} 0", f"{k} 0 {LABEL_OFFSET} 0",
                      f"{k} 0 0 0"]
        lines.extend(str(i) for i in range(v))
    return lines


def _compile(lines: list[str]) -> Any:
    import kaldifst

    return kaldifst.compile(s="\n".join(lines) + "\n", acceptor=False)


def _build_t(vocab_size: int, topo: str, disambig: Sequence[int]) -> Any:
    import kaldifst

    num_states = vocab_size
    lines = _ctc_topo_text(vocab_size, topo)
    # #k:#k self-loops let L's disambiguation symbols through to TLG's input side, where
    # they keep T o LG determinizable; they are removed after determinization.
    lines += [f"{s} {s} {d} {d}" for s in range(num_states) for d in disambig]
    t = _compile(lines)
    kaldifst.arcsort(t, sort_type="olabel")
    return t


def _disambiguate(prons: list[tuple[int, tuple[int, ...]]]) -> tuple[list[tuple[int, tuple[int, ...], int]], int]:
    """Kaldi's add_lex_disambig: #k after pronunciations that are homophones or prefixes.

    Returns ``[(word id, labels, k)]`` (k = 0: none) and the number of disambiguation
    symbols needed, #0 (G's backoff) included.
    """
    count = Counter(p for _, p in prons)
    prefixes = {p[:i] for _, p in prons for i in range(1, len(p))}
    used: dict[tuple[int, ...], int] = defaultdict(int)
    out = []
    for wid, p in prons:
        if count[p] == 1 and p not in prefixes:
            out.append((wid, p, 0))
        else:
            used[p] += 1
            out.append((wid, p, used[p]))
    return out, 1 + max((k for *_, k in out), default=0)


def _lexicon_prons(tokens: list[str], lexicon: Lexicon, words: list[str]
                   ) -> list[tuple[int, tuple[int, ...]]]:
    token_ids = {t: i for i, t in enumerate(tokens)}
    word_ids = {w: i for i, w in enumerate(words)}
    prons: list[tuple[int, tuple[int, ...]]] = []
    seen: set[tuple[int, tuple[int, ...]]] = set()
    no_word, bad_pron = [], []
    for word, alts in lexicon.items():
        wid = word_ids.get(word)
        if wid is None or word in _SPECIAL_WORDS:
            no_word.append(word)
            continue
        for pron in alts:
            if not pron or any(t not in token_ids or t == BLANK for t in pron):
                bad_pron.append((word, list(pron)))
                continue
            key = (wid, tuple(token_ids[t] + LABEL_OFFSET for t in pron))
            if key not in seen:
                seen.add(key)
                prons.append(key)
    if no_word:
        log.info("%d lexicon words are not in the LM's words table (left out): %s",
                 len(no_word), no_word[:10])
    if bad_pron:
        log.warning("%d pronunciations are empty or use tokens outside the vocabulary (left "
                    "out): %s", len(bad_pron), bad_pron[:10])
    if not prons:
        raise DataError("no lexicon entry is usable: no word of the lexicon is in the LM's "
                        "words table with a pronunciation in the model's tokens")
    return prons


def _build_l(prons: list[tuple[int, tuple[int, ...], int]], disambig_base: int,
             boundary_label: int | None) -> Any:
    """L: state 0 is start, word end and final; the word is output on the first arc."""
    lines: list[str] = []
    next_state = 1
    for wid, labels, k in prons:
        seq = labels + ((disambig_base + k,) if k else ())
        src, out = 0, wid
        for j, lab in enumerate(seq):
            dst = 0 if j == len(seq) - 1 else next_state
            if dst:
                next_state += 1
            lines.append(f"{src} {dst} {lab} {out}")
            src, out = dst, 0
    if boundary_label is not None:
        lines.append(f"0 0 {boundary_label} 0")
    lines.append("0")
    return _compile(lines)


def _remove_disambig(fst: Any, first: int) -> None:
    """Replace input labels >= ``first`` (disambiguation symbols) by epsilon, in place."""
    import kaldifst

    for state in kaldifst.StateIterator(fst):
        for arc in kaldifst.ArcIterator(fst, state):  # arcs are references: edits stick
            if arc.ilabel >= first:
                arc.ilabel = 0
    fst.set_properties(0, _ALL_PROPERTIES)


def _finish(tg: Any, first_disambig: int, topo: str) -> Any:
    import kaldifst

    if topo == "standard":
        kaldifst.determinize_star(tg)
        kaldifst.minimize_encoded(tg)
    # The compact topology makes T o LG non-functional ("a a" is one token or two, which
    # may be different words) and so not determinizable: it is searched as composed.
    _remove_disambig(tg, first_disambig)
    kaldifst.arcsort(tg, sort_type="ilabel")
    return tg


# ------------------------------------------------------------------------ the graph


@dataclass
class DecodingGraph:
    """A TLG (words out) or TG (tokens out) decoding graph with its symbol tables."""

    fst: Any
    """``kaldifst.StdVectorFst``: input label = token id + 1, output label = ``words`` id."""
    tokens: list[str]
    """The model's tokens in id order (``<blk>`` first)."""
    words: list[str]
    """Output symbols by label: words (TLG) or ``["<eps>", *tokens]`` (TG)."""
    kind: str = "tlg"
    """``"tlg"`` (lexicon + word LM) or ``"tg"`` (token-level LM, lexicon-free)."""
    topo: str = "standard"
    """The CTC topology T was built with (see the module doc)."""
    word_boundary: str | None = None
    """The token that separates words (``▁``, ``|``), or None (sentencepiece ``▁`` prefixes)."""
    token_sep: str = ""
    """TG: what joins a word's tokens (``""`` for characters/subwords, ``" "`` for IPA phones)."""

    @property
    def num_states(self) -> int:
        return self.fst.num_states

    @property
    def num_arcs(self) -> int:
        import kaldifst

        return sum(self.fst.num_arcs(s) for s in kaldifst.StateIterator(self.fst))

    def join(self, words: Sequence[str]) -> str:
        """One hypothesis as text: words separated by spaces (`` | `` for IPA-style TG)."""
        return (" | " if self.kind == "tg" and self.word_boundary == "|" else " ").join(words)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``TLG.fst`` (``TG.fst``), ``words.txt``, ``tokens.txt`` and ``graph.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if not self.fst.write(str(directory / _FST_FILE[self.kind])):
            raise OSError(f"{directory}: could not write {_FST_FILE[self.kind]}")
        write_symbols(self.words, directory / WORDS_TXT)
        write_symbols(self.tokens, directory / TOKENS_TXT)
        meta = {"kind": self.kind, "fst": _FST_FILE[self.kind], "topo": self.topo,
                "label_offset": LABEL_OFFSET, "word_boundary": self.word_boundary,
                "token_sep": self.token_sep}
        (directory / GRAPH_JSON).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n",
                                            encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> DecodingGraph:
        """Read a graph written by :meth:`save` (a bare TLG.fst + words.txt + tokens.txt
        folder, as icefall/sherpa-onnx write, is read as a standard-topology TLG)."""
        import kaldifst

        directory = Path(directory)
        meta: dict[str, Any] = {"kind": "tlg", "topo": "standard", "label_offset": LABEL_OFFSET}
        if (directory / GRAPH_JSON).is_file():
            meta.update(json.loads((directory / GRAPH_JSON).read_text(encoding="utf-8")))
        if meta.get("label_offset") != LABEL_OFFSET or meta["kind"] not in _FST_FILE:
            raise DataError(f"{directory}/{GRAPH_JSON}: unsupported graph {meta}")
        path = directory / meta.get("fst", _FST_FILE[meta["kind"]])
        for p in (path, directory / WORDS_TXT, directory / TOKENS_TXT):
            if not p.is_file():
                raise DataError(f"{directory}: no decoding graph here ({p.name} is missing)")
        fst = kaldifst.StdVectorFst.read(str(path))
        if fst is None:
            raise DataError(f"{path}: not an OpenFst binary FST")
        return cls(fst=fst, tokens=read_symbols(directory / TOKENS_TXT),
                   words=read_symbols(directory / WORDS_TXT), kind=meta["kind"],
                   topo=meta.get("topo", "standard"), word_boundary=meta.get("word_boundary"),
                   token_sep=meta.get("token_sep", ""))

    def __repr__(self) -> str:
        return (f"DecodingGraph(kind={self.kind!r}, topo={self.topo!r}, tokens={len(self.tokens)}, "
                f"words={len(self.words)}, states={self.num_states})")


def build_tlg(tokens: Any, lexicon: Lexicon, g: Any, words: Any = None, *,
              topo: str = "standard", word_boundary: str | None = "auto") -> DecodingGraph:
    """Build TLG = T o L o G for word-level decoding of a CTC model.

    Args:
        tokens: the model's tokens in id order (blank ``<blk>`` first), or its Tokenizer.
        lexicon: ``{word: [[token, ...], ...]}`` (several pronunciations allowed), as
            ``speechfm.models.io`` reads a model directory's lexicon.txt. Words missing
            from the words table and pronunciations with unknown tokens are left out
            (logged).
        g: G as a ``kaldifst.StdVectorFst`` or a binary G.fst path (compiled by kaldilm
            with ``disambig_symbol="#0"``), or an ``.arpa`` path (compiled here).
        words: G's symbol table (list indexed by id, ``{word: id}`` or a words.txt path);
            required unless ``g`` is an ARPA.
        topo: ``"standard"`` or ``"compact"`` CTC topology (module doc).
        word_boundary: the token the model emits between words, allowed (optionally)
            after every word; ``"auto"``: the tokenizer's (``▁`` for char, ``|`` for IPA,
            none for sentencepiece); None: none.

    Returns:
        The graph; its output labels are ids of ``graph.words``.
    """
    import kaldifst

    if topo not in TOPOS:
        raise ValueError(f"topo must be one of {TOPOS}, got {topo!r}")
    toks, auto_boundary, _ = _token_list(tokens)
    _check_tokens(toks)
    boundary = auto_boundary if word_boundary == "auto" else word_boundary
    if boundary is not None and boundary not in toks:
        raise DataError(f"word_boundary {boundary!r} is not a token")
    g_fst, symbols = _load_g(g, words)
    if symbols is None:
        raise ValueError("build_tlg needs G's words table (words=) unless G is an ARPA path")
    if symbols[0] != EPS:
        raise DataError(f"words table must have {EPS!r} at id 0, got {symbols[0]!r}")
    v = len(toks)
    prons, num_disambig = _disambiguate(_lexicon_prons(toks, lexicon, symbols))
    if boundary is not None and any(toks.index(boundary) + LABEL_OFFSET in p for _, p, _ in prons):
        boundary = None  # the lexicon spells boundaries itself (multi-word entries)
    disambig_base = v + LABEL_OFFSET  # token-side #0
    lex = _build_l(prons, disambig_base,
                   None if boundary is None else toks.index(boundary) + LABEL_OFFSET)
    if BACKOFF in symbols:
        # G's backoff arcs read #0: let it through L (token #0 -> word #0)
        kaldifst.add_self_loops(lex, isyms=[disambig_base], osyms=[symbols.index(BACKOFF)])
    kaldifst.arcsort(lex, sort_type="olabel")
    kaldifst.arcsort(g_fst, sort_type="ilabel")
    lg = kaldifst.compose(lex, g_fst)
    kaldifst.determinize_star(lg)
    kaldifst.minimize_encoded(lg)
    kaldifst.arcsort(lg, sort_type="ilabel")
    t = _build_t(v, topo, range(disambig_base, disambig_base + num_disambig))
    tlg = _finish(kaldifst.compose(t, lg), disambig_base, topo)
    if tlg.num_states == 0:
        raise DataError("TLG is empty: no lexicon word is accepted by G")
    return DecodingGraph(fst=tlg, tokens=toks, words=symbols, kind="tlg", topo=topo,
                         word_boundary=boundary)


def spelled_lexicon(tokenizer: Any, words: Iterable[str]) -> dict[str, list[list[str]]]:
    """A lexicon that spells each word with ``tokenizer`` (characters, or sentencepiece
    pieces): what a char or subword CTC model needs for word decoding through a word LM.
    Special symbols (``<eps>``, ``<s>``, ``#0``, ...) and words the tokenizer can only
    spell with ``<unk>`` are left out."""
    toks = tokenizer.tokens
    unk = toks.index(UNK) if UNK in toks else None
    out: dict[str, list[list[str]]] = {}
    for word in words:
        if not word or (word.startswith("<") and word.endswith(">")) or word.startswith("#"):
            continue
        ids = tokenizer.encode(word)
        if not ids or (unk is not None and unk in ids):
            continue
        out[word] = [[toks[i] for i in ids]]
    return out


def graph_for_model(tokenizer: Any, lexicon: Lexicon | None, lm: str | os.PathLike, *,
                    topo: str = "standard",
                    g2p: Callable[[list[str]], list[list[str]]] | None = None) -> DecodingGraph:
    """The decoding graph of a CTC model over ``tokenizer`` for a ``speechfm lm train``
    directory ``lm`` (``G.fst`` + ``words.txt``): TLG through ``lexicon`` (word -> token
    sequences); without one, a char or subword model spells the LM's words with its
    tokenizer (:func:`spelled_lexicon`). An LM over the model's own tokens (``speechfm lm
    train --unit char`` for a char model, or a phone n-gram for a phone model) gives the
    lexicon-free TG (:func:`build_tg`): no word list, so no OOV words. A phone model with
    a word LM needs a lexicon. With ``g2p`` (e.g. :func:`speechfm.text.lexicon.espeak_g2p`)
    the LM's words the lexicon lacks get generated pronunciations first
    (:func:`extend_lexicon`): test-time lexicon extension for a partial lexicon.

    Raises:
        DataError: ``lm`` lacks G.fst or words.txt, or a phone model has no lexicon.
    """
    lm = Path(lm)
    for name in ("G.fst", "words.txt"):
        if not (lm / name).is_file():
            raise DataError(f"{lm}: no {name} (make it with `speechfm lm train`)")
    words = read_symbols(lm / "words.txt")
    symbols = [w for w in words[1:] if w not in (BACKOFF, "<s>", "</s>", UNK)]
    known = set(tokenizer.tokens)
    if lexicon is None and symbols and all(w in known for w in symbols):
        return build_tg(tokenizer, lm / "G.fst", words, topo=topo)
    if g2p is not None:
        lexicon = extend_lexicon(lexicon or {}, symbols, g2p)
        log.info("lexicon extended by G2P to %d of the LM's %d words", len(lexicon), len(symbols))
    if lexicon is None:
        if getattr(tokenizer, "kind", None) == "ipa":
            raise DataError("a phone (IPA) model needs a pronunciation lexicon for word "
                            "decoding (speechfm lexicon build)")
        lexicon = spelled_lexicon(tokenizer, words)
    return build_tlg(tokenizer, lexicon, lm / "G.fst", words, topo=topo)


def build_tg(tokens: Any, g: Any, words: Any = None, *, topo: str = "standard",
             word_boundary: str | None = "auto", token_sep: str | None = None) -> DecodingGraph:
    """Build TG = T o G for lexicon-free decoding with a token-level n-gram.

    The LM's "words" are the model's tokens (characters, phones or subwords; the
    word-boundary token is an ordinary one); its output is tokens, joined into words
    the way the tokenizer does (:func:`decode_graph`).

    Args:
        tokens: the model's tokens in id order, or its Tokenizer.
        g: an ``.arpa`` path over the tokens (compiled here with the tokens as symbol
            table), or G (``StdVectorFst`` / binary path) with its ``words`` table; G's
            symbols that are not tokens are dropped (their n-grams cannot be used).
        words: G's symbol table, when ``g`` is an FST.
        topo: ``"standard"`` or ``"compact"``.
        word_boundary: the token separating words; ``"auto"`` as in :func:`build_tlg`;
            None: words start at sentencepiece ``▁`` prefixes.
        token_sep: what joins tokens inside a word: default ``" "`` for IPA (``|``
            boundary) tokens and ``""`` otherwise.
    """
    import kaldifst

    if topo not in TOPOS:
        raise ValueError(f"topo must be one of {TOPOS}, got {topo!r}")
    toks, auto_boundary, kind = _token_list(tokens)
    _check_tokens(toks)
    boundary = auto_boundary if word_boundary == "auto" else word_boundary
    if token_sep is None:
        token_sep = " " if (kind == "ipa" or boundary == "|") else ""
    v = len(toks)
    disambig0 = v + LABEL_OFFSET
    # token-side symbol table: label t + 1 is token t, then #0; blank maps to nothing
    table = [EPS, *toks, BACKOFF]
    table[LABEL_OFFSET] = "<blk-unused>"  # blank is never an LM symbol
    if isinstance(g, (str, os.PathLike)) and Path(g).suffix == ".arpa":
        g_fst, _ = compile_arpa(g, table)
    else:
        g_fst, symbols = _load_g(g, words)
        if symbols is None:
            raise ValueError("build_tg needs G's words table (words=) unless G is an ARPA path")
        label = {s: i for i, s in enumerate(table) if i != LABEL_OFFSET}
        unused = disambig0 + 1  # a label T never outputs: arcs with it die in composition
        remap = {i: label.get(s, unused) for i, s in enumerate(symbols)}
        for state in kaldifst.StateIterator(g_fst):
            for arc in kaldifst.ArcIterator(g_fst, state):
                arc.ilabel = remap.get(arc.ilabel, unused)
                arc.olabel = remap.get(arc.olabel, unused)
        g_fst.set_properties(0, _ALL_PROPERTIES)
    kaldifst.arcsort(g_fst, sort_type="ilabel")
    t = _build_t(v, topo, [disambig0])
    tg = _finish(kaldifst.compose(t, g_fst), disambig0, topo)
    if tg.num_states == 0:
        raise DataError("TG is empty: the LM has no n-gram over the model's tokens")
    return DecodingGraph(fst=tg, tokens=toks, words=[EPS, *toks], kind="tg", topo=topo,
                         word_boundary=boundary, token_sep=token_sep)


# ------------------------------------------------------------------------ search


@dataclass
class GraphHypothesis:
    """The best path of one utterance through a decoding graph."""

    words: list[str]
    """Output words (TG: tokens joined into words)."""
    tokens: list[int] = field(default_factory=list)
    """Token ids of the best alignment, CTC-collapsed (exact for the standard topology)."""
    alignment: list[int] = field(default_factory=list)
    """Token id (blank 0) of every frame on the best path."""
    graph_cost: float = float("inf")
    """LM (graph) cost of the path, natural log, negated."""
    acoustic_cost: float = float("inf")
    """Scaled acoustic cost (``-acoustic_scale * sum of log-probs``, blank penalty in)."""


def _join_tokens(symbols: Sequence[str], boundary: str | None, sep: str) -> list[str]:
    symbols = [UNK_SURFACE if s == UNK else s for s in symbols]
    if boundary is not None:
        words: list[str] = []
        current: list[str] = []
        for s in [*symbols, boundary]:
            if s == boundary:
                if current:
                    words.append(sep.join(current))
                current = []
            else:
                current.append(s)
        return words
    if sep:
        return [sep.join(symbols)] if symbols else []
    return "".join(symbols).replace("▁", " ").split()  # sentencepiece pieces


def _collapse(alignment: Sequence[int]) -> list[int]:
    out, prev = [], -1
    for t in alignment:
        if t != 0 and t != prev:
            out.append(t)
        prev = t
    return out


def graph_hypotheses(graph: DecodingGraph, log_probs: Any, out_lens: Any = None, *,
                     acoustic_scale: float = 1.0, beam: float = 16.0, max_active: int = 3000,
                     min_active: int = 20, blank_penalty: float = 0.0) -> list[GraphHypothesis]:
    """Viterbi beam search (kaldi-decoder's FasterDecoder) of CTC log-probs through ``graph``.

    Args:
        graph: a :class:`DecodingGraph`.
        log_probs: (N, T, V) log-posteriors (torch tensor or numpy array) over the graph's
            V tokens, in the model's token order (no offset: DecodableCtc reads column
            ``label - 1``).
        out_lens: (N,) valid frames per utterance; None: all T.
        acoustic_scale: multiplies the log-probs (``1 / acoustic_scale`` is the LM weight).
        beam: search beam (cost units, after scaling).
        max_active, min_active: bounds on active states per frame.
        blank_penalty: subtracted from the blank's log-prob before scaling (> 0 favours
            tokens over blanks, against deletions).

    Returns:
        N hypotheses; an utterance with no surviving path gets empty words.
    """
    import kaldi_decoder
    import kaldifst

    if hasattr(log_probs, "detach"):
        log_probs = log_probs.detach().float().cpu().numpy()
    lp = np.asarray(log_probs, dtype=np.float32)
    if lp.ndim != 3:
        raise ValueError(f"log_probs must be (N, T, V), got shape {lp.shape}")
    n, t_max, v = lp.shape
    if v != len(graph.tokens):
        raise ValueError(f"log_probs have V={v} but the graph was built for {len(graph.tokens)} tokens")
    if out_lens is None:
        lens = [t_max] * n
    else:
        lens = [int(x) for x in (out_lens.tolist() if hasattr(out_lens, "tolist") else out_lens)]
        if len(lens) != n or any(not 0 <= x <= t_max for x in lens):
            raise ValueError(f"out_lens {lens} do not fit log_probs of shape {lp.shape}")
    options = kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active,
                                                 min_active=min_active)
    decoder = kaldi_decoder.FasterDecoder(graph.fst, options)
    out = []
    for i in range(n):
        if lens[i] == 0:
            out.append(GraphHypothesis(words=[], graph_cost=0.0, acoustic_cost=0.0))
            continue
        x = lp[i, : lens[i]].copy()
        if blank_penalty:
            x[:, 0] -= blank_penalty
        if acoustic_scale != 1.0:
            x *= acoustic_scale
        decoder.decode(kaldi_decoder.DecodableCtc(np.ascontiguousarray(x), offset=0))
        ok, best = decoder.get_best_path()
        if not ok:
            out.append(GraphHypothesis(words=[]))
            continue
        ok, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(best)
        alignment = [lab - LABEL_OFFSET for lab in ilabels]
        symbols = [graph.words[o] for o in olabels]
        if graph.kind == "tg":
            symbols = _join_tokens(symbols, graph.word_boundary, graph.token_sep)
        out.append(GraphHypothesis(words=symbols, tokens=_collapse(alignment), alignment=alignment,
                                   graph_cost=weight.value1, acoustic_cost=weight.value2))
    return out


def decode_graph(graph: DecodingGraph, log_probs: Any, out_lens: Any = None, *,
                 acoustic_scale: float = 1.0, beam: float = 16.0, max_active: int = 3000,
                 min_active: int = 20, blank_penalty: float = 0.0) -> list[list[str]]:
    """The words of each utterance's best path (:func:`graph_hypotheses` for the rest)."""
    return [h.words for h in graph_hypotheses(
        graph, log_probs, out_lens, acoustic_scale=acoustic_scale, beam=beam,
        max_active=max_active, min_active=min_active, blank_penalty=blank_penalty)]


# ------------------------------------------------------------------------ OOVs


def oov_rate(texts: Iterable[str] | str, lexicon_words: Container[str]) -> tuple[int, int]:
    """``(OOV running words, running words)`` of whitespace-split ``texts``."""
    if isinstance(texts, str):
        texts = [texts]
    oov = total = 0
    for text in texts:
        for w in text.split():
            total += 1
            oov += w not in lexicon_words
    return oov, total


def extend_lexicon(lexicon: Lexicon, words: Iterable[str],
                   g2p: Callable[[list[str]], list[list[str]]]) -> dict[str, list[list[str]]]:
    """A copy of ``lexicon`` plus G2P pronunciations for the ``words`` it lacks.

    ``g2p`` maps a list of words to one token list each (e.g. espeak phones through
    ``speechfm.text.ipa.phonemize``, split on spaces; or ``list`` for a character
    lexicon); it is called once, with the missing words in first-seen order. Words it
    gives no tokens for stay out.
    """
    from speechfm.text.lexicon import Lexicon

    extended = Lexicon(lexicon)
    extended.extend([w for w in words if w], g2p)
    return extended.to_dict()
