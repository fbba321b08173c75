"""Interleaved speech/text sequences for InSerter-style pre-training.

InSerter ("Speech Instruction Following with Unsupervised Interleaved Pre-training")
takes documents of a text corpus, speaks randomly chosen spans of sentences with TTS and
interleaves them with the surrounding text, ``text | speech | text | speech ...``; a
speech LM is trained with next-token prediction on the text tokens only. This module
makes such data offline, at small scale, with espeak-ng (``corpora.tts``) and the
split-disjoint voice pools of ``corpora.mini_cv_lang``:

* ``read_documents``: documents (id + normalised sentences) from text files, the UDHR
  file of a language and, optionally, generated wordfreq sentences;
* ``plan_sequences``: which spans are spoken, with which voice and noise (no audio);
* ``build_interleaved``: synthesises a plan into sharded ``jsonl.gz`` + audio files,
  resumable shard by shard, reusing cached audio;
* ``speech_segments_manifest``: the speech segments with their transcripts as a lhotse
  CutSet (the ASR view, for alignment and feature extraction);
* ``synthesize_texts``: speak arbitrary texts with a voice pool (benchmark instructions
  with the ``test`` pool, whose voices training never uses).

Layout of ``build_interleaved(documents, out_dir, config)``::

    build.json                     config, shard size and plan digest (reruns must match)
    audio/<segment id>.flac        one file per speech segment, 16-bit mono
    sequences-00000.jsonl.gz ...   one sequence per line (see ``build_interleaved``)
    index.json                     config, shards and counts, once every shard exists
    cuts_speech.jsonl.gz           written by ``speech_segments_manifest``

Same documents and config give the same files, whatever ``num_workers``, ``max_shards``
or interruptions: a speech segment's audio is a function of its synthesis batch
(``synth_batch_size`` consecutive segments of the plan, spoken by one fresh process; see
``tts.map_in_workers``), never of the sharding or of what was already cached.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import math
import os
import random
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from speechfm.data.corpora.mini_cv_lang import (
    VOICE_POOLS,
    VoicePool,
    cut_dict,
    render_utterance,
    sample_voice,
    write_cuts_jsonl_gz,
)
from speechfm.data.corpora.text_sources import (
    default_text_dir,
    normalize_text,
    read_paragraphs,
    split_sentences,
    text_file,
    wordfreq_prompts,
)
from speechfm.data.corpora.tts import ESPEAK_VOICES, VoiceSpec, map_in_workers
from speechfm.errors import DataError

_log = logging.getLogger(__name__)

SHARD_NAME = "sequences-{:05d}.jsonl.gz"
"""File name of shard ``i`` under the output folder."""
AUDIO_FORMATS: dict[str, str] = {"flac": "FLAC", "wav": "WAV"}
"""Audio file suffix -> soundfile format (16-bit PCM either way)."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DIGIT = re.compile(r"\d")
_CLAUSE_END = re.compile(r"(?<=,)\s+")


# ----------------------------------------------------------------------------- documents


@dataclass(kw_only=True)
class Document:
    """A text document: an id and its sentences, normalised and speakable."""

    id: str
    """Unique id (letters, digits, ``. _ -``); its sequences' and segments' ids start with it."""
    sentences: list[str]
    """Sentences normalised by ``text_sources.normalize_text``: lower case, no punctuation, no digits."""
    source: str = "file"
    """Where the text comes from: ``file``, ``udhr`` or ``wordfreq``."""


def _safe_id(name: str) -> str:
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "-")).lstrip("._-")
    return out or "doc"


def _split_long(sentence: str, max_words: int | None) -> list[str]:
    """Cut a sentence of more than ``max_words`` words at commas (clauses merged greedily),
    and a clause that is still too long into equal word chunks."""
    words = sentence.split()
    if max_words is None or len(words) <= max_words:
        return [sentence]
    pieces: list[list[str]] = []
    for clause in _CLAUSE_END.split(sentence):
        cw = clause.split()
        if pieces and len(pieces[-1]) + len(cw) <= max_words:
            pieces[-1].extend(cw)
        elif len(cw) <= max_words:
            pieces.append(cw)
        else:
            k = math.ceil(len(cw) / max_words)
            size = math.ceil(len(cw) / k)
            pieces.extend(cw[i : i + size] for i in range(0, len(cw), size))
    return [" ".join(p) for p in pieces]


def _sentences(paragraphs: Iterable[str], lang: str, max_words: int | None, where: str) -> list[str]:
    out, dropped = [], 0
    for para in paragraphs:
        for sent in split_sentences(para):
            if _DIGIT.search(sent):
                dropped += 1  # espeak would say "1948" in words the transcript does not have
                continue
            for piece in _split_long(sent, max_words):
                text = normalize_text(piece, lang)
                if text:
                    out.append(text)
    if dropped:
        _log.info("interleave: %s: dropped %d sentences containing digits", where, dropped)
    return out


def read_documents(
    paths_or_dir: str | Path | Iterable[str | Path] | None = None,
    lang: str = "en",
    *,
    udhr: bool | None = None,
    text_dir: str | Path | None = None,
    generated_docs: int = 0,
    sentences_per_generated_doc: int = 12,
    max_sentence_words: int | None = 40,
    seed: int = 0,
) -> list[Document]:
    """Documents of normalised, speakable sentences, one per text file.

    Args:
        paths_or_dir: text files and/or folders (every ``*.txt`` below a folder, sorted),
            read with ``text_sources.read_paragraphs``: the first non-empty line of a file
            is its title and is dropped, as are headings. None: the UDHR file only.
        lang: ISO 639-1 code of the text (normalisation, UDHR and wordfreq language).
        udhr: add the UDHR file of ``lang`` (id ``udhr-<iso3>``); None means "only when
            ``paths_or_dir`` is None".
        text_dir: folder of the UDHR files (default ``text_sources.default_text_dir()``).
        generated_docs: add this many documents of wordfreq word sequences (ids
            ``wordfreq-<lang>-<n>``) to enlarge a small corpus; not grammatical text.
        sentences_per_generated_doc: sentences in each generated document.
        max_sentence_words: longer sentences are cut at commas (or into equal chunks),
            so that a spoken sentence stays a few seconds long; None keeps them whole.
        seed: seeds the generated sentences.

    Sentences are split as in ``text_sources`` (at ``. ! ? ; :``), normalised with
    ``text_sources.normalize_text``, and dropped when they contain digits. Documents
    left without sentences are dropped; repeated ids get ``-2``, ``-3``... appended.
    """
    files: list[tuple[str, Path]] = []
    if paths_or_dir is not None:
        items = [paths_or_dir] if isinstance(paths_or_dir, (str, Path)) else list(paths_or_dir)
        for item in items:
            p = Path(item)
            if p.is_dir():
                found = sorted(p.rglob("*.txt"))
                if not found:
                    raise DataError(f"no .txt files under {p}")
                files.extend((_safe_id(f.relative_to(p).with_suffix("").as_posix()), f) for f in found)
            elif p.is_file():
                files.append((_safe_id(p.stem), p))
            else:
                raise DataError(f"no such text file or folder: {p}")
    docs = [
        Document(id=doc_id, sentences=_sentences(read_paragraphs(path), lang, max_sentence_words, str(path)))
        for doc_id, path in files
    ]
    if udhr if udhr is not None else paths_or_dir is None:
        path = text_file(text_dir if text_dir is not None else default_text_dir(), lang)
        sents = _sentences(read_paragraphs(path), lang, max_sentence_words, str(path))
        docs.append(Document(id=f"udhr-{path.stem}", sentences=sents, source="udhr"))
    if generated_docs > 0:
        if sentences_per_generated_doc < 1:
            raise DataError(f"sentences_per_generated_doc must be >= 1, got {sentences_per_generated_doc}")
        k = sentences_per_generated_doc
        texts = wordfreq_prompts(lang, generated_docs * k, seed=seed, split="interleave")
        if not texts:
            raise DataError(f"cannot generate documents: wordfreq is absent or does not cover {lang!r}")
        for i in range(0, len(texts), k):
            docs.append(Document(id=f"wordfreq-{lang}-{i // k:05d}", sentences=texts[i : i + k], source="wordfreq"))
    out: list[Document] = []
    seen: dict[str, int] = {}
    for doc in docs:
        if not doc.sentences:
            _log.warning("interleave: document %s has no speakable sentence; skipped", doc.id)
            continue
        n = seen[doc.id] = seen.get(doc.id, 0) + 1
        out.append(doc if n == 1 else dataclasses.replace(doc, id=f"{doc.id}-{n}"))
    return out


# ----------------------------------------------------------------------------- plan


def _check_noise(noise_prob: float, snr_range: tuple[float, float]) -> None:
    if not 0.0 <= noise_prob <= 1.0:
        raise DataError(f"noise_prob must be within [0, 1], got {noise_prob}")
    if len(snr_range) != 2 or snr_range[0] > snr_range[1]:
        raise DataError(f"snr_range must be (low, high) in dB, got {snr_range}")


def _resolve_pool(pool: str | VoicePool) -> VoicePool:
    if isinstance(pool, VoicePool):
        return pool
    if pool not in VOICE_POOLS:
        raise DataError(f"unknown voice pool {pool!r}; known: {sorted(VOICE_POOLS)}")
    return VOICE_POOLS[pool]


@dataclass(kw_only=True)
class InterleaveConfig:
    """How documents become interleaved text/speech sequences and how speech is rendered."""

    seed: int = 0
    """Seeds span choice, voices, noise and rendering: same seed and documents, same data."""
    speech_ratio: float = 0.3
    """Target fraction of the corpus' sentences that are spoken, in (0, 1)."""
    min_span_sentences: int = 1
    """Fewest consecutive sentences in one speech segment."""
    max_span_sentences: int = 3
    """Most consecutive sentences in one speech segment."""
    max_sequence_sentences: int = 16
    """Documents are cut into sequences of at most this many sentences (balanced lengths)."""
    voice_pool: str | VoicePool = "train"
    """A name in ``mini_cv_lang.VOICE_POOLS`` or a VoicePool; training data uses ``train``."""
    lang: str = "en"
    """ISO 639-1 code of the text; picks the espeak-ng voice (``tts.ESPEAK_VOICES``)."""
    noise_prob: float = 0.5
    """Probability that a speech segment gets additive (white, pink or brown) noise."""
    snr_range: tuple[float, float] = (10.0, 40.0)
    """(low, high) SNR of that noise in dB, drawn uniformly."""
    sample_rate: int = 16000
    """Audio sample rate in Hz."""
    audio_format: str = "flac"
    """Audio file format: ``flac`` or ``wav`` (16-bit PCM either way)."""
    synth_batch_size: int = 32
    """Consecutive speech segments spoken by one fresh process; part of what fixes the audio."""

    def validate(self) -> None:
        if not 0.0 < self.speech_ratio < 1.0:
            raise DataError(f"speech_ratio must be within (0, 1), got {self.speech_ratio}")
        if not 1 <= self.min_span_sentences <= self.max_span_sentences:
            raise DataError(
                "need 1 <= min_span_sentences <= max_span_sentences, got "
                f"{self.min_span_sentences}, {self.max_span_sentences}"
            )
        if self.max_sequence_sentences < max(3, self.min_span_sentences + 1):
            raise DataError(
                "max_sequence_sentences must be >= 3 and leave room for text beside a speech span, "
                f"got {self.max_sequence_sentences}"
            )
        _resolve_pool(self.voice_pool)
        if self.lang not in ESPEAK_VOICES:
            raise DataError(f"no espeak-ng voice configured for {self.lang!r}; known: {sorted(ESPEAK_VOICES)}")
        _check_noise(self.noise_prob, self.snr_range)
        if not 8000 <= self.sample_rate <= 48000:
            raise DataError(f"sample_rate must be within 8000..48000 Hz, got {self.sample_rate}")
        if self.audio_format not in AUDIO_FORMATS:
            raise DataError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, got {self.audio_format!r}")
        if self.synth_batch_size < 1:
            raise DataError(f"synth_batch_size must be >= 1, got {self.synth_batch_size}")

    def to_dict(self) -> dict:
        """JSON-ready copy (a VoicePool becomes a dict of lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(kw_only=True, frozen=True)
class Segment:
    """One piece of a sequence: text for the LM, or a span of sentences to be spoken."""

    kind: str
    """``text`` or ``speech``."""
    text: str
    """Its sentences joined by spaces (for speech: the transcript)."""
    num_sentences: int
    """How many document sentences it covers."""
    id: str | None = None
    """Speech only: ``<sequence id>-<k>``, also the stem of its audio file."""
    voice: VoiceSpec | None = None
    """Speech only: the espeak-ng voice setting."""
    speaker: str | None = None
    """Speech only: speaker id of that voice setting (``mini_cv_lang.speaker_id``)."""
    snr_db: float | None = None
    """Speech only: SNR of the additive noise in dB, None for clean speech."""
    seed: int | None = None
    """Speech only: seed of the rendering (silence padding, noise, level)."""


@dataclass(kw_only=True, frozen=True)
class Sequence:
    """A training sequence: consecutive sentences of one document, text and speech alternating."""

    id: str
    """``<document id>-<nnnn>`` (the part of the document, from 0)."""
    doc_id: str
    """The document it comes from."""
    segments: list[Segment] = field(default_factory=list)
    """Alternating text and speech segments, in document order."""


def _balanced_parts(n: int, max_len: int) -> list[tuple[int, int]]:
    """``(start, end)`` of ceil(n / max_len) consecutive parts whose sizes differ by <= 1."""
    parts = max(1, math.ceil(n / max_len))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _span_counts(k: int, n: int, lo: int, hi: int) -> tuple[int, int] | None:
    """Range of the number of spans that cover ``k`` spoken sentences out of ``n``, each
    span ``lo``..``hi`` long, no two spans adjacent (at most one per gap between text)."""
    m_lo, m_hi = math.ceil(k / hi), min(k // lo, n - k + 1)
    return (m_lo, m_hi) if m_lo <= m_hi else None


def _choose_spans(n: int, config: InterleaveConfig, rng: random.Random) -> list[tuple[int, int]]:
    """``(start, length)`` of the spoken spans of an ``n``-sentence sequence, sorted.

    The number of spoken sentences is ``speech_ratio * n`` rounded at random (so the
    corpus-wide fraction is unbiased), kept within 1..n-1 so that both kinds occur.
    """
    lo, hi = config.min_span_sentences, config.max_span_sentences
    feasible = [j for j in range(1, n) if _span_counts(j, n, lo, hi)]
    if not feasible:
        return []  # one sentence, or fewer than min_span_sentences + 1
    x = config.speech_ratio * n
    k = int(x) + (rng.random() < x - int(x))
    k = min(feasible, key=lambda j: (abs(j - k), j))
    m_lo, m_hi = _span_counts(k, n, lo, hi)
    m = rng.randint(m_lo, m_hi)
    lengths = [lo] * m
    for _ in range(k - lo * m):
        lengths[rng.choice([i for i in range(m) if lengths[i] < hi])] += 1
    # gap g = number of text sentences before the span; distinct gaps keep spans apart
    gaps = sorted(rng.sample(range(n - k + 1), m))
    return [(g + sum(lengths[:i]), lengths[i]) for i, g in enumerate(gaps)]


def plan_sequences(documents: Iterable[Document], config: InterleaveConfig) -> list[Sequence]:
    """Cut documents into sequences and choose their speech spans, voices and noise.

    Deterministic: each document's plan depends on ``config`` and that document alone
    (its random generator is seeded by ``seed`` and the document id). No two speech
    segments are adjacent, and a sequence of at least ``min_span_sentences + 1``
    sentences has both kinds (every document of >= 2 sentences, with the defaults).
    """
    config.validate()
    pool = _resolve_pool(config.voice_pool)
    out: list[Sequence] = []
    seen: set[str] = set()
    for doc in documents:
        if not _ID.match(doc.id):
            raise DataError(f"document id {doc.id!r} must be letters, digits, '.', '_' or '-'")
        if doc.id in seen:
            raise DataError(f"document id {doc.id!r} is repeated")
        seen.add(doc.id)
        if not doc.sentences:
            continue
        rng = random.Random(zlib.crc32(f"interleave/{config.seed}/{doc.id}".encode()))
        for part, (a, b) in enumerate(_balanced_parts(len(doc.sentences), config.max_sequence_sentences)):
            sents = doc.sentences[a:b]
            seq_id = f"{doc.id}-{part:04d}"
            spoken = {}
            for start, length in _choose_spans(len(sents), config, rng):
                spoken[start] = length
            segments: list[Segment] = []
            i, text = 0, []
            while i < len(sents):
                if i not in spoken:
                    text.append(sents[i])
                    i += 1
                    continue
                if text:
                    segments.append(Segment(kind="text", text=" ".join(text), num_sentences=len(text)))
                    text = []
                length = spoken[i]
                speaker, voice = sample_voice(config.lang, pool, rng)
                noisy = rng.random() < config.noise_prob
                snr = round(rng.uniform(*config.snr_range), 2) if noisy else None
                segments.append(Segment(
                    kind="speech", text=" ".join(sents[i : i + length]), num_sentences=length,
                    id=f"{seq_id}-{sum(s.kind == 'speech' for s in segments):02d}",
                    voice=voice, speaker=speaker, snr_db=snr, seed=config.seed,
                ))
                i += length
            if text:
                segments.append(Segment(kind="text", text=" ".join(text), num_sentences=len(text)))
            out.append(Sequence(id=seq_id, doc_id=doc.id, segments=segments))
    return out


# ----------------------------------------------------------------------------- synthesis


@dataclass(frozen=True)
class _SynthJob:
    id: str
    text: str
    voice: VoiceSpec
    path: str
    snr_db: float | None
    seed: int
    sample_rate: int


def _synth_jobs(jobs: list[_SynthJob]) -> list[tuple[str, int | str]]:
    """Worker: speak, render and write each job's audio atomically.

    Returns ``(id, num_samples)``, or ``(id, error message)`` when espeak-ng fails.
    """
    import soundfile as sf

    from speechfm.data.corpora import tts

    out: list[tuple[str, int | str]] = []
    for job in jobs:
        try:
            audio, _ = tts.synthesize(job.text, job.voice, sample_rate=job.sample_rate)
        except tts.TTSError as e:
            out.append((job.id, str(e) or type(e).__name__))
            continue
        pcm = render_utterance(audio, uttid=job.id, seed=job.seed, snr_db=job.snr_db, sample_rate=job.sample_rate)
        path = Path(job.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        sf.write(tmp, pcm, job.sample_rate, format=AUDIO_FORMATS[path.suffix[1:]], subtype="PCM_16")
        os.replace(tmp, path)
        out.append((job.id, int(pcm.size)))
    return out


def _voice_dict(seg_voice: VoiceSpec, snr_db: float | None) -> dict:
    """The voice as mini_cv_lang's cuts record it (``custom["voice"]``)."""
    return {"name": seg_voice.name, "pitch": seg_voice.pitch, "rate": seg_voice.rate,
            "pitch_range": seg_voice.pitch_range, "snr_db": snr_db}


def _fingerprint(config: InterleaveConfig, shard_size: int, plan: list[Sequence]) -> dict:
    h = hashlib.sha256()
    for seq in plan:
        h.update(json.dumps(dataclasses.asdict(seq), sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return {"config": config.to_dict(), "shard_size": shard_size, "plan_sha256": h.hexdigest()}


def _check_or_write_build(out_dir: Path, build: dict) -> None:
    path = out_dir / "build.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != build:
            raise DataError(
                f"{out_dir} holds a build of other documents or settings (see {path}); "
                "use a fresh folder or delete it"
            )
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(build, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _audio_name(seg_id: str, config: InterleaveConfig) -> str:
    return f"audio/{seg_id}.{config.audio_format}"


def _sequence_line(seq: Sequence, results: dict[str, int | str], config: InterleaveConfig) -> dict:
    """The shard line of ``seq``; speech that could not be spoken is merged into the text."""
    segs: list[dict] = []
    for seg in seq.segments:
        if seg.kind == "speech":
            res = results.get(seg.id)
            if isinstance(res, int):
                segs.append({
                    "kind": "speech", "id": seg.id, "text": seg.text, "num_sentences": seg.num_sentences,
                    "audio": _audio_name(seg.id, config), "num_samples": res, "sampling_rate": config.sample_rate,
                    "speaker": seg.speaker, "voice": _voice_dict(seg.voice, seg.snr_db),
                })
                continue
            _log.warning("interleave: segment %s could not be spoken (%s); kept as text: %r", seg.id, res, seg.text)
        if segs and segs[-1]["kind"] == "text":
            segs[-1]["text"] += " " + seg.text
            segs[-1]["num_sentences"] += seg.num_sentences
        else:
            segs.append({"kind": "text", "text": seg.text, "num_sentences": seg.num_sentences})
    return {"id": seq.id, "doc_id": seq.doc_id, "segments": segs}


def build_interleaved(
    documents: Iterable[Document],
    out_dir: str | Path,
    config: InterleaveConfig,
    *,
    num_workers: int = 1,
    shard_size: int = 512,
    max_shards: int | None = None,
    progress: bool = True,
) -> Path:
    """Plan and synthesise interleaved sequences into ``out_dir``; return ``out_dir``.

    Args:
        documents: from ``read_documents``.
        out_dir: output folder (created). A rerun with the same documents and config
            resumes: shards that exist are skipped and cached audio is reused; other
            documents or settings are refused (``build.json`` records them).
        config: the plan and rendering settings.
        num_workers: synthesis processes (does not change the output).
        shard_size: sequences per shard file.
        max_shards: write at most this many missing shards, then return (a later call
            finishes the build); None writes all.
        progress: show a tqdm bar over the segments synthesised.

    Shard ``sequences-<i>.jsonl.gz`` holds one JSON object per line::

        {"id": "udhr-eng-0000", "doc_id": "udhr-eng", "segments": [
          {"kind": "text", "text": "...", "num_sentences": 2},
          {"kind": "speech", "id": "udhr-eng-0000-00", "text": "...", "num_sentences": 1,
           "audio": "audio/udhr-eng-0000-00.flac", "num_samples": 51234, "sampling_rate": 16000,
           "speaker": "en_m3_p0r1", "voice": {"name": "en-us+m3", "pitch": 21, "rate": 160,
           "pitch_range": 44, "snr_db": 23.5}}, ...]}

    Audio paths are relative to ``out_dir``. A segment espeak-ng cannot speak is logged
    and becomes text (merged with its neighbours). Shards are written atomically; the
    ``index.json`` summary is written once all exist.
    """
    import soundfile as sf

    config.validate()
    if shard_size < 1:
        raise DataError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    documents = list(documents)
    plan = plan_sequences(documents, config)
    if not plan:
        raise DataError("no sequences to build: the documents have no sentences")
    out_dir.mkdir(parents=True, exist_ok=True)
    build = _fingerprint(config, shard_size, plan)
    _check_or_write_build(out_dir, build)

    shards = [plan[i : i + shard_size] for i in range(0, len(plan), shard_size)]
    todo = [i for i in range(len(shards)) if not (out_dir / SHARD_NAME.format(i)).exists()]
    if max_shards is not None:
        todo = todo[:max_shards]

    # Synthesis batches run over the whole plan's speech segments, independent of shards.
    speech = [seg for seq in plan for seg in seq.segments if seg.kind == "speech"]
    batch_of = {seg.id: j // config.synth_batch_size for j, seg in enumerate(speech)}
    needs = {i: sorted({batch_of[s.id] for q in shards[i] for s in q.segments if s.kind == "speech"}) for i in todo}
    results: dict[str, int | str] = {}
    uncached: list[int] = []
    for b in sorted({b for bs in needs.values() for b in bs}):
        batch = speech[b * config.synth_batch_size : (b + 1) * config.synth_batch_size]
        paths = [out_dir / _audio_name(seg.id, config) for seg in batch]
        if all(p.exists() for p in paths):
            results.update((seg.id, sf.info(str(p)).frames) for seg, p in zip(batch, paths, strict=True))
        else:
            uncached.append(b)

    done = {b for bs in needs.values() for b in bs} - set(uncached)
    pending = list(todo)

    def flush() -> None:
        while pending and all(b in done for b in needs[pending[0]]):
            i = pending.pop(0)
            lines = [_sequence_line(seq, results, config) for seq in shards[i]]
            path = out_dir / SHARD_NAME.format(i)
            tmp = path.with_name(path.name + ".tmp")
            write_cuts_jsonl_gz(lines, tmp)  # any JSON lines: deterministic gzip bytes
            os.replace(tmp, path)
            _log.info("interleave: wrote %s (%d sequences)", path, len(lines))

    flush()
    batches = []
    for b in uncached:
        batches.append([
            _SynthJob(id=seg.id, text=seg.text, voice=seg.voice, path=str(out_dir / _audio_name(seg.id, config)),
                      snr_db=seg.snr_db, seed=seg.seed, sample_rate=config.sample_rate)
            for seg in speech[b * config.synth_batch_size : (b + 1) * config.synth_batch_size]
        ])
    if batches:
        for b, res in zip(uncached, map_in_workers(
            _synth_jobs, batches, num_workers=num_workers, total=sum(len(x) for x in batches),
            desc="interleave: synthesising" if progress else None,
        ), strict=True):
            results.update(res)
            done.add(b)
            flush()
    if all((out_dir / SHARD_NAME.format(i)).exists() for i in range(len(shards))):
        _write_index(out_dir, build, plan, len(shards), len(documents))
    else:
        written = sum((out_dir / SHARD_NAME.format(i)).exists() for i in range(len(shards)))
        _log.info("interleave: %d of %d shards written; call again to finish", written, len(shards))
    return out_dir


def _read_shard(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _write_index(out_dir: Path, build: dict, plan: list[Sequence], num_shards: int, num_docs: int) -> None:
    names = [SHARD_NAME.format(i) for i in range(num_shards)]
    counts = {"text": 0, "speech": 0}
    sentences = spoken = words = spoken_words = samples = 0
    built: set[str] = set()
    sample_rate = build["config"]["sample_rate"]
    for name in names:
        for line in _read_shard(out_dir / name):
            for seg in line["segments"]:
                counts[seg["kind"]] += 1
                n, w = seg["num_sentences"], len(seg["text"].split())
                sentences += n
                words += w
                if seg["kind"] == "speech":
                    spoken += n
                    spoken_words += w
                    samples += seg["num_samples"]
                    built.add(seg["id"])
    failed = [s.id for q in plan for s in q.segments if s.kind == "speech" and s.id not in built]
    index = {
        **build,
        "shards": names,
        "documents": num_docs,
        "sequences": len(plan),
        "segments": counts,
        "sentences": sentences,
        "spoken_sentences": spoken,
        "spoken_fraction": round(spoken / max(1, sentences), 4),
        "words": words,
        "spoken_words": spoken_words,
        "spoken_word_fraction": round(spoken_words / max(1, words), 4),
        "speech_hours": round(samples / sample_rate / 3600, 4),
        "unspoken_segments": failed,
    }
    tmp = out_dir / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "index.json")


def load_index(out_dir: str | Path) -> dict:
    """The ``index.json`` of a finished build (DataError if the build is not finished)."""
    path = Path(out_dir) / "index.json"
    if not path.is_file():
        raise DataError(f"{out_dir} holds no finished interleaved build (no index.json); run build_interleaved")
    return json.loads(path.read_text(encoding="utf-8"))


def iter_sequences(out_dir: str | Path) -> Iterator[dict]:
    """The sequence lines of a finished build, shard by shard (see ``build_interleaved``)."""
    for name in load_index(out_dir)["shards"]:
        yield from _read_shard(Path(out_dir) / name)


def speech_segments_manifest(out_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write the speech segments of a finished build as lhotse cuts; return the file.

    One MonoCut per segment (``mini_cv_lang.cut_dict``: absolute audio path, transcript,
    language, speaker, ``custom`` with ``voice``, ``sequence`` and ``position`` in it),
    in sequence order, to ``path`` (default ``out_dir/cuts_speech.jsonl.gz``).
    """
    out_dir = Path(out_dir).resolve()
    lang = load_index(out_dir)["config"]["lang"]
    cuts = []
    for line in iter_sequences(out_dir):
        for pos, seg in enumerate(line["segments"]):
            if seg["kind"] != "speech":
                continue
            n, sr = seg["num_samples"], seg["sampling_rate"]
            row = {"id": seg["id"], "path": str(out_dir / seg["audio"]), "text": seg["text"], "lang": lang,
                   "speaker": seg["speaker"], "num_samples": n, "sampling_rate": sr, "duration": round(n / sr, 6)}
            cuts.append(cut_dict(row, extra={"voice": seg["voice"], "sequence": line["id"], "position": pos}))
    path = Path(path) if path is not None else out_dir / "cuts_speech.jsonl.gz"
    write_cuts_jsonl_gz(cuts, path)
    return path


def synthesize_texts(
    items: Iterable[tuple[str, str]],
    out_dir: str | Path,
    *,
    pool: str | VoicePool = "test",
    lang: str = "en",
    noise_prob: float = 0.0,
    snr_range: tuple[float, float] = (10.0, 30.0),
    seed: int = 0,
    num_workers: int = 1,
    batch_size: int = 32,
    sample_rate: int = 16000,
    audio_format: str = "flac",
    progress: bool = True,
) -> Path:
    """Speak ``(id, text)`` items with voices of ``pool``; return the cuts file.

    Writes ``out_dir/audio/<id>.<audio_format>`` and ``out_dir/cuts.jsonl.gz`` (items in
    input order, as ``speech_segments_manifest`` writes them). Each item's voice and
    noise (with probability ``noise_prob``, at an SNR drawn from ``snr_range`` dB) depend
    on ``seed`` and its id; the audio on its batch of ``batch_size`` consecutive items
    too. Texts are spoken and transcribed as given: normalise them first if the
    transcript must match speechfm's normaliser. Raises DataError when espeak-ng cannot
    speak an item.
    """
    items = list(items)
    voice_pool = _resolve_pool(pool)
    if lang not in ESPEAK_VOICES:
        raise DataError(f"no espeak-ng voice configured for {lang!r}; known: {sorted(ESPEAK_VOICES)}")
    _check_noise(noise_prob, snr_range)
    if audio_format not in AUDIO_FORMATS:
        raise DataError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, got {audio_format!r}")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    ids = [i for i, _ in items]
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise DataError(f"item ids must be letters, digits, '.', '_' or '-'; got {bad[:5]}")
    if len(set(ids)) != len(ids):
        raise DataError("item ids must be unique")
    out_dir = Path(out_dir).resolve()
    rows, jobs = [], []
    for item_id, text in items:
        text = " ".join(text.split())
        if not text:
            raise DataError(f"item {item_id!r} has no text")
        rng = random.Random(zlib.crc32(f"speak/{seed}/{item_id}".encode()))
        speaker, voice = sample_voice(lang, voice_pool, rng)
        snr = round(rng.uniform(*snr_range), 2) if rng.random() < noise_prob else None
        path = out_dir / "audio" / f"{item_id}.{audio_format}"
        jobs.append(_SynthJob(id=item_id, text=text, voice=voice, path=str(path), snr_db=snr, seed=seed,
                              sample_rate=sample_rate))
        rows.append({"id": item_id, "path": str(path), "text": text, "lang": lang, "speaker": speaker,
                     "sampling_rate": sample_rate, "voice": _voice_dict(voice, snr)})
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    results: dict[str, int | str] = {}
    for res in map_in_workers(_synth_jobs, batches, num_workers=num_workers, total=len(jobs),
                              desc="interleave: speaking texts" if progress else None):
        results.update(res)
    failed = {k: v for k, v in results.items() if isinstance(v, str)}
    if failed:
        raise DataError(f"espeak-ng could not speak {len(failed)} item(s): {failed}")
    cuts = []
    for r in rows:
        r["num_samples"] = results[r["id"]]
        r["duration"] = round(r["num_samples"] / sample_rate, 6)
        cuts.append(cut_dict(r, extra={"voice": r["voice"]}))
    path = out_dir / "cuts.jsonl.gz"
    write_cuts_jsonl_gz(cuts, path)
    return path
