"""``speechfm lm``: estimate n-gram LMs (modified Kneser-Ney) and compile G.fst.

    speechfm lm train --text FILE [--text FILE ...] --order 3 --out DIR
                      [--unit word|char] [--kaldi-text] [--exclude FILE ...]
                      [--exclude-kaldi-text] [--min-count N [N ...]]
                      [--words-txt FILE] [--unk SYM]

writes ``DIR/lm.arpa``, ``DIR/words.txt`` and ``DIR/G.fst`` (kaldilm.arpa2fst, ``#0`` on
backoff arcs, ``<s>``/``</s>`` as epsilons). Text files hold one sentence per line, or
``uttid sentence`` with ``--kaldi-text``; blank lines are skipped. ``--exclude`` names
sentences that must never be trained on (dev/test transcripts): any training line equal
to one of them (whitespace-normalised, case-sensitive) is dropped and the count reported.
``--unit char`` trains on characters, ``▁`` standing for the space between words (as the
char tokenizer does). ``--words-txt`` gives an existing symbol table (e.g. the lexicon's):
the LM vocabulary is closed to its words, other training tokens count as ``--unk``.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from pathlib import Path

from speechfm.errors import DataError


def register(subparsers) -> None:
    p = subparsers.add_parser("lm", help="estimate n-gram LMs (ARPA, G.fst)")
    sub = p.add_subparsers(dest="lm_command", required=True, metavar="ACTION")

    t = sub.add_parser("train", help="estimate a modified Kneser-Ney LM from text")
    t.add_argument(
        "--text",
        type=Path,
        action="append",
        required=True,
        help="training text, one sentence per line (repeatable)",
    )
    t.add_argument("--order", type=int, default=3, help="n-gram order N (default 3)")
    t.add_argument("--out", type=Path, required=True, help="output directory")
    t.add_argument(
        "--unit",
        choices=("word", "char"),
        default="word",
        help="tokens: whitespace-separated words or characters (default word)",
    )
    t.add_argument(
        "--kaldi-text", action="store_true", help="--text files are Kaldi text: 'uttid sentence'"
    )
    t.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        help="sentences never to train on, e.g. dev/test transcripts (repeatable)",
    )
    t.add_argument(
        "--exclude-kaldi-text",
        action="store_true",
        help="--exclude files are Kaldi text: 'uttid sentence'",
    )
    t.add_argument(
        "--min-count",
        type=int,
        nargs="+",
        default=None,
        help="prune n-grams of order >= 2 seen fewer times: one value for all "
        "orders or one per order (the first, unigrams, must be 1)",
    )
    t.add_argument(
        "--words-txt",
        type=Path,
        default=None,
        help="existing symbol table for G.fst; closes the vocabulary to its words",
    )
    t.add_argument("--unk", default="<unk>", help="unknown-token symbol (default <unk>)")
    t.set_defaults(func=_train)


def _lines(path: Path, kaldi_text: bool) -> Iterator[str]:
    """Whitespace-normalised sentences of a text file (blank ones skipped)."""
    if kaldi_text:
        from speechfm.cli.tokenizer import read_kaldi_text

        for _, text in read_kaldi_text(path):
            text = " ".join(text.split())
            if text:
                yield text
        return
    try:
        f = path.open(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e
    with f:
        for line in f:
            text = " ".join(line.split())
            if text:
                yield text


def _tokens(text: str, unit: str) -> list[str]:
    if unit == "word":
        return text.split()
    from speechfm.text.char import WORD_TOKEN

    return [WORD_TOKEN if c == " " else c for c in text]


def _train(args: argparse.Namespace) -> int:
    from speechfm.lm import (
        BOS,
        DISAMBIG,
        EOS,
        EPS,
        compile_arpa,
        estimate_kneser_ney,
        make_symbol_table,
        read_symbol_table,
        write_symbol_table,
    )

    if args.order < 1:
        raise DataError(f"--order must be >= 1, got {args.order}")
    excluded: set[str] = set()
    for path in args.exclude:
        excluded.update(_lines(path, args.exclude_kaldi_text))

    sentences: list[list[str]] = []
    dropped = 0
    for path in args.text:
        for text in _lines(path, args.kaldi_text):
            if text in excluded:
                dropped += 1
            else:
                sentences.append(_tokens(text, args.unit))
    src = ", ".join(str(p) for p in args.text)
    if not sentences:
        raise DataError(f"{src}: no sentences to train on (after --exclude)")

    vocab = table = None
    if args.words_txt is not None:
        table = read_symbol_table(args.words_txt)
        vocab = [
            w
            for w in table
            if w not in (EPS, BOS, EOS) and not (w.startswith("#") and w[1:].isdigit())
        ]
        if args.unk not in table:
            raise DataError(f"{args.words_txt}: has no {args.unk} (set --unk)")

    min_count = (
        1
        if not args.min_count
        else (args.min_count[0] if len(args.min_count) == 1 else args.min_count)
    )
    try:
        lm = estimate_kneser_ney(
            sentences, args.order, min_count=min_count, vocab=vocab, unk=args.unk
        )
    except ValueError as e:  # bad --min-count and the like, reported cleanly
        raise DataError(str(e)) from e

    args.out.mkdir(parents=True, exist_ok=True)
    arpa = args.out / "lm.arpa"
    lm.write_arpa(arpa)
    words_txt = args.out / "words.txt"
    if table is not None:
        if args.words_txt.resolve() != words_txt.resolve():
            shutil.copyfile(args.words_txt, words_txt)
    else:
        write_symbol_table(
            make_symbol_table(lm.vocab, unk=args.unk, disambig=(DISAMBIG,)), words_txt
        )
    compile_arpa(arpa, words_txt, args.out / "G.fst", disambig_symbol=DISAMBIG)

    n_tokens = sum(len(s) for s in sentences)
    print(
        f"trained {args.order}-gram {args.unit} LM on {len(sentences)} sentences, "
        f"{n_tokens} tokens ({src}); dropped {dropped} excluded lines"
    )
    for k, n in enumerate(lm.num_ngrams, 1):
        d = lm.discounts[k - 1] if lm.discounts else None
        extra = ""
        if d is not None:
            extra = f"  D1={d.d1:.4f} D2={d.d2:.4f} D3+={d.d3:.4f}"
            if d.fallback:
                extra += " (fallback: count-of-counts give no valid discounts)"
        print(f"ngram {k}={n}{extra}")
    print(f"wrote {arpa}, {words_txt}, {args.out / 'G.fst'}")
    return 0
