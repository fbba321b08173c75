"""egs/mini_cv_lang/prepare.sh (stages 0-3) end to end on a tiny 12-language corpus."""

from __future__ import annotations

import json
import subprocess

import pytest

ALL_LANGS = {"en", "es", "fr", "it", "ky", "nl", "ru", "sv", "tr", "tt", "pl", "id"}
SPLITS = ("train", "dev", "test")


def _run(repo_root, data, *args):
    cmd = ["bash", str(repo_root / "egs" / "mini_cv_lang" / "prepare.sh"), "--data-dir", str(data),
           "--utts-per-lang", "20", "--bpe-vocab-size", "200", "--nj", "2", *args]
    # run from elsewhere: the script must cd to its own folder
    return subprocess.run(cmd, cwd=data.parent, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_prepare_sh_stages_0_to_3(repo_root, tmp_path, shared_data):
    from lhotse import CutSet

    from speechfm.text import load_tokenizer

    data = tmp_path / "data"
    res = _run(repo_root, data, "--stop-stage", "3")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for n in range(4):
        assert f"Stage {n}:" in res.stderr

    # stage 0: 12 languages in every split, each cut with IPA
    for split in SPLITS:
        cuts = CutSet.from_file(data / "corpus" / f"cuts_{split}.jsonl.gz")
        assert {c.supervisions[0].language for c in cuts} == ALL_LANGS
        assert all(c.supervisions[0].custom["ipa"] for c in cuts)
    # stage 1: every split checked clean and re-imported with text, language and IPA
    for split in SPLITS:
        n_corpus = len((data / "corpus" / split / "wav.scp").read_text().splitlines())
        n_clean = len((data / "clean" / split / "wav.scp").read_text().splitlines())
        assert n_clean == n_corpus > 0
        clean = CutSet.from_file(data / "clean" / f"cuts_{split}.jsonl.gz")
        assert len(clean) == n_corpus
        sup = next(iter(clean)).supervisions[0]
        assert sup.language in ALL_LANGS and sup.text and sup.custom["ipa"]
    # stage 2: fbank for every cut, train CMVN statistics
    for split in SPLITS:
        feats = CutSet.from_file(data / "fbank" / f"cuts_{split}.jsonl.gz")
        assert all(c.has_features and c.num_features == 80 for c in feats)
        first = next(iter(feats))
        assert first.load_features().shape == (first.num_frames, 80)
    cmvn = json.loads((data / "fbank" / "cmvn.json").read_text())
    assert len(cmvn["mean"]) == 80 and cmvn["num_utterances"] == 192
    # stage 3: both tokenizers reload and cover the training transcripts
    bpe = load_tokenizer(data / "lang_bpe_200")
    ipa = load_tokenizer(data / "lang_ipa")
    assert bpe.vocab_size == 200
    train = CutSet.from_file(data / "clean" / "cuts_train.jsonl.gz")
    for cut in list(train)[:20]:
        sup = cut.supervisions[0]
        ids = bpe.encode(sup.text)
        assert ids and bpe.unk_id not in ids
        assert bpe.decode(ids) == sup.text
        phones = ipa.encode(sup.custom["ipa"])
        assert phones and ipa.unk_id not in phones

    # idempotent: a second run finds every .done marker and redoes nothing
    again = _run(repo_root, data, "--stop-stage", "3")
    assert again.returncode == 0 and "Stage 0:" not in again.stderr and "Stage 3:" not in again.stderr

    # a broken recording stops stage 1 and names the report
    victim = (data / "corpus" / "test" / "wav.scp").read_text().split("\n")[0].split(" ", 1)[1]
    with open(victim, "r+b") as f:
        f.truncate(20)
    (data / "clean" / ".done").unlink()
    bad = _run(repo_root, data, "--stage", "1", "--stop-stage", "1")
    assert bad.returncode != 0
    assert str(data / "clean" / "test" / "bad_items.tsv") in bad.stderr
