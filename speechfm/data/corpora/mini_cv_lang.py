"""mini_cv_lang: an offline, synthetic stand-in for CV-Lang10 (+ two unseen languages).

Twelve languages (the ten seen languages of CV-Lang10: en es fr it ky nl ru sv tr tt,
and the unseen pl, id) are spoken by espeak-ng with many voice settings and additive
noise. What makes it usable for honest evaluation:

* **speakers are disjoint across splits**: a speaker is a voice setting, i.e. an
  espeak-ng variant plus a pitch band plus a speaking-rate band. Variants are
  partitioned between train, dev and test, and so are the pitch and rate bands
  (dev/test bands sit between the train bands, so nothing is extrapolated);
* **text is disjoint across splits** (see ``text_sources``);
* every utterance has an orthographic transcript and an IPA transcript produced by the
  same espeak-ng that voiced it (``speechfm.text.ipa.phonemize``).

Output layout under ``out_dir``::

    wav/<lang>/<uttid>.wav           16 kHz, 16-bit PCM
    {train,dev,test}/                Kaldi dirs: wav.scp text text_ipa utt2spk spk2utt utt2lang utt2dur
    cuts_{train,dev,test}.jsonl.gz   lhotse CutSets (supervision language/speaker/text/custom["ipa"])
    summary.json, README.md          utterances, hours, speakers per split and language

Utterance ids are ``<speaker>_<nnnnn>`` with speaker ``<lang>_<variant>_p<i>r<j>``, so
sorting groups utterances by speaker (Kaldi convention). Same seed and arguments give
byte-identical wav files and manifests (paths aside), whatever ``num_workers`` is.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechfm.data.corpora.text_sources import (
    SEEN_LANGS,
    UNSEEN_LANGS,
    load_text_splits,
    ngram_overlap,
)
from speechfm.data.corpora.tts import ESPEAK_VOICES, VoiceSpec
from speechfm.errors import DataError

SPLITS: tuple[str, ...] = ("train", "dev", "test")
SAMPLE_RATE = 16000
DEFAULT_UTTS_PER_LANG = 400

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoicePool:
    """The voice settings of one split: its variants and its pitch and rate bands."""

    variants: tuple[str, ...]
    """espeak-ng variants (voice identities) reserved for this split."""
    pitch_bands: tuple[tuple[int, int], ...]
    """Base-pitch intervals on espeak-ng's 0..100 scale, [lo, hi)."""
    rate_bands: tuple[tuple[int, int], ...]
    """Speaking-rate intervals in words per minute, [lo, hi)."""


#: Disjoint voice pools (variants, pitch bands, rate bands) per split. Female and male
#: variants in every split; robotic/whispering variants are left out.
VOICE_POOLS: dict[str, VoicePool] = {
    "train": VoicePool(
        variants=(
            "m1", "m2", "m3", "m4", "m6", "croak", "klatt", "klatt3", "Andy", "Lee",
            "Michael", "boris", "max", "rob", "f1", "f2", "f4", "Annie", "anika",
            "belinda", "linda",
        ),
        pitch_bands=((15, 30), (40, 55), (70, 85)),
        rate_bands=((115, 135), (155, 175)),
    ),
    "dev": VoicePool(
        variants=("m5", "klatt2", "Gene", "david", "f3", "aunty", "steph"),
        pitch_bands=((30, 40),),
        rate_bands=((135, 145),),
    ),
    "test": VoicePool(
        variants=("m7", "klatt4", "Mario", "edward", "travis", "f5", "Alicia", "shelby"),
        pitch_bands=((55, 70),),
        rate_bands=((145, 155), (175, 190)),
    ),
}


@dataclass(frozen=True)
class _Job:
    uttid: str
    text: str
    voice: VoiceSpec
    wav_path: str
    snr_db: float | None
    seed: int


def speaker_id(lang: str, variant: str, pitch_band: int, rate_band: int) -> str:
    """``<lang>_<variant>_p<i>r<j>`` (lower case, ASCII) for a voice setting."""
    return f"{lang}_{variant.lower()}_p{pitch_band}r{rate_band}"


def sample_voice(lang: str, pool: VoicePool, rng: random.Random) -> tuple[str, VoiceSpec]:
    """A random voice setting of ``pool`` for ``lang``: ``(speaker id, VoiceSpec)``."""
    variant = rng.choice(pool.variants)
    pi = rng.randrange(len(pool.pitch_bands))
    ri = rng.randrange(len(pool.rate_bands))
    plo, phi = pool.pitch_bands[pi]
    rlo, rhi = pool.rate_bands[ri]
    voice = VoiceSpec(
        voice=ESPEAK_VOICES[lang],
        variant=variant,
        pitch=rng.randrange(plo, phi),
        rate=rng.randrange(rlo, rhi),
        pitch_range=rng.randrange(30, 80),
    )
    return speaker_id(lang, variant, pi, ri), voice


def _noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    # shape the spectrum: pink ~ 1/f power, brown ~ 1/f^2
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f) if kind == "pink" else f
    return np.fft.irfft(spec, n)


def render_utterance(
    audio: np.ndarray, *, uttid: str, seed: int, snr_db: float | None, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Pad with 0.05-0.3 s of silence, add noise at ``snr_db`` (None: none), set a random
    level; int16 samples, shape (S,). The randomness is a function of ``(seed, uttid)``."""
    rng = np.random.default_rng([seed, zlib.crc32(uttid.encode())])
    lead = int(rng.uniform(0.05, 0.3) * sample_rate)
    tail = int(rng.uniform(0.05, 0.3) * sample_rate)
    x = np.concatenate([np.zeros(lead), audio.astype(np.float64), np.zeros(tail)])
    if snr_db is not None:
        kind = ("white", "pink", "brown")[int(rng.integers(3))]
        noise = _noise(x.size, kind, rng)
        p_sig = float(np.mean(audio.astype(np.float64) ** 2))
        p_noise = float(np.mean(noise**2)) or 1.0
        x += noise * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    peak = float(np.max(np.abs(x))) or 1.0
    x *= rng.uniform(0.3, 0.9) / peak
    return np.round(x * 32767).astype(np.int16)


def _synth_batch(jobs: list[_Job]) -> list[tuple[str, int]]:
    """Worker: synthesise, render and write each job's wav; ``(uttid, num_samples)``."""
    import soundfile as sf

    from speechfm.data.corpora.tts import synthesize

    out = []
    for job in jobs:
        audio, _ = synthesize(job.text, job.voice, sample_rate=SAMPLE_RATE)
        pcm = render_utterance(audio, uttid=job.uttid, seed=job.seed, snr_db=job.snr_db)
        Path(job.wav_path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(job.wav_path, pcm, SAMPLE_RATE, subtype="PCM_16")
        out.append((job.uttid, int(pcm.size)))
    return out


def write_cuts_jsonl_gz(items: Sequence[dict], path: str | Path) -> None:
    """Write lhotse manifest dicts as ``.jsonl.gz``; same content gives the same bytes.

    (lhotse's own writer stamps the current time into the gzip header.)
    """
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for item in items:
            gz.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))


def write_kaldi_dir(d: str | Path, rows: Sequence[dict]) -> None:
    """Write a Kaldi data dir from utterance rows (one recording per utterance).

    Each row has ``id path text speaker lang duration`` and optionally ``ipa``; files
    written: wav.scp text utt2spk spk2utt utt2lang utt2dur, plus text_ipa when every
    row has an IPA transcript. Lines are sorted by id (ids must start with the speaker).
    """
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r["id"])
    files = {
        "wav.scp": [f"{r['id']} {r['path']}" for r in rows],
        "text": [f"{r['id']} {r['text']}" for r in rows],
        "utt2spk": [f"{r['id']} {r['speaker']}" for r in rows],
        "utt2lang": [f"{r['id']} {r['lang']}" for r in rows],
        "utt2dur": [f"{r['id']} {r['duration']:.4f}" for r in rows],
    }
    if rows and all(r.get("ipa") for r in rows):
        files["text_ipa"] = [f"{r['id']} {r['ipa']}" for r in rows]
    else:
        (d / "text_ipa").unlink(missing_ok=True)
    spk2utt: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        spk2utt[r["speaker"]].append(r["id"])
    files["spk2utt"] = [f"{s} {' '.join(u)}" for s, u in sorted(spk2utt.items())]
    for name, lines in files.items():
        (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def cut_dict(r: dict, *, extra: dict | None = None) -> dict:
    """A lhotse MonoCut (as a dict) spanning one recording, with one supervision.

    ``r`` as for ``write_kaldi_dir`` plus ``num_samples`` and ``sampling_rate``;
    ``custom["ipa"]`` is set when the row has ``ipa``, ``extra`` adds custom fields.
    """
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    rec = Recording(
        id=r["id"],
        sources=[AudioSource(type="file", channels=[0], source=r["path"])],
        sampling_rate=r["sampling_rate"],
        num_samples=r["num_samples"],
        duration=r["duration"],
    )
    custom = {"ipa": r["ipa"]} if r.get("ipa") else {}
    custom.update(extra or {})
    sup = SupervisionSegment(
        id=r["id"],
        recording_id=r["id"],
        start=0.0,
        duration=r["duration"],
        channel=0,
        text=r["text"],
        language=r["lang"],
        speaker=r["speaker"],
        custom=custom or None,
    )
    cut = MonoCut(id=r["id"], start=0.0, duration=r["duration"], channel=0, recording=rec, supervisions=[sup])
    return cut.to_dict()


def _split_counts(utts_per_lang: int, dev_frac: float, test_frac: float) -> dict[str, int]:
    n_dev = max(1, round(utts_per_lang * dev_frac)) if dev_frac > 0 else 0
    n_test = max(1, round(utts_per_lang * test_frac)) if test_frac > 0 else 0
    n_train = utts_per_lang - n_dev - n_test
    if n_train < 1:
        raise DataError(
            f"utts_per_lang={utts_per_lang} leaves no training utterances with dev_frac={dev_frac}, test_frac={test_frac}"
        )
    return {"train": n_train, "dev": n_dev, "test": n_test}


def prepare_mini_cv_lang(
    out_dir: str | Path,
    *,
    text_dir: str | Path | None = None,
    langs: Sequence[str] = SEEN_LANGS + UNSEEN_LANGS,
    utts_per_lang: int = DEFAULT_UTTS_PER_LANG,
    dev_frac: float = 0.1,
    test_frac: float = 0.1,
    wordfreq_frac: float = 0.25,
    seed: int = 0,
    num_workers: int = 2,
    noise_snr_db: tuple[float, float] | None = (15.0, 40.0),
    batch_size: int = 50,
    progress: bool = True,
):
    """Synthesise the corpus into ``out_dir``; return ``{"train"|"dev"|"test": CutSet}``.

    Args:
        out_dir: output folder (created; files of a previous run are overwritten).
        text_dir: folder of per-language text files (default ``../shared/data/udhr2``).
        langs: ISO 639-1 codes; each needs an entry in ``tts.ESPEAK_VOICES``.
        utts_per_lang: utterances per language over all splits.
        dev_frac, test_frac: shares of ``utts_per_lang`` for dev and test.
        wordfreq_frac: share of each split drawn from wordfreq pseudo-sentences where
            that package covers the language.
        seed: seeds text splits, voices, noise; same seed -> identical output.
        num_workers: synthesis processes (does not change the output).
        noise_snr_db: (low, high) range of the additive-noise SNR in dB, None for none.
        batch_size: utterances per synthesis process; part of what fixes the output.
        progress: show a tqdm bar.
    """
    from lhotse import CutSet

    from speechfm.data.corpora.tts import map_in_workers
    from speechfm.text.ipa import phonemize

    t0 = time.time()
    out_dir = Path(out_dir).resolve()
    langs = list(dict.fromkeys(langs))
    unknown = [lang for lang in langs if lang not in ESPEAK_VOICES]
    if unknown:
        raise DataError(f"mini_cv_lang: no espeak-ng voice configured for {unknown}; known: {sorted(ESPEAK_VOICES)}")
    if noise_snr_db is not None and noise_snr_db[0] > noise_snr_db[1]:
        raise DataError(f"noise_snr_db must be (low, high), got {noise_snr_db}")
    counts = _split_counts(utts_per_lang, dev_frac, test_frac)

    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    jobs: list[list[_Job]] = []
    overlap: dict[str, dict[str, float]] = {}
    for lang in langs:
        splits = load_text_splits(
            lang, counts, text_dir=text_dir, dev_frac=dev_frac, test_frac=test_frac,
            wordfreq_frac=wordfreq_frac, seed=seed,
        )
        uniq = sorted({t for s in SPLITS for t in splits.texts(s)})
        ipa = dict(zip(uniq, phonemize(uniq, lang), strict=True))
        overlap[lang] = {
            s: round(ngram_overlap(splits.texts(s), splits.texts("train")), 4) for s in ("dev", "test")
        }
        index = 0
        for split in SPLITS:
            rng = random.Random(zlib.crc32(f"voices/{lang}/{split}/{seed}".encode()))
            split_jobs: list[_Job] = []
            for text, source in splits.splits[split]:
                if not ipa[text]:
                    _log.warning("mini_cv_lang: no IPA for %s text %r; skipped", lang, text)
                    continue
                spk, voice = sample_voice(lang, VOICE_POOLS[split], rng)
                index += 1
                uttid = f"{spk}_{index:05d}"
                snr = None if noise_snr_db is None else round(rng.uniform(*noise_snr_db), 2)
                job = _Job(
                    uttid=uttid, text=text, voice=voice,
                    wav_path=str(out_dir / "wav" / lang / f"{uttid}.wav"), snr_db=snr, seed=seed,
                )
                split_jobs.append(job)
                rows[split].append({
                    "id": uttid, "path": job.wav_path, "text": text, "ipa": ipa[text], "lang": lang,
                    "speaker": spk, "source": source,
                    "voice": {"name": voice.name, "pitch": voice.pitch, "rate": voice.rate,
                              "pitch_range": voice.pitch_range, "snr_db": snr},
                })
            jobs.extend(split_jobs[i : i + batch_size] for i in range(0, len(split_jobs), batch_size))

    total = sum(len(b) for b in jobs)
    num_samples: dict[str, int] = {}
    for res in map_in_workers(
        _synth_batch, jobs, num_workers=num_workers, total=total,
        desc="mini_cv_lang: synthesising" if progress else None,
    ):
        num_samples.update(res)

    out: dict[str, CutSet] = {}
    for split in SPLITS:
        for r in rows[split]:
            r["num_samples"] = num_samples[r["id"]]
            r["sampling_rate"] = SAMPLE_RATE
            r["duration"] = round(r["num_samples"] / SAMPLE_RATE, 6)
        rows[split].sort(key=lambda r: r["id"])
        write_kaldi_dir(out_dir / split, rows[split])
        cut_dicts = [cut_dict(r, extra={"source": r["source"], "voice": r["voice"]}) for r in rows[split]]
        write_cuts_jsonl_gz(cut_dicts, out_dir / f"cuts_{split}.jsonl.gz")
        out[split] = CutSet.from_dicts(cut_dicts)

    summary = _summary(rows, langs, overlap, dict(
        utts_per_lang=utts_per_lang, dev_frac=dev_frac, test_frac=test_frac,
        wordfreq_frac=wordfreq_frac, seed=seed, noise_snr_db=list(noise_snr_db) if noise_snr_db else None,
        batch_size=batch_size, text_dir=str(text_dir) if text_dir is not None else None,
        wordfreq=_wordfreq_version(),
    ))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(_readme(summary), encoding="utf-8")
    _log.info("mini_cv_lang: %d utterances in %.1f s", total, time.time() - t0)
    return out


def _wordfreq_version() -> str | None:
    """The installed wordfreq version (its word lists shape the text), None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wordfreq")
    except PackageNotFoundError:
        return None


def _summary(rows: dict[str, list[dict]], langs: list[str], overlap: dict, config: dict) -> dict:
    per: dict[str, dict] = {}
    for split in SPLITS:
        by_lang: dict[str, dict] = {}
        for lang in langs:
            rs = [r for r in rows[split] if r["lang"] == lang]
            by_lang[lang] = {
                "utterances": len(rs),
                "hours": round(sum(r["duration"] for r in rs) / 3600, 4),
                "speakers": len({r["speaker"] for r in rs}),
                "unique_texts": len({r["text"] for r in rs}),
                "sources": dict(sorted(Counter(r["source"] for r in rs).items())),
            }
            if split != "train":
                by_lang[lang]["word_4gram_overlap_with_train"] = overlap[lang][split]
        per[split] = {
            "utterances": len(rows[split]),
            "hours": round(sum(r["duration"] for r in rows[split]) / 3600, 4),
            "speakers": len({r["speaker"] for r in rows[split]}),
            "variants": list(VOICE_POOLS[split].variants),
            "pitch_bands": [list(b) for b in VOICE_POOLS[split].pitch_bands],
            "rate_bands_wpm": [list(b) for b in VOICE_POOLS[split].rate_bands],
            "languages": by_lang,
        }
    return {"corpus": "mini_cv_lang", "sample_rate": SAMPLE_RATE, "seen_languages": [x for x in langs if x in SEEN_LANGS],
            "unseen_languages": [x for x in langs if x in UNSEEN_LANGS], "config": config, "splits": per}


def _readme(summary: dict) -> str:
    lines = [
        "# mini_cv_lang (synthetic, espeak-ng)",
        "",
        "Generated by `speechfm.data.corpora.mini_cv_lang.prepare_mini_cv_lang`.",
        "Speakers (espeak-ng variant + pitch band + rate band) and texts are disjoint across",
        "splits. Synthetic speech: report results on real recordings too.",
        "",
        "| split | language | utterances | hours | speakers | unique texts |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for split, info in summary["splits"].items():
        for lang, s in info["languages"].items():
            lines.append(f"| {split} | {lang} | {s['utterances']} | {s['hours']:.3f} | {s['speakers']} | {s['unique_texts']} |")
        lines.append(f"| {split} | all | {info['utterances']} | {info['hours']:.3f} | {info['speakers']} | |")
    lines += ["", "Config: `" + json.dumps(summary["config"]) + "`", ""]
    return "\n".join(lines)
