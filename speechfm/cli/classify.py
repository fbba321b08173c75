"""``speechfm classify``: score an audio classifier on a manifest, or label audio files.

    speechfm classify MODEL_DIR --cuts CUTS --out-dir DIR [--label-field text|speaker]
    speechfm classify MODEL_DIR FILE [FILE ...] [--top-k 5]

With ``--cuts`` every cut's reference label (its supervision text, or speaker) is compared
with the model's top class: DIR/predictions.tsv, DIR/confusion.tsv and DIR/results.json
(accuracy, macro accuracy, per-class accuracy), and the accuracy is printed.  With audio
files, each file's top-k labels and scores are printed.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "classify",
        help="score an audio classifier on a manifest, or label audio files",
        description="Classify every cut of a manifest (accuracy, confusion matrix, "
        "per-cut predictions) or print the top labels of audio files.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="classifier model directory")
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files to label")
    p.add_argument("--cuts", default=None, help="lhotse manifest to score")
    p.add_argument("--out-dir", default=None, help="output folder (with --cuts)")
    p.add_argument("--label-field", default="text", choices=("text", "speaker"),
                   help="the reference label of a cut")
    p.add_argument("--top-k", type=int, default=5, help="labels printed per file")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from speechfm.errors import SpeechfmError

    if bool(args.cuts) == bool(args.files):
        raise SpeechfmError("give either --cuts (with --out-dir) or audio files")
    if args.files:
        import speechfm

        model = speechfm.load(args.model_dir, device=args.device)
        for path, top in zip(args.files, model.classify(list(args.files), top_k=args.top_k),
                             strict=True):
            print(path + "\t" + "\t".join(f"{label} {score:.4f}" for label, score in top))
        return 0
    if not args.out_dir:
        raise SpeechfmError("--cuts needs --out-dir")
    import torch

    from speechfm.decode.classification import classify_manifest
    from speechfm.models.io import load_model_dir, load_part
    from speechfm.train.runner import load_cuts

    loaded = load_model_dir(args.model_dir, device=args.device)
    labels = load_part(args.model_dir, "labels", loaded.meta)
    if not labels or not hasattr(loaded.module, "classify"):
        raise SpeechfmError(f"{args.model_dir}: not a classifier (no labels.json / classify)")
    cuts = load_cuts(args.cuts).to_eager()
    with torch.no_grad():
        results = classify_manifest(loaded.module, cuts, labels, args.out_dir,
                                    label_field=args.label_field, device=args.device,
                                    max_duration=args.max_duration)
    print(json.dumps({k: v for k, v in results.items() if k != "per_class_accuracy"}))
    return 0
