"""Interleaved speech/text data for InSerter: documents, plans, resumable builds, the ASR
view and benchmark speech."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechfm.data import interleave
from speechfm.data.corpora import tts
from speechfm.data.corpora.mini_cv_lang import VOICE_POOLS
from speechfm.data.interleave import (
    Document,
    InterleaveConfig,
    build_interleaved,
    iter_sequences,
    load_index,
    plan_sequences,
    read_documents,
    speech_segments_manifest,
    synthesize_texts,
)
from speechfm.errors import DataError

SMALL_DOCS = [
    Document(id="a", sentences=["the cat sat on the mat", "it was warm", "then it slept", "we left it there"]),
    Document(id="b", sentences=["good morning", "the sun is out", "birds are singing", "let us walk"]),
    Document(id="c", sentences=["one more page", "the end is near", "close the book"]),
]
SMALL_CONFIG = InterleaveConfig(seed=3, speech_ratio=0.4, max_sequence_sentences=4, synth_batch_size=2)


def _counted_docs(n_docs: int, seed: int = 0) -> list[Document]:
    """Documents of 2..60 placeholder sentences (planning never looks at the words)."""
    rng = np.random.default_rng(seed)
    return [
        Document(id=f"d{i}", sentences=[f"sentence {i} {j}" for j in range(int(rng.integers(2, 61)))])
        for i in range(n_docs)
    ]


def _shard_lines(out: Path) -> list[str]:
    return [
        line
        for p in sorted(out.glob("sequences-*.jsonl.gz"))
        for line in gzip.decompress(p.read_bytes()).decode().splitlines()
    ]


def _audio(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "audio").iterdir())}


# ----------------------------------------------------------------------------- documents


def test_read_documents_from_a_folder_normalises_and_drops_digits(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "story.txt").write_text(
        "A Title\n\nThe Cat sat, quietly.  It was born in 1999! Was it happy? Yes: very.\n", encoding="utf-8"
    )
    long = ", ".join(["word " * 8] * 4).strip() + "."  # 32 words in four clauses
    (tmp_path / "sub" / "long one.txt").write_text(f"Heading\n{long}\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("Only a title\n", encoding="utf-8")
    docs = read_documents(tmp_path, max_sentence_words=20)
    assert [d.id for d in docs] == ["story", "sub-long_one"]  # empty.txt has no sentences
    assert docs[0].sentences == ["the cat sat quietly", "was it happy", "yes", "very"]
    assert docs[0].source == "file"
    pieces = docs[1].sentences
    assert len(pieces) == 2 and all(len(p.split()) == 16 for p in pieces)
    # the same file named twice: ids stay unique
    twice = read_documents([tmp_path / "story.txt", tmp_path / "story.txt"])
    assert [d.id for d in twice] == ["story", "story-2"]
    with pytest.raises(DataError, match="no such"):
        read_documents(tmp_path / "missing.txt")


def test_read_documents_udhr_and_generated(shared_data):
    docs = read_documents(lang="en", text_dir=shared_data / "udhr2", generated_docs=3, sentences_per_generated_doc=5)
    assert [d.source for d in docs] == ["udhr", "wordfreq", "wordfreq", "wordfreq"]
    udhr = docs[0]
    assert udhr.id == "udhr-eng" and len(udhr.sentences) > 50
    for d in docs:
        for s in d.sentences:
            assert s == s.lower() and s.strip() == s and not any(c.isdigit() or c in ",.;:!?" for c in s), s
            assert 1 <= len(s.split()) <= 40
    assert all(len(d.sentences) == 5 for d in docs[1:])
    assert len({s for d in docs[1:] for s in d.sentences}) == 15
    # the generator is seeded
    assert read_documents(udhr=False, generated_docs=1, seed=1)[0].sentences != docs[1].sentences


# ----------------------------------------------------------------------------- planning


def _flat(plan):
    return [json.dumps([(s.kind, s.text, s.id, s.voice and s.voice.name, s.snr_db) for s in q.segments]) for q in plan]


def test_plan_is_deterministic_and_seed_sensitive():
    docs = _counted_docs(30)
    a = plan_sequences(docs, InterleaveConfig(seed=1))
    b = plan_sequences(docs, InterleaveConfig(seed=1))
    c = plan_sequences(docs, InterleaveConfig(seed=2))
    assert a == b
    assert [q.id for q in a] == [q.id for q in c]  # the cutting into sequences does not depend on the seed
    assert sum(x != y for x, y in zip(_flat(a), _flat(c), strict=True)) > len(a) // 2
    # a document's plan depends on that document only
    alone = plan_sequences(docs[5:6], InterleaveConfig(seed=1))
    assert alone == [q for q in a if q.doc_id == "d5"]


def test_plan_interleaves_text_and_speech():
    docs = _counted_docs(80, seed=1)
    config = InterleaveConfig(seed=0, max_sequence_sentences=10, min_span_sentences=1, max_span_sentences=3)
    plan = plan_sequences(docs, config)
    by_doc = {d.id: d for d in docs}
    pool = VOICE_POOLS["train"]
    for doc in docs:
        seqs = [q for q in plan if q.doc_id == doc.id]
        # sequences cover the document in order, balanced and bounded in length
        assert " ".join(s.text for q in seqs for s in q.segments) == " ".join(by_doc[doc.id].sentences)
        sizes = [sum(s.num_sentences for s in q.segments) for q in seqs]
        assert max(sizes) <= 10 and max(sizes) - min(sizes) <= 1 and min(sizes) >= 2
    for q in plan:
        kinds = [s.kind for s in q.segments]
        assert "speech" in kinds and "text" in kinds, q.id
        assert all(x != y for x, y in zip(kinds, kinds[1:], strict=False)), kinds  # strictly alternating
        for s in q.segments:
            assert s.num_sentences == len(s.text.split(" ")) // 3  # "sentence i j" has 3 words
            if s.kind == "speech":
                assert 1 <= s.num_sentences <= 3 and s.id.startswith(q.id + "-")
                assert s.voice.variant in pool.variants and s.voice.voice == "en-us"
                assert any(lo <= s.voice.pitch < hi for lo, hi in pool.pitch_bands)
                assert s.snr_db is None or 10 <= s.snr_db <= 40
            else:
                assert s.id is None and s.voice is None
    ids = [s.id for q in plan for s in q.segments if s.kind == "speech"]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("ratio", [0.15, 0.3, 0.5])
def test_realised_speech_ratio_is_close_to_the_target(ratio):
    plan = plan_sequences(_counted_docs(300, seed=2), InterleaveConfig(seed=4, speech_ratio=ratio))
    total = sum(s.num_sentences for q in plan for s in q.segments)
    spoken = sum(s.num_sentences for q in plan for s in q.segments if s.kind == "speech")
    assert total > 5000
    assert abs(spoken / total - ratio) < 0.02, spoken / total
    noisy = [s.snr_db is not None for q in plan for s in q.segments if s.kind == "speech"]
    assert 0.4 < np.mean(noisy) < 0.6  # noise_prob 0.5


def test_config_is_validated():
    for bad, match in (
        (dict(speech_ratio=1.0), "speech_ratio"),
        (dict(min_span_sentences=3, max_span_sentences=2), "min_span"),
        (dict(max_sequence_sentences=2), "max_sequence_sentences"),
        (dict(voice_pool="nope"), "voice pool"),
        (dict(lang="xx"), "espeak-ng voice"),
        (dict(snr_range=(30.0, 10.0)), "snr_range"),
        (dict(audio_format="mp3"), "audio_format"),
    ):
        with pytest.raises(DataError, match=match):
            InterleaveConfig(**bad).validate()
    with pytest.raises(DataError, match="repeated"):
        plan_sequences([SMALL_DOCS[0], SMALL_DOCS[0]], InterleaveConfig())
    with pytest.raises(DataError, match="document id"):
        plan_sequences([Document(id="a b", sentences=["x"])], InterleaveConfig())


# ----------------------------------------------------------------------------- building (espeak-ng)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("interleave") / "full"
    build_interleaved(SMALL_DOCS, out, SMALL_CONFIG, num_workers=2, shard_size=1, progress=False)
    return out


def test_build_writes_readable_shards_and_audio(built):
    index = load_index(built)
    assert index["shards"] == [f"sequences-{i:05d}.jsonl.gz" for i in range(3)]
    seqs = list(iter_sequences(built))
    assert [q["id"] for q in seqs] == ["a-0000", "b-0000", "c-0000"]
    plan = plan_sequences(SMALL_DOCS, SMALL_CONFIG)
    n_speech = 0
    for line, q in zip(seqs, plan, strict=True):
        assert [s["kind"] for s in line["segments"]] == [s.kind for s in q.segments]
        for seg in line["segments"]:
            if seg["kind"] != "speech":
                continue
            n_speech += 1
            assert seg["audio"] == f"audio/{seg['id']}.flac"
            info = sf.info(str(built / seg["audio"]))
            assert info.samplerate == 16000 and info.channels == 1 and info.frames == seg["num_samples"]
            x, _ = sf.read(str(built / seg["audio"]))
            # words of speech, not silence: at least ~0.25 s per word, and loud enough
            assert x.size / 16000 > 0.25 * len(seg["text"].split())
            assert np.sqrt(np.mean(x**2)) > 0.02
            assert seg["voice"]["name"].split("+")[1] in VOICE_POOLS["train"].variants
    assert index["segments"]["speech"] == n_speech >= 3
    assert index["sentences"] == 11 and index["unspoken_segments"] == []
    assert index["spoken_fraction"] == round(index["spoken_sentences"] / 11, 4)
    hours = sum(s["num_samples"] for q in seqs for s in q["segments"] if s["kind"] == "speech") / 16000 / 3600
    assert abs(index["speech_hours"] - hours) < 1e-4
    assert not list(built.rglob("*.tmp"))
    assert tts._engine.cache_info().currsize == 0  # espeak-ng stayed in the workers


def test_interrupted_build_resumes_to_the_same_result(built, tmp_path):
    out = tmp_path / "resumed"
    build_interleaved(SMALL_DOCS, out, SMALL_CONFIG, num_workers=1, shard_size=1, max_shards=1, progress=False)
    assert [p.name for p in out.glob("sequences-*")] == ["sequences-00000.jsonl.gz"]
    assert not (out / "index.json").exists()
    with pytest.raises(DataError, match="no finished"):
        load_index(out)
    build_interleaved(SMALL_DOCS, out, SMALL_CONFIG, num_workers=1, shard_size=1, progress=False)
    assert _shard_lines(out) == _shard_lines(built)
    assert _audio(out) == _audio(built)
    assert (out / "index.json").read_text() == (built / "index.json").read_text()
    # other settings in the same folder are refused
    with pytest.raises(DataError, match="other documents or settings"):
        build_interleaved(SMALL_DOCS, out, InterleaveConfig(seed=4, max_sequence_sentences=4), shard_size=1)


def test_rebuild_reuses_cached_audio(built, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    for p in [*out.glob("sequences-*"), out / "index.json"]:
        p.unlink()
    spoken: list[str] = []
    real = interleave.map_in_workers

    def counting(fn, batches, **kw):
        spoken.extend(job.id for b in batches for job in b)
        return real(fn, batches, **kw)

    monkeypatch.setattr(interleave, "map_in_workers", counting)
    build_interleaved(SMALL_DOCS, out, SMALL_CONFIG, shard_size=1, progress=False)
    assert spoken == []
    assert _shard_lines(out) == _shard_lines(built)
    # a lost file: only its batch is spoken again, and it comes back identical
    lost = sorted((out / "audio").iterdir())[-1]
    lost.unlink()
    (out / "sequences-00002.jsonl.gz").unlink()
    build_interleaved(SMALL_DOCS, out, SMALL_CONFIG, shard_size=1, progress=False)
    assert 1 <= len(spoken) <= SMALL_CONFIG.synth_batch_size and lost.stem in spoken
    assert _audio(out) == _audio(built) and _shard_lines(out) == _shard_lines(built)


def test_speech_segments_manifest_is_a_cutset(built):
    from lhotse import CutSet

    cuts = CutSet.from_file(speech_segments_manifest(built))
    segs = [(q["id"], s) for q in iter_sequences(built) for s in q["segments"] if s["kind"] == "speech"]
    assert [c.id for c in cuts] == [s["id"] for _, s in segs]
    for cut, (seq_id, seg) in zip(cuts, segs, strict=True):
        (sup,) = cut.supervisions
        assert sup.text == seg["text"] and sup.language == "en" and sup.speaker == seg["speaker"]
        assert sup.custom["sequence"] == seq_id and sup.custom["voice"] == seg["voice"]
        assert cut.num_samples == seg["num_samples"]
    audio = next(iter(cuts)).load_audio()
    assert audio.shape == (1, segs[0][1]["num_samples"]) and np.abs(audio).max() > 0.05


# ----------------------------------------------------------------------------- failure path (no espeak-ng)


def _in_process(fn, batches, **kw):
    for batch in batches:
        yield fn(batch)


def test_a_segment_espeak_cannot_speak_becomes_text(tmp_path, monkeypatch, caplog):
    plan = plan_sequences(SMALL_DOCS, SMALL_CONFIG)
    victim = next(s for s in plan[0].segments if s.kind == "speech")

    def fake_synthesize(text, voice, *, sample_rate=16000):
        if text == victim.text:
            raise tts.TTSError(f"espeak-ng produced no audio for {text!r}")
        return (0.5 * np.sin(np.arange(3200) * 0.3)).astype(np.float32), sample_rate

    monkeypatch.setattr(interleave, "map_in_workers", _in_process)
    monkeypatch.setattr(tts, "synthesize", fake_synthesize)
    config = dataclasses.replace(SMALL_CONFIG, audio_format="wav")
    with caplog.at_level(logging.WARNING, logger="speechfm.data.interleave"):
        build_interleaved(SMALL_DOCS, tmp_path, config, shard_size=2, progress=False)
    assert victim.id in caplog.text and victim.text in caplog.text
    index = load_index(tmp_path)
    assert index["unspoken_segments"] == [victim.id]
    assert not (tmp_path / "audio" / f"{victim.id}.wav").exists()
    first = next(iter_sequences(tmp_path))
    kinds = [s["kind"] for s in first["segments"]]
    assert all(x != y for x, y in zip(kinds, kinds[1:], strict=False))  # merged with the text around it
    assert " ".join(s["text"] for s in first["segments"]) == " ".join(SMALL_DOCS[0].sentences)
    assert victim.id not in {s.get("id") for s in first["segments"]}
    others = [s for q in iter_sequences(tmp_path) for s in q["segments"] if s["kind"] == "speech"]
    assert others and all(sf.info(str(tmp_path / s["audio"])).format == "WAV" for s in others)
    assert index["segments"]["speech"] == len(others) == sum(
        s.kind == "speech" for q in plan for s in q.segments
    ) - 1


# ----------------------------------------------------------------------------- benchmark speech


def test_synthesize_texts_uses_the_test_pool_and_is_deterministic(tmp_path):
    from lhotse import CutSet

    items = [("q1", "what is the weather like"), ("q2", "tell me a story"), ("q3", "close the door please")]
    pool = VOICE_POOLS["test"]
    noisy = CutSet.from_file(synthesize_texts(items, tmp_path / "noisy", noise_prob=1.0, seed=5, progress=False))
    assert [c.id for c in noisy] == ["q1", "q2", "q3"]
    for cut, (_, text) in zip(noisy, items, strict=True):
        (sup,) = cut.supervisions
        voice = sup.custom["voice"]
        assert sup.text == text and voice["name"].split("+")[1] in pool.variants
        assert any(lo <= voice["pitch"] < hi for lo, hi in pool.pitch_bands)
        assert any(lo <= voice["rate"] < hi for lo, hi in pool.rate_bands)
        assert 10 <= voice["snr_db"] <= 30
        info = sf.info(cut.recording.sources[0].source)
        assert info.samplerate == 16000 and info.frames == cut.num_samples > 8000
    clean = CutSet.from_file(synthesize_texts(items, tmp_path / "clean", seed=5, progress=False))
    assert all(c.supervisions[0].custom["voice"]["snr_db"] is None for c in clean)
    # same seed, same voices; the noise is the only difference
    assert [c.supervisions[0].speaker for c in clean] == [c.supervisions[0].speaker for c in noisy]
    again = CutSet.from_file(synthesize_texts(items, tmp_path / "again", seed=5, progress=False))
    for a, b in zip(clean, again, strict=True):
        np.testing.assert_array_equal(a.load_audio(), b.load_audio())
    with pytest.raises(DataError, match="unique"):
        synthesize_texts([("x", "a"), ("x", "b")], tmp_path / "bad")
