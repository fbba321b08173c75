"""Classification corpora (label = supervision text): Speech Commands 12, FSDD digit/speaker
tasks, few-shot subsets and unlabelled pools, and their CLI entry points."""

from __future__ import annotations

import json
import shutil

import pytest

from speechfm.data.corpora.fsdd import (
    FSDD_SPEAKERS,
    fsdd_classification_items,
    prepare_fsdd_classification,
)
from speechfm.data.corpora.speech_commands import (
    SC12_LABELS,
    prepare_speech_commands12,
    speech_commands12_items,
)
from speechfm.data.subsets import few_shot, label_counts, merge_unlabelled
from speechfm.errors import AudioError, DataError

SC12 = "speech_commands_v2_test12"


def _cut(cid, label, speaker="s"):
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    rec = Recording(id=cid, sources=[AudioSource(type="file", channels=[0], source=f"/x/{cid}.wav")],
                    sampling_rate=16000, num_samples=16000, duration=1.0)
    sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=1.0, text=label,
                             speaker=speaker, language="en", custom={"word": label})
    return MonoCut(id=cid, start=0.0, duration=1.0, channel=0, recording=rec, supervisions=[sup])


def _toy(n_per_label=6, labels=("a", "b", "c")):
    from lhotse import CutSet

    return CutSet.from_cuts(_cut(f"{lab}{i:02d}", lab) for lab in labels for i in range(n_per_label))


# --- Speech Commands 12 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sc12_cuts(shared_data):
    if not (shared_data / SC12 / "labels.tsv").is_file():
        pytest.skip(f"{shared_data / SC12}/labels.tsv is absent")
    return prepare_speech_commands12(shared_data / SC12)


def test_speech_commands12_splits_are_speaker_disjoint_with_every_label(sc12_cuts):
    speakers = {s: {c.supervisions[0].speaker for c in cs} for s, cs in sc12_cuts.items()}
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert sum(len(cs) for cs in sc12_cuts.values()) == 2744
    assert len(sc12_cuts["test"]) >= 450
    for split, cs in sc12_cuts.items():
        counts = label_counts(cs)
        assert set(counts) == set(SC12_LABELS), split
        assert min(counts.values()) >= (10 if split == "dev" else 30), (split, counts)
    ids = [c.id for cs in sc12_cuts.values() for c in cs]
    assert len(ids) == len(set(ids))
    cut = next(c for c in sc12_cuts["test"] if c.supervisions[0].text == "_unknown_")
    sup = cut.supervisions[0]
    assert sup.language == "en" and sup.custom["word"] not in SC12_LABELS
    assert cut.id.startswith(sup.speaker + "_") and cut.recording.sampling_rate == 16000


def _mini_sc12(tmp_path, h, rows):
    root = tmp_path / "sc12"
    lines = ["path\tlabel\tspeaker\tword"]
    for name, label, spk in rows:
        h.write_audio(root / "audio" / name, 16000, 0.2)
        lines.append(f"audio/{name}\t{label}\t{spk}\t{label}")
    (root / "labels.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_speech_commands12_ids_are_stable_and_bad_files_are_named(tmp_path, h):
    root = _mini_sc12(tmp_path, h, [("yes__aa_nohash_0.flac", "yes", "aa"), ("no__bb_nohash_0.flac", "no", "bb")])
    a = speech_commands12_items(root)
    assert [i.id for i in a] == ["aa_yes__aa_nohash_0", "bb_no__bb_nohash_0"]
    assert [i.id for i in speech_commands12_items(root)] == [i.id for i in a]
    (root / "audio" / "no__bb_nohash_0.flac").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="no__bb_nohash_0.flac"):
        prepare_speech_commands12(root)
    (root / "audio" / "no__bb_nohash_0.flac").unlink()
    with pytest.raises(DataError, match=r"no__bb_nohash_0\.flac .*does not exist"):
        speech_commands12_items(root)
    (root / "labels.tsv").write_text("path\tlabel\tspeaker\tword\naudio/yes__aa_nohash_0.flac\tmaybe\taa\tmaybe\n")
    with pytest.raises(DataError, match="line 2: label 'maybe'"):
        speech_commands12_items(root)


# --- FSDD ----------------------------------------------------------------------------


def test_fsdd_speaker_task_has_every_speaker_in_every_split_with_disjoint_takes(shared_data):
    items = fsdd_classification_items(shared_data / "fsdd", task="speaker")
    by_split = {s: [i for i in items if i.split == s] for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 2400, "dev": 300, "test": 300}
    takes = {}
    for split, its in by_split.items():
        assert {i.speaker for i in its} == set(FSDD_SPEAKERS)
        assert all(i.text == i.speaker for i in its)
        takes[split] = {dict(i.extra)["take"] for i in its}
    assert takes["dev"] == set(range(40, 45)) and takes["test"] == set(range(45, 50))
    assert not takes["train"] & takes["dev"] and not takes["train"] & takes["test"]
    with pytest.raises(DataError, match="both dev and test"):
        fsdd_classification_items(shared_data / "fsdd", task="speaker", dev_takes=[1, 2], test_takes=[2])
    with pytest.raises(DataError, match="task must be"):
        fsdd_classification_items(shared_data / "fsdd", task="gender")


def test_fsdd_digit_task_is_speaker_disjoint(shared_data):
    items = fsdd_classification_items(shared_data / "fsdd", task="digit")
    speakers = {s: {i.speaker for i in items if i.split == s} for s in ("train", "dev", "test")}
    assert speakers == {"train": {"george", "jackson", "lucas"}, "dev": {"nicolas"}, "test": {"theo", "yweweler"}}
    assert {i.text for i in items} == {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def test_fsdd_classification_resamples_to_16k(shared_data, tmp_path):
    root = tmp_path / "fsdd"
    root.mkdir()
    for spk in FSDD_SPEAKERS:
        for take in (0, 40, 45):
            shutil.copy(shared_data / "fsdd" / "recordings" / f"3_{spk}_{take}.wav", root)
    cuts = prepare_fsdd_classification(root, tmp_path / "out", task="speaker")
    assert {s: len(c) for s, c in cuts.items()} == {"train": 6, "dev": 6, "test": 6}
    cut = cuts["test"][0]
    assert cut.recording.sampling_rate == 16000 and cut.supervisions[0].text == cut.supervisions[0].speaker
    assert cut.supervisions[0].custom == {"word": "three", "take": 45}
    assert (tmp_path / "out" / "cuts_test.jsonl.gz").is_file()


# --- few-shot and unlabelled pools -----------------------------------------------------


def test_few_shot_k_per_label_deterministic_and_seeded():
    cuts = _toy(n_per_label=8)
    a = few_shot(cuts, 3, seed=0)
    assert label_counts(a) == {"a": 3, "b": 3, "c": 3}
    assert [c.id for c in few_shot(cuts, 3, seed=0)] == [c.id for c in a]
    assert {c.id for c in few_shot(cuts, 3, seed=1)} != {c.id for c in a}
    with pytest.raises(DataError, match=r"k=9 .*'a': 8"):
        few_shot(cuts, 9, seed=0)
    with pytest.raises(DataError, match="at least 1"):
        few_shot(cuts, 0, seed=0)


def test_merge_unlabelled_drops_labels_and_rejects_duplicate_ids():
    pool = merge_unlabelled(_toy(2, ("a",)), _toy(2, ("b",)))
    assert [c.id for c in pool] == ["a00", "a01", "b00", "b01"]
    for c in pool:
        sup = c.supervisions[0]
        assert sup.text is None and sup.custom is None and sup.speaker is None
        assert c.recording.sources[0].source == f"/x/{c.id}.wav"
    assert merge_unlabelled(_toy(1, ("a",)), keep_speaker=True)[0].supervisions[0].speaker == "s"
    with pytest.raises(DataError, match=r"'a01' \(inputs \[0, 1\]\)"):
        merge_unlabelled(_toy(2, ("a",)), _toy(2, ("a",)))


# --- CLI ------------------------------------------------------------------------------


def test_prepare_and_few_shot_cli(shared_data, tmp_path, h, run_cli):
    root = _mini_sc12(tmp_path, h, [(f"{lab}__s{i}_nohash_0.flac", lab, f"s{i}")
                                    for i in range(12) for lab in ("yes", "no")])
    out = tmp_path / "out"
    rc, stdout, _ = run_cli("prepare", "speech_commands12", "--root", root, "--out", out,
                            "--dev-percent", "0", "--test-percent", "0")
    assert rc == 0
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["splits"]["train"]["labels"] == {"no": 12, "yes": 12}
    assert report["splits"]["train"]["speakers"] == 12
    assert (out / "train" / "text").is_file()
    fs = tmp_path / "fs.jsonl.gz"
    argv = ("data", "few-shot", "--cuts", out / "cuts_train.jsonl.gz", "--out", fs, "--k", "2", "--seed", "3")
    rc, stdout, _ = run_cli(*argv)
    assert rc == 0
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["labels"] == {"no": 2, "yes": 2} and report["clips"] == 4
    first = fs.read_bytes()
    assert run_cli(*argv)[0] == 0 and fs.read_bytes() == first
    rc, _, err = run_cli("data", "few-shot", "--cuts", out / "cuts_train.jsonl.gz", "--out", fs, "--k", "13")
    assert rc == 2 and "fewer cuts" in err
    rc, _, err = run_cli("prepare", "fsdd_classify", "--task", "speaker", "--root", shared_data / "fsdd",
                         "--out", tmp_path / "f", "--test-takes", "49-45")
    assert rc == 2 and "--test-takes" in err
