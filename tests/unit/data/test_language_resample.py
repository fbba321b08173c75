"""language_counts / language_resample: temperature shares, no data dropped, ids, seeds, caps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from speechfm.data.subsets import language_counts, language_resample
from speechfm.errors import DataError

SR = 16000


def _cut(cid: str, lang: str | None, seconds: float = 0.25) -> MonoCut:
    """A cut of an in-memory recording (silence) whose supervision is in ``lang``."""
    n = int(SR * seconds)
    rec = Recording.from_bytes(_wav_bytes(n), recording_id=cid)
    sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=rec.duration,
                             text="hello", speaker=f"spk-{lang}", language=lang)
    return MonoCut(id=cid, start=0.0, duration=rec.duration, channel=0, recording=rec,
                   supervisions=[sup])


def _wav_bytes(num_samples: int) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(num_samples, dtype=np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _corpus(counts: dict[str, int]) -> CutSet:
    # languages interleaved, so that input order is not grouped by language
    cuts = []
    for i in range(max(counts.values())):
        cuts.extend(_cut(f"{lang}-{i:03d}", lang) for lang, n in counts.items() if i < n)
    return CutSet.from_cuts(cuts)


COUNTS = {"en": 100, "ru": 60, "ky": 10, "tt": 7}


@pytest.fixture(scope="module")
def corpus() -> CutSet:
    return _corpus(COUNTS)


def _targets(counts: dict[str, int], temperature: float) -> dict[str, int]:
    """What the docstring promises: the largest language keeps its count (T >= 1)."""
    big = max(counts.values())
    return {lang: max(n, round(big * (n / big) ** (1 / temperature))) for lang, n in counts.items()}


def test_language_counts(corpus):
    assert language_counts(corpus) == dict(sorted(COUNTS.items()))
    assert list(language_counts(corpus)) == ["en", "ky", "ru", "tt"]


def test_temperature_one_keeps_the_natural_shares(corpus):
    out = language_resample(corpus, temperature=1.0)
    assert [c.id for c in out] == [c.id for c in corpus]
    assert language_counts(out) == language_counts(corpus)


def test_temperature_two_follows_square_root_shares(corpus):
    out = language_resample(corpus, temperature=2.0)
    counts = language_counts(out)
    assert counts == _targets(COUNTS, 2.0)
    assert counts["en"] == 100  # the largest language keeps its count
    assert counts == {"en": 100, "ru": 77, "ky": 32, "tt": 26}
    total = sum(counts.values())
    z = sum(math.sqrt(n) for n in COUNTS.values())
    for lang, n in COUNTS.items():
        # rounding to whole cuts moves a share by at most 0.5 / total
        assert abs(counts[lang] / total - math.sqrt(n) / z) <= 1.0 / total


def test_infinite_temperature_balances_languages(corpus):
    counts = language_counts(language_resample(corpus, temperature=float("inf")))
    assert counts == {lang: 100 for lang in COUNTS}


def test_low_temperature_never_drops_data(corpus):
    # T < 1 sharpens the shares: the smallest language keeps its count, the others grow
    counts = language_counts(language_resample(corpus, temperature=0.5))
    assert counts["tt"] == COUNTS["tt"]
    assert all(counts[lang] >= n for lang, n in COUNTS.items())
    assert counts["en"] == round(7 * (100 / 7) ** 2)


def test_every_original_kept_ids_unique_and_copies_valid(corpus):
    from lhotse.qa import validate

    out = language_resample(corpus, temperature=float("inf"), seed=3)
    ids = [c.id for c in out]
    assert len(ids) == len(set(ids))
    assert ids[: len(corpus)] == [c.id for c in corpus]  # originals first, in input order
    originals = {c.id: c for c in corpus}
    for c in out.subset(cut_ids=ids[len(corpus):]):
        base, k = c.id.rsplit("_r", 1)
        assert int(k) >= 1 and base in originals
        assert c.recording.id == originals[base].recording.id
        assert c.supervisions[0].language == originals[base].supervisions[0].language
        assert c.supervisions[0].text == originals[base].supervisions[0].text
    validate(out)  # lhotse's own checks
    copy = out[ids[-1]]
    assert copy.load_audio().shape == originals[copy.id.rsplit("_r", 1)[0]].load_audio().shape
    # ky: 10 cuts -> 100, exactly 9 copies each; tt: 7 -> 100, 14 copies each, 2 with 15
    per_cut = {cid: sum(1 for i in ids if i.split("_r")[0] == cid) for cid in originals}
    assert {per_cut[f"ky-{i:03d}"] for i in range(10)} == {10}
    assert sorted(per_cut[f"tt-{i:03d}"] for i in range(7)) == [14] * 5 + [15] * 2


def test_same_seed_same_manifest_other_seed_other_draw():
    corpus = _corpus({"en": 40, "ky": 13})
    ids = lambda seed: [c.id for c in language_resample(corpus, temperature=2.0, seed=seed)]  # noqa: E731
    assert ids(0) == ids(0)
    draws = {tuple(sorted(ids(s))) for s in range(6)}
    assert len(draws) > 1  # ky gets 23 = 13 + 10 cuts: which 10 are copied depends on the seed
    # the draw does not depend on the order of the input
    reordered = CutSet.from_cuts(reversed(list(corpus)))
    assert sorted(ids(5)) == sorted(c.id for c in language_resample(reordered, 2.0, seed=5))


def test_max_copies_caps_the_repeats(corpus):
    out = language_resample(corpus, temperature=float("inf"), max_copies=2)
    counts = language_counts(out)
    assert counts == {"en": 100, "ru": 100, "ky": 30, "tt": 21}
    assert max(int(c.id.rsplit("_r", 1)[1]) for c in out if "_r" in c.id) == 2
    assert [c.id for c in language_resample(corpus, float("inf"), max_copies=0)] == [
        c.id for c in corpus]


def test_errors(corpus):
    with pytest.raises(ValueError, match="temperature"):
        language_resample(corpus, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        language_resample(corpus, temperature=-1.0)
    with pytest.raises(ValueError, match="max_copies"):
        language_resample(corpus, temperature=2.0, max_copies=-1)
    bad = CutSet.from_cuts([*corpus, _cut("nolang-1", None)])
    with pytest.raises(DataError, match="nolang-1"):
        language_resample(bad, temperature=2.0)
    with pytest.raises(DataError, match="nolang-1"):
        language_counts(bad)
    # a copy's id that is already taken by an input cut
    clash = CutSet.from_cuts([_cut("a", "en"), _cut("b", "en"), _cut("k", "ky"),
                              _cut("k_r1", "en")])
    with pytest.raises(DataError, match="k_r1"):
        language_resample(clash, temperature=float("inf"))


def test_empty_input():
    assert len(language_resample(CutSet.from_cuts([]), temperature=2.0)) == 0


def test_cli_resample(tmp_path, capsys):
    import json

    import soundfile as sf

    from speechfm.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(SR // 4, dtype=np.float32), SR)
    cuts = []
    for lang, n in {"en": 12, "ky": 3}.items():
        for i in range(n):
            rec = Recording.from_file(wav, recording_id=f"{lang}-{i}")
            cuts.append(MonoCut(id=rec.id, start=0.0, duration=rec.duration, channel=0,
                                recording=rec, supervisions=[SupervisionSegment(
                                    id=rec.id, recording_id=rec.id, start=0.0,
                                    duration=rec.duration, text="a", language=lang)]))
    corpus = CutSet.from_cuts(cuts)
    src = tmp_path / "in.jsonl.gz"
    corpus.to_file(src)
    assert main(["data", "resample", "--cuts", str(src), "--out", str(tmp_path / "out.jsonl.gz"),
                 "--temperature", "inf"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["before"] == language_counts(corpus)
    after = language_counts(CutSet.from_file(tmp_path / "out.jsonl.gz"))
    assert printed["after"] == after and len(set(after.values())) == 1
    assert main(["data", "resample", "--cuts", str(src), "--out", str(src),
                 "--temperature", "2"]) != 0
    assert "overwrite" in capsys.readouterr().err
