"""``speechfm tokenizer``: train tokenizers, run G2P, inspect encodings.

    speechfm tokenizer train --kind bpe|unigram|char|ipa (--text FILE | --cuts CUTS)
                             [--vocab-size N] --out DIR
    speechfm tokenizer g2p --lang xx [TEXT ...]        (stdin when no TEXT)
    speechfm tokenizer encode --tokenizer DIR [TEXT ...]

``--text`` reads Kaldi ``text``/``text_ipa`` lines ("uttid transcript"); for ``--kind
ipa`` the languages come from ``utt2lang`` beside the file when present, else ``--lang``.
``--cuts`` reads a lhotse manifest: ``supervision.text`` (``custom["ipa"]`` for ipa) and
``supervision.language``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from speechfm.errors import DataError

if TYPE_CHECKING:
    from speechfm.text.base import Tokenizer

UNDETERMINED = "und"
"""Language code for IPA transcripts whose language is not known (ISO 639-2 'und')."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenizer", help="train tokenizers (bpe, unigram, char, ipa) and run G2P"
    )
    sub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")

    t = sub.add_parser("train", help="train a tokenizer and save it to a directory")
    t.add_argument("--kind", required=True, choices=("bpe", "unigram", "char", "ipa"))
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=Path, help="Kaldi text/text_ipa file: 'uttid transcript'")
    src.add_argument("--cuts", type=Path, help="lhotse manifest (cuts_*.jsonl.gz)")
    t.add_argument("--out", type=Path, required=True, help="output directory")
    t.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="V incl. blank and <unk> (bpe/unigram: default 500; char/ipa: a cap, "
        "rarest symbols dropped)",
    )
    t.add_argument(
        "--lang",
        default=None,
        help="language for normalisation rules (e.g. tr) and, for ipa with --text "
        "and no utt2lang, the language of every line",
    )
    t.add_argument("--character-coverage", type=float, default=1.0, help="bpe/unigram")
    t.add_argument("--user-defined-symbols", default="", help="bpe/unigram: comma-separated pieces")
    t.add_argument("--byte-fallback", action="store_true", help="bpe/unigram")
    t.add_argument("--min-count", type=int, default=1, help="char/ipa: drop rarer symbols")
    t.add_argument("--keep-case", action="store_true", help="do not lower-case (bpe/char)")
    t.add_argument("--keep-punctuation", action="store_true", help="bpe/char")
    t.add_argument(
        "--no-word-boundary", action="store_true", help="ipa: no '|' word-boundary token"
    )
    _strip_flags(t)
    t.set_defaults(func=_train)

    g = sub.add_parser("g2p", help="print IPA (espeak-ng) for text, one line per input")
    g.add_argument("--lang", required=True, help="ISO 639-1 code (en, es, ky, ...)")
    g.add_argument("text", nargs="*", help="texts; read stdin lines when none is given")
    g.add_argument(
        "--with-ids",
        action="store_true",
        help="input lines are 'uttid text' (Kaldi text); output 'uttid ipa' (text_ipa)",
    )
    g.add_argument("--njobs", type=int, default=1, help="parallel espeak workers")
    _strip_flags(g)
    g.set_defaults(func=_g2p)

    e = sub.add_parser("encode", help="show the tokens and ids of texts")
    e.add_argument("--tokenizer", type=Path, required=True, help="tokenizer directory")
    e.add_argument("text", nargs="*", help="texts; read stdin lines when none is given")
    e.set_defaults(func=_encode)


def _strip_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strip-stress", action="store_true", help="ipa: drop ˈ ˌ")
    p.add_argument("--strip-length", action="store_true", help="ipa: drop ː ˑ")
    p.add_argument("--strip-tones", action="store_true", help="ipa: drop tone marks/digits")


def read_kaldi_text(path: Path) -> Iterator[tuple[str, str]]:
    """Yield ``(uttid, transcript)`` from a Kaldi text file (blank lines skipped)."""
    try:
        f = path.open(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e
    with f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if line[0].isspace():
                raise DataError(f"{path}:{n}: line starts with whitespace, expected 'uttid text'")
            yield parts[0], parts[1] if len(parts) > 1 else ""


def _read_utt2lang(text_path: Path) -> dict[str, str] | None:
    path = text_path.parent / "utt2lang"
    if not path.is_file():
        return None
    return dict(read_kaldi_text(path))


def _from_cuts(path: Path, want_ipa: bool) -> Iterator[tuple[str, str, str]]:
    """Yield ``(cut_id, language, text or ipa)`` for each supervision of the manifest."""
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    from lhotse import CutSet

    for cut in CutSet.from_file(path):
        for sup in cut.supervisions:
            if want_ipa:
                text = (sup.custom or {}).get("ipa")
            else:
                text = sup.text
            if text is None:
                continue
            yield cut.id, sup.language or UNDETERMINED, text


def _train(args: argparse.Namespace) -> int:
    kind = args.kind
    if args.text is not None:
        rows = list(read_kaldi_text(args.text))
        src = str(args.text)
        if kind == "ipa":
            utt2lang = _read_utt2lang(args.text) or {}
            default = args.lang or UNDETERMINED
            items = [(utt2lang.get(u, default), t) for u, t in rows]
        else:
            items = [("", t) for _, t in rows]
    else:
        items = [(lang, t) for _, lang, t in _from_cuts(args.cuts, kind == "ipa")]
        src = str(args.cuts)
    items = [(lang, t) for lang, t in items if t.strip()]
    if not items:
        what = "IPA transcripts (custom['ipa'])" if kind == "ipa" else "transcripts"
        raise DataError(f"{src}: no non-empty {what} to train on")

    try:
        tok = _fit(args, items)
    except (DataError, ValueError) as e:  # report cleanly, naming the input
        raise DataError(f"{src}: {e}") from e
    tok.save(args.out)
    langs = sorted({lang for lang, _ in items if lang})
    extra = f", languages: {','.join(langs)}" if kind == "ipa" else ""
    print(
        f"trained {kind} tokenizer: V={tok.vocab_size} from {len(items)} transcripts "
        f"({src}){extra} -> {args.out}"
    )
    return 0


def _fit(args: argparse.Namespace, items: list[tuple[str, str]]) -> Tokenizer:
    from speechfm.text.normalize import NormalizerConfig

    kind = args.kind
    if kind == "ipa":
        from speechfm.text.ipa import IpaTokenizer

        n_special = 2 if args.no_word_boundary else 3  # <blk>, <unk>[, |]
        if args.vocab_size is not None and args.vocab_size <= n_special:
            raise DataError(f"--vocab-size must exceed {n_special} for an IPA tokenizer")
        tok = IpaTokenizer.train(
            items,
            min_count=args.min_count,
            max_phones=None if args.vocab_size is None else args.vocab_size - n_special,
            word_boundary=not args.no_word_boundary,
            strip_stress=args.strip_stress,
            strip_length=args.strip_length,
            strip_tones=args.strip_tones,
        )
    else:
        norm = NormalizerConfig(
            lang=args.lang,
            lowercase=not args.keep_case,
            remove_punctuation=not args.keep_punctuation,
        )
        texts = [t for _, t in items]
        if kind == "char":
            from speechfm.text.char import CharTokenizer

            tok = CharTokenizer.train(
                texts, normalizer=norm, min_count=args.min_count, vocab_size=args.vocab_size
            )
        else:
            from speechfm.text.bpe import BpeTokenizer

            symbols = [s for s in args.user_defined_symbols.split(",") if s]
            tok = BpeTokenizer.train(
                texts,
                args.vocab_size or 500,
                kind,
                character_coverage=args.character_coverage,
                user_defined_symbols=symbols,
                byte_fallback=args.byte_fallback,
                normalizer=norm,
            )
    return tok


def _input_lines(args: argparse.Namespace) -> list[str]:
    if args.text:
        return list(args.text)
    return [line.rstrip("\n") for line in sys.stdin]


def _g2p(args: argparse.Namespace) -> int:
    from speechfm.text.ipa import phonemize

    lines = _input_lines(args)
    if args.with_ids:
        pairs = [ln.split(maxsplit=1) for ln in lines if ln.strip()]
        ids = [p[0] for p in pairs]
        texts = [p[1] if len(p) > 1 else "" for p in pairs]
    else:
        ids, texts = None, lines
    ipa = phonemize(
        texts,
        args.lang,
        strip_stress=args.strip_stress,
        strip_length=args.strip_length,
        strip_tones=args.strip_tones,
        njobs=args.njobs,
    )
    out = sys.stdout
    for i, line in enumerate(ipa):
        out.write(f"{ids[i]} {line}\n" if ids is not None else f"{line}\n")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from speechfm.text.base import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    for text in _input_lines(args):
        ids = tok.encode(text)
        print(" ".join(tok.id_to_token(i) for i in ids))
        print(" ".join(map(str, ids)))
        unknown = tok.unknown_symbols(text)
        if unknown:
            print(f"unknown: {' '.join(sorted(unknown))}")
    return 0
