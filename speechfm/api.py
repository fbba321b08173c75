"""The Python inference API: load a checkpoint directory, transcribe audio, embed it.

::

    import speechfm

    model = speechfm.load("exp/ctc_small/best")            # config.json + weights + tokenizer
    model.transcribe("a.wav")                               # -> "hello world"
    model.transcribe(["a.wav", "b.mp3", (samples, 8000)])   # -> ["...", "...", "..."]
    model.transcribe(samples, sample_rate=44100, timestamps=True)   # -> Transcript
    model.embed("a.wav", layers=(6, -1))                    # -> [(T', C), (T', C)]

    tagger = speechfm.load("exp/ast_speech_commands/best")   # a classifier (ast family)
    tagger.classify("a.wav", top_k=3)                       # -> [("yes", 0.93), ...]
    tagger.embed("a.wav", pooled=True)                      # -> (C,) utterance embedding

    slm = speechfm.load("exp/inserter/final")                # a speech LM (speech_lm family)
    slm.respond("q.wav", prompt_before="User: ", prompt_after="\nAssistant:")  # -> "..."
    slm.respond(text="What is the capital of France?", prompt_after="\nAssistant:")

    stream = speechfm.load("exp/transducer/final").stream()  # transducers: live audio
    for piece, rate in microphone():                         # pieces of any size and rate
        partial = stream.accept_waveform(piece, rate)       # -> text so far
    stream.finalize()                                        # -> the final text

A model directory (:mod:`speechfm.models.io`: ``config.json``, ``model.safetensors``
and optional parts such as ``tokenizer/``) is all :func:`load` needs, and nothing is
unpickled; config.json's ``"family"`` picks the family from the one family table
(:data:`speechfm.models.io.FAMILIES`). Every family can ``embed``; ASR families (those
with a search, ``recognize``) ``transcribe``, streaming ones ``stream``; classifiers (a
module with ``classify(feats, x_lens)`` and a head, e.g. the ``"ast"`` family) ``classify``
with the class names of the directory's ``labels`` part. An encoder-only checkpoint (a
pretrained or converted encoder) embeds, and ``transcribe`` says it has no ASR head.
Speech LMs (the ``"speech_lm"`` family: a module with ``generate`` and an ``lm_tokenizer``
part) ``respond`` to spoken or written instructions.

Audio can be a file path (anything soundfile decodes: wav, flac, ogg, mp3, ... at any
rate), a 1-D or 2-D (channels) numpy array or torch tensor together with its sample
rate, a ``(samples, sample_rate)`` tuple, or a list of these. Everything is mixed to mono
and resampled (soxr) to the model's rate; a list is decoded in batches of similar
length and the results come back in input order. Arrays that would be silently misread
(int64 samples, unscaled PCM as floats, a batch of clips as a 2-D array, ...) are
refused with a message naming the input.

``transcribe`` takes recordings of any length: inputs longer than ``long_form_s`` (30 s)
are cut at pauses into pieces and stitched, with memory bounded whatever the length
(:mod:`speechfm.decode.longform`); and an input in which the voice-activity detector
(:mod:`speechfm.features.vad`) finds no speech gives ``""`` instead of invented words
(``vad=False`` decodes everything).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from speechfm.data.samples import to_float_mono as _to_float_mono
from speechfm.decode.ctc import CtcHypothesis, WordTimestamp, word_timestamps
from speechfm.decode.longform import DEFAULT_LONG_FORM_S
from speechfm.errors import AudioError, SpeechfmError
from speechfm.models.transducer.model import as_ctc_hypothesis

if TYPE_CHECKING:
    from speechfm.features.vad import VadConfig

log = logging.getLogger("speechfm.api")

__all__ = ["METHODS", "AudioStream", "SpeechModel", "Transcript", "WordTimestamp", "load"]

METHODS = ("greedy", "beam", "graph")
"""Search methods :meth:`SpeechModel.transcribe` accepts."""
DEFAULT_STREAM_CHUNK = 16
"""Encoder frames per chunk of :meth:`SpeechModel.stream` for a full-context encoder
(0.64 s at a 40 ms frame shift)."""

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | tuple
"""One audio input: a path, an array/tensor (with ``sample_rate=``), or ``(array, rate)``."""

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}

@dataclass
class Transcript:
    """A transcription with word timings and confidences."""

    text: str
    """The decoded text."""
    words: list[WordTimestamp] = field(default_factory=list)
    """Words with start/end times in seconds (clipped to the audio) and confidences in [0, 1]."""
    tokens: list[str] = field(default_factory=list)
    """The decoded tokens (tokenizer pieces)."""
    token_confidences: list[float] = field(default_factory=list)
    """Per-token confidence in [0, 1] (mean posterior over the token's frames)."""
    token_times: list[tuple[float, float]] = field(default_factory=list)
    """Per-token (start, end) in seconds on the best alignment."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (what ``speechfm transcribe --json`` prints)."""
        return {
            "text": self.text,
            "words": [
                {"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence}
                for w in self.words
            ],
            "tokens": list(self.tokens),
            "token_confidences": list(self.token_confidences),
            "token_times": [list(t) for t in self.token_times],
        }


# --------------------------------------------------------------------------- loading


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).removeprefix("torch.")
    if key not in _DTYPES:
        raise SpeechfmError(f"unknown dtype {dtype!r} (use one of {', '.join(_DTYPES)})")
    return _DTYPES[key]


def _resolve_device(device: torch.device | str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise SpeechfmError(f"invalid device {device!r} ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpeechfmError(f"device {device!r} requested but CUDA is not available here")
    return dev


def load(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    adapters: Sequence[str | os.PathLike] | None = None,
) -> SpeechModel:
    """Rebuild a model, its tokenizer and its feature settings from a model directory.

    Args:
        path: a model directory (``config.json``, ``model.safetensors``, optional parts
            such as ``tokenizer/``), or a training run's checkpoint root whose ``latest``
            file names one.
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        dtype: cast the weights to this dtype (``torch.bfloat16``, ``"fp16"``, ...);
            None keeps them as saved (float32). Features are computed in float32 and
            cast; log-posteriors are float32 whatever the dtype.
        adapters: adapter files (``speechfm.models.adapter_store``: e.g. one
            language-dependent adapter per language) to attach on top of any the
            directory carries; each must have been made for this exact base model.
            Select a language's adapters with ``transcribe(..., lang=)`` /
            ``stream(lang=)``.

    Returns:
        A :class:`SpeechModel` in eval mode.

    Raises:
        DataError: the directory is incomplete or inconsistent; the message names the
            directory and what is missing (config.json, model.safetensors, a known family,
            matching weights: missing/unexpected keys are listed, a tokenizer whose size
            differs from the model's vocabulary); an adapter made for another base model.
    """
    from speechfm.models.io import load_model_dir

    loaded = load_model_dir(path)
    model = SpeechModel(loaded.module, loaded.tokenizer, family=loaded.family, config=loaded.meta,
                        path=loaded.directory)
    for adapter in adapters or ():
        model.add_adapter(adapter)
    return model.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------ audio


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _is_single(audio: Any) -> bool:
    """One input (path, array, (array, rate)) rather than a list of inputs."""
    if isinstance(audio, (str, os.PathLike)) or _is_array(audio):
        return True
    return (
        isinstance(audio, tuple)
        and len(audio) == 2
        and _is_array(audio[0])
        and isinstance(audio[1], (int, np.integer))
    )


def _array_name(i: int, x: Any) -> str:
    kind = "torch tensor" if isinstance(x, torch.Tensor) else "numpy array"
    return f"audio input #{i} ({kind} of shape {tuple(x.shape)})"


def _load_one(item: Any, i: int, sample_rate: int | None, target_sr: int, *,
              channels_first: bool | None = None, any_length: bool = False) -> np.ndarray:
    """One input -> float32 mono (S,) at ``target_sr``; errors name the input.

    ``any_length``: files of any duration (transcribe takes long ones piece by piece);
    otherwise read_audio's limit (an hour) applies."""
    from speechfm.data.audio import DEFAULT_MAX_DURATION, read_audio, to_mono_resampled

    if isinstance(item, (str, os.PathLike)):
        if Path(item).is_dir():
            raise AudioError(f"{item}: is a directory, not an audio file; pass the audio files "
                             "in it (e.g. sorted(Path(folder).glob('*.wav')))")
        # read_audio's errors name the file and the problem (missing, undecodable, empty).
        return read_audio(item, target_sr,
                          max_duration=None if any_length else DEFAULT_MAX_DURATION)
    rate = sample_rate
    if isinstance(item, tuple) and len(item) == 2 and _is_array(item[0]):
        item, rate = item
    if not _is_array(item):
        raise AudioError(
            f"audio input #{i}: expected a file path, a numpy array or torch tensor, or "
            f"(samples, sample_rate), got {type(item).__name__}"
        )
    name = _array_name(i, item)
    if rate is None:
        raise AudioError(
            f"{name}: no sample rate; pass sample_rate=... (Hz) or (samples, sample_rate)"
        )
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{name}: sample rate must be a positive integer (Hz), got {rate!r}")
    x = _to_float_mono(item, name, channels_first)
    return to_mono_resampled(x, int(rate), target_sr)


# ------------------------------------------------------------------------------ model


class SpeechModel:
    """A loaded model: ``embed`` raw audio, and ``transcribe``/``stream`` it with an ASR model.

    Build it with :func:`load`. Attributes: ``module`` (the ``nn.Module``, eval mode),
    ``tokenizer`` (None for a model without one), ``family``, ``config`` (config.json as
    a dict), ``path``.
    """

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Any = None,
        *,
        family: str,
        config: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.family = family
        self.config = dict(config or {})
        self.path = path

    def __repr__(self) -> str:
        vocab = self.tokenizer.vocab_size if self.tokenizer is not None else None
        return (
            f"SpeechModel(family={self.family!r}, path={str(self.path)!r}, "
            f"device={str(self.device)!r}, vocab_size={vocab})"
        )

    # ------------------------------------------------------------------ adapters

    def add_adapter(self, path: str | os.PathLike) -> tuple[str, str | None]:
        """Attach a stored adapter (an adapter file made for this exact base model; the
        base weights are not touched); returns its (name, language).

        Raises:
            DataError: no such file, another base model's adapter, or already attached.
        """
        from speechfm.models.adapter_store import attach_adapter

        # The adapter's modules are built on the device and in the dtype of the blocks
        # they join (speechfm.nn.adapters.insert_adapters).
        adapter = attach_adapter(self.module, path, base_hash=self._base_hash())
        return adapter.name, adapter.language

    def remove_adapter(self, name: str, language: str | None = None) -> int:
        """Detach adapter ``name`` (only ``language``'s, if given); returns the number of
        modules removed (0: it was not attached)."""
        from speechfm.models.adapter_store import detach_adapter

        return detach_adapter(self.module, name, language)

    @property
    def adapters(self) -> list[tuple[str, str | None]]:
        """(name, language or None) of every adapter in the model, sorted."""
        from speechfm.nn.adapters import adapter_keys

        return sorted(adapter_keys(self.module), key=lambda k: (k[0], k[1] or ""))

    @property
    def languages(self) -> list[str]:
        """Languages with a language-dependent adapter in the model."""
        return sorted({lang for _, lang in self.adapters if lang is not None})

    @property
    def language_id(self) -> Any:
        """The model directory's language-ID head (:mod:`speechfm.models.language_id`), or
        None. With one, ``transcribe`` without ``lang`` picks each input's language itself."""
        if "_lid" not in self.__dict__:
            head = None
            if self.path is not None:
                from speechfm.models.language_id import load_directory_head

                head = load_directory_head(self.path, self.config, self._base_hash())
            self.__dict__["_lid"] = head
        head = self.__dict__["_lid"]
        return None if head is None else head.to(self.device)

    def identify_language(
        self, audio: AudioInput | Sequence[AudioInput], *, sample_rate: int | None = None,
        batch_size: int = 8,
    ) -> str | list[str]:
        """The language of one input (or of each of a list) by the language-ID head.

        Raises:
            SpeechfmError: the model has no language-ID head.
        """
        from speechfm.models.language_id import identify

        head = self.language_id
        if head is None:
            raise SpeechfmError(f"{self.path}: no language-ID head (a language_id part; see "
                                "recipes/lda/train_lid.py)")
        waves, single = self._inputs(audio, sample_rate)
        out = self._batches(waves, batch_size,
                            lambda feats, lens: identify(self.module, head, feats, lens)[0])
        return out[0] if single else out

    def _by_language(self, lang: str | None, fn: Callable) -> Callable:
        """``fn(feats, lens, **lang_kw)`` over a batch: with ``lang`` (or without a
        language-ID head) every row in that language; with ``"auto"`` (or None and a head)
        each row in the language the head picks, one sub-batch per language."""
        head = self.language_id if lang in (None, "auto") else None
        if lang == "auto" and head is None:
            raise SpeechfmError(f"{self.path}: lang='auto' needs a language-ID head (a "
                                "language_id part; see recipes/lda/train_lid.py)")
        if head is None:
            lang_kw = self._language(lang)
            return lambda feats, lens: fn(feats, lens, **lang_kw)
        from speechfm.models.language_id import identify, run_by_language

        def run(feats: torch.Tensor, lens: torch.Tensor) -> list[Any]:
            picked, _ = identify(self.module, head, feats, lens)
            return run_by_language(feats, lens, picked,
                                   lambda f, n, g: fn(f, n, **self._language(g)))
        return run

    def _language(self, lang: str | None) -> dict[str, Any]:
        """The encoder keyword selecting ``lang``'s adapters ({} for None). A language
        without an adapter runs the base model (head languages of a multilingual model);
        that is logged once per language, as it may also be a misspelt code."""
        if lang is None:
            return {}
        if not isinstance(lang, str) or not lang:
            raise ValueError(f"lang must be a non-empty language code, got {lang!r}")
        if lang == "auto":  # transcribe resolves it before; a stream cannot wait for it
            raise ValueError("lang='auto' is for transcribe (the language-ID head reads the "
                             "whole input); give a stream its language code")
        warned = self.__dict__.setdefault("_warned_langs", set())
        if lang not in self.languages and lang not in warned:
            warned.add(lang)
            log.info("%s: no adapter for language %r (adapters for: %s); the base model runs",
                     self.path, lang, ", ".join(self.languages) or "none")
        return {"language": lang}

    @property
    def can_transcribe(self) -> bool:
        """True for an ASR model (a search and a tokenizer)."""
        return self.tokenizer is not None and hasattr(self.module, "recognize")

    def _require_asr(self, what: str) -> None:
        if not self.can_transcribe:
            missing = "no tokenizer" if self.tokenizer is None else "no ASR search"
            if hasattr(self.module, "generate"):
                raise SpeechfmError(
                    f"{self.path}: this {self.family} model is a speech LM, so it cannot "
                    f"{what}; use respond() (e.g. with a transcription prompt) or embed()")
            if hasattr(self.module, "classify"):
                raise SpeechfmError(
                    f"{self.path}: this {self.family} model is an audio classifier with no "
                    f"ASR head ({missing}), so it cannot {what}; use classify() for its class "
                    "scores or embed() for its embeddings")
            raise SpeechfmError(
                f"{self.path}: this {self.family} model has no ASR head ({missing}), so it "
                f"cannot {what}; use embed() for its encoder layers, or fine-tune it with a "
                "CTC or transducer recipe (init_from)")

    @property
    def can_classify(self) -> bool:
        """True for a classifier: a module with ``classify`` and a head (classes > 0)."""
        return (hasattr(self.module, "classify")
                and getattr(self.module, "head", True) is not None
                and getattr(self.module, "num_classes", 1) != 0)

    @property
    def labels(self) -> list[str] | None:
        """Class names in class order (the model directory's ``labels`` part), or None."""
        if not hasattr(self, "_labels"):
            from speechfm.models.io import load_part

            labels = None
            if self.path is not None:
                parts = self.config.get("parts") if self.config else None
                labels = load_part(self.path, "labels", self.config if parts is not None
                                   else None)
            if isinstance(labels, dict):  # {id: name}
                labels = [labels[k] for k in sorted(labels, key=int)]
            if labels is not None and (not isinstance(labels, list)
                                       or not all(isinstance(x, str) for x in labels)):
                raise SpeechfmError(f"{self.path}: labels.json must be a list of class names "
                                    "in class order")
            self._labels = labels
        return self._labels

    # ------------------------------------------------------------------ properties

    @property
    def sample_rate(self) -> int:
        """Rate in Hz the model computes features at (inputs are resampled to it)."""
        return int(self.module.encoder.sample_rate)

    @property
    def frame_shift_s(self) -> float:
        """Seconds between encoder output frames."""
        return float(self.module.encoder.frame_shift_s)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the weights (and of the features fed to the encoder)."""
        return next(self.module.parameters()).dtype

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> SpeechModel:
        """Move (and optionally cast) the model in place; returns self."""
        if device is not None:
            self.module.to(_resolve_device(device))
        resolved = _resolve_dtype(dtype)
        if resolved is not None:
            self._base_hash()  # of the weights as saved: adapters attached later check it
            self.module.to(resolved)
        return self

    def _base_hash(self) -> str:
        """:func:`~speechfm.models.adapter_store.base_model_hash` of the base weights as
        loaded (kept from before any dtype cast)."""
        if "_base_hash_value" not in self.__dict__:
            from speechfm.models.adapter_store import base_model_hash

            self.__dict__["_base_hash_value"] = base_model_hash(self.module)
        return self.__dict__["_base_hash_value"]

    # ------------------------------------------------------------------ internals

    def _inputs(self, audio: Any, sample_rate: int | None, *, channels_first: bool | None = None,
                any_length: bool = False) -> tuple[list[np.ndarray], bool]:
        """Load every input (all checked before any compute); returns (waves, is_single)."""
        kw = {"channels_first": channels_first, "any_length": any_length}
        if _is_single(audio):
            return [_load_one(audio, 0, sample_rate, self.sample_rate, **kw)], True
        if isinstance(audio, (list, tuple)):
            return [
                _load_one(item, i, sample_rate, self.sample_rate, **kw)
                for i, item in enumerate(audio)
            ], False
        raise AudioError(
            "audio must be a file path, a numpy array or torch tensor (with sample_rate), "
            f"(samples, sample_rate), or a list of these; got {type(audio).__name__}"
        )

    def _batches(self, waves: list[np.ndarray], batch_size: int, fn: Callable) -> list[Any]:
        """Run ``fn(feats, feat_lens)`` (-> one result per row) over length-sorted batches.

        Sorting by length keeps padding (wasted compute) small; results are put back in
        input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(waves)), key=lambda i: -waves[i].shape[0])
        results: list[Any] = [None] * len(waves)
        fbank = self.module.encoder.feature_extractor()
        device, dtype = self.device, self.dtype
        # no_grad rather than inference_mode: returned embeddings must stay usable as
        # ordinary tensors (e.g. inputs to a probe trained with autograd).
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                lens = torch.tensor([waves[i].shape[0] for i in idx], dtype=torch.int64)
                batch = torch.zeros(len(idx), int(lens.max()), dtype=torch.float32)
                for row, i in enumerate(idx):
                    batch[row, : waves[i].shape[0]] = torch.from_numpy(waves[i])
                feats, feat_lens = fbank(batch.to(device), lens.to(device))
                # Features in float32 (fbank precision), then the weights' dtype.
                for row, out in zip(idx, fn(feats.to(dtype), feat_lens), strict=True):
                    results[row] = out
        return results

    def _transcript(self, hyp: CtcHypothesis, duration: float) -> Transcript:
        shift = self.frame_shift_s
        text = self.tokenizer.decode(hyp.tokens)
        words = word_timestamps(hyp, self.tokenizer, shift)
        # The last encoder frame can reach past the audio's end (frames are rounded up).
        for w in words:
            w.start = min(w.start, duration)
            w.end = min(w.end, duration)
        times = [
            (min(s * shift, duration), min((e + 1) * shift, duration))
            for s, e in zip(hyp.token_frames, hyp.token_end_frames, strict=True)
        ]
        return Transcript(
            text=text,
            words=words,
            tokens=[self.tokenizer.id_to_token(t) for t in hyp.tokens],
            token_confidences=[float(c) for c in hyp.token_confidences],
            token_times=times,
        )

    # ------------------------------------------------------------------ public

    def transcribe(
        self,
        audio: AudioInput | Sequence[AudioInput],
        *,
        sample_rate: int | None = None,
        method: str = "greedy",
        beam: int = 4,
        timestamps: bool = False,
        confidences: bool = False,
        batch_size: int = 8,
        lexicon: Any = None,
        lm: str | Path | None = None,
        graph: Any = None,
        acoustic_scale: float = 1.0,
        lang: str | None = None,
        vad: bool | VadConfig = True,
        long_form_s: float | None = DEFAULT_LONG_FORM_S,
        progress: bool = False,
        channels_first: bool | None = None,
    ) -> str | Transcript | list[str] | list[Transcript]:
        """Transcribe one input or a list of inputs, each of any length.

        Args:
            audio: a file path; a numpy array / torch tensor of samples, (S,) or 2-D with
                channels on the short axis (at most 2 of them, else see
                ``channels_first``), floats in [-1, 1] or PCM integers (int16, int32,
                uint8); a ``(samples, sample_rate)`` tuple; or a list of any of these.
            sample_rate: rate in Hz of array inputs given without their own rate (files
                carry theirs). Any rate works: inputs are resampled with soxr.
            method: ``"greedy"`` (best path), ``"beam"`` (CTC: prefix beam search;
                transducer: modified beam search) or ``"graph"`` (CTC models: words
                through a lexicon + n-gram decoding graph: ``graph``, or one built from
                ``lm`` and ``lexicon``, or the model directory's stored ``graph/``).
                Giving ``lm`` or ``graph`` implies ``"graph"``.
            beam: beam width for ``method="beam"``.
            timestamps: return :class:`Transcript` objects with word/token times.
            confidences: return :class:`Transcript` objects (confidences included).
            batch_size: inputs per forward pass (inputs are sorted by length first). All
                inputs are read and checked before decoding starts, so a bad one fails fast.
            lexicon: word -> token sequences (``{word: [[phone, ...], ...]}`` or a
                lexicon.txt path); default the model directory's lexicon (phone models need
                one; char/subword models spell the LM's words themselves).
            lm: a ``speechfm lm train`` folder (G.fst + words.txt) to decode words with.
            graph: a :class:`speechfm.decode.graph.DecodingGraph` (or its folder).
            acoustic_scale: graph search: acoustic scale (1 / LM weight).
            lang: the inputs' language: its language-dependent adapters run (see
                :attr:`languages`); None = the base model (language-independent adapters
                only), or, when the model has a language-ID head (:attr:`language_id`),
                each input's language as the head picks it (as ``"auto"`` does; a long
                input: each piece's).
            vad: skip what the voice-activity detector (:mod:`speechfm.features.vad`)
                judges to be no speech: an input without detected speech gives ``""``
                (an empty :class:`Transcript`) without being decoded, and a long input is
                cut at its pauses with long non-speech stretches left out. False:
                decode everything, noise included; a
                :class:`~speechfm.features.vad.VadConfig`: the detector with those
                settings. Inputs with speech of at most ``long_form_s`` are decoded
                exactly as without it.
            long_form_s: inputs longer than this many seconds are transcribed piece by
                piece, no piece longer than this (:mod:`speechfm.decode.longform`: cut at
                pauses, unbroken speech cut at quiet points with 1 s of overlap, stitched
                by token times), so memory stays bounded whatever the length; times are
                in the original recording. None: one pass per input, however long (and
                files over an hour are refused).
            progress: show a tqdm bar (stderr) while long inputs are transcribed.
            channels_first: for 2-D arrays, True = (channels, samples), False =
                (samples, channels); None = the short axis, for at most 2 channels (more
                is refused: it may be a batch of clips, which goes as a list).

        Returns:
            The text (str) for one input, a list of texts for a list (input order); with
            ``timestamps`` or ``confidences``, :class:`Transcript` object(s) instead.

        Raises:
            AudioError: a file is missing, a directory or undecodable, an input is empty
                or non-finite, an array comes without its sample rate, or is one that
                would be misread (int64, unscaled PCM as floats, ambiguous 2-D); the
                message names the input.
        """
        self._require_asr("transcribe")
        if lm is not None or graph is not None:
            method = "graph"
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "beam" and beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        any_length = {"vad": vad, "long_form_s": long_form_s, "progress": progress}
        if method == "graph":
            if timestamps or confidences:
                raise ValueError("timestamps/confidences are not available with graph decoding")
            return self._transcribe_graph(audio, sample_rate, batch_size, lexicon, lm, graph,
                                          acoustic_scale, lang, channels_first=channels_first,
                                          **any_length)
        waves, single = self._inputs(audio, sample_rate, channels_first=channels_first,
                                     any_length=long_form_s is not None)

        def search(feats: torch.Tensor, feat_lens: torch.Tensor, **lang_kw) -> list[CtcHypothesis]:
            return self.module.recognize(feats, feat_lens, method=method, beam=beam,
                                         **lang_kw)

        hyps = self._any_length(waves, batch_size, self._by_language(lang, search), **any_length)
        if timestamps or confidences:
            out: list[Any] = [
                self._transcript(h, w.shape[0] / self.sample_rate)
                for h, w in zip(hyps, waves, strict=True)
            ]
        else:
            out = [self.tokenizer.decode(h.tokens) for h in hyps]
        return out[0] if single else out

    def decoding_graph(self, lexicon: Any = None, lm: str | Path | None = None) -> Any:
        """The word-decoding graph for ``lm`` (and ``lexicon``, default the model's), or the
        model directory's stored one when ``lm`` is None. Cached: the stored graph, and the
        graph of an ``lm`` folder with a lexicon given by path (or the model's own), so
        repeated ``transcribe(..., lm=...)`` calls build it once."""
        from speechfm.decode.graph import graph_for_model
        from speechfm.models.io import PARTS, load_part

        if lm is None:
            if getattr(self, "_stored_graph", None) is None:
                graph = load_part(self.path, "graph") if self.path is not None else None
                if graph is None:
                    raise SpeechfmError(f"{self.path}: no decoding graph stored; pass lm= "
                                        "(a `speechfm lm train` folder) or graph=")
                self._stored_graph = graph
            return self._stored_graph
        key = None
        if lexicon is None or isinstance(lexicon, (str, Path)):
            key = (str(Path(lm).resolve()), None if lexicon is None else str(Path(lexicon).resolve()))
            cached = getattr(self, "_graphs", {}).get(key)
            if cached is not None:
                return cached
        if isinstance(lexicon, (str, Path)):
            lexicon = PARTS["lexicon"].load(Path(lexicon))
        if lexicon is None and self.path is not None:
            lexicon = load_part(self.path, "lexicon")
        graph = graph_for_model(self.tokenizer, lexicon, lm)
        if key is not None:
            self._graphs = {**getattr(self, "_graphs", {}), key: graph}
        return graph

    def _any_length(self, waves: list[np.ndarray], batch_size: int, fn: Callable, *,
                    vad: bool | VadConfig, long_form_s: float | None, progress: bool,
                    texts: bool = False) -> list[Any]:
        """``fn`` over ``waves`` as :meth:`_batches` runs it, but inputs without speech are
        not decoded and long ones go piece by piece (``speechfm.decode.longform``);
        ``fn`` gives hypotheses, or with ``texts`` strings."""
        from functools import partial

        from speechfm.decode.longform import CONTEXT_S, join_texts, run_long_form, stitch_hypotheses

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        step = max(1, round(self.frame_shift_s * self.sample_rate))  # samples per frame
        kind = getattr(self.tokenizer, "kind", None)
        separator = getattr(self.tokenizer, "word_id", None) if kind in ("char", "ipa") else None
        return run_long_form(
            waves, lambda ws: self._batches(ws, batch_size, fn), sample_rate=self.sample_rate,
            step=step, batch_size=batch_size, long_form_s=long_form_s, vad=vad,
            stitch=join_texts if texts else partial(stitch_hypotheses, step=step,
                                                    separator=separator),
            empty=str if texts else partial(CtcHypothesis, tokens=[]),
            # graph results have no token times to stitch an overlap by
            context_s=0.0 if texts else CONTEXT_S, progress=progress)

    def _transcribe_graph(self, audio, sample_rate, batch_size, lexicon, lm, graph,
                          acoustic_scale, lang=None, *, channels_first=None, vad=True,
                          long_form_s=DEFAULT_LONG_FORM_S, progress=False):
        from speechfm.decode.graph import DecodingGraph, graph_hypotheses

        if not hasattr(self.module, "log_probs"):
            raise SpeechfmError(f"{self.path}: graph decoding needs a CTC model (a "
                                f"{self.family} model has no log_probs)")
        if graph is None:
            graph = self.decoding_graph(lexicon, lm)
        elif not isinstance(graph, DecodingGraph):
            graph = DecodingGraph.load(graph)
        if graph.tokens != self.tokenizer.tokens:
            raise SpeechfmError("the decoding graph was built for other tokens than the model's")
        waves, single = self._inputs(audio, sample_rate, channels_first=channels_first,
                                     any_length=long_form_s is not None)

        def search(feats: torch.Tensor, feat_lens: torch.Tensor, **lang_kw) -> list[str]:
            log_probs, out_lens = self.module.log_probs(feats, feat_lens, **lang_kw)
            found = graph_hypotheses(graph, log_probs, out_lens, acoustic_scale=acoustic_scale)
            return [graph.join(h.words) if graph.kind == "tlg" else self.tokenizer.decode(h.tokens)
                    for h in found]

        out = self._any_length(waves, batch_size, self._by_language(lang, search), vad=vad,
                               long_form_s=long_form_s, progress=progress, texts=True)
        return out[0] if single else out

    def classify(
        self,
        audio: AudioInput | Sequence[AudioInput],
        top_k: int | None = 5,
        *,
        sample_rate: int | None = None,
        batch_size: int = 8,
    ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """Class scores of one input or a list of inputs (audio classifiers).

        Each input is classified on its own (a list is run in batches; the result does not
        depend on the batch). A spectrogram transformer (``"ast"``) takes clips of a fixed
        size, ``target_frames`` fbank frames (config.json; 1024 frames = 10.24 s for
        AudioSet AST, 100 = 1 s for Speech Commands): shorter audio is padded, longer
        audio is cut to its first ``target_frames`` frames, as AST does.

        Args:
            audio, sample_rate, batch_size: as for :meth:`transcribe`.
            top_k: how many classes to return (at most all of them); None = all.

        Returns:
            For one input, ``[(label, score), ...]`` sorted by decreasing softmax score
            (labels from the model directory's ``labels`` part, class indices as strings
            without one); for a list of inputs, a list of those in input order.

        Raises:
            SpeechfmError: the model has no classifier head.
            AudioError: as for :meth:`transcribe`.
        """
        if not self.can_classify:
            what = ("has no classifier head (num_classes 0: a backbone; fine-tune one or "
                    "use embed())" if hasattr(self.module, "classify")
                    else "is not a classifier (use transcribe() or embed())")
            raise SpeechfmError(f"{self.path}: this {self.family} model {what}, so it "
                                "cannot classify")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        labels = self.labels
        waves, single = self._inputs(audio, sample_rate)

        def scores(feats: torch.Tensor, feat_lens: torch.Tensor) -> list[Any]:
            logits = self.module.classify(feats, feat_lens)
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            k = probs.shape[-1]
            if labels is not None and len(labels) != k:
                raise SpeechfmError(f"{self.path}: {len(labels)} labels for a model with {k} "
                                    "classes")
            top = probs.topk(k if top_k is None else min(int(top_k), k), dim=-1)
            names = labels if labels is not None else [str(i) for i in range(k)]
            return [[(names[i], float(p)) for p, i in zip(ps.tolist(), ids.tolist(), strict=True)]
                    for ps, ids in zip(top.values, top.indices, strict=True)]

        out = self._batches(waves, batch_size, scores)
        return out[0] if single else out

    def embed(
        self,
        audio: AudioInput | Sequence[AudioInput],
        *,
        sample_rate: int | None = None,
        layers: Sequence[int] = (-1,),
        as_dict: bool = False,
        batch_size: int = 8,
        pooled: bool = False,
    ) -> list[torch.Tensor] | dict[int, torch.Tensor] | torch.Tensor | list[Any]:
        """Encoder layer outputs of one input or a list of inputs.

        Args:
            audio, sample_rate: as for :meth:`transcribe`.
            layers: encoder layers to return: 0 is the front-end output (block input),
                ``i`` the output of block ``i``, negative counts from the end (-1 = last).
            as_dict: return ``{layer: tensor}`` (keys as given) instead of a list.
            batch_size: inputs per forward pass.
            pooled: return one (C,) utterance embedding per input instead: the model's
                own (``module.embedding``; the ``"ast"`` family: the mean of its CLS and
                distillation tokens after the final norm, what its classifier reads), or
                for a family without one the mean of the last layer over the input's
                frames. ``layers``/``as_dict`` must stay at their defaults.

        Returns:
            Per input, a list (in ``layers`` order) of float32 CPU tensors (T', C), T'
            being the input's encoder frames (``frame_shift_s`` apart; for the ``"ast"``
            family the P patch tokens of the fixed-size input, time-major); or the dict;
            or with ``pooled`` a (C,) tensor. For a list of inputs, a list of those.
        """
        if isinstance(layers, int):
            layers = (layers,)
        layers = tuple(int(i) for i in layers)
        if not layers:
            raise ValueError("layers must name at least one encoder layer")
        if pooled:
            if layers != (-1,) or as_dict:
                raise ValueError("pooled=True returns one utterance embedding per input; "
                                 "leave layers and as_dict at their defaults")
            return self._embed_pooled(audio, sample_rate, batch_size)
        waves, single = self._inputs(audio, sample_rate)

        def encode(feats: torch.Tensor, feat_lens: torch.Tensor) -> list[Any]:
            _, _, outs = self.module.encode(feats, feat_lens, return_layers=layers)
            # The blocks' frames (a length adapter's output lengths would differ).
            layer_lens = self.module.encoder.layer_lengths(feat_lens)
            rows = []
            for n, length in enumerate(layer_lens.tolist()):
                # A copy, so that one kept embedding does not pin the whole batch.
                per_layer = [o[n, :length].to("cpu", torch.float32, copy=True) for o in outs]
                rows.append(dict(zip(layers, per_layer, strict=True)) if as_dict else per_layer)
            return rows

        out = self._batches(waves, batch_size, encode)
        return out[0] if single else out

    def _embed_pooled(self, audio: Any, sample_rate: int | None, batch_size: int) -> Any:
        waves, single = self._inputs(audio, sample_rate)
        own = getattr(self.module, "embedding", None)

        def pool(feats: torch.Tensor, feat_lens: torch.Tensor) -> list[torch.Tensor]:
            if own is not None:
                emb = own(feats, feat_lens)
            else:
                _, _, (last,) = self.module.encode(feats, feat_lens, return_layers=(-1,))
                lens = self.module.encoder.layer_lengths(feat_lens).to(last.device)
                valid = torch.arange(last.shape[1], device=last.device)[None, :] < lens[:, None]
                emb = (last * valid[..., None]).sum(1) / lens.clamp(min=1)[:, None]
            return [row.to("cpu", torch.float32, copy=True) for row in emb]

        out = self._batches(waves, batch_size, pool)
        return out[0] if single else out

    @property
    def lm_tokenizer(self) -> Any:
        """A speech LM's text tokenizer (the model directory's ``lm_tokenizer`` part), or None."""
        if "_lm_tokenizer" not in self.__dict__:
            from speechfm.models.io import load_part

            found = None
            if self.path is not None:
                found = load_part(self.path, "lm_tokenizer", self.config or None)
            self.__dict__["_lm_tokenizer"] = found
        return self.__dict__["_lm_tokenizer"]

    @property
    def framing(self) -> dict[str, str]:
        """The prompt framing a speech LM was trained with: ``{"prompt_before",
        "prompt_after", ...}`` from its directory's ``inserter.json`` (written by
        recipes/inserter; :func:`speechfm.models.speech_lm.read_framing`), or ``{}``."""
        if "_framing" not in self.__dict__:
            from speechfm.models.speech_lm.prompt import read_framing

            self.__dict__["_framing"] = {} if self.path is None else read_framing(self.path)
        return self.__dict__["_framing"]

    def respond(self, audio: AudioInput | None = None, *, text: str | None = None,
                prompt_before: str | None = None, prompt_after: str | None = None,
                sample_rate: int | None = None, max_new_tokens: int = 64) -> str:
        """A speech LM's greedy answer to one spoken (``audio``) or written (``text``)
        input, framed as in training (:mod:`speechfm.models.speech_lm.prompt`)::

            <s> prompt_before [speech | text] prompt_after  ->  answer </s>

        Args:
            audio: one input as for :meth:`transcribe` (path, array with ``sample_rate``,
                or ``(samples, rate)``).
            text: a text input instead of audio (the text condition of an instruction).
            prompt_before, prompt_after: the instruction framing around the input; None:
                the framing the model was trained with (:attr:`framing`; "" without one).
            sample_rate: rate in Hz of an array ``audio`` given without its own.
            max_new_tokens: the longest answer in tokens.

        Returns:
            The answer text (special tokens dropped, outer whitespace stripped).

        Raises:
            SpeechfmError: the model is not a speech LM.
            ValueError: neither or both of ``audio`` and ``text``.
        """
        if (audio is None) == (text is None):
            raise ValueError("respond takes one input: audio or text=")
        if audio is not None and not _is_single(audio):
            raise ValueError("respond takes one input; use respond_batch for a list")
        return self.respond_batch(
            None if audio is None else [audio], texts=None if text is None else [text],
            prompt_before=prompt_before, prompt_after=prompt_after, sample_rate=sample_rate,
            max_new_tokens=max_new_tokens)[0]

    def respond_batch(self, audio: Sequence[AudioInput] | None = None, *,
                      texts: Sequence[str] | None = None, prompt_before: str | None = None,
                      prompt_after: str | None = None, sample_rate: int | None = None,
                      max_new_tokens: int = 64, batch_size: int = 8) -> list[str]:
        """:meth:`respond` for a list of audio inputs or of ``texts`` (one prompt framing for
        all), generated in batches (left-padded; an answer does not depend on its batch).

        Returns:
            The answers in input order.
        """
        from functools import partial

        from speechfm.models.speech_lm.prompt import decode_response, prompt_segments

        tok = self.lm_tokenizer
        if not hasattr(self.module, "generate") or tok is None:
            raise SpeechfmError(f"{self.path}: this {self.family} model is not a speech LM "
                                "(no generate, or no lm_tokenizer part), so it cannot respond")
        if (audio is None) == (texts is None):
            raise ValueError("respond_batch takes audio inputs or texts=, one of them")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prompt_before is None:
            prompt_before = self.framing.get("prompt_before", "")
        if prompt_after is None:
            prompt_after = self.framing.get("prompt_after", "")
        frame = partial(prompt_segments, tok, prompt_before=prompt_before,
                        prompt_after=prompt_after)
        generate = partial(self.module.generate, max_new_tokens=max_new_tokens,
                           eos_id=tok.eos_token_id)
        if texts is not None:
            if isinstance(texts, str):
                raise TypeError("texts must be a list of strings (respond(text=) takes one)")
            ids = [row for start in range(0, len(texts), batch_size)
                   for row in generate([frame(text=t) for t in texts[start:start + batch_size]])]
        else:
            waves, _ = self._inputs(audio if _is_single(audio) else list(audio), sample_rate)
            ids = self._batches(waves, batch_size, lambda feats, lens: generate(
                [frame(speech=f[:n]) for f, n in zip(feats, lens.tolist(), strict=True)]))
        return [decode_response(tok, row) for row in ids]

    def stream(
        self,
        *,
        method: str = "greedy",
        beam: int = 4,
        chunk_size: int | None = None,
        left_context: int | None = None,
        lang: str | None = None,
    ) -> AudioStream:
        """Start recognising one live audio stream (transducer models).

        Args:
            method: ``"greedy"`` or ``"beam"`` (modified beam search).
            beam: beam width for ``method="beam"``.
            chunk_size: encoder frames per attention chunk (latency = chunk x
                ``frame_shift_s``); default: the encoder's configured chunk, or
                :data:`DEFAULT_STREAM_CHUNK` frames for a full-context encoder.
            left_context: encoder frames of cached left context (-1 = all); default:
                the model's.
            lang: the stream's language: its language-dependent adapters run
                (None = the base model).

        Returns:
            An :class:`AudioStream`: feed it pieces with ``accept_waveform``.

        Raises:
            SpeechfmError: the model is not a transducer (CTC models transcribe whole
                inputs with :meth:`transcribe`).
        """
        self._require_asr("stream")
        if not hasattr(self.module, "stream"):
            raise SpeechfmError(
                f"{self.path}: streaming recognition needs a streaming-capable model (a "
                f"transducer); this is a {self.family} model (use transcribe())"
            )
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if chunk_size is None:
            own = int(self.module.encoder.chunk_size or -1)
            chunk_size = own if own > 0 else DEFAULT_STREAM_CHUNK
        return AudioStream(self, method=method, beam=beam, chunk_size=chunk_size,
                           left_context=left_context, **self._language(lang))


class AudioStream:
    """Live recognition of one audio stream: pieces of audio in, text so far out.

    Pieces can be of any length (even empty) and at any rate (resampled on the fly with
    soxr's streaming resampler; all pieces of a stream share one rate). Features come from
    kaldi-native-fbank's online extractor (the extractor the training features came
    from); every completed encoder chunk advances the search at once, so the text grows
    while audio arrives. The final result equals decoding the whole recording with the
    model's chunked attention. Made by :meth:`SpeechModel.stream`.
    """

    def __init__(self, model: SpeechModel, *, method: str, beam: int, chunk_size: int | None,
                 left_context: int | None, language: str | None = None) -> None:
        import kaldi_native_fbank as knf

        self._model = model
        module = model.module
        self._stream = module.stream(method=method, beam=beam, chunk_size=chunk_size,
                                     left_context=left_context, language=language)
        self._fbank = knf.OnlineFbank(module.encoder.fbank.config.to_knf())
        self._frames_used = 0
        self._rate: int | None = None
        self._resampler: Any = None
        self.num_samples = 0
        """Samples accepted so far, at the model's rate."""
        self.finished = False
        """True after :meth:`finalize`."""
        self._text: tuple[list[int], str] | None = None  # the last tokens decoded, and text

    @property
    def num_frames(self) -> int:
        """Encoder frames decoded so far (``x frame_shift_s`` = audio recognised)."""
        return self._stream.num_frames

    @property
    def text(self) -> str:
        """The text recognised so far."""
        tokens = self._stream.result().tokens
        if self._text is None or self._text[0] != tokens:  # most pieces add no token
            self._text = (tokens, self._model.tokenizer.decode(tokens))
        return self._text[1]

    def _feed(self, x: np.ndarray, *, flush: bool = False) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size:
            self._fbank.accept_waveform(float(self._model.sample_rate), x)
            self.num_samples += x.size
        ready = self._fbank.num_frames_ready
        new = ready - self._frames_used
        # The search advances a whole chunk at a time: frames stay in the extractor until
        # they complete one (or the audio ends), which saves the stream a call per piece.
        if new > 0 and (flush or new >= self._stream.frames_to_next_chunk):
            frames = np.stack([self._fbank.get_frame(i) for i in range(self._frames_used, ready)])
            self._stream.accept_features(torch.from_numpy(frames))
            self._frames_used = ready

    def accept_waveform(self, samples: Any, sample_rate: int | None = None) -> str:
        """Feed the next piece of audio.

        Args:
            samples: (S,) or (channels, S) floats in [-1, 1] or PCM integers (S may be 0).
            sample_rate: the piece's rate in Hz; required on the first piece, and later
                pieces must keep it (None = the stream's rate).

        Returns:
            The text recognised so far.

        Raises:
            AudioError: no rate, a changed rate, non-finite samples, a finished stream.
        """
        if self.finished:
            raise AudioError("this stream is finalized; start a new one with model.stream()")
        rate = self._rate if sample_rate is None else sample_rate
        if rate is None:
            raise AudioError("the first audio piece needs its sample_rate (Hz)")
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise AudioError(f"sample rate must be a positive integer (Hz), got {rate!r}")
        if self._rate is None:
            self._rate = int(rate)
            if self._rate != self._model.sample_rate:
                import soxr

                self._resampler = soxr.ResampleStream(self._rate, self._model.sample_rate, 1,
                                                      dtype="float32")
        elif rate != self._rate:
            raise AudioError(f"audio piece at {rate} Hz in a stream started at {self._rate} Hz")
        name = f"audio piece at sample {self.num_samples}"
        if (_is_array(samples) and samples.shape[-1] == 0) or np.size(samples) == 0:
            return self.text
        x = _to_float_mono(samples, name).astype(np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        self._feed(x)
        return self.text

    def finalize(self, *, timestamps: bool = False) -> str | Transcript:
        """End of audio: flush the resampler, the last feature frames and the last chunk.

        Args:
            timestamps: return a :class:`Transcript` (word and token times, confidences)
                instead of the text.
        """
        if not self.finished:
            if self._resampler is not None:
                self._feed(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._fbank.input_finished()
            self._feed(np.zeros(0, np.float32), flush=True)
            hyp = self._stream.finalize()
            self.finished = True
            self._hyp = as_ctc_hypothesis(hyp)
        if timestamps:
            return self._model._transcript(self._hyp, self.num_samples / self._model.sample_rate)
        return self._model.tokenizer.decode(self._hyp.tokens)
