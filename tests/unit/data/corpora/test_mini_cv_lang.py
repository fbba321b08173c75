"""The synthetic mini_cv_lang corpus: valid Kaldi dirs and manifests, disjoint speakers
and texts across splits, reproducible bytes."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import soundfile as sf

from speechfm.data.corpora.mini_cv_lang import SPLITS, VOICE_POOLS, prepare_mini_cv_lang
from speechfm.errors import DataError

LANGS = ("en", "ky", "pl")
UTTS = 20  # 16 train, 2 dev, 2 test per language


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("mcl") / "corpus"
    cuts = prepare_mini_cv_lang(
        out, text_dir=shared_data / "udhr2", langs=LANGS, utts_per_lang=UTTS, seed=7,
        num_workers=2, batch_size=8, progress=False,
    )
    return out, cuts


def _table(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        rows.append((key, value))
    return rows


def test_kaldi_dirs_are_complete_sorted_and_consistent(corpus):
    out, _ = corpus
    for split in SPLITS:
        d = out / split
        tables = {n: _table(d / n) for n in ("wav.scp", "text", "text_ipa", "utt2spk", "utt2lang", "utt2dur")}
        ids = [k for k, _ in tables["wav.scp"]]
        assert ids == sorted(ids) and len(ids) == len(set(ids)) == UTTS // 10 * (8 if split == "train" else 1) * len(LANGS)
        for name, rows in tables.items():
            assert [k for k, _ in rows] == ids, name
        utt2spk = dict(tables["utt2spk"])
        spk2utt = {k: v.split() for k, v in _table(d / "spk2utt")}
        assert list(spk2utt) == sorted(spk2utt)
        assert sorted(u for us in spk2utt.values() for u in us) == ids
        for utt, spk in utt2spk.items():
            assert utt.startswith(spk + "_") and utt in spk2utt[spk]
        for utt, path in tables["wav.scp"]:
            info = sf.info(path)
            assert info.samplerate == 16000 and info.subtype == "PCM_16" and info.channels == 1
            assert Path(path).parent.name == dict(tables["utt2lang"])[utt]
            assert abs(info.frames / 16000 - float(dict(tables["utt2dur"])[utt])) < 1e-3
        for _, ipa in tables["text_ipa"]:
            assert ipa and "  " not in ipa and all(w.strip() for w in ipa.split(" | "))


def test_manifests_carry_language_speaker_text_and_ipa(corpus, tmp_path):
    from lhotse import CutSet

    out, cuts = corpus
    for split in SPLITS:
        loaded = CutSet.from_file(out / f"cuts_{split}.jsonl.gz")
        assert [c.id for c in loaded] == [c.id for c in cuts[split]]
        langs = set()
        for cut in loaded:
            (sup,) = cut.supervisions
            langs.add(sup.language)
            assert sup.text and sup.speaker.startswith(sup.language + "_")
            assert sup.custom["ipa"]
            assert cut.recording.sampling_rate == 16000
            assert abs(cut.duration - cut.recording.duration) < 1e-9
        assert langs == set(LANGS)
    audio = next(iter(loaded)).load_audio()
    assert audio.shape[0] == 1 and audio.shape[1] > 1600 and abs(audio).max() > 0.05


def test_speakers_variants_and_texts_are_disjoint_across_splits(corpus):
    _, cuts = corpus
    spk = {s: {c.supervisions[0].speaker for c in cuts[s]} for s in SPLITS}
    variants = {s: {c.supervisions[0].custom["voice"]["name"].split("+")[1] for c in cuts[s]} for s in SPLITS}
    texts = {s: {(c.supervisions[0].language, c.supervisions[0].text) for c in cuts[s]} for s in SPLITS}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not spk[a] & spk[b]
        assert not variants[a] & variants[b]
        assert not texts[a] & texts[b]
    for s in SPLITS:
        pool = VOICE_POOLS[s]
        for c in cuts[s]:
            v = c.supervisions[0].custom["voice"]
            assert any(lo <= v["pitch"] < hi for lo, hi in pool.pitch_bands)
            assert any(lo <= v["rate"] < hi for lo, hi in pool.rate_bands)
            assert 15 <= v["snr_db"] <= 40


def test_voice_pools_do_not_overlap():
    pools = list(VOICE_POOLS.values())
    for i, a in enumerate(pools):
        for b in pools[i + 1 :]:
            assert not {v.lower() for v in a.variants} & {v.lower() for v in b.variants}
            for lo1, hi1 in a.pitch_bands:
                assert all(hi1 <= lo2 or hi2 <= lo1 for lo2, hi2 in b.pitch_bands)
            for lo1, hi1 in a.rate_bands:
                assert all(hi1 <= lo2 or hi2 <= lo1 for lo2, hi2 in b.rate_bands)


def test_summary_counts_match(corpus):
    out, cuts = corpus
    summary = json.loads((out / "summary.json").read_text())
    for split in SPLITS:
        info = summary["splits"][split]
        assert info["utterances"] == len(cuts[split])
        assert sum(x["utterances"] for x in info["languages"].values()) == len(cuts[split])
        hours = sum(c.duration for c in cuts[split]) / 3600
        assert abs(info["hours"] - hours) < 1e-3
    assert summary["unseen_languages"] == ["pl"]
    assert (out / "README.md").read_text().startswith("# mini_cv_lang")


def _digest(out: Path) -> dict[str, str]:
    d = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.suffix in (".wav", ".gz"):
            data = p.read_bytes() if p.suffix == ".wav" else gzip.decompress(p.read_bytes())
            d[str(p.relative_to(out))] = hashlib.md5(data.replace(str(out).encode(), b"OUT")).hexdigest()
    return d


def test_same_seed_same_bytes_other_seed_other_corpus(corpus, tmp_path, shared_data):
    out, _ = corpus
    again = tmp_path / "again"
    prepare_mini_cv_lang(
        again, text_dir=shared_data / "udhr2", langs=LANGS, utts_per_lang=UTTS, seed=7,
        num_workers=1, batch_size=8, progress=False,
    )
    assert _digest(again) == _digest(out)
    # gzip headers carry no time stamp: the manifest files are identical too once paths agree
    other = tmp_path / "other"
    prepare_mini_cv_lang(
        other, text_dir=shared_data / "udhr2", langs=("en",), utts_per_lang=10, seed=8,
        num_workers=1, progress=False,
    )
    a = gzip.decompress((other / "cuts_train.jsonl.gz").read_bytes())
    b = gzip.decompress((out / "cuts_train.jsonl.gz").read_bytes())
    assert a != b


def test_bad_arguments_are_reported(tmp_path):
    with pytest.raises(DataError, match="no espeak-ng voice configured"):
        prepare_mini_cv_lang(tmp_path, langs=("xx",), utts_per_lang=10, progress=False)
    with pytest.raises(DataError, match="no training utterances"):
        prepare_mini_cv_lang(tmp_path, langs=("en",), utts_per_lang=2, dev_frac=0.5, test_frac=0.5, progress=False)
