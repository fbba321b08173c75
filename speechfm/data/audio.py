"""Audio reading for speechfm: any soundfile format, mixed to mono, resampled with soxr.

Everything that reaches a model goes through here, so every way an audio file can be
unusable (missing, undecodable, empty, NaN/Inf samples, absurdly long) becomes a
:class:`BadAudioError` (an :class:`~speechfm.errors.AudioError`) that names the file,
the utterance where one is known, and the problem, with a short machine-readable
``reason`` that ``speechfm data check`` reports.

Lhotse cuts and ``cut.resample()``: lhotse 1.33 applies its ``Resample`` transform with
torchaudio or, failing that, scipy; speechfm requires neither, so
``cut.resample(16000).load_audio()`` raises ``ModuleNotFoundError: scipy`` here.
:func:`load_cut_audio` is the speechfm path that always works: it loads the cut at its
source rate through lhotse (so every lhotse audio source type is supported) and
resamples with soxr, whether or not the cut's recording carries ``Resample``
transforms. Use it (not ``cut.load_audio()``) wherever speechfm needs a waveform.

Sample arrays are float32 in [-1, 1]; ``(S,)`` is mono samples, ``(C, S)`` is
channels-first (lhotse's layout); rates are Hz and times seconds.
"""

from __future__ import annotations

import io
import math
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from speechfm.errors import AudioError

if TYPE_CHECKING:  # lhotse is heavy; import it only where it is used
    from lhotse import Recording
    from lhotse.cut import Cut

DEFAULT_SAMPLE_RATE = 16000
"""The model sample rate (Hz) that speechfm resamples everything to by default."""

DEFAULT_MAX_DURATION = 3600.0
"""Audio longer than this (seconds) is rejected as absurd for speech training."""

# The reasons a BadAudioError can carry; `speechfm data check` reports them as is.
MISSING_FILE = "missing_file"
UNREADABLE = "unreadable"
EMPTY_AUDIO = "empty_audio"
NON_FINITE = "non_finite"
TOO_LONG = "too_long"


class BadAudioError(AudioError):
    """An audio file or cut is unusable; ``reason`` is one of the short codes above."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _explain(e: BaseException, path: str | None = None) -> str:
    """A one-line reason for a decoding failure.

    lhotse wraps backend errors in a multi-line message whose first line says nothing
    ("... failed. Details:"); soundfile's own message for the file is clearer.
    """
    if path is not None:
        import soundfile as sf

        try:
            sf.info(path)
        except Exception as sf_err:  # soundfile raises several types for bad files
            return str(sf_err).strip()[:300] or type(sf_err).__name__
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [
        ln for ln in lines if not ln.endswith("Details:") and not ln.startswith("[extra info]")
    ]
    return (useful or lines or [type(e).__name__])[0][:300]


def _where(path: str | Path, utt_id: str | None) -> str:
    return f"utterance {utt_id} ({path})" if utt_id is not None else str(path)


def to_mono_resampled(
    samples: np.ndarray,
    sr: int,
    target_sr: int | None = DEFAULT_SAMPLE_RATE,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """Mix already-loaded audio down to mono and resample it with soxr.

    Args:
        samples: ``(S,)`` mono, or ``(C, S)`` channels-first as lhotse returns it
            (``(S, C)`` as soundfile returns it when ``channels_last=True``).
        sr: rate of ``samples`` in Hz.
        target_sr: wanted rate in Hz; ``None`` keeps ``sr``.
        channels_last: the 2-D layout is ``(S, C)`` instead of ``(C, S)``.

    Returns:
        float32 ``(S',)`` with ``S' = round(S * target_sr / sr)``.
    """
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1 if channels_last else 0)
    elif x.ndim != 1:
        raise AudioError(f"expected samples of shape (S,) or 2-D, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if target_sr is None or int(target_sr) == int(sr) or x.size == 0:
        return np.ascontiguousarray(x)
    import soxr

    # HQ is soxr's default and far below the model's feature resolution in error.
    return np.ascontiguousarray(soxr.resample(x, int(sr), int(target_sr)), dtype=np.float32)


def samples_problem(
    samples: np.ndarray, sr: int, *, max_duration: float | None = DEFAULT_MAX_DURATION
) -> tuple[str, str] | None:
    """``(reason, detail)`` when decoded samples are unusable, else ``None``.

    Args:
        samples: ``(S,)`` or ``(C, S)`` decoded audio.
        sr: its rate in Hz.
        max_duration: longest acceptable duration in seconds (``None``: no limit).
    """
    x = np.asarray(samples)
    if x.size == 0:
        return EMPTY_AUDIO, "contains no samples"
    finite = np.isfinite(x)
    if not finite.all():
        n_nan = int(np.isnan(x).sum())
        n_inf = int(x.size - finite.sum()) - n_nan
        counts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "Inf")) if n]
        return NON_FINITE, f"has {' and '.join(counts)} sample(s)"
    dur = x.shape[-1] / sr
    if max_duration is not None and dur > max_duration:
        return TOO_LONG, f"lasts {dur:.1f} s, more than the {max_duration:g} s limit"
    return None


def _raise_if_bad(samples: np.ndarray, sr: int, where: str, max_duration: float | None) -> None:
    problem = samples_problem(samples, sr, max_duration=max_duration)
    if problem is not None:
        reason, detail = problem
        raise BadAudioError(f"{where}: audio {detail}", reason)


def read_audio(
    path: str | Path,
    sample_rate: int | None = DEFAULT_SAMPLE_RATE,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    max_duration: float | None = DEFAULT_MAX_DURATION,
    utt_id: str | None = None,
) -> np.ndarray:
    """Read an audio file (wav/flac/ogg/mp3/... at any rate) as mono at ``sample_rate``.

    Args:
        path: audio file readable by soundfile.
        sample_rate: output rate in Hz; ``None`` keeps the file's rate.
        offset: start of the region to read, seconds.
        duration: length of the region, seconds (``None``: to the end).
        max_duration: reject audio (or regions) longer than this many seconds; checked
            on the header, before decoding.
        utt_id: utterance id to name in error messages.

    Returns:
        float32 ``(S,)`` samples.

    Raises:
        BadAudioError: missing, undecodable, empty, NaN/Inf or too long; the message
            names the file (and utterance) and the problem.
    """
    import soundfile as sf

    where = _where(path, utt_id)
    p = Path(path)
    if not p.is_file():
        raise BadAudioError(f"{where}: audio file does not exist", MISSING_FILE)
    try:
        with sf.SoundFile(str(p)) as f:
            sr = f.samplerate
            total = f.frames
            start = int(round(offset * sr))
            if start < 0 or (total > 0 and start >= total):
                raise BadAudioError(
                    f"{where}: offset {offset} s lies outside the {total / sr:.3f} s of audio",
                    EMPTY_AUDIO,
                )
            avail = total - start
            n = avail if duration is None else min(avail, int(round(duration * sr)))
            if max_duration is not None and n / sr > max_duration:
                raise BadAudioError(
                    f"{where}: audio lasts {n / sr:.1f} s, more than the {max_duration:g} s limit",
                    TOO_LONG,
                )
            if start:
                f.seek(start)
            data = f.read(n, dtype="float32", always_2d=True)
    except BadAudioError:
        raise
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as e:
        raise BadAudioError(f"{where}: cannot decode audio ({e})", UNREADABLE) from e
    _raise_if_bad(data.T, sr, where, max_duration)
    return to_mono_resampled(data, sr, sample_rate, channels_last=True)


# ---------------------------------------------------------------------------------------
# Lhotse recordings and cuts
# ---------------------------------------------------------------------------------------


def _probe_command(command: str, recording_id: str) -> Recording:
    """Run a Kaldi-style ``cmd |`` and read the header of the audio it writes."""
    import soundfile as sf
    from lhotse import AudioSource, Recording

    where = f"recording {recording_id} (command '{command}')"
    proc = subprocess.run(command, shell=True, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-300:]
        raise BadAudioError(
            f"{where}: command failed with status {proc.returncode}: {err}", UNREADABLE
        )
    try:
        info = sf.info(io.BytesIO(proc.stdout))
    except (sf.SoundFileError, RuntimeError) as e:
        raise BadAudioError(f"{where}: output is not decodable audio ({e})", UNREADABLE) from e
    return Recording(
        id=recording_id,
        sources=[AudioSource(type="command", channels=list(range(info.channels)), source=command)],
        sampling_rate=info.samplerate,
        num_samples=info.frames,
        duration=info.frames / info.samplerate,
    )


def probe_recording(
    source: str | Path,
    recording_id: str,
    *,
    max_duration: float | None = DEFAULT_MAX_DURATION,
) -> Recording:
    """A lhotse ``Recording`` for one audio file (or Kaldi ``cmd |``), read from its header.

    The recording keeps the file's own rate and channels; speechfm mixes down and
    resamples on load (:func:`load_cut_audio`).

    Raises:
        BadAudioError: the file is missing, undecodable, empty or longer than
            ``max_duration`` seconds.
    """
    from lhotse import Recording

    src = str(source).strip()
    if src.endswith("|"):
        rec = _probe_command(src[:-1].strip(), recording_id)
        where = f"recording {recording_id} (command '{src}')"
    else:
        where = f"recording {recording_id} ({src})"
        if not Path(src).is_file():
            raise BadAudioError(f"{where}: audio file does not exist", MISSING_FILE)
        try:
            rec = Recording.from_file(src, recording_id=recording_id)
        except Exception as e:  # lhotse tries several backends and wraps their errors
            raise BadAudioError(
                f"{where}: cannot read audio header ({_explain(e, src)})", UNREADABLE
            ) from e
    if rec.num_samples == 0:
        raise BadAudioError(f"{where}: audio contains no samples", EMPTY_AUDIO)
    if max_duration is not None and rec.duration > max_duration:
        raise BadAudioError(
            f"{where}: audio lasts {rec.duration:.1f} s, more than the {max_duration:g} s limit",
            TOO_LONG,
        )
    return rec


def unprobed_recording(
    source: str | Path, recording_id: str, duration: float, sampling_rate: int = DEFAULT_SAMPLE_RATE
) -> Recording:
    """A stand-in ``Recording`` for audio that could not be probed.

    Lenient imports (``speechfm data check``) keep such items so that the check reports
    them by id instead of them vanishing; ``duration`` and ``sampling_rate`` are only the
    manifest's claim (or 0), and loading the audio raises the real error.
    """
    from lhotse import AudioSource, Recording
    from lhotse.utils import compute_num_samples

    src = str(source).strip()
    kind = "command" if src.endswith("|") else "file"
    if kind == "command":
        src = src[:-1].strip()
    duration = max(0.0, float(duration))
    return Recording(
        id=recording_id,
        sources=[AudioSource(type=kind, channels=[0], source=src)],
        sampling_rate=sampling_rate,
        num_samples=compute_num_samples(duration, sampling_rate),
        duration=duration,
    )


def _transform_name_and_kwargs(t: Any) -> tuple[str, dict]:
    if isinstance(t, dict):
        return t["name"], t.get("kwargs", {})
    d = t.to_dict()
    return d["name"], d["kwargs"]


def _without_resampling(recording: Recording) -> Recording | None:
    """The recording at its source rate when its only transforms are ``Resample``s.

    Returns ``None`` when other transforms (speed, reverb, ...) are present: those must
    be applied by lhotse itself.
    """
    from lhotse.utils import compute_num_samples, fastcopy

    transforms = recording.transforms or []
    if not transforms:
        return recording
    parsed = [_transform_name_and_kwargs(t) for t in transforms]
    if any(name != "Resample" for name, _ in parsed):
        return None
    src_sr = int(parsed[0][1]["source_sampling_rate"])
    return fastcopy(
        recording,
        transforms=None,
        sampling_rate=src_sr,
        num_samples=compute_num_samples(recording.duration, src_sr),
    )


def describe_cut(cut: Cut) -> str:
    """``utterance <id> (<audio file>)`` for messages about a cut."""
    rec = getattr(cut, "recording", None)
    if rec is not None and rec.sources:
        src = rec.sources[0]
        shown = src.source if isinstance(src.source, str) else f"<{src.type} audio>"
        return f"utterance {cut.id} ({shown})"
    return f"utterance {cut.id}"


def load_cut_samples(cut: Cut) -> tuple[np.ndarray, int]:
    """Decode a cut once, mixed to mono, at the cheapest rate to produce.

    For a plain or ``cut.resample()``-d mono/multi-channel cut that rate is the audio's
    source rate (no resampling is done); other cuts (mixed, padded, perturbed) are
    loaded by lhotse at ``cut.sampling_rate``. No validity checks are applied.

    Returns:
        ``(samples (S,) float32, rate in Hz)``.

    Raises:
        BadAudioError: ``missing_file`` or ``unreadable``, naming the utterance and file.
    """
    from lhotse.utils import fastcopy

    where = describe_cut(cut)
    # Mono/multi-channel cuts carry one recording; mixed and padding cuts have none.
    rec = getattr(cut, "recording", None)
    if rec is None and hasattr(cut, "recording"):
        raise BadAudioError(f"{where}: cut has no recording to load audio from", MISSING_FILE)
    if rec is not None:
        for s in rec.sources:
            if s.type == "file" and not Path(s.source).is_file():
                raise BadAudioError(f"{where}: audio file {s.source} does not exist", MISSING_FILE)
    base = _without_resampling(rec) if rec is not None else None
    try:
        if base is not None:
            sr = base.sampling_rate
            audio = fastcopy(cut, recording=base).load_audio()
        else:
            sr = cut.sampling_rate
            audio = cut.load_audio()
    except ModuleNotFoundError as e:
        raise BadAudioError(
            f"{where}: lhotse needs the missing module '{e.name}' to apply this cut's "
            "audio transforms; speechfm only resamples plain cuts itself",
            UNREADABLE,
        ) from e
    except Exception as e:  # lhotse wraps backend errors in several exception types
        file_sources = (
            [s.source for s in rec.sources if s.type == "file"] if rec is not None else []
        )
        msg = _explain(e, file_sources[0] if len(file_sources) == 1 else None)
        raise BadAudioError(f"{where}: cannot decode audio ({msg})", UNREADABLE) from e
    if audio is None:
        raise BadAudioError(f"{where}: cut has no audio", MISSING_FILE)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    return audio, int(sr)


def load_cut_audio(
    cut: Cut,
    sample_rate: int | None = DEFAULT_SAMPLE_RATE,
    *,
    max_duration: float | None = DEFAULT_MAX_DURATION,
) -> np.ndarray:
    """A cut's audio, mono, at ``sample_rate``, validated; works without torchaudio/scipy.

    Args:
        cut: any lhotse cut, including ones returned by ``cut.resample(rate)``.
        sample_rate: output rate in Hz; ``None`` gives ``cut.sampling_rate``.
        max_duration: reject cuts longer than this many seconds.

    Returns:
        float32 ``(S,)`` with ``S = round(cut.duration * sample_rate)``.

    Raises:
        BadAudioError: missing, undecodable, empty, NaN/Inf or too long, naming the
            utterance and file.
    """
    from lhotse.utils import compute_num_samples

    where = describe_cut(cut)
    if max_duration is not None and cut.duration > max_duration:
        raise BadAudioError(
            f"{where}: audio lasts {cut.duration:.1f} s, more than the {max_duration:g} s limit",
            TOO_LONG,
        )
    samples, sr = load_cut_samples(cut)
    _raise_if_bad(samples, sr, where, max_duration)
    target = int(sample_rate) if sample_rate is not None else int(cut.sampling_rate)
    out = to_mono_resampled(samples, sr, target)
    expected = compute_num_samples(cut.duration, target)
    diff = expected - out.shape[0]
    # Rounding of durations and resampler edges leaves a few samples of slack; anything
    # larger means the manifest's duration disagrees with the audio.
    slack = max(2, int(math.ceil(0.005 * target)))
    if abs(diff) > slack:
        raise BadAudioError(
            f"{where}: decoded {out.shape[0]} samples at {target} Hz but the cut's "
            f"{cut.duration} s needs {expected}",
            UNREADABLE,
        )
    if diff > 0:
        out = np.pad(out, (0, diff))
    elif diff < 0:
        out = out[:expected]
    return out
