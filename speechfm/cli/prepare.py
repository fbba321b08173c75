"""``speechfm prepare CORPUS --out DIR``: build a corpus's Kaldi dirs and lhotse manifests.

Corpora: ``mini_cv_lang`` (synthetic, 12 languages, espeak-ng), ``fsdd`` and
``speech_commands`` (real recordings from ../shared/data or ``--root``). Each writes
``DIR/{train,dev,test}/`` and ``DIR/cuts_{train,dev,test}.jsonl.gz``.

Classification corpora (supervision text = class label; the report adds clips per label):
``speech_commands12`` (twelve-class keyword spotting, speaker-disjoint) and
``fsdd_classify --task digit|speaker`` (digits with held-out speakers, or speaker
identification with held-out takes).
"""

from __future__ import annotations

import argparse
import json
import time


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="prepare a corpus (Kaldi dirs + lhotse manifests)")
    sub = p.add_subparsers(dest="corpus", required=True, metavar="CORPUS")

    m = sub.add_parser("mini_cv_lang", help="synthesise the 12-language espeak-ng corpus")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--text-dir", default=None, help="per-language text files (default ../shared/data/udhr2)")
    m.add_argument("--langs", default=None, help="comma-separated ISO 639-1 codes (default: 10 seen + pl,id)")
    m.add_argument("--utts-per-lang", type=int, default=None, help="utterances per language, all splits (default 400)")
    m.add_argument("--dev-frac", type=float, default=0.1, help="share of dev utterances")
    m.add_argument("--test-frac", type=float, default=0.1, help="share of test utterances")
    m.add_argument("--wordfreq-frac", type=float, default=0.25, help="share of wordfreq pseudo-sentences where available")
    m.add_argument("--snr-db", default="15,40", help="additive-noise SNR range 'LOW,HIGH' in dB, or 'none'")
    m.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical corpus)")
    m.add_argument("--nj", type=int, default=2, help="synthesis worker processes")
    m.set_defaults(func=_run_mini_cv_lang)

    for name, helptext in (("fsdd", "Free Spoken Digit Dataset (speaker-disjoint)"),
                           ("speech_commands", "Speech Commands subset (speaker-disjoint)")):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("--out", required=True, help="output folder")
        r.add_argument("--root", default=None, help="corpus folder (default under ../shared/data)")
        r.add_argument("--sample-rate", type=int, default=16000,
                       help="resample into OUT/wav when the files differ (0 keeps them)")
        r.add_argument("--no-ipa", action="store_true", help="skip IPA transcripts")
        if name == "fsdd":
            r.add_argument("--dev-speakers", default="nicolas", help="comma-separated held-out dev speakers")
            r.add_argument("--test-speakers", default="theo,yweweler", help="comma-separated held-out test speakers")
            r.set_defaults(func=_run_fsdd)
        else:
            r.add_argument("--dev-percent", type=float, default=10.0, help="dev share of speakers (hash-based)")
            r.add_argument("--test-percent", type=float, default=10.0, help="test share of speakers (hash-based)")
            r.set_defaults(func=_run_speech_commands)

    k = sub.add_parser("speech_commands12",
                       help="twelve-class Speech Commands v0.02 keyword classification (speaker-disjoint)")
    k.add_argument("--out", required=True, help="output folder")
    k.add_argument("--root", default=None,
                   help="folder with labels.tsv (default ../shared/data/speech_commands_v2_test12)")
    k.add_argument("--dev-percent", type=float, default=10.0, help="dev share of speakers (hash-based)")
    k.add_argument("--test-percent", type=float, default=20.0, help="test share of speakers (hash-based)")
    k.add_argument("--sample-rate", type=int, default=16000,
                   help="resample into OUT/wav when the files differ (0 keeps them)")
    k.set_defaults(func=_run_speech_commands12)

    f = sub.add_parser("fsdd_classify", help="FSDD classification: digits (held-out speakers) or speakers (held-out takes)")
    f.add_argument("--task", choices=("digit", "speaker"), default="digit",
                   help="digit: label = digit word, speaker-disjoint; speaker: label = speaker, split by take")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--root", default=None, help="FSDD folder (default ../shared/data/fsdd)")
    f.add_argument("--dev-speakers", default="nicolas", help="digit task: comma-separated held-out dev speakers")
    f.add_argument("--test-speakers", default="theo,yweweler", help="digit task: comma-separated held-out test speakers")
    f.add_argument("--dev-takes", default="40-44", help="speaker task: dev take numbers, e.g. '40-44' or '40,41'")
    f.add_argument("--test-takes", default="45-49", help="speaker task: test take numbers, e.g. '45-49'")
    f.add_argument("--sample-rate", type=int, default=16000,
                   help="resample into OUT/wav when the files differ (0 keeps them)")
    f.set_defaults(func=_run_fsdd_classify)


def _csv(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def _takes(s: str, option: str) -> list[int]:
    """``"40-44,47"`` -> ``[40, 41, 42, 43, 44, 47]``."""
    from speechfm.errors import DataError

    takes: list[int] = []
    for part in _csv(s):
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                takes.extend(range(lo, hi + 1))
            else:
                takes.append(int(part))
        except ValueError:
            raise DataError(f"{option}: expected take numbers like '40-44' or '40,41', got {s!r}") from None
    return takes


def _report_labels(corpus: str, out: str, cuts: dict, t0: float, **extra) -> None:
    from speechfm.data.subsets import split_summary

    print(json.dumps({"corpus": corpus, **extra, "out": out, "seconds": round(time.time() - t0, 1),
                      "splits": split_summary(cuts)}))


def _report(corpus: str, out: str, cuts: dict, t0: float) -> None:
    stats = {}
    for split, cs in cuts.items():
        dur = sum(c.duration for c in cs)
        stats[split] = {"utterances": len(cs), "hours": round(dur / 3600, 4),
                        "speakers": len({s.speaker for c in cs for s in c.supervisions})}
    print(json.dumps({"corpus": corpus, "out": out, "seconds": round(time.time() - t0, 1), "splits": stats}))


def _run_mini_cv_lang(args: argparse.Namespace) -> int:
    from speechfm.data.corpora.mini_cv_lang import DEFAULT_UTTS_PER_LANG, prepare_mini_cv_lang
    from speechfm.data.corpora.text_sources import SEEN_LANGS, UNSEEN_LANGS
    from speechfm.errors import DataError

    if args.snr_db.lower() == "none":
        snr = None
    else:
        try:
            lo, hi = (float(x) for x in args.snr_db.split(","))
        except ValueError:
            raise DataError(f"--snr-db must be 'LOW,HIGH' or 'none', got {args.snr_db!r}") from None
        snr = (lo, hi)
    t0 = time.time()
    cuts = prepare_mini_cv_lang(
        args.out,
        text_dir=args.text_dir,
        langs=_csv(args.langs) or list(SEEN_LANGS + UNSEEN_LANGS),
        utts_per_lang=args.utts_per_lang or DEFAULT_UTTS_PER_LANG,
        dev_frac=args.dev_frac,
        test_frac=args.test_frac,
        wordfreq_frac=args.wordfreq_frac,
        seed=args.seed,
        num_workers=args.nj,
        noise_snr_db=snr,
        progress=True,
    )
    _report("mini_cv_lang", args.out, cuts, t0)
    return 0


def _run_fsdd(args: argparse.Namespace) -> int:
    from speechfm.data.corpora.fsdd import prepare_fsdd

    t0 = time.time()
    cuts = prepare_fsdd(
        args.root, args.out, dev_speakers=_csv(args.dev_speakers), test_speakers=_csv(args.test_speakers),
        sampling_rate=args.sample_rate or None, with_ipa=not args.no_ipa,
    )
    _report("fsdd", args.out, cuts, t0)
    return 0


def _run_speech_commands(args: argparse.Namespace) -> int:
    from speechfm.data.corpora.speech_commands import prepare_speech_commands

    t0 = time.time()
    cuts = prepare_speech_commands(
        args.root, args.out, dev_percent=args.dev_percent, test_percent=args.test_percent,
        sampling_rate=args.sample_rate or None, with_ipa=not args.no_ipa,
    )
    _report("speech_commands", args.out, cuts, t0)
    return 0


def _run_speech_commands12(args: argparse.Namespace) -> int:
    from speechfm.data.corpora.speech_commands import prepare_speech_commands12

    t0 = time.time()
    cuts = prepare_speech_commands12(
        args.root, args.out, dev_percent=args.dev_percent, test_percent=args.test_percent,
        sampling_rate=args.sample_rate or None,
    )
    _report_labels("speech_commands12", args.out, cuts, t0)
    return 0


def _run_fsdd_classify(args: argparse.Namespace) -> int:
    from speechfm.data.corpora.fsdd import prepare_fsdd_classification

    t0 = time.time()
    cuts = prepare_fsdd_classification(
        args.root, args.out, task=args.task,
        dev_speakers=_csv(args.dev_speakers), test_speakers=_csv(args.test_speakers),
        dev_takes=_takes(args.dev_takes, "--dev-takes"), test_takes=_takes(args.test_takes, "--test-takes"),
        sampling_rate=args.sample_rate or None,
    )
    _report_labels("fsdd_classify", args.out, cuts, t0, task=args.task)
    return 0
