"""FSDD loader: speaker-disjoint splits with digit-word transcripts."""

from __future__ import annotations

import re

import pytest
import soundfile as sf

from speechfm.data.corpora.fsdd import DIGIT_WORDS, FSDD_SPEAKERS, fsdd_items, prepare_fsdd
from speechfm.errors import DataError


def test_default_split_holds_out_whole_speakers(shared_data):
    cuts = prepare_fsdd(shared_data / "fsdd", with_ipa=False)
    speakers = {s: {c.supervisions[0].speaker for c in cuts[s]} for s in cuts}
    assert speakers == {"train": {"george", "jackson", "lucas"}, "dev": {"nicolas"}, "test": {"theo", "yweweler"}}
    assert {s: len(c) for s, c in cuts.items()} == {"train": 1500, "dev": 500, "test": 1000}
    for cut in cuts["test"]:
        sup = cut.supervisions[0]
        digit = int(re.match(r"(\d)_", cut.recording.sources[0].source.rsplit("/", 1)[1]).group(1))
        assert sup.text == DIGIT_WORDS[digit] and sup.language == "en"
        assert cut.id.startswith(sup.speaker + "_")
        assert cut.recording.sampling_rate == 8000


def test_written_copy_is_resampled_to_16k_with_ipa(shared_data, tmp_path):
    cuts = prepare_fsdd(shared_data / "fsdd", tmp_path, dev_speakers=("lucas",), test_speakers=("george",), sampling_rate=16000)
    assert {c.supervisions[0].speaker for c in cuts["dev"]} == {"lucas"}
    first = cuts["test"][0]
    assert first.recording.sampling_rate == 16000
    assert sf.info(first.recording.sources[0].source).samplerate == 16000
    assert first.supervisions[0].custom["ipa"]
    for split in ("train", "dev", "test"):
        assert (tmp_path / split / "text_ipa").is_file() and (tmp_path / f"cuts_{split}.jsonl.gz").is_file()
        utts = [ln.split()[0] for ln in (tmp_path / split / "wav.scp").read_text().splitlines()]
        assert utts == sorted(utts) and len(utts) == len(cuts[split])


def test_unknown_or_doubly_held_out_speakers_are_errors(shared_data):
    with pytest.raises(DataError, match="not found"):
        fsdd_items(shared_data / "fsdd", test_speakers=("nobody",))
    with pytest.raises(DataError, match="both dev and test"):
        fsdd_items(shared_data / "fsdd", dev_speakers=("theo",), test_speakers=("theo",))
    assert set(FSDD_SPEAKERS) == {it.speaker for it in fsdd_items(shared_data / "fsdd")}


def test_misnamed_file_is_named_in_the_error(tmp_path):
    sf.write(tmp_path / "seven.wav", [0.0] * 100, 8000)
    with pytest.raises(DataError, match="seven.wav"):
        fsdd_items(tmp_path)
