"""``speechfm lexicon``: build per-language pronunciation lexicons with espeak-ng.

    speechfm lexicon build --lang pl --text DATA/train/text [--extra-text FILE ...]
                           --out DIR/lexicon.txt [--strip-length --strip-stress
                           --strip-tones] [--cache-dir D] [--text-ipa DATA/train/text_ipa
                           [--add-context-variants]]

``--text`` reads Kaldi ``text`` lines ("uttid transcript"); when ``utt2lang`` lies beside
it, only the utterances of ``--lang`` are used (a multilingual data dir holds them all).
``--extra-text`` reads plain lines (everyday text for the LM's vocabulary). Words are the
normalised transcript words (see ``speechfm.text.lexicon``). ``--text-ipa`` reports how
often a word's in-context phones (the utterance-level G2P) differ from its isolated
G2P, and ``--add-context-variants`` adds those in-context forms as pronunciations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from speechfm.errors import DataError


def register(subparsers) -> None:
    p = subparsers.add_parser("lexicon", help="build word -> phones lexicons (espeak-ng)")
    sub = p.add_subparsers(dest="lexicon_command", required=True, metavar="ACTION")

    b = sub.add_parser("build", help="build the lexicon of a language's training text")
    b.add_argument("--lang", required=True, help="ISO 639 code (en, pl, id, ...)")
    b.add_argument(
        "--text",
        type=Path,
        action="append",
        default=[],
        help="Kaldi text file 'uttid transcript' (repeatable)",
    )
    b.add_argument(
        "--extra-text",
        type=Path,
        action="append",
        default=[],
        help="plain text file, one sentence or word per line (repeatable)",
    )
    b.add_argument("--out", type=Path, required=True, help="output lexicon.txt (or a directory)")
    b.add_argument("--strip-stress", action="store_true", help="drop ˈ ˌ")
    b.add_argument("--strip-length", action="store_true", help="drop ː ˑ")
    b.add_argument("--strip-tones", action="store_true", help="drop tone marks/digits")
    b.add_argument("--cache-dir", type=Path, default=None, help="reuse/extend a G2P cache here")
    b.add_argument("--njobs", type=int, default=1, help="parallel espeak workers")
    b.add_argument(
        "--no-normalize",
        action="store_true",
        help="split the text as given (default: the corpora's transcript normalisation)",
    )
    b.add_argument(
        "--text-ipa",
        type=Path,
        default=None,
        help="Kaldi text_ipa matching --text: report the in-context mismatch rate",
    )
    b.add_argument(
        "--add-context-variants",
        action="store_true",
        help="with --text-ipa: add in-context pronunciations that differ as variants",
    )
    b.set_defaults(func=_build)


def _kaldi_lines(path: Path, lang: str) -> dict[str, str]:
    """``uttid -> transcript`` of ``path``, only ``lang``'s when utt2lang is beside it."""
    from speechfm.cli.tokenizer import read_kaldi_text

    rows = dict(read_kaldi_text(path))
    utt2lang_path = path.parent / "utt2lang"
    if utt2lang_path.is_file():
        utt2lang = dict(read_kaldi_text(utt2lang_path))
        rows = {u: t for u, t in rows.items() if utt2lang.get(u) == lang}
        if not rows:
            raise DataError(f"{path}: no utterance of language {lang!r} in {utt2lang_path}")
    return rows


def _plain_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def _build(args: argparse.Namespace) -> int:
    from speechfm.text.lexicon import LEXICON_FILE, build_lexicon, context_mismatches

    if not args.text and not args.extra_text:
        raise DataError("lexicon build: give --text and/or --extra-text")
    if args.add_context_variants and args.text_ipa is None:
        raise DataError("lexicon build: --add-context-variants needs --text-ipa")
    utts: dict[str, str] = {}
    for path in args.text:
        utts.update(_kaldi_lines(path, args.lang))
    texts = list(utts.values())
    for path in args.extra_text:
        texts += _plain_lines(path)
    opts = {
        "strip_stress": args.strip_stress,
        "strip_length": args.strip_length,
        "strip_tones": args.strip_tones,
    }
    lex = build_lexicon(
        texts,
        args.lang,
        normalize=not args.no_normalize,
        cache_dir=args.cache_dir,
        njobs=args.njobs,
        **opts,
    )
    if not lex:
        raise DataError(f"lexicon build: no words with a pronunciation in the {args.lang} text")
    if args.text_ipa is not None:
        ipa = _kaldi_lines(args.text_ipa, args.lang)
        both = [u for u in utts if u in ipa]
        if not both:
            raise DataError(f"{args.text_ipa}: no utterance id in common with --text")
        cmp = context_mismatches(
            lex, [utts[u] for u in both], [ipa[u] for u in both], normalize=not args.no_normalize
        )
        print(
            f"in-context mismatch ({args.lang}): {cmp.rate:.2%} of {cmp.compared} words "
            f"({cmp.mismatched} differ; {cmp.merged} merged/split in context, "
            f"{cmp.skipped_utterances} utterances unaligned)"
        )
        if args.add_context_variants:
            lex.update(cmp.to_lexicon())
    out = args.out / LEXICON_FILE if args.out.is_dir() else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    lex.save(out)
    print(
        f"lexicon ({args.lang}): {len(lex)} words, {len(lex.phones())} phones, "
        f"{lex.num_pronunciations} pronunciations -> {out}"
    )
    return 0
