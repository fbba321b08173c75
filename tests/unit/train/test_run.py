"""The generic run function with a toy model family defined here, in a few lines: the
family table takes it without touching the library, and it goes through run(), export,
speechfm.load and decoding like the built-in families. Also early stopping, selection of
the exported weights by a higher-is-better metric, EMA weights and exact resume of
recipe state."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import speechfm
from speechfm.config import config_from_dict
from speechfm.models.io import FAMILIES, register_family
from speechfm.train import EmaWeights, RunConfig, cosine_momentum, run
from speechfm.train.runner import load_cuts

pytestmark = pytest.mark.usefixtures("one_thread")

from toy_family import TEXTS, TOY_FAMILY, ToyConfig, create_toy  # noqa: E402


def _run(corpus, exp, *, validate=None, metric="loss", higher=False, stateful=None,
         loss_hook=None, resume=False, run_fn=run, **kw):
    cuts, tokenizer = corpus
    settings = dict(
        train_cuts=str(cuts), max_duration=2.0, num_workers=0, num_threads=1, max_steps=8,
        save_every=2, valid_every=2, keep_last=3, average_last=2, average_period=1,
        progress=False, exp_dir=str(exp), seed=3, scheduler={"kind": "constant", "warmup_steps": 0},
        optimizer={"lr": 3e-3})
    config = config_from_dict(RunConfig, {**settings, **kw})
    torch.manual_seed(config.seed)
    model_config = ToyConfig(vocab_size=tokenizer.vocab_size)
    model = create_toy(model_config)

    def loss_fn(net, batch, ctx):
        if loss_hook is not None:
            loss_hook(ctx)
        return net(dict(batch, targets=[tokenizer.encode(t) for t in batch["texts"]]))

    return run_fn(config, model=model, model_config=model_config, loss_fn=loss_fn, validate=validate,
               metric=metric, higher_is_better=higher, parts={"tokenizer": tokenizer},
               stateful=stateful, resume=resume)


def test_a_toy_family_goes_through_run_export_load_and_decode(toy_family, corpus, tmp_path):
    from speechfm.decode.asr import decode_manifest, evaluate_recognizer

    cuts, tokenizer = corpus

    def validate(model, ctx):
        return evaluate_recognizer(model, load_cuts(cuts).to_eager(), tokenizer,
                                   targets="text", device=ctx.device)

    result = _run(corpus, tmp_path / "exp", validate=validate, metric="cer")
    final = result.final_dir
    meta = json.loads((final / "config.json").read_text())
    assert meta["family"] == "toy" and meta["parts"] == {"tokenizer": "tokenizer"}
    assert result.summary["family"] == "toy" and result.summary["steps"] == 8
    assert result.summary["average"]["chosen"] in result.summary["average"]["candidates"]
    model = speechfm.load(final)
    assert model.family == "toy"
    text = model.transcribe(cuts.parent / "u0.wav", vad=False)  # a steady tone: no speech
    assert text in ("a", "b")
    assert model.embed(cuts.parent / "u0.wav")[0].shape[1] == model.module.encoder.dim
    out = decode_manifest(final, cuts, tmp_path / "decode", group_by="none")
    assert out["family"] == "toy" and out["num_utts"] == len(TEXTS)
    # the first letter is all the toy says: at best it gets len(first) of len(text) right
    assert out["overall"]["cer"]["ref_len"] == sum(len(t) for t in TEXTS)
    with pytest.raises(ValueError, match="streaming-capable"):
        decode_manifest(final, cuts, tmp_path / "d2", streaming=True)


def test_unregistered_family_is_refused_by_name(toy_family, corpus, tmp_path):
    final = _run(corpus, tmp_path / "exp", max_steps=2).final_dir
    FAMILIES.pop("toy")
    try:
        with pytest.raises(speechfm.errors.DataError, match="unknown model family 'toy'"):
            speechfm.load(final)
    finally:
        register_family(TOY_FAMILY)


def test_early_stopping_and_higher_is_better_selection(toy_family, corpus, tmp_path):
    seen = []

    def flat(model, ctx):  # never improves after the first validation
        seen.append(ctx.state.step)
        return {"acc": 0.5}

    result = _run(corpus, tmp_path / "flat", validate=flat, metric="acc", higher=True,
                  max_steps=20, early_stopping_patience=2)
    assert result.summary["stop_reason"] == "early_stopping"
    # validations at steps 2 (best), 4, 6 (two without improvement): stop at 6
    assert result.summary["steps"] == 6 and seen[:3] == [2, 4, 6]

    weights_seen = {}

    def by_weights(model, ctx):  # a metric that differs between candidate weights
        value = float(model.head.weight.sum())
        weights_seen[value] = True
        return {"score": value}

    result = _run(corpus, tmp_path / "best", validate=by_weights, metric="score", higher=True)
    candidates = result.summary["average"]["candidates"]
    assert len(candidates) == 3
    best = max(candidates, key=lambda k: candidates[k]["score"])
    assert result.summary["average"]["chosen"] == best
    exported = speechfm.load(result.final_dir).module
    assert float(exported.head.weight.detach().sum()) == pytest.approx(candidates[best]["score"], abs=1e-5)

    # average: best = the kept step checkpoint with the best dev metric, not an average
    result = _run(corpus, tmp_path / "step", validate=by_weights, metric="score", higher=True,
                  average="best")
    candidates = result.summary["average"]["candidates"]
    assert sorted(candidates) == ["step-000004", "step-000006", "step-000008"]  # keep_last 3
    best = max(candidates, key=lambda k: candidates[k]["score"])
    assert result.summary["average"]["chosen"] == best
    exported = speechfm.load(result.final_dir).module
    from speechfm.models.io import read_weights

    ckpt = read_weights(tmp_path / "step" / "checkpoints" / best)
    assert all(torch.equal(v, ckpt[k]) for k, v in exported.state_dict().items())
    with pytest.raises(ValueError, match="needs a dev set"):
        _run(corpus, tmp_path / "nodev", average="best")


def test_ema_weights_follow_and_resume_exactly(toy_family, corpus, tmp_path):
    def make(exp, steps, resume):
        holder = {}

        def hook(ctx):
            # the teacher follows the student before every step (recipe-owned EMA)
            holder["ema"].update(holder["model"], cosine_momentum(ctx.state.step, 8))

        def capture(config, *, model, **kw):
            holder["model"] = model
            holder["ema"].__init__(model, decay=0.9)
            return run(config, model=model, **kw)

        holder["ema"] = EmaWeights.__new__(EmaWeights)
        _run(corpus, exp, max_steps=steps, stateful={"ema": holder["ema"]}, loss_hook=hook,
             resume=resume, run_fn=capture)
        return holder["ema"]

    straight = make(tmp_path / "straight", 6, False)
    make(tmp_path / "split", 4, False)
    resumed = make(tmp_path / "split", 6, True)
    assert straight.num_updates == resumed.num_updates == 6
    for key, value in straight.shadow.items():
        assert torch.equal(value, resumed.shadow[key]), key


def test_ema_math_and_momentum_schedule():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EmaWeights(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 2.0))
    ema.update(model, decay=0.0)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 3.0))
    target = nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, model.weight)
    with pytest.raises(ValueError, match="decay"):
        ema.update(model, decay=1.5)
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    assert cosine_momentum(500, 100) == pytest.approx(1.0)
