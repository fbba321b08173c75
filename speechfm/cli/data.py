"""``speechfm data``: check, import and export speech data sets.

* ``speechfm data check SRC [--out CLEAN] [--tokenizer DIR] [--min-duration S]
  [--max-duration S]`` decodes every item of SRC (a Kaldi dir, lhotse manifest, TSV or
  path-JSONL) and prints every bad one by utterance id with its reason, then counts per
  reason. With ``--out`` it writes a cleaned copy (a Kaldi dir for Kaldi input, else a
  lhotse manifest in CLEAN/) and CLEAN/bad_items.tsv. Exit status 1 if anything was
  bad, 0 if all is well (2 for unusable arguments or an unknown format).
* ``speechfm data import SRC --out cuts.jsonl.gz`` converts any supported SRC to a
  lhotse manifest, refusing it if any entry is bad.
* ``speechfm data export-kaldi CUTS --out DIR`` writes a manifest as a Kaldi data dir.
* ``speechfm data few-shot --cuts IN --out OUT --k K [--seed S]`` keeps K cuts of every
  label (supervision text) of a classification manifest, the same ones for the same
  seed, and prints the clips per label.
* ``speechfm data resample --cuts IN --out OUT --temperature T [--seed S]`` repeats cuts
  of the smaller languages so that language shares follow temperature sampling
  (``n ** (1 / T)``; T = inf: balanced), keeping every cut, and prints the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speechfm.errors import DataError

_MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="check, import and export data sets (Kaldi dirs, lhotse manifests, TSV/JSONL)",
        description="Check, import and export speech data sets.",
    )
    sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    c = sub.add_parser(
        "check",
        help="report every bad item (by utterance id) and optionally write a cleaned copy",
        description="Decode every item and report each bad one by utterance id and reason. "
        "Exit status 1 if anything is bad, 0 otherwise.",
    )
    c.add_argument(
        "src", metavar="SRC", help="Kaldi data dir, lhotse manifest, .tsv or path-.jsonl"
    )
    c.add_argument(
        "--out",
        metavar="CLEAN",
        help="write the good items here (a Kaldi dir for Kaldi input, else CLEAN/<manifest>) "
        "and the report to CLEAN/bad_items.tsv",
    )
    c.add_argument(
        "--report", metavar="FILE", help="report file (default CLEAN/bad_items.tsv with --out)"
    )
    c.add_argument(
        "--tokenizer", metavar="DIR", help="report transcripts this tokenizer cannot encode"
    )
    c.add_argument(
        "--text-field",
        default=None,
        help="transcript to check: 'text' or a supervision.custom key such as 'ipa' "
        "(default: 'ipa' for an IPA tokenizer, else 'text')",
    )
    c.add_argument(
        "--min-duration",
        type=float,
        default=0.0,
        metavar="S",
        help="shortest allowed audio, seconds (default 0)",
    )
    c.add_argument(
        "--max-duration",
        type=float,
        default=3600.0,
        metavar="S",
        help="longest allowed audio, seconds (default 3600)",
    )
    c.add_argument(
        "--no-text", action="store_true", help="audio-only set: do not require transcripts"
    )
    c.add_argument("--nj", type=int, default=2, help="threads decoding audio (default 2)")
    c.set_defaults(func=_check)

    i = sub.add_parser(
        "import",
        help="convert a Kaldi dir / TSV / JSONL / lhotse manifest to a lhotse CutSet manifest",
        description="Convert SRC to a lhotse CutSet manifest; refuses SRC if any entry is bad.",
    )
    i.add_argument(
        "src", metavar="SRC", help="Kaldi data dir, lhotse manifest, .tsv or path-.jsonl"
    )
    i.add_argument(
        "--out", required=True, metavar="CUTS", help="output manifest, e.g. cuts_train.jsonl.gz"
    )
    i.add_argument("--nj", type=int, default=4, help="threads reading audio headers (default 4)")
    i.set_defaults(func=_import)

    e = sub.add_parser(
        "export-kaldi",
        help="write a manifest as a Kaldi data dir (wav.scp, text, utt2spk, spk2utt, ...)",
        description="Write a CutSet manifest (or any supported SRC) as a Kaldi data dir.",
    )
    e.add_argument(
        "cuts", metavar="CUTS", help="lhotse manifest (or any format `data check` accepts)"
    )
    e.add_argument("--out", required=True, metavar="DIR", help="Kaldi data dir to write")
    e.add_argument(
        "--prefix-speaker",
        action="store_true",
        help="prefix utterance ids with '<speaker>-' so sorted utterances group by speaker",
    )
    e.set_defaults(func=_export_kaldi)

    f = sub.add_parser(
        "few-shot",
        help="keep K cuts per label (supervision text) of a classification manifest",
        description="Write K cuts of every label (supervision text) of IN to OUT, drawn "
        "deterministically from --seed; fails if a label has fewer than K cuts.",
    )
    f.add_argument("--cuts", required=True, metavar="IN", help="lhotse manifest, e.g. cuts_train.jsonl.gz")
    f.add_argument("--out", required=True, metavar="OUT", help="output manifest, e.g. cuts_train_5shot.jsonl.gz")
    f.add_argument("--k", type=int, required=True, metavar="K", help="cuts per label")
    f.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    f.set_defaults(func=_few_shot)

    r = sub.add_parser(
        "resample",
        help="temperature / balanced language sampling of a multilingual manifest",
        description="Write IN with cuts of the smaller languages repeated (ids <id>_r<k>) so "
        "that each language's share of utterances is proportional to n ** (1 / T): T 1 keeps "
        "IN as it is, larger T flattens the shares, inf balances them. Every cut is kept; "
        "the copies are drawn deterministically from --seed.",
    )
    r.add_argument("--cuts", required=True, metavar="IN", help="lhotse manifest")
    r.add_argument("--out", required=True, metavar="OUT", help="output manifest (.jsonl.gz)")
    r.add_argument("--temperature", type=float, required=True, metavar="T",
                   help="sampling temperature (> 0; inf = language-balanced)")
    r.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    r.add_argument("--max-copies", type=int, default=None, metavar="N",
                   help="at most N copies of one cut")
    r.set_defaults(func=_resample)


def _manifest_name(src: Path, fmt: str) -> str:
    """File name of the cleaned copy of a non-Kaldi SRC."""
    if fmt == "lhotse":
        return src.name
    stem = src.name
    for suffix in (".tsv", ".jsonl.gz", ".jsonl"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"cuts_{stem}.jsonl.gz"


def _tokenizer_kind(directory: Path) -> str | None:
    try:
        return json.loads((directory / "tokenizer.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError):
        return None  # load_tokenizer below gives the proper error


def _check(args: argparse.Namespace) -> int:
    from speechfm.data.check import check_cuts
    from speechfm.data.manifest import detect_format, read_manifest

    src = Path(args.src)
    fmt = detect_format(src)
    out = Path(args.out) if args.out else None
    if out is not None:
        target = out if fmt == "kaldi" else out / _manifest_name(src, fmt)
        if target.resolve() == src.resolve():
            raise DataError(f"--out {out} would overwrite the input {src}")

    tokenizer = None
    text_field = args.text_field or "text"
    if args.tokenizer:
        from speechfm.text import load_tokenizer

        tok_dir = Path(args.tokenizer)
        tokenizer = load_tokenizer(tok_dir)
        if args.text_field is None and _tokenizer_kind(tok_dir) == "ipa":
            text_field = "ipa"

    # Import only rejects absurdly long files; check_cuts applies --max-duration per utterance.
    cuts, import_problems = read_manifest(src, num_jobs=max(1, args.nj))
    report = check_cuts(
        cuts,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        tokenizer=tokenizer,
        text_field=text_field,
        require_text=not args.no_text,
        known_problems=import_problems,
        num_workers=max(1, args.nj),
        progress=True,
    )

    for p in report.problems:
        print(f"BAD\t{p.id}\t{p.reason}\t{' '.join(p.detail.split())}")
    print(f"{src}: {report.summary()}")

    report_path = Path(args.report) if args.report else (out / "bad_items.tsv" if out else None)
    if out is not None:
        good = report.select_good(cuts)
        if fmt == "kaldi":
            from speechfm.data.kaldi import export_kaldi_dir

            export_kaldi_dir(good, out)
            print(f"wrote {len(good)} good utterances as a Kaldi dir to {out}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            good.to_file(target)
            print(f"wrote {len(good)} good cuts to {target}")
    if report_path is not None:
        report.write_tsv(report_path)
        print(f"wrote the report of {len(report.problems)} problem(s) to {report_path}")
    return 0 if report.ok else 1


def _import(args: argparse.Namespace) -> int:
    from speechfm.data.manifest import load_manifest

    out = Path(args.out)
    if not out.name.endswith(_MANIFEST_SUFFIXES):
        raise DataError(
            f"--out {out}: a lhotse manifest name must end in .jsonl.gz, .jsonl or .json"
        )
    cuts = load_manifest(args.src, num_jobs=max(1, args.nj))
    out.parent.mkdir(parents=True, exist_ok=True)
    cuts.to_file(out)
    print(f"wrote {len(cuts)} cuts to {out}", file=sys.stderr)
    return 0


def _export_kaldi(args: argparse.Namespace) -> int:
    from speechfm.data.kaldi import export_kaldi_dir
    from speechfm.data.manifest import load_manifest

    cuts = load_manifest(args.cuts)
    out = export_kaldi_dir(cuts, args.out, prefix_speaker=args.prefix_speaker)
    print(f"wrote {len(cuts)} utterances as a Kaldi dir to {out}", file=sys.stderr)
    return 0


def _few_shot(args: argparse.Namespace) -> int:
    from speechfm.data.corpora.mini_cv_lang import write_cuts_jsonl_gz
    from speechfm.data.manifest import load_manifest
    from speechfm.data.subsets import few_shot, split_summary

    out = Path(args.out)
    if not out.name.endswith(_MANIFEST_SUFFIXES):
        raise DataError(
            f"--out {out}: a lhotse manifest name must end in .jsonl.gz, .jsonl or .json"
        )
    if out.resolve() == Path(args.cuts).resolve():
        raise DataError(f"--out {out} would overwrite the input {args.cuts}")
    subset = few_shot(load_manifest(args.cuts), args.k, args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.endswith(".jsonl.gz"):
        write_cuts_jsonl_gz([c.to_dict() for c in subset], out)  # same subset -> same bytes
    else:
        subset.to_file(out)
    stats = split_summary({"few_shot": subset})["few_shot"]
    print(json.dumps({"in": args.cuts, "out": str(out), "k": args.k, "seed": args.seed, **stats}))
    return 0


def _resample(args: argparse.Namespace) -> int:
    from speechfm.data.manifest import load_manifest
    from speechfm.data.subsets import language_counts, language_resample

    out = Path(args.out)
    if not out.name.endswith(_MANIFEST_SUFFIXES):
        raise DataError(
            f"--out {out}: a lhotse manifest name must end in .jsonl.gz, .jsonl or .json"
        )
    if out.resolve() == Path(args.cuts).resolve():
        raise DataError(f"--out {out} would overwrite the input {args.cuts}")
    cuts = load_manifest(args.cuts).to_eager()
    before = language_counts(cuts)
    resampled = language_resample(cuts, args.temperature, args.seed, max_copies=args.max_copies)
    out.parent.mkdir(parents=True, exist_ok=True)
    resampled.to_file(out)
    print(json.dumps({"in": args.cuts, "out": str(out), "temperature": args.temperature,
                      "seed": args.seed, "before": before,
                      "after": language_counts(resampled)}))
    return 0
