"""egs/mini_cv_lang/asr/run.sh stages 0-6 on a tiny 2-language corpus, and exact --resume through
the CTC recipe script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

RECIPE = ("egs", "mini_cv_lang", "asr")
CTC_TRAIN = ("recipes", "ctc", "train.py")
TINY_CONF = """
# A few-thousand-parameter model: enough to see the loss fall in a few dozen steps.
train_cuts: unset
tokenizer: unset
model_size: ctc_tiny
model:
  encoder:
    specaugment: true
max_duration: 20
num_workers: 1
optimizer:
  lr: 3.0e-3
scheduler:
  kind: noam
  warmup_steps: 10
max_steps: 40
valid_every: 20
save_every: 10
log_every: 5
keep_last: 4
average_last: 2
average_period: 2
progress: false
seed: 7
"""


def _train(repo_root, *args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(repo_root.joinpath(*CTC_TRAIN)), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def _run_sh(repo_root, data, exp, conf, *args):
    cmd = ["bash", str(repo_root.joinpath(*RECIPE, "run.sh")), "--data-dir", str(data),
           "--exp-dir", str(exp), "--train-conf", str(conf), "--langs", "en,es",
           "--utts-per-lang", "20", "--bpe-vocab-size", "60", "--nj", "2", *args]
    return subprocess.run(cmd, cwd=data.parent, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def recipe_run(repo_root, tmp_path_factory, shared_data):
    """Stages 0-3 (../prepare.sh, then CTC) once; the tests below inspect what they left."""
    root = tmp_path_factory.mktemp("egs_ctc")
    conf = root / "tiny.yaml"
    conf.write_text(textwrap.dedent(TINY_CONF))
    data, exp = root / "data", root / "exp" / "ctc"
    # stop at 3: stages 4-6 (the transducer) have their own test with a tiny config
    res = _run_sh(repo_root, data, exp, conf, "--stop-stage", "3")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root, data, exp, conf, res


@pytest.mark.slow
def test_stages_0_to_3_prepare_train_decode_and_report(recipe_run):
    from speechfm.decode.asr import load_asr_model
    from speechfm.text import load_tokenizer

    _, data, exp, _, res = recipe_run
    for n in range(4):  # this script's stages 0-3, and prepare.sh's (its stage 0)
        for script in ("run.sh", "prepare.sh"):
            assert re.search(rf"\({script}:\d+:main\) Stage {n}:", res.stderr), (script, n)
    # prepare.sh's stage 3 adds the character tokenizer the model predicts
    assert load_tokenizer(data / "lang_char").kind == "char"
    # stage 1: the exported model directory loads, and training reduced the loss
    final = exp / "final"
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    model, tokenizer, config = load_asr_model(final)
    assert config["family"] == "ctc" and tokenizer.vocab_size == model.vocab_size
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["steps"] == 40 and summary["train_data"]["utterances"] == 32
    curve = summary["loss_curve"]["train/loss"]
    assert len(curve) == 8
    assert curve[-1][1] < 0.8 * curve[0][1], curve
    assert (exp / "curves.png").is_file() and (exp / ".train.done").is_file()
    # stage 2: hyps, per-language errs files and results for dev and test
    for split in ("dev", "test"):
        out = exp / "decode_greedy" / split
        results = json.loads((out / "results.json").read_text())
        assert set(results["groups"]) == {"en", "es"} and results["num_utts"] == 4
        assert len((out / "hyps.txt").read_text().splitlines()) == 4
        for name in ("all", "en", "es"):
            assert (out / f"errs-{name}-cer.txt").is_file() and (out / f"errs-{name}-wer.txt").is_file()
    # stage 3: RESULTS.md with the per-language table and the run details
    report = (exp / "RESULTS.md").read_text()
    assert "| language | dev CER % | dev WER % | test CER % | test WER % |" in report
    assert "| en |" in report and "| es |" in report and "| **all** |" in report
    assert "seed: 7" in report and "40 optimizer steps" in report and "run.sh" in report


@pytest.mark.slow
def test_default_recipe_config_is_valid(repo_root, recipe):
    from speechfm.config import load_config

    ctc = recipe("ctc")
    cfg = load_config(ctc.CtcConfig, repo_root.joinpath("recipes", "ctc", "configs", "mini_cv_lang.yaml"))
    model = ctc.build_model_config(cfg, vocab_size=104)
    assert cfg.max_minutes is not None and cfg.max_steps is not None
    assert model.encoder.conformer.subsampling_factor == 4


@pytest.mark.slow
def test_resume_through_the_recipe_matches_a_straight_run(recipe_run, repo_root):
    from safetensors.torch import load_file

    root, data, _, conf, _ = recipe_run
    common = [f"train_cuts={data}/fbank/cuts_train.jsonl.gz", f"tokenizer={data}/lang_char",
              f"cmvn={data}/fbank/cmvn.json", "dev_cuts=null", "average=last", "save_every=10"]
    straight = _train(repo_root, str(conf), "--exp-dir", str(root / "straight"), *common,
                    "max_steps=20", cwd=root)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = _train(repo_root, str(conf), "--exp-dir", str(root / "split"), *common, "max_steps=10",
                 cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _train(repo_root, str(conf), "--exp-dir", str(root / "split"), "--resume", *common,
                 "max_steps=20", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "step 10" in again.stderr
    a = load_file(str(root / "straight" / "checkpoints" / "step-000020" / "model.safetensors"))
    b = load_file(str(root / "split" / "checkpoints" / "step-000020" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key


TINY_TRANSDUCER_CONF = """
train_cuts: unset
tokenizer: unset
model_size: transducer_tiny
model:
  encoder:
    conformer:
      conv_causal: true
      dynamic_chunk: true
      dynamic_chunk_max: 8
  ctc_head: true
transducer_loss:
  warm_steps: 10
  ctc_scale: 0.3
max_duration: 20
num_workers: 0
optimizer:
  lr: 3.0e-3
scheduler:
  kind: noam
  warmup_steps: 10
max_steps: 20
valid_every: 10
save_every: 10
log_every: 5
keep_last: 3
average_last: 2
average_period: 2
progress: false
seed: 7
"""


@pytest.mark.slow
def test_transducer_stages_4_to_6_offline_and_streaming(recipe_run, repo_root):
    root, data, _, conf, _ = recipe_run
    tconf = root / "tiny_transducer.yaml"
    tconf.write_text(textwrap.dedent(TINY_TRANSDUCER_CONF))
    # the full-context variant: the same without causal convolutions and dynamic chunks
    oconf = root / "tiny_transducer_offline.yaml"
    oconf.write_text(textwrap.dedent(TINY_TRANSDUCER_CONF).replace("conv_causal: true", "conv_causal: false")
                     .replace("dynamic_chunk: true", "dynamic_chunk: false"))
    texp, oexp = root / "exp" / "transducer", root / "exp" / "transducer_offline"
    res = _run_sh(repo_root, data, root / "exp" / "ctc", conf, "--stage", "4", "--stop-stage", "6",
                  "--transducer-conf", str(tconf), "--transducer-exp-dir", str(texp),
                  "--offline-transducer-conf", str(oconf), "--offline-transducer-exp-dir", str(oexp),
                  "--stream-chunk", "4")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for n in (4, 5, 6):
        assert f"Stage {n}:" in res.stderr
    for exp in (texp, oexp):
        summary = json.loads((exp / "train_summary.json").read_text())
        assert summary["steps"] == 20 and summary["config"]["model_size"] == "transducer_tiny"
        # both encoders started from the stage-1 CTC model's
        assert summary["config"]["init_from"].endswith("exp/ctc/final")
        assert "initialised" in (exp / "log" / "train-rank0.log").read_text()
        assert json.loads((exp / "final" / "config.json").read_text())["family"] == "transducer"
        for decode in ("decode_greedy", "decode_beam"):
            assert json.loads((exp / decode / "test" / "results.json").read_text())["num_utts"] == 4
    assert not (oexp / "decode_streaming_c4").exists()
    assert "full-context transducer" in (oexp / "RESULTS.md").read_text()
    for decode in ("decode_greedy", "decode_beam", "decode_streaming_c4"):
        for split in ("dev", "test"):
            results = json.loads((texp / decode / split / "results.json").read_text())
            assert results["family"] == "transducer" and results["num_utts"] == 4
            assert set(results["groups"]) == {"en", "es"}
    assert json.loads((texp / "decode_streaming_c4" / "test" / "results.json").read_text())["streaming"]
    report = (texp / "RESULTS.md").read_text()
    assert "transducer" in report and "loss: kind pruned" in report
    assert "modified beam search (beam 4)" in report
    assert "streaming greedy search: chunks of 4 encoder frames" in report
    assert report.count("| **all** |") == 3
