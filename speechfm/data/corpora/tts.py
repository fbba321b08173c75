"""Offline text-to-speech with espeak-ng, driven through ctypes.

speechfm builds its synthetic multilingual corpus (``mini_cv_lang``) with espeak-ng: it
needs no network, no model weights and speaks the ~100 languages its dictionaries cover.
The library keeps global state (current voice, parameters, the synthesis callback), so:

* one process initialises it once (``init_engine``) and then synthesises sequentially;
* callers that care about the parent process (which may also hold the library through
  phonemizer for IPA) run synthesis in worker processes: ``map_in_workers`` and
  ``synthesize_many`` run each batch of utterances in a fresh process.

Every call sets the voice and all prosody parameters again and reseeds espeak-ng's noise
generators; the library still carries some state from one utterance to the next (see
``map_in_workers``), so reproducible audio needs a fixed batch spoken by a fresh process.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechfm.errors import SpeechfmError

# espeak_AUDIO_OUTPUT: samples are handed to our callback, Synth returns when done.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
# espeak_PARAMETER
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_PUNCTUATION = 5
_PARAM_WORDGAP = 7
_RAND_SEED = 1

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

#: espeak-ng voice for each ISO 639-1 code used by speechfm's corpora (American English,
#: as in speechfm's G2P, so that audio and IPA transcripts agree).
ESPEAK_VOICES: dict[str, str] = {
    "en": "en-us",
    "es": "es",
    "fr": "fr",
    "it": "it",
    "ky": "ky",
    "nl": "nl",
    "ru": "ru",
    "sv": "sv",
    "tr": "tr",
    "tt": "tt",
    "pl": "pl",
    "id": "id",
    "de": "de",
    "pt": "pt",
    "uk": "uk",
    "kk": "kk",
}


class TTSError(SpeechfmError):
    """espeak-ng refused a voice or a text, or produced no audio."""


@dataclass(kw_only=True, frozen=True)
class VoiceSpec:
    """One espeak-ng voice setting: language voice, variant and prosody."""

    voice: str
    """espeak-ng language voice name, e.g. ``es`` or ``en-us`` (see ``ESPEAK_VOICES``)."""
    variant: str | None = None
    """espeak-ng voice variant (``m1``..``m8``, ``f1``..``f5``, ``klatt``, ``croak``, ...)."""
    rate: int = 175
    """Speaking rate in words per minute (espeak-ng accepts 80..450)."""
    pitch: int = 50
    """Base pitch on espeak-ng's 0..100 scale (50 is the voice's default)."""
    pitch_range: int = 50
    """Intonation range on espeak-ng's 0..100 scale (0 is monotone)."""
    word_gap: int = 0
    """Extra pause between words in units of 10 ms at the default rate."""

    def validate(self) -> None:
        if not self.voice or "+" in self.voice:
            raise TTSError(f"voice must be a language voice name without '+', got {self.voice!r}")
        if not 80 <= self.rate <= 450:
            raise TTSError(f"rate must be within 80..450 words/min, got {self.rate}")
        for name in ("pitch", "pitch_range"):
            v = getattr(self, name)
            if not 0 <= v <= 100:
                raise TTSError(f"{name} must be within 0..100, got {v}")
        if self.word_gap < 0:
            raise TTSError(f"word_gap must be >= 0, got {self.word_gap}")

    @property
    def name(self) -> str:
        """The name given to ``espeak_SetVoiceByName``: ``voice`` or ``voice+variant``."""
        return self.voice if not self.variant else f"{self.voice}+{self.variant}"


class _Engine:
    """The process-wide espeak-ng instance (the library itself is a singleton)."""

    def __init__(self) -> None:
        from speechfm.text.espeak import espeak_paths

        lib_path, data_path = espeak_paths()
        lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        try:  # older espeak-ng releases lack it
            self._set_rand_seed = lib.espeak_ng_SetRandSeed
            self._set_rand_seed.argtypes = [ctypes.c_long]
        except AttributeError:
            self._set_rand_seed = None
        self.libc = ctypes.CDLL(None)
        path = data_path.encode() if data_path else None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if rate <= 0:
            raise TTSError(f"espeak_Initialize failed ({rate}) for library {lib_path}, data {data_path}")
        self.lib = lib
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _CALLBACK(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _on_samples(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: VoiceSpec) -> np.ndarray:
        voice.validate()
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise TTSError(f"espeak-ng has no voice {voice.name!r}")
            # Set every parameter on every call: they persist across calls otherwise.
            for param, value in (
                (_PARAM_RATE, voice.rate),
                (_PARAM_VOLUME, 100),
                (_PARAM_PITCH, voice.pitch),
                (_PARAM_RANGE, voice.pitch_range),
                (_PARAM_PUNCTUATION, 0),
                (_PARAM_WORDGAP, voice.word_gap),
            ):
                self.lib.espeak_SetParameter(param, value, 0)
            # espeak-ng draws noise from its own generator and from libc rand(): reseed
            # both so that an utterance's noise does not depend on earlier draws (other
            # hidden state still does; see map_in_workers).
            if self._set_rand_seed is not None:
                self._set_rand_seed(_RAND_SEED)
            self.libc.srand(_RAND_SEED)
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data, len(data))
            self._chunks = []
            err = self.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise TTSError(f"espeak_Synth failed ({err}) for text {text!r} with voice {voice.name}")
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)


@functools.lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine()


def init_engine() -> int:
    """Initialise espeak-ng in this process (once) and return its native rate in Hz (22050)."""
    return _engine().sample_rate


def synthesize(text: str, voice: VoiceSpec, *, sample_rate: int = 16000) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice`` in this process; return ``(samples, sample_rate)``.

    Samples are float32 in [-1, 1], shape (S,), resampled with soxr from espeak-ng's
    native 22.05 kHz to ``sample_rate`` (pass 0 to keep the native rate). This loads
    espeak-ng into the calling process; use ``synthesize_many`` to keep it out.
    Raises TTSError if the voice is unknown or the text yields no audio.
    """
    eng = _engine()
    pcm = eng.synth(text, voice)
    if pcm.size == 0 or not np.any(pcm):
        raise TTSError(f"espeak-ng produced no audio for {text!r} with voice {voice.name}")
    audio = pcm.astype(np.float32) / 32768.0
    sr = eng.sample_rate
    if sample_rate and sample_rate != sr:
        import soxr

        audio = soxr.resample(audio, sr, sample_rate, quality="HQ").astype(np.float32)
        sr = sample_rate
    return audio, sr


def _synth_batch(jobs: list[tuple[str, VoiceSpec, int]]) -> list[tuple[np.ndarray, int]]:
    return [synthesize(text, voice, sample_rate=sr) for text, voice, sr in jobs]


def map_in_workers(
    fn: Callable[[Any], list],
    batches: Sequence[Any],
    *,
    num_workers: int = 2,
    desc: str | None = None,
    total: int | None = None,
) -> Iterator[list]:
    """Yield ``fn(batch)`` for each batch, in order, each in a fresh worker process.

    espeak-ng keeps hidden state between utterances (pitch-flutter phase, automatic gain,
    roughness cycle counter) that neither ``espeak_Terminate`` nor any API call resets,
    so an utterance's samples depend on what the process spoke before. Running each
    batch in a new process (``forkserver`` children, cheap to start) from a clean library
    makes the output a function of the batch alone, whatever ``num_workers`` is. ``fn``
    must be a module-level function returning a list; the calling process never loads
    espeak-ng. With ``desc`` a tqdm bar counts ``total`` items (sum of result lengths).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # children fork from a server that has already imported these (not espeak-ng)
        ctx.set_forkserver_preload(["numpy", "soxr", "soundfile", __name__, getattr(fn, "__module__", __name__)])
    else:
        ctx = multiprocessing.get_context("spawn")
    bar = None
    if desc is not None:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="utt", mininterval=2.0)
    try:
        with ctx.Pool(min(num_workers, max(1, len(batches))), initializer=init_engine, maxtasksperchild=1) as pool:
            for result in pool.imap(fn, batches, chunksize=1):
                if bar is not None:
                    bar.update(len(result))
                yield result
    finally:
        if bar is not None:
            bar.close()


def synthesize_many(
    texts: Sequence[str],
    voices: Sequence[VoiceSpec],
    *,
    sample_rate: int = 16000,
    num_workers: int = 2,
    batch_size: int = 64,
    desc: str | None = None,
) -> list[tuple[np.ndarray, int]]:
    """Speak ``texts[i]`` with ``voices[i]`` in worker processes; results in input order.

    The output is deterministic for fixed inputs and ``batch_size`` (see ``map_in_workers``).
    """
    if len(texts) != len(voices):
        raise ValueError(f"got {len(texts)} texts but {len(voices)} voices")
    jobs = [(t, v, sample_rate) for t, v in zip(texts, voices, strict=True)]
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    out: list[tuple[np.ndarray, int]] = []
    for res in map_in_workers(_synth_batch, batches, num_workers=num_workers, desc=desc, total=len(jobs)):
        out.extend(res)
    return out
