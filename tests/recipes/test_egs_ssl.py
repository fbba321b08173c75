"""egs/mini_cv_lang/ssl/run.sh on a tiny 2-language corpus: subsets, w2v-BERT pretraining,
pretrained vs scratch CTC fine-tunes, frozen-encoder probes, decoding, RESULTS.md; and
continued pretraining from a `speechfm convert`ed transformers checkpoint."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import pytest

RECIPE = ("egs", "mini_cv_lang", "ssl")
BUDGETS = (4, 8)
SSL_ARGS = ("model_size=w2v_bert_tiny max_steps=6 save_every=3 valid_every=3 max_duration=10 "
            "scheduler.warmup_steps=2 progress=false")
FT_ARGS = ("max_steps=4 save_every=2 valid_every=2 max_duration=10 scheduler.warmup_steps=1 "
           "progress=false")
SYSTEMS = [f"ft_{init}_{n}" for n in BUDGETS for init in ("pretrained", "scratch")] + [
    "probe_pretrained", "probe_random"]


def _run_sh(repo_root, data, exp, *args):
    cmd = ["bash", str(repo_root.joinpath(*RECIPE, "run.sh")), "--data-dir", str(data),
           "--exp-dir", str(exp), "--langs", "en,es", "--utts-per-lang", "12", "--nj", "2",
           "--budgets", " ".join(map(str, BUDGETS)), "--ssl-args", SSL_ARGS, "--ft-args", FT_ARGS,
           *args]
    res = subprocess.run(cmd, cwd=data.parent, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def ssl_run(repo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("egs_ssl")
    data, exp = root / "data", root / "exp"
    res = _run_sh(repo_root, data, exp)
    return root, data, exp, res


def _encoder(directory):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(directory / "model.safetensors")).items()
            if k.startswith("encoder.")}


def _lang_counts(path):
    counts: dict[str, int] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            lang = json.loads(line)["supervisions"][0]["language"]
            counts[lang] = counts.get(lang, 0) + 1
    return counts


@pytest.mark.slow
def test_pretrain_finetune_probe_decode_report(ssl_run, repo_root):
    root, data, exp, res = ssl_run
    for n in range(7):
        assert re.search(rf"\(run.sh:\d+:\w+\) Stage {n}:", res.stderr), n
    # stage 1: N utterances of each language
    for n in BUDGETS:
        assert _lang_counts(data / "ssl" / f"cuts_train_{n}.jsonl.gz") == {"en": n, "es": n}
    # stage 2: a pretrained model and its random twin, same config, other weights
    pre, rnd = exp / "w2v_bert" / "final", exp / "random_init"
    meta_pre = json.loads((pre / "config.json").read_text())
    assert meta_pre["family"] == "w2v_bert"
    assert json.loads((rnd / "config.json").read_text())["model"] == meta_pre["model"]
    summary = json.loads((exp / "w2v_bert" / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["final_valid_last_weights"]["code_perplexity"] > 0
    # stage 3: identical architectures, different starting encoders
    for n in BUDGETS:
        a, b = exp / f"ft_pretrained_{n}", exp / f"ft_scratch_{n}"
        assert (json.loads((a / "final" / "config.json").read_text())["model"]
                == json.loads((b / "final" / "config.json").read_text())["model"])
        sa, sb = (json.loads((d / "train_summary.json").read_text()) for d in (a, b))
        assert sa["config"]["init_from"] == str(pre) and sb["config"]["init_from"] == str(rnd)
        assert sa["steps"] == sb["steps"] == 4 and sa["train_data"]["utterances"] == 2 * n
        assert "initialised" in (a / "log" / "train-rank0.log").read_text()
    enc_pre, enc_rnd = _encoder(pre), _encoder(rnd)
    assert enc_pre.keys() == enc_rnd.keys()
    assert any(not enc_pre[k].equal(enc_rnd[k]) for k in enc_pre)
    # stage 4: the probes' encoders are their init's, unchanged (frozen: parameters, and the
    # BatchNorm statistics too, since a frozen encoder runs in eval mode)
    for name, init in (("probe_pretrained", enc_pre), ("probe_random", enc_rnd)):
        probe = _encoder(exp / name / "final")
        summary = json.loads((exp / name / "train_summary.json").read_text())
        assert summary["train_data"]["utterances"] == 2 * max(BUDGETS)
        assert summary["config"]["freeze_prefixes"] == ["encoder."]
        for key, value in init.items():
            assert probe[key].equal(value), (name, key)
    # stages 5-6: every system decoded, one row each
    report = (exp / "RESULTS.md").read_text()
    for name in SYSTEMS:
        for split in ("dev", "test"):
            results = json.loads((exp / name / "decode_greedy" / split / "results.json").read_text())
            assert results["num_utts"] == 2 and "cer" in results["overall"]
        assert report.count(f"| {name} |") == 1, name
    assert "w2v_bert_tiny" in report and "6 updates" in report and "code perplexity" in report


@pytest.mark.slow
def test_stage_1_is_idempotent(ssl_run, repo_root):
    root, data, exp, _ = ssl_run
    paths = [data / "ssl" / f"cuts_train_{n}.jsonl.gz" for n in BUDGETS]
    before = [gzip.decompress(p.read_bytes()) for p in paths]
    _run_sh(repo_root, data, exp, "--stage", "1", "--stop-stage", "1")
    assert [gzip.decompress(p.read_bytes()) for p in paths] == before
    # and regenerating from scratch gives the same subsets
    subset = repo_root.joinpath(*RECIPE, "local", "subset.py")
    again = root / "again.jsonl.gz"
    subprocess.run([sys.executable, str(subset), "--cuts", str(data / "fbank" / "cuts_train.jsonl.gz"),
                    "--per-lang", str(BUDGETS[0]), "--seed", "0", "--out", str(again)], check=True,
                   capture_output=True)
    assert gzip.decompress(again.read_bytes()) == before[0]


# A converted facebook/w2v-bert-2.0-style encoder differs from w2v_bert_tiny's in settings
# that keep the tensor shapes: no depthwise-conv bias and causal depthwise convolutions
# (plus dropout 0.1 and snip_edges fbank, which leave the weights' meaning unchanged and
# stay the corpus's). The overrides make the pretrained architecture the converted one.
CONVERTED_ARGS = "model.encoder.conformer.conv_bias=false model.encoder.conformer.conv_causal=true"


@pytest.mark.slow
def test_continued_pretraining_from_a_converted_checkpoint(ssl_run, repo_root):
    transformers = pytest.importorskip("transformers")
    import torch

    root, data, _, _ = ssl_run
    config = transformers.Wav2Vec2BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_depthwise_kernel_size=5, position_embeddings_type="relative_key",
        feature_projection_input_dim=160, layerdrop=0.0, apply_spec_augment=False,
        mask_time_prob=0.0, mask_feature_prob=0.0)
    torch.manual_seed(0)
    transformers.Wav2Vec2BertModel(config).save_pretrained(root / "hf")
    converted = root / "converted"
    from speechfm.cli import main

    assert main(["convert", str(root / "hf"), str(converted)]) == 0
    exp = root / "exp_continued"
    _run_sh(repo_root, data, exp, "--stage", "2", "--stop-stage", "2", "--init-from", str(converted),
            "--ssl-args", f"{SSL_ARGS} {CONVERTED_ARGS}")
    log = (exp / "w2v_bert" / "log" / "train-rank0.log").read_text()
    line = next(ln for ln in log.splitlines() if "initialised" in ln)
    assert str(converted) in line and "not in it" not in line, line
    enc = json.loads((exp / "w2v_bert" / "final" / "config.json").read_text())["model"]["encoder"]
    assert enc["conformer"]["conv_bias"] is False and enc["conformer"]["conv_causal"] is True
    assert (exp / "random_init" / "config.json").is_file()
