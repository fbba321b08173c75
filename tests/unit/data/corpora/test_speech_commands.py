"""Speech Commands loader: keyword transcripts, speaker-disjoint hash split."""

from __future__ import annotations

import pytest

from speechfm.data.corpora.speech_commands import (
    prepare_speech_commands,
    speaker_split,
    speech_commands_items,
)
from speechfm.errors import DataError

SC = "speech_commands_mini/speech_commands_v0.01"


def test_split_is_speaker_disjoint_and_matches_the_official_lists(shared_data):
    root = shared_data / SC
    items = speech_commands_items(root)
    assert len(items) == 300
    by_split: dict[str, set[str]] = {}
    for it in items:
        by_split.setdefault(it.split, set()).add(it.speaker)
        assert it.text == it.path.parent.name and it.id.startswith(it.speaker + "_")
    assert not by_split["train"] & by_split["dev"] and not by_split["train"] & by_split["test"]
    assert not by_split["dev"] & by_split["test"]
    official = {}
    for name, split in (("validation_list.txt", "dev"), ("testing_list.txt", "test")):
        for line in (root / name).read_text().split():
            official[line] = split
    for it in items:
        rel = f"{it.path.parent.name}/{it.path.name}"
        assert official.get(rel, "train") == it.split, rel


def test_prepare_writes_kaldi_and_manifests(shared_data, tmp_path):
    cuts = prepare_speech_commands(shared_data / SC, tmp_path, with_ipa=False)
    assert sum(len(c) for c in cuts.values()) == 300
    for split, cs in cuts.items():
        ids = (tmp_path / split / "text").read_text().splitlines()
        assert len(ids) == len(cs)
        assert not (tmp_path / split / "text_ipa").exists()
        assert all(c.supervisions[0].language == "en" for c in cs)


def test_speaker_split_is_a_pure_function_of_the_hash():
    assert speaker_split("0a7c2a8d") == speaker_split("0a7c2a8d")
    assert speaker_split("0a7c2a8d", 0.0, 0.0) == "train"
    assert speaker_split("0a7c2a8d", 100.0, 0.0) == "dev"


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no <word>"):
        speech_commands_items(tmp_path)
