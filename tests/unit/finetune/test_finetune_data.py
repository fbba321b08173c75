"""speechfm.finetune.data: format detection, validation with bad items reported by name and
left out, the deterministic speaker-/text-disjoint held-out split and related-data mixing."""

from __future__ import annotations

import random

import pytest
from finetune_helpers import write_wav

from speechfm.errors import DataError
from speechfm.finetune.data import (
    detect_data_format,
    held_out_split,
    mix_related,
    read_checked,
    read_data,
)


def _cuts(n, *, speakers=None, texts=None, seconds=1.0, prefix="u"):
    """Synthetic cuts (no audio needed by the split): ids <prefix><i>."""
    from speechfm.data.audio import unprobed_recording
    from speechfm.data.manifest import make_cut

    out = []
    for i in range(n):
        rec = unprobed_recording(f"/nowhere/{prefix}{i}.wav", f"{prefix}{i:03d}", seconds)
        out.append(make_cut(f"{prefix}{i:03d}", rec, text=texts[i] if texts else f"text {i}",
                            speaker=speakers[i] if speakers else None))
    return out


def test_formats_are_told_apart(corpus, tmp_path):
    from lhotse import CutSet

    assert detect_data_format(corpus["kaldi"]) == "kaldi"
    assert detect_data_format(corpus["plain"]) == "tsv_noheader"
    assert detect_data_format(corpus["headed"]) == "tsv"
    cuts, _, _ = read_data(corpus["headed"])
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    assert detect_data_format(tmp_path / "cuts.jsonl.gz") == "lhotse"
    lhotse_dir = tmp_path / "manifests"
    lhotse_dir.mkdir()
    CutSet.from_cuts(cuts).to_file(lhotse_dir / "xx_cuts_train.jsonl.gz")
    assert detect_data_format(lhotse_dir) == "lhotse_dir"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a Kaldi data dir"):
        detect_data_format(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file"):
        detect_data_format(tmp_path / "absent.tsv")


def test_every_format_gives_the_same_utterances(corpus, tmp_path):
    from lhotse import CutSet

    expected = {f"u{i:02d}" for i in range(12)}
    for key in ("headed", "kaldi"):
        cuts, problems, _ = read_data(corpus[key])
        assert {c.id for c in cuts} == expected and not problems, key
    plain, problems, _ = read_data(corpus["plain"])
    assert len(plain) == 12 and not problems  # ids made from the paths
    assert sorted(c.supervisions[0].text for c in plain) == sorted(
        c.supervisions[0].text for c in read_data(corpus["headed"])[0])
    # a lhotse directory of recordings + supervisions: one cut per supervision
    cuts, _, _ = read_data(corpus["headed"])
    d = tmp_path / "rs"
    d.mkdir()
    from lhotse import RecordingSet, SupervisionSet

    RecordingSet.from_recordings(c.recording for c in cuts).to_file(d / "xx_recordings.jsonl.gz")
    SupervisionSet.from_segments(c.supervisions[0] for c in cuts).to_file(d / "xx_supervisions.jsonl.gz")
    from_dir, _, fmt = read_data(d)
    assert fmt == "lhotse_dir" and len(from_dir) == 12
    assert sorted(c.supervisions[0].text for c in from_dir) == sorted(c.supervisions[0].text for c in cuts)
    CutSet.from_cuts(cuts).to_file(tmp_path / "c.jsonl.gz")
    assert {c.id for c in read_data(tmp_path / "c.jsonl.gz")[0]} == expected


def test_bad_items_are_reported_by_name_and_left_out(tmp_path):
    write_wav(tmp_path / "good1.wav")
    write_wav(tmp_path / "good2.wav")
    write_wav(tmp_path / "short.wav", seconds=0.02)
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    table = tmp_path / "data.tsv"
    table.write_text("id\tpath\ttext\n"
                     "g1\tgood1.wav\tab\n"
                     "g2\tgood2.wav\tba\n"
                     "gone\tmissing.wav\tab\n"
                     "bad\tbroken.wav\tab\n"
                     "tiny\tshort.wav\tab\n"
                     "mute\tgood1.wav\t\n", encoding="utf-8")
    lines = []
    checked = read_checked(table, lang="xx", min_duration=0.1, echo=lines.append)
    assert [c.id for c in checked.cuts] == ["g1", "g2"]
    assert all(c.supervisions[0].language == "xx" for c in checked.cuts)
    reported = {line.split("\t")[1]: line.split("\t")[2] for line in lines}
    assert reported == {"gone": "missing_file", "bad": "unreadable", "tiny": "too_short",
                        "mute": "empty_text"}
    summary = checked.summary()
    assert summary["items"] == 6 and summary["bad"] == 4 and summary["utterances"] == 2


def test_items_of_another_language_are_left_out(tmp_path):
    write_wav(tmp_path / "a.wav")
    table = tmp_path / "d.tsv"
    table.write_text("id\tpath\ttext\tlang\nx1\ta.wav\tab\txx\nx2\ta.wav\tba\txx\n"
                     "y1\ta.wav\tab\tyy\n", encoding="utf-8")
    lines = []
    checked = read_checked(table, lang="xx", echo=lines.append)
    assert [c.id for c in checked.cuts] == ["x1", "x2"]
    assert lines and lines[0].startswith("BAD\ty1\tother_language")
    # labels of another code only: relabelled, nothing dropped
    relabelled = read_checked(table, lang="zz", echo=lines.append)
    assert {c.supervisions[0].language for c in relabelled.cuts} == {"zz"}
    assert len(relabelled.cuts) == 3


def test_split_is_speaker_disjoint_and_deterministic():
    speakers = [f"spk{i % 10}" for i in range(100)]
    cuts = _cuts(100, speakers=speakers)
    split = held_out_split(cuts, fraction=0.1, seed=3)
    assert split.by == "speaker"
    spk = {name: {c.supervisions[0].speaker for c in cs} for name, cs in split.sets.items()}
    assert not spk["train"] & spk["dev"] and not spk["train"] & spk["test"]
    assert not spk["dev"] & spk["test"]
    ids = [c.id for cs in split.sets.values() for c in cs]
    assert sorted(ids) == sorted(c.id for c in cuts)  # a partition
    assert split.info["dev"]["utterances"] == 10 and split.info["test"]["utterances"] == 10
    shuffled = list(cuts)
    random.Random(0).shuffle(shuffled)
    again = held_out_split(shuffled, fraction=0.1, seed=3)
    assert {k: [c.id for c in v] for k, v in again.sets.items()} == \
        {k: [c.id for c in v] for k, v in split.sets.items()}
    other = held_out_split(cuts, fraction=0.1, seed=4)
    assert [c.id for c in other.sets["dev"]] != [c.id for c in split.sets["dev"]]


def test_split_is_text_disjoint_without_enough_speakers():
    texts = [f"sentence {i % 25}" for i in range(100)]  # each text read 4 times
    for speakers in (None, ["a", "b"] * 50):
        split = held_out_split(_cuts(100, speakers=speakers, texts=texts), fraction=0.1)
        assert split.by == "text"
        assert "speakers unknown" in split.info["rule"] if speakers is None else \
            "only 2 speaker" in split.info["rule"]
        seen = {name: {c.supervisions[0].text for c in cs} for name, cs in split.sets.items()}
        assert not seen["train"] & seen["dev"] and not seen["train"] & seen["test"]
        assert not seen["dev"] & seen["test"]


def test_split_sizes_scale_with_the_data_and_are_capped():
    small = held_out_split(_cuts(50), fraction=0.1)
    large = held_out_split(_cuts(500), fraction=0.1)
    assert small.info["dev"]["utterances"] == 5 and large.info["dev"]["utterances"] == 50
    capped = held_out_split(_cuts(500, seconds=60.0), fraction=0.1, max_hours=0.5)
    assert capped.info["dev"]["hours"] == 0.5 and capped.info["test"]["hours"] == 0.5
    only_dev = held_out_split(_cuts(50), names=("dev",), fraction=0.1)
    assert set(only_dev.sets) == {"train", "dev"}
    with pytest.raises(DataError, match="too few"):
        held_out_split(_cuts(2), fraction=0.1)


def test_related_data_is_mixed_by_ratio_with_prefixed_ids():
    train = _cuts(10, seconds=2.0)
    related = _cuts(40, seconds=1.0, prefix="r")
    mixed, info = mix_related(train, related, ratio=0.5, seed=0)
    taken = [c for c in mixed if c.id.startswith("related-")]
    assert len(taken) == 10 and info["taken"]["utterances"] == 10  # 0.5 x 20 s of 1 s cuts
    assert len(mixed) == 20
    assert [c.id for c in mix_related(train, related, ratio=0.5, seed=0)[0]] == [c.id for c in mixed]
    everything, _ = mix_related(train, related, ratio=10.0)
    assert len(everything) == 50
