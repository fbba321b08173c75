"""ASR dataset: a lhotse CutSet batch in, padded fbank features and transcripts out.

Used with a batch sampler that yields CutSets (:func:`speechfm.data.sampler.make_sampler`)
and ``DataLoader(dataset, sampler=sampler, batch_size=None)``. For each cut it takes the
precomputed lhotse features when the cut has them, otherwise it loads the audio with
``cut.load_audio()`` and computes kaldi-native-fbank features on the fly.

A bad item (missing, unreadable or empty audio or feature file, audio shorter than its
manifest says, NaN/Inf samples or features, too short for a single frame) never fails the
batch: it is logged with its cut id, counted in ``dataset.skipped`` and listed in the batch's
``"skipped_cut_ids"`` (the counter lives in each DataLoader worker's copy of the dataset; the
batch key is what reaches the training loop). Anything else (a TypeError or AttributeError
from a bug, a missing optional module, a feature dimension that does not match the config)
is not the item's fault and propagates.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from speechfm.errors import AudioError, DataError

log = logging.getLogger(__name__)

CutTransform = Callable[["object"], "object"]  # CutSet -> CutSet
InputTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, x_lens) -> x


@functools.cache
def _reader_faults() -> tuple[type[BaseException], ...]:
    """Exception types that lhotse's audio and feature readers raise for a bad file.

    Measured with lhotse 1.33, soundfile 0.14, numpy 2.4 and lilcom 1.8:

    - ``cut.load_audio()``: lhotse wraps every backend failure (missing, directory, zero-byte,
      undecodable or header-only file, fewer samples than the recording declares) in
      ``AudioLoadingError``; ``DurationMismatchError`` for a cut past the end of its audio or
      channels of different lengths. Neither derives from a builtin error but ``Exception``.
    - ``cut.load_features()``: ``FileNotFoundError``/``OSError`` for a missing file or
      container, ``ValueError`` from numpy (truncated ``.npy``, pickled data) and lilcom
      (corrupt or truncated data), ``EOFError`` from numpy for a zero-byte ``.npy``.
    - soundfile's own ``SoundFileError`` (``LibsndfileError``) should a reader let it through.

    Imported lazily: importing this module must not import lhotse.
    """
    import soundfile
    from lhotse.audio import AudioLoadingError, DurationMismatchError

    return (
        AudioLoadingError,
        DurationMismatchError,
        soundfile.SoundFileError,
        OSError,
        EOFError,
        ValueError,
    )


def _supervision_fields(cut) -> tuple[str, str | None, str | None, str | None]:
    """(text, ipa, language, speaker) of a cut; several supervisions are joined in time order."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    if not sups:
        return "", None, None, None
    texts = [s.text for s in sups if s.text]
    ipas = [(s.custom or {}).get("ipa") for s in sups]
    ipa = " | ".join(i for i in ipas if i) if any(ipas) else None
    return " ".join(texts), ipa, sups[0].language, sups[0].speaker


class AsrDataset(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is a CutSet (one mini-batch).

    Args:
        fbank_config: :class:`speechfm.features.fbank.FbankConfig` for on-the-fly features
            (default ``FbankConfig()``); precomputed features must have its dimension.
        cut_transforms: callables CutSet -> CutSet applied first, in order (e.g.
            :class:`speechfm.data.augment.SpeedPerturb`, :class:`~speechfm.data.augment.AddNoise`);
            cuts they change lose their precomputed features and are computed on the fly.
        input_transforms: callables (features (N, T, C), x_lens (N,)) -> features applied to
            the padded batch in order (e.g. :class:`speechfm.features.cmvn.GlobalCMVN`, then
            :class:`speechfm.features.specaug.SpecAugment`).
        use_precomputed: use cuts' stored features when present (False: always recompute).

    ``dataset[cuts]`` returns a dict:

    - ``"features"``: float32 (N, T, C), zero-padded;
    - ``"x_lens"``: int64 (N,) frames per utterance;
    - ``"texts"``: list of N transcripts ("" for cuts without supervision);
    - ``"ipa"``: list of N IPA transcripts or None (only when some cut has one);
    - ``"langs"``, ``"speakers"``: lists of N language codes / speaker ids (or None);
    - ``"cut_ids"``: list of N cut ids, in the order of the rows;
    - ``"skipped_cut_ids"``: ids of the cuts of this batch that were skipped.

    N may be 0 when every cut of the batch was bad.
    """

    def __init__(
        self,
        *,
        fbank_config=None,
        cut_transforms: Sequence[CutTransform] = (),
        input_transforms: Sequence[InputTransform] = (),
        use_precomputed: bool = True,
    ) -> None:
        from speechfm.features.fbank import FbankConfig

        self.fbank_config = fbank_config or FbankConfig()
        self.fbank_config.validate()
        self.cut_transforms = list(cut_transforms)
        self.input_transforms = list(input_transforms)
        self.use_precomputed = use_precomputed
        self.skipped = 0

    def _load_features(self, cut) -> np.ndarray:
        from speechfm.features.fbank import compute_fbank

        if self.use_precomputed and cut.has_features:
            try:
                feats = cut.load_features()
            except DataError:
                raise
            except _reader_faults() as e:
                raise DataError(f"cannot read features: {type(e).__name__}: {e}") from e
            return np.asarray(feats, dtype=np.float32)
        try:
            audio = cut.load_audio()
        except DataError:  # e.g. AudioError from an AdditiveNoise transform
            raise
        except _reader_faults() as e:
            raise AudioError(f"cannot load audio: {type(e).__name__}: {e}") from e
        if audio is None:
            raise AudioError("cut has neither features nor a recording")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size == 0:
            raise AudioError("empty audio")
        if not np.isfinite(audio).all():
            raise AudioError("audio has NaN or Inf samples")
        return compute_fbank(audio, cut.sampling_rate, self.fbank_config)

    def __getitem__(self, cuts) -> dict:
        for transform in self.cut_transforms:
            cuts = transform(cuts)
        dim = self.fbank_config.feature_dim
        feats, kept, skipped = [], [], []
        for cut in cuts:
            try:
                f = self._load_features(cut)
                if f.ndim != 2 or f.shape[0] == 0:
                    raise AudioError(f"no feature frames (shape {f.shape}); audio too short?")
                if not np.isfinite(f).all():
                    raise DataError("features have NaN or Inf values")
            except DataError as e:  # a bad item, not a crash; _load_features turns reader
                # failures into DataError, and programming errors propagate
                self.skipped += 1
                skipped.append(cut.id)
                log.warning("skipping cut %s: %s: %s", cut.id, type(e).__name__, e)
                continue
            if f.shape[1] != dim:
                # A configuration mismatch, not a bad item: every cut would fail the same way.
                raise DataError(
                    f"cut {cut.id}: features have dimension {f.shape[1]} but the dataset "
                    f"expects {dim} (fbank_config.num_mel_bins={self.fbank_config.num_mel_bins})"
                )
            feats.append(f)
            kept.append(cut)

        x_lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        max_t = int(x_lens.max()) if feats else 0
        features = torch.zeros(len(feats), max_t, dim, dtype=torch.float32)
        for i, f in enumerate(feats):
            features[i, : f.shape[0]] = torch.from_numpy(f)
        for transform in self.input_transforms:
            features = transform(features, x_lens)

        texts, ipas, langs, speakers = [], [], [], []
        for cut in kept:
            text, ipa, lang, spk = _supervision_fields(cut)
            texts.append(text)
            ipas.append(ipa)
            langs.append(lang)
            speakers.append(spk)
        batch = {
            "features": features,
            "x_lens": x_lens,
            "texts": texts,
            "langs": langs,
            "speakers": speakers,
            "cut_ids": [c.id for c in kept],
            "skipped_cut_ids": skipped,
        }
        if any(i is not None for i in ipas):
            batch["ipa"] = ipas
        return batch


def iterate_batches(cuts, fbank_config, *, max_duration: float, world_size: int = 1, rank: int = 0,
                    num_workers: int = 0):
    """Batches (the :class:`AsrDataset` dict) of ``cuts`` in a fixed order, for evaluation.

    Each rank gets its own share (``world_size``/``rank``); the DataLoader has its own
    generator, so iterating draws nothing from the global RNG that training resumes from.
    """
    from torch.utils.data import DataLoader

    from speechfm.data.sampler import make_sampler

    sampler = make_sampler(cuts, max_duration=max_duration, shuffle=False, world_size=world_size,
                           rank=rank)
    loader = DataLoader(AsrDataset(fbank_config=fbank_config), sampler=sampler, batch_size=None,
                        num_workers=num_workers, generator=torch.Generator().manual_seed(0))
    yield from loader
