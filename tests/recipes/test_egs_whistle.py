"""egs/mini_cv_lang/whistle/run.sh end to end on a tiny corpus: seen-language manifests and
tokenizers, the unseen-language corpus with nested minute subsets, LM + lexicon, phoneme
and subword pretraining, every fine-tuning system (phoneme with head re-mapping, subword,
SSL from a w2v-BERT directory, scratch), greedy and graph decoding, RESULTS.md."""

from __future__ import annotations

import gzip
import json
import re
import subprocess

import pytest

RECIPE = ("egs", "mini_cv_lang", "whistle")
PT_ARGS = ("model_size=whistle_tiny max_steps=4 save_every=2 valid_every=2 max_duration=10 "
           "scheduler.warmup_steps=2 progress=false")
FT_ARGS = "max_steps=3 save_every=3 valid_every=3 max_duration=10 progress=false"
MINUTES = ("0.1", "0.3")


@pytest.fixture(scope="module")
def whistle_run(repo_root, tmp_path_factory):
    import torch

    from speechfm.models.io import save_model_dir
    from speechfm.models.w2v_bert import create_w2v_bert_model, w2v_bert_tiny

    root = tmp_path_factory.mktemp("egs_whistle")
    data, exp = root / "data", root / "exp"
    torch.manual_seed(0)
    config = w2v_bert_tiny()
    save_model_dir(root / "ssl", create_w2v_bert_model(config), config)
    cmd = ["bash", str(repo_root.joinpath(*RECIPE, "run.sh")), "--data-dir", str(data),
           "--exp-dir", str(exp), "--langs", "en,es", "--utts-per-lang", "12",
           "--seen-langs", "en,es", "--langs-unseen", "pl", "--unseen-utts", "40",
           "--minutes", " ".join(MINUTES), "--bpe-seen", "60", "--bpe-unseen", "45",
           "--lm-wordfreq", "50", "--ssl-model", str(root / "ssl"), "--pt-args", PT_ARGS,
           "--ft-args", FT_ARGS, "--nj", "2"]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root, data, exp, res


def _minutes(path) -> float:
    with gzip.open(path, "rt") as f:
        return sum(json.loads(line)["duration"] for line in f) / 60


@pytest.mark.slow
def test_whistle_stages_end_to_end(whistle_run):
    root, data, exp, res = whistle_run
    for n in range(8):
        assert re.search(rf"\(run.sh:\d+:\w+\) Stage {n}:", res.stderr), n
    w = data / "whistle"
    # the seen tokenizers come from the seen languages only
    inv = json.loads((w / "seen" / "lang_ipa" / "inventory.json").read_text())
    assert set(inv["languages"]) == {"en", "es"}
    # nested minute subsets: each reaches its minutes, the smaller is a prefix of the larger
    small, large = (w / "unseen" / f"cuts_train_pl_{m}min.jsonl.gz" for m in MINUTES)
    assert _minutes(small) >= 0.1 and _minutes(large) >= 0.3
    ids = [json.loads(x)["id"] for x in gzip.open(small, "rt")]
    assert ids == [json.loads(x)["id"] for x in gzip.open(large, "rt")][:len(ids)]
    # the LM never saw a dev/test sentence
    lm_text = set((w / "lm_pl" / "lm_text.txt").read_text(encoding="utf-8").splitlines())
    for split in ("dev", "test"):
        for line in (w / "unseen" / "clean" / split / "text").read_text().splitlines():
            assert line.split(maxsplit=1)[1] not in lm_text
    assert set(json.loads((w / "lm_pl" / "oov.json").read_text())) == {"dev", "test"}
    # every system fine-tuned and decoded
    for system in ("phoneme", "subword", "ssl", "scratch"):
        for m in MINUTES:
            d = exp / f"ft_{system}_pl_{m}min"
            summary = json.loads((d / "train_summary.json").read_text())
            assert summary["steps"] == 3
            meta = json.loads((d / "final" / "config.json").read_text())
            assert "graph" in meta["parts"]
            greedy = json.loads((d / "decode_greedy" / "test" / "results.json").read_text())
            assert (d / "decode_beam" / "test" / "results.json").is_file()
            lm = json.loads((d / "decode_lm" / "test" / "results.json").read_text())
            assert ("per" in greedy["overall"]) == (system != "subword")
            assert lm["targets"] == "text" and "wer" in lm["overall"]
            if system == "phoneme":
                assert summary["head_remap"]["shared"] >= 3  # blank, unk, | at least
    ssl_meta = json.loads((exp / "ft_ssl_pl_0.1min" / "final" / "config.json").read_text())
    assert ssl_meta["model"]["encoder"]["conformer"]["num_layers"] == 3  # w2v_bert_tiny's
    results = (exp / "RESULTS.md").read_text()
    assert "phoneme-pretrained (Whistle)" in results and "| pl | 0.3 |" in results
    assert "OOV" in results
