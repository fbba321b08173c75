"""``speechfm features``: precompute fbank features and global CMVN statistics.

    speechfm features compute --cuts IN.jsonl.gz --out-cuts OUT.jsonl.gz --storage DIR [--nj N]
    speechfm features cmvn --cuts CUTS.jsonl.gz --out cmvn.json [--max-cuts N]

``compute`` runs kaldi-native-fbank (80-dim, 25 ms / 10 ms, see
:class:`speechfm.features.fbank.FbankConfig`) over every cut, stores the matrices with
lhotse's LilcomChunkyWriter under DIR and writes the cuts with their feature manifests to
OUT. ``cmvn`` accumulates per-dimension mean and variance over all frames (precomputed
features when the cuts have them, otherwise fbank computed on the fly).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from speechfm.errors import DataError, SpeechfmError

log = logging.getLogger(__name__)

_STORAGE_TYPES = ("lilcom_chunky", "numpy")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "features", help="compute fbank features and CMVN statistics for lhotse cuts"
    )
    sub = parser.add_subparsers(dest="features_command", required=True, metavar="ACTION")

    p = sub.add_parser(
        "compute",
        help="compute kaldi-native-fbank features for a CutSet and store them",
        description="Compute 80-dim log-mel fbank (kaldi-native-fbank) for every cut, store "
        "the matrices under --storage and write the cuts, now with features, to --out-cuts.",
    )
    p.add_argument("--cuts", required=True, type=Path, help="input lhotse CutSet (.jsonl.gz)")
    p.add_argument("--out-cuts", required=True, type=Path, help="output CutSet with features")
    p.add_argument("--storage", required=True, type=Path, help="folder for the feature matrices")
    p.add_argument("--nj", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--num-mel-bins", type=int, default=80, help="mel bins (default 80)")
    p.add_argument(
        "--storage-type",
        choices=_STORAGE_TYPES,
        default="lilcom_chunky",
        help="lilcom_chunky (compressed, default) or numpy (one .npy file per cut)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_compute)

    p = sub.add_parser(
        "cmvn",
        help="global mean/variance statistics of a CutSet's features, as JSON",
        description="Accumulate per-dimension mean and variance over every frame of the cuts "
        "(stored features when present, else fbank on the fly) and save them as JSON.",
    )
    p.add_argument("--cuts", required=True, type=Path, help="lhotse CutSet (.jsonl.gz)")
    p.add_argument("--out", required=True, type=Path, help="output JSON file")
    p.add_argument("--max-cuts", type=int, default=None, help="only use the first N cuts")
    p.add_argument("--num-mel-bins", type=int, default=80, help="mel bins for on-the-fly fbank")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_cmvn)


def _load_cuts(path: Path):
    from lhotse import CutSet

    if not path.is_file():
        raise DataError(f"{path}: cuts manifest not found")
    try:
        return CutSet.from_file(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read as a lhotse CutSet: {type(e).__name__}: {e}") from e


def _writer_class(storage_type: str):
    if storage_type == "numpy":
        from lhotse import NumpyFilesWriter

        return NumpyFilesWriter
    try:
        import lilcom  # noqa: F401  (LilcomChunkyWriter needs it at write time)
    except ImportError as e:
        raise SpeechfmError(
            "--storage-type lilcom_chunky needs the 'lilcom' package (pip install lilcom); "
            "or use --storage-type numpy"
        ) from e
    from lhotse import LilcomChunkyWriter

    return LilcomChunkyWriter


def _check_rates(cuts, frame_shift: float, path: Path) -> None:
    """lhotse feature manifests need an integral hop (frame_shift * rate) at the cut's rate."""
    for cut in cuts:
        hop = round(frame_shift * cut.sampling_rate, 9)
        if hop != int(hop):
            raise DataError(
                f"{path}: cut {cut.id} is at {cut.sampling_rate} Hz, where a "
                f"{frame_shift * 1000:g} ms shift is {hop} samples; lhotse feature manifests "
                "need a whole number of samples. Resample the audio first (speechfm's corpus "
                "preparation writes 16 kHz files)."
            )


def run_compute(args: argparse.Namespace) -> int:
    from speechfm.features.fbank import FbankConfig
    from speechfm.features.knf_extractor import KnfFbankExtractor

    if args.nj < 1:
        raise SpeechfmError(f"--nj must be >= 1, got {args.nj}")
    config = FbankConfig(num_mel_bins=args.num_mel_bins)
    try:
        config.validate()
    except ValueError as e:
        raise SpeechfmError(str(e)) from e
    writer = _writer_class(args.storage_type)
    cuts = _load_cuts(args.cuts)
    if len(cuts) == 0:
        raise DataError(f"{args.cuts}: the CutSet is empty")
    _check_rates(cuts, config.frame_shift, args.cuts)
    args.storage.mkdir(parents=True, exist_ok=True)
    if args.nj > 1:
        # knf does the work in the worker processes; torch's intra-op threads in each of
        # them would only oversubscribe the cores (lhotse warns about exactly this).
        import torch

        torch.set_num_threads(1)
    try:
        with_feats = cuts.compute_and_store_features(
            extractor=KnfFbankExtractor(config),
            storage_path=args.storage,
            num_jobs=args.nj,
            storage_type=writer,
            progress_bar=not args.no_progress,
        )
    except Exception as e:
        # lhotse appends the failing cut's manifest to the message, which names it.
        raise DataError(f"{args.cuts}: feature extraction failed: {type(e).__name__}: {e}") from e
    args.out_cuts.parent.mkdir(parents=True, exist_ok=True)
    with_feats.to_file(args.out_cuts)
    num_frames = sum(c.num_frames for c in with_feats)
    print(
        f"features: {len(with_feats)} cuts, {num_frames} frames x {config.feature_dim} dims "
        f"-> {args.out_cuts} (matrices in {args.storage})"
    )
    return 0


def run_cmvn(args: argparse.Namespace) -> int:
    from speechfm.features.cmvn import GlobalCMVN
    from speechfm.features.fbank import FbankConfig

    if args.max_cuts is not None and args.max_cuts < 1:
        raise SpeechfmError(f"--max-cuts must be >= 1, got {args.max_cuts}")
    cuts = _load_cuts(args.cuts)
    cmvn = GlobalCMVN.from_cuts(
        cuts,
        fbank_config=FbankConfig(num_mel_bins=args.num_mel_bins),
        max_cuts=args.max_cuts,
        progress=not args.no_progress,
    )
    cmvn.save(args.out)
    print(
        f"cmvn: {cmvn.num_utterances} cuts, {cmvn.num_frames} frames, dim {cmvn.dim} -> {args.out}"
    )
    return 0
