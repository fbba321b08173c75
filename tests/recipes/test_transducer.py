"""recipes/transducer end to end: train a few steps, export, load, decode (greedy, beam,
chunked, streaming), exact resume with the full loss, init_from, the recipe's command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import speechfm
from speechfm.config import config_from_dict
from speechfm.decode.asr import decode_manifest, load_asr_model
from speechfm.models.io import init_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def train_asr(config, resume=False):
    from recipe_loader import import_recipe

    module = import_recipe(config.__class__.__module__.split("_")[-1])
    return module.train(config, resume=resume).final_dir


def _config(corpus, exp, **kw):
    _, cuts, tok = corpus
    base = dict(
        train_cuts=str(cuts), dev_cuts=str(cuts), tokenizer=str(tok),
        model_size="transducer_tiny", model={"encoder": {"conformer": {"conv_causal": True}}},
        max_duration=3.0, num_workers=0, max_steps=6, save_every=2, valid_every=3,
        keep_last=3, average_last=2, average_period=1, progress=False, exp_dir=str(exp),
        scheduler={"kind": "constant", "warmup_steps": 0}, optimizer={"lr": 3e-3},
        transducer_loss={"warm_steps": 4}, log_every=1,
    )
    base.update(kw)
    from recipe_loader import import_recipe

    name = "ctc" if str(base["model_size"]).startswith("ctc") else "transducer"
    module = import_recipe(name)
    if name == "ctc":
        base.pop("transducer_loss", None)
    return config_from_dict(module.CtcConfig if name == "ctc" else module.TransducerConfig, base)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("transducer_exp")
    return exp, train_asr(_config(corpus, exp))


def test_pruned_training_exports_a_transducer_directory(trained, corpus):
    exp, final = trained
    config = json.loads((final / "config.json").read_text())
    assert config["family"] == "transducer" and config["format_version"] == 2
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["config"]["transducer_loss"]["kind"] == "pruned"
    # the dev score the exported weights were picked by came from the transducer search
    assert all("cer" in r and np.isfinite(r["loss"]) for r in summary["average"]["candidates"].values())
    from speechfm.train import read_scalars

    tags = read_scalars(exp)
    assert any("simple_loss" in t for t in tags) and any("pruned_loss" in t for t in tags), tags
    model, tokenizer, _ = load_asr_model(final)
    assert hasattr(model, "predictor") and not model.training
    assert tokenizer.vocab_size == model.vocab_size
    loaded = speechfm.load(final)
    assert isinstance(loaded.transcribe(corpus[0] / "en_0.wav"), str)
    stream = loaded.stream(chunk_size=2)
    assert isinstance(stream.accept_waveform(np.zeros(4000, np.float32), 16000), str)
    assert isinstance(stream.finalize(), str)


def test_decode_greedy_beam_and_streaming(trained, corpus, tmp_path):
    _, final = trained
    cuts = corpus[1]
    out = {}
    for name, kw in {"greedy": {}, "beam": {"method": "beam", "beam": 3},
                     "chunked": {"chunk_size": 2},
                     "stream": {"streaming": True, "chunk_size": 2, "piece_frames": 7}}.items():
        res = decode_manifest(final, cuts, tmp_path / name, **kw)
        assert res["family"] == "transducer" and res["num_utts"] == 6
        assert set(res["groups"]) == {"en", "fr"}
        out[name] = dict(line.partition(" ")[::2] for line in
                         (tmp_path / name / "hyps.txt").read_text().splitlines())
    assert len(out["greedy"]) == 6
    # streaming chunk by chunk == chunked attention over the whole utterance
    assert out["stream"] == out["chunked"]
    with pytest.raises(ValueError, match="piece_frames"):
        decode_manifest(final, cuts, tmp_path / "bad", streaming=True, piece_frames=0)


def test_streaming_decode_needs_a_transducer(corpus, tmp_path):
    _, cuts, tok = corpus
    exp = tmp_path / "ctc"
    final = train_asr(_config(corpus, exp, model_size="ctc_tiny", model={}, max_steps=2,
                              dev_cuts=None, average="last"))
    with pytest.raises(ValueError, match="streaming-capable"):
        decode_manifest(final, cuts, tmp_path / "d", streaming=True)


def test_full_loss_option_and_exact_resume(corpus, tmp_path):
    from safetensors.torch import load_file

    kw = dict(dev_cuts=None, average="last", transducer_loss={"kind": "full"})
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_asr(_config(corpus, straight, max_steps=4, **kw))
    train_asr(_config(corpus, split, max_steps=2, **kw))
    train_asr(_config(corpus, split, max_steps=4, **kw), resume=True)
    a = load_file(str(straight / "checkpoints" / "step-000004" / "model.safetensors"))
    b = load_file(str(split / "checkpoints" / "step-000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    summary = json.loads((straight / "train_summary.json").read_text())
    assert summary["config"]["transducer_loss"]["kind"] == "full"


def test_ctc_head_and_its_loss_go_together(corpus, tmp_path):
    with pytest.raises(ValueError, match="ctc_head"):
        _config(corpus, tmp_path, model={"ctc_head": True}).validate()
    with pytest.raises(ValueError, match="ctc_head"):
        _config(corpus, tmp_path, transducer_loss={"ctc_scale": 0.2}).validate()
    _config(corpus, tmp_path, model={"ctc_head": True}, transducer_loss={"ctc_scale": 0.2}).validate()


def test_init_from_copies_the_encoder_of_another_model(trained, corpus, tmp_path):
    from safetensors.torch import load_file

    from speechfm.errors import DataError
    from speechfm.models.transducer import TransducerModelConfig, create_transducer_model

    _, final = trained
    source = load_file(str(final / "model.safetensors"))
    config = json.loads((final / "config.json").read_text())
    torch.manual_seed(123)
    fresh = create_transducer_model(TransducerModelConfig.from_dict(config["model"]))
    copied = init_weights(fresh, final, ["encoder."])
    state = fresh.state_dict()
    assert copied and all(k.startswith("encoder.") for k in copied)
    assert all(torch.equal(state[k], source[k]) for k in copied)
    assert not torch.equal(state["joiner.output_linear.weight"], source["joiner.output_linear.weight"])
    with pytest.raises(DataError, match="no weight named"):
        init_weights(fresh, final, ["nothing."])
    with pytest.raises(DataError, match="model.safetensors"):
        init_weights(fresh, tmp_path, ["encoder."])
    # through the trainer: the run starts from those weights (a 1e-12 learning rate keeps them)
    exp = tmp_path / "init"
    out = train_asr(_config(corpus, exp, init_from=str(final), max_steps=1, dev_cuts=None,
                            average="last", optimizer={"lr": 1e-12},
                            model={"encoder": {"conformer": {"conv_causal": True}},
                                   "ctc_head": True},
                            transducer_loss={"warm_steps": 4, "ctc_scale": 0.2}))
    trained_state = load_file(str(out / "model.safetensors"))
    for key in copied:
        if "num_batches_tracked" not in key and "running_" not in key:
            torch.testing.assert_close(trained_state[key], source[key], rtol=0, atol=1e-8,
                                       msg=key)
    assert "ctc_output.weight" in trained_state
    assert "initialised" in (exp / "log" / "train-rank0.log").read_text()


def test_recipe_script_rejects_a_ctc_config_and_prints_its_config(repo_root, tmp_path):
    script = repo_root / "recipes" / "transducer" / "train.py"
    conf = repo_root / "recipes" / "transducer" / "configs" / "mini_cv_lang.yaml"
    run = subprocess.run([sys.executable, str(script), str(conf), "--print-config", "--full-loss"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    import yaml

    printed = yaml.safe_load(run.stdout)
    assert printed["transducer_loss"]["kind"] == "full"
    assert printed["transducer_loss"]["prune_range"] == 5
    assert printed["transducer_loss"]["lm_scale"] == 0.25
    bad = subprocess.run([sys.executable, str(script), str(conf), "model_size=ctc_small",
                          "--print-config"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "model_size must be one of" in bad.stderr


def test_cascaded_foundation_with_per_language_dev_curves(corpus, tmp_path):
    """A cascaded transducer (causal first encoder + full-context second) trains through the
    recipe from config overrides alone, logging both passes' losses and each language's dev
    error rates."""
    second = {"input_dim": 32, "front_end": "stack", "subsampling_factor": 1, "dim": 32,
              "num_layers": 1, "num_heads": 4, "ffn_dim": 64, "conv_kernel": 5}
    exp = tmp_path / "cascade"
    config = _config(corpus, exp, valid_languages=["en", "fr"],
                     model={"encoder": {"conformer": {"conv_causal": True}},
                            "second_encoder": second},
                     transducer_loss={"warm_steps": 4, "first_pass_scale": 0.5})
    final = train_asr(config)
    meta = json.loads((final / "config.json").read_text())
    assert meta["model"]["second_encoder"]["num_layers"] == 1
    from speechfm.train import read_scalars

    tags = read_scalars(exp)
    for tag in ("train/first_pass_loss", "train/final_pass_loss", "valid/wer_en", "valid/cer_fr"):
        assert tag in tags, sorted(tags)
    model = speechfm.load(final)
    assert model.module.cascaded
    assert isinstance(model.transcribe(corpus[0] / "fr_1.wav"), str)
