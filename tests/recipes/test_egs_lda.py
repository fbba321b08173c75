"""egs/mini_cv_lang/lda/run.sh end to end on a tiny corpus with tiny budgets: the
head/tail split (the pool without transcripts), temperature sampling, a cascaded foundation, supervised adapters
of two sizes, a noisy-student round, full fine-tuning, the merge, per-language decoding
(final and streaming passes) and RESULTS.md, whose merged-model rows match the chosen
adapters hypothesis for hypothesis."""

from __future__ import annotations

import gzip
import json
import re
import subprocess

import pytest

RECIPE = ("egs", "mini_cv_lang", "lda")
TINY_RUN = """max_duration: 20
num_workers: 0
max_steps: 4
save_every: 2
valid_every: 2
keep_last: 2
average_last: 2
progress: false
"""
TINY_FOUNDATION = """
model_size: transducer_tiny
model:
  encoder:
    specaugment: false
    conformer: {conv_causal: true, dynamic_chunk: true, dynamic_chunk_max: 4}
  second_encoder: {input_dim: 32, front_end: stack, subsampling_factor: 1, dim: 32,
                   num_layers: 1, num_heads: 4, ffn_dim: 64, conv_kernel: 5}
  ctc_head: true
transducer_loss: {warm_steps: 2, ctc_scale: 0.3}
""" + TINY_RUN
TINY_CTC = """
model_size: ctc_tiny
scheduler: {kind: cosine, warmup_steps: 1}
""" + TINY_RUN
ADAPTER_ARGS = ("max_steps=4 save_every=2 valid_every=2 keep_last=2 max_duration=20 "
                "scheduler.warmup_steps=1 "
                "progress=false")


@pytest.fixture(scope="module")
def lda_run(repo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("egs_lda")
    (root / "foundation.yaml").write_text(TINY_FOUNDATION)
    (root / "ctc.yaml").write_text(TINY_CTC)
    data, ldata, exp = root / "data", root / "lda_data", root / "exp"
    cmd = ["bash", str(repo_root.joinpath(*RECIPE, "run.sh")), "--data-dir", str(data),
           "--lda-data", str(ldata), "--exp-dir", str(exp), "--langs", "en,es,ky",
           "--utts-per-lang", "12", "--head", "en es", "--tail", "ky", "--ratio", "3", "--temperature", "2",
           "--foundation-conf", str(root / "foundation.yaml"), "--ctc-conf",
           str(root / "ctc.yaml"), "--adapter-args", ADAPTER_ARGS,
           "--adapter-sizes", "4 8", "--student-size", "8", "--min-confidence", "0",
           "--stream-chunk", "4", "--lid-steps", "100", "--results-md", str(root / "RESULTS.md"), "--nj", "2"]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root, data, ldata, exp, res


def _cuts(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_lda_stages_end_to_end(lda_run):
    root, data, ldata, exp, res = lda_run
    for n in range(8):
        assert re.search(rf"\(run.sh:\d+:\w+\) Stage {n}:", res.stderr), n
    # head languages keep everything; ky: a third labelled, the rest unlabelled
    split = json.loads((ldata / "split.json").read_text())
    assert split["tail_labelled"]["ky"][0] == round(sum(
        split["head"][lang][0] for lang in ("en", "es")) / 2 / 3)
    pool = _cuts(ldata / "cuts_tail_pool.jsonl.gz")
    assert pool and all("text" not in s and "ipa" not in (s.get("custom") or {})
                        for c in pool for s in c["supervisions"])
    labelled = {c["id"] for c in _cuts(ldata / "cuts_tail_labelled.jsonl.gz")}
    assert not labelled & {c["id"] for c in pool}
    found = {c["id"] for c in _cuts(ldata / "cuts_foundation_train.jsonl.gz")}
    assert labelled <= found and not found & {c["id"] for c in pool}
    # temperature 2: ky repeated towards sqrt shares, and that is what the foundation saw
    sampled = _cuts(ldata / "cuts_foundation_train_T2.jsonl.gz")
    ky = [c for c in sampled if c["supervisions"][0]["language"] == "ky"]
    assert len(ky) > len(labelled) and {c["id"] for c in sampled} >= found
    summary = json.loads((exp / "foundation" / "train_summary.json").read_text())
    assert summary["config"]["train_cuts"].endswith("cuts_foundation_train_T2.jsonl.gz")
    # the first encoder started from a CTC model trained on the same data
    assert summary["config"]["init_from"].endswith("foundation_ctc/final")
    ctc = json.loads((exp / "foundation_ctc" / "train_summary.json").read_text())
    assert ctc["config"]["train_cuts"] == summary["config"]["train_cuts"]
    # every system trained, decoded on ky (final and streaming) and scored
    for system in ("adapter_b4", "adapter_b8", "student_b8_r1", "full"):
        assert (exp / system / "ky" / "final" / "config.json").is_file(), system
        for mode in ("final", "stream"):
            assert (exp / "decode" / system / "test" / "ky" / mode / "results.json").is_file()
    for lang in ("en", "es", "ky"):
        assert (exp / "decode" / "merged" / "test" / lang / "stream" / "results.json").is_file()
    adapter = json.loads((exp / "adapter_b4" / "ky" / "adapter" / "ky.json").read_text())
    assert adapter["language"] == "ky" and adapter["spec"]["options"] == {"bottleneck": 4}
    stats = json.loads((ldata / "pl" / "ky_r1" / "stats.json").read_text())
    assert stats["num_labels"] == len(pool)
    merged = json.loads((exp / "merged" / "config.json").read_text())
    assert merged["parts"]["adapters"] == "adapters"
    # the language-ID head: trained on en, es, ky, in the merged model, used by --language auto
    assert merged["parts"]["language_id"] == "language_id.safetensors"
    lid = json.loads((exp / "lid" / "language_id.json").read_text())
    assert lid["languages"] == ["en", "es", "ky"] and set(lid["train_utts"]) == {"en", "es", "ky"}
    auto = json.loads((exp / "decode" / "merged_lid" / "test" / "ky" / "final" /
                       "results.json").read_text())
    assert auto["language"] == "auto" and auto["language_id"]["num_utts"] == auto["num_utts"] > 0
    text = (root / "RESULTS.md").read_text()
    api = json.loads((exp / "api_stream" / "results.json").read_text())
    assert api["ky"]["num_utts"] > 0
    for heading in ("## Tail languages", "## Head languages", "## The merged model reproduces",
                    "## The merged model through the API", "## Pseudo-labels",
                    "## Foundation: per-language dev CER", "## Without a language id"):
        assert heading in text, heading
    # the merged model's choice for ky (an adapter, or the foundation when none beat it on
    # dev) gives the same hypotheses as that system on every dev/test utterance
    row = re.search(r"\| ky \| (LDA, bottleneck \d+|foundation only).*\(CER [\d.]+ %\) \| "
                    r"(\d+) of (\d+) \|", text)
    assert row and row.group(2) == row.group(3) and int(row.group(3)) > 0
