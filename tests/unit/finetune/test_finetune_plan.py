"""speechfm.finetune.plan: the data-size rules, the method matrix, the tokenizer choice, and
the plan ``speechfm finetune --dry-run`` prints (without writing anything)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_helpers import save_base

from speechfm.errors import DataError
from speechfm.finetune.plan import (
    RULES,
    BaseInfo,
    FinetuneOptions,
    choose_method,
    choose_tokenizer,
    inspect_base,
    make_plan,
    tier_of,
)


def _base(family="ctc", tokenizer="char", cascaded=False, langs=(), dim=256, layers=12):
    return BaseInfo(path=Path("/base"), family=family,
                    kind="transducer" if family == "transducer" else "ctc",
                    tokenizer_kind=tokenizer, encoder_dim=dim, encoder_layers=layers,
                    cascaded=cascaded, adapter_languages=list(langs))


def _plan(hours, base=None, coverage=None, unlabelled=None, **flags):
    options = FinetuneOptions(base="/base", data="/data", lang="xx", **flags)
    options.validate()
    seconds = hours * 3600
    return make_plan(options, base or _base(), labelled_hours=hours, train_seconds=0.8 * seconds,
                     longest_seconds=12.0, coverage=coverage, split_info=None, related_info=None,
                     unlabelled_seconds=unlabelled)


def test_tiers():
    assert [tier_of(h) for h in (0.0, 0.17, 0.999, 1.0, 9.9, 10.0, 1000.0)] == [
        "minutes", "minutes", "minutes", "hours", "hours", "many_hours", "many_hours"]
    # more data: never more epochs, a larger batch, a smaller held-out share
    tiers = list(RULES.values())
    for small, big in zip(tiers, tiers[1:], strict=False):
        assert big.epochs < small.epochs and big.batch_seconds > small.batch_seconds
        assert big.held_out_fraction < small.held_out_fraction
        assert big.freeze_fraction < small.freeze_fraction


def test_defaults_follow_the_data_size():
    minutes, hours, many = _plan(0.25), _plan(3.0), _plan(50.0)
    assert (minutes.tokenizer, minutes.vocab_size) == ("char", None)
    assert (hours.tokenizer, hours.vocab_size) == ("bpe", 256)
    assert (many.tokenizer, many.vocab_size) == ("bpe", 500)
    assert minutes.train["lr"] == 5e-4 and hours.train["lr"] == 1e-3
    assert minutes.train["specaugment"] and hours.train["specaugment"]
    assert not many.train["specaugment"]
    # 40 epochs of 12 batches of 60 s over 12 min of training audio, clamped to >= 300
    assert minutes.train["batch_seconds"] == 60.0 and minutes.train["max_steps"] == 480
    assert minutes.train["freeze_encoder_steps"] == 120  # 25 %
    assert hours.train["freeze_encoder_steps"] == round(0.1 * hours.train["max_steps"])
    assert many.train["max_steps"] == RULES["many_hours"].min_steps  # 5 epochs of 720 batches < 10k
    for plan in (minutes, hours, many):
        t = plan.train
        assert t["valid_every"] == t["max_steps"] // 10
        assert t["warmup_steps"] == round(0.1 * t["max_steps"])
        assert plan.method == "full" and plan.recipe == "ctc" and plan.adapter is None
    assert minutes.train["patience"] > many.train["patience"]
    # a tiny set: the batch shrinks to 1/8 of the audio but holds the longest utterance
    tiny = _plan(0.01)
    assert tiny.train["batch_seconds"] == 12.0


def test_flags_win_and_say_so():
    plan = _plan(0.25, lr=3e-4, max_steps=50, specaugment="off", tokenizer="bpe", vocab_size=64,
                 patience=2, freeze_encoder_steps=5, batch_seconds=20.0, minutes=3.0)
    t = plan.train
    assert (t["lr"], t["max_steps"], t["specaugment"], t["patience"]) == (3e-4, 50, False, 2)
    assert (t["freeze_encoder_steps"], t["batch_seconds"], t["max_minutes"]) == (5, 20.0, 3.0)
    assert (plan.tokenizer, plan.vocab_size) == ("bpe", 64)
    why = {c.setting: c.why for c in plan.choices}
    assert why["peak lr"] == "--lr" and why["updates"] == "--max-steps"
    assert why["SpecAugment"] == "--specaugment" and why["tokenizer"] == "--tokenizer"
    epochs = _plan(0.25, epochs=3)
    assert epochs.train["num_epochs"] == 3 and epochs.train["max_steps"] == 36
    with pytest.raises(DataError, match="not both"):
        FinetuneOptions(base="b", data="d", lang="xx", max_steps=1, epochs=1).validate()
    with pytest.raises(DataError, match="--method"):
        FinetuneOptions(base="b", data="d", lang="xx", method="magic").validate()


def test_method_matrix():
    assert choose_method(_base(), "auto", None)[0] == "full"
    assert choose_method(_base(tokenizer="ipa"), "auto", None)[0] == "phoneme"
    assert choose_method(_base("encoder", None), "auto", None)[0] == "full"
    lda = _base("transducer", langs=["ky", "tt"])
    assert choose_method(lda, "auto", 1.0)[0] == "adapter"
    method, why = choose_method(lda, "auto", 0.5)
    assert method == "full" and "50 %" in why
    assert choose_method(_base("transducer", cascaded=True), "auto", 0.99)[0] == "adapter"
    assert choose_method(_base("transducer"), "auto", 1.0)[0] == "full"
    with pytest.raises(DataError, match="Whistle"):
        choose_method(_base(), "phoneme", None)
    with pytest.raises(DataError, match="this base is transducer"):
        choose_method(_base("transducer"), "phoneme", 1.0)
    with pytest.raises(DataError, match="--method full"):
        choose_method(lda, "adapter", 0.2)
    for family in ("ctc", "encoder", "w2v_bert"):
        plan = _plan(0.25, base=_base(family, None if family != "ctc" else "char", dim=256),
                     method="adapter")
        assert plan.recipe == "ctc" and plan.adapter["kind"] == "bottleneck"
        assert plan.adapter["options"] == {"bottleneck": 16} and plan.train["lr"] == 2e-3
        assert plan.train["freeze_encoder_steps"] == 0
    lora = _plan(3.0, method="lora")
    assert lora.adapter["kind"] == "lora" and lora.adapter["options"]["rank"] == 8
    assert lora.adapter["points"] == ["attn_q", "attn_v"]
    on_lda = _plan(0.25, base=lda, coverage=1.0)
    assert on_lda.recipe == "lda" and on_lda.adapter["name"] == "lda"
    assert on_lda.tokenizer == "base" and "encoders" in on_lda.adapter
    rnnt = _plan(0.25, base=_base("transducer"), coverage=1.0)
    assert rnnt.recipe == "transducer" and rnnt.method == "full"
    whistle = _plan(0.25, base=_base(tokenizer="ipa"))
    assert (whistle.recipe, whistle.tokenizer, whistle.targets) == ("whistle", "ipa", "ipa")
    assert whistle.train["freeze_encoder_steps"] == 0


def test_tokenizer_choice():
    assert choose_tokenizer(_base(), "full", "ctc", "minutes", "auto", None)[:2] == ("char", None)
    assert choose_tokenizer(_base(), "full", "ctc", "hours", "auto", None)[:2] == ("bpe", 256)
    assert choose_tokenizer(_base(), "full", "ctc", "minutes", "ipa", None)[:2] == ("ipa", None)
    assert choose_tokenizer(_base(), "full", "ctc", "minutes", "bpe", 100)[:2] == ("bpe", 100)
    assert choose_tokenizer(_base(tokenizer="ipa"), "phoneme", "whistle", "hours", "auto", None)[0] == "ipa"
    lda = _base("transducer", langs=["ky"])
    assert choose_tokenizer(lda, "adapter", "lda", "hours", "auto", None)[0] == "base"
    with pytest.raises(DataError, match="foundation's tokenizer"):
        choose_tokenizer(lda, "adapter", "lda", "hours", "char", None)
    with pytest.raises(DataError, match="IPA phones"):
        choose_tokenizer(_base(tokenizer="ipa"), "phoneme", "whistle", "hours", "bpe", None)


def test_continued_pretraining_plan():
    plan = _plan(0.25, unlabelled=3600.0)
    assert plan.pretrain["steps"] == 1200 and plan.pretrain["lr"] == RULES["minutes"].pretrain_lr
    assert _plan(0.25, unlabelled=3600.0, pretrain_steps=7).pretrain["steps"] == 7
    with pytest.raises(DataError, match="at least 2 layers"):
        _plan(0.25, base=_base(layers=1), unlabelled=60.0)


def test_inspect_base(tmp_path):
    ctc = inspect_base(save_base(tmp_path / "ctc"))
    assert (ctc.family, ctc.kind, ctc.tokenizer_kind, ctc.encoder_dim) == ("ctc", "ctc", "char", 32)
    assert not ctc.whistle
    assert inspect_base(save_base(tmp_path / "ipa", ipa=True)).whistle
    rnnt = inspect_base(save_base(tmp_path / "rnnt", "transducer", cascaded=True))
    assert rnnt.kind == "transducer" and rnnt.cascaded and not rnnt.adapter_languages
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(DataError, match="config.json"):
        inspect_base(tmp_path / "not_a_model")


def test_dry_run_prints_the_plan_and_writes_nothing(corpus, tmp_path, capsys):
    from speechfm.cli import main

    base = save_base(tmp_path / "base")
    out = tmp_path / "exp"
    rc = main(["finetune", "--base", str(base), "--data", str(corpus["kaldi"]), "--lang", "xx",
               "--out", str(out), "--dry-run", "--method", "lora", "--minutes", "5"])
    printed = capsys.readouterr().out
    assert rc == 0 and not out.exists()
    assert "| setting | value | why |" in printed
    for row in ("| method | lora | --method |", "| tokenizer | char |", "| SpecAugment | on |",
                "| time budget | 5 min |", "speaker-disjoint: 6 speakers"):
        assert row in printed, row
    assert "kaldi (kaldi): 12 items, 0 bad" in printed
    assert "dry run: nothing trained, nothing written" in printed
    # an unusable option: a clean error, exit status 2
    rc = main(["finetune", "--base", str(base), "--data", str(corpus["kaldi"]), "--lang", "xx",
               "--out", str(out), "--dry-run", "--method", "phoneme"])
    assert rc == 2 and "Whistle" in capsys.readouterr().err


def test_resume_refuses_other_settings(corpus, tmp_path):
    from speechfm.finetune.pipeline import _check_exp

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "x").write_text("")
    options = FinetuneOptions(base="b", data=str(corpus["kaldi"]), lang="xx", out=str(exp))
    with pytest.raises(DataError, match="--resume"):
        _check_exp(exp, options)
    (exp / "finetune.json").write_text(json.dumps(options.to_dict()))
    options.resume, options.minutes, options.threads = True, 9.0, 1
    _check_exp(exp, options)  # budgets and resources may change
    options.lr = 1e-2
    with pytest.raises(DataError, match="lr: None then, 0.01 now"):
        _check_exp(exp, options)
