"""recipes/lda: one tail language's adapter trains on a frozen cascaded foundation (its
base weights bit-identical in every checkpoint and the export), the adapter file it writes
reproduces the trained model, and merge.py makes one multi-language model that equals each
language's own model on that language."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TEXTS = {"en": ["ab ba", "abba", "a b", "baab"], "ky": ["ba", "bab", "ab", "aab"],
         "tt": ["aa b", "bb", "ab a", "b"]}


def _merge_module():
    spec = importlib.util.spec_from_file_location("_lda_merge", REPO / "recipes/lda/merge.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def foundation(tmp_path_factory):
    """A tiny cascaded transducer (random weights) saved with a char tokenizer, and the
    tone corpus' cuts."""
    from reference_corpus import make_tone_corpus

    from speechfm.models.conformer.config import ConformerConfig
    from speechfm.models.io import save_model_dir
    from speechfm.models.transducer import create_transducer_model, transducer_tiny
    from speechfm.text import load_tokenizer

    root = tmp_path_factory.mktemp("lda")
    cuts, tok_dir = make_tone_corpus(root / "corpus", TEXTS)
    tok = load_tokenizer(tok_dir)
    config = transducer_tiny(tok.vocab_size)
    config.encoder.normalization = "utterance"
    config.encoder.conformer.conv_causal = True
    config.encoder.conformer.conv_norm = "batch_norm"  # frozen BatchNorm must not drift
    config.second_encoder = ConformerConfig(input_dim=32, front_end="stack", subsampling_factor=1,
                                            dim=32, num_layers=1, num_heads=4, ffn_dim=64,
                                            conv_kernel=5, dropout=0.1)
    torch.manual_seed(0)
    model = create_transducer_model(config)
    out = save_model_dir(root / "foundation", model, config, parts={"tokenizer": tok})
    return root, out, cuts


def _train(recipe, root, foundation, cuts, lang, **kw):
    from speechfm.config import config_from_dict

    mod = recipe("lda")
    config = config_from_dict(mod.LdaConfig, dict(
        foundation=str(foundation), language=lang, train_cuts=str(cuts), dev_cuts=str(cuts),
        max_steps=6, save_every=2, valid_every=2, keep_last=3, max_duration=3.0,
        num_workers=0, num_threads=1, progress=False, seed=1,
        exp_dir=kw.pop("exp_dir", str(root / f"exp_{lang}")),
        optimizer={"lr": 5e-2}, scheduler={"kind": "constant", "warmup_steps": 0},
        adapter={"name": "lda", "kind": "bottleneck", "options": {"bottleneck": 4},
                 "points": ["after_block"], "layers": None, "encoders": None}, **kw))
    return mod, mod.train(config)


@pytest.mark.slow
def test_adapter_trains_alone_and_merges(recipe, foundation):
    import speechfm
    from speechfm.models.adapter_store import base_model_hash, read_adapter
    from speechfm.models.io import load_model_dir, read_weights
    from speechfm.nn.adapters import base_state_dict

    root, found_dir, cuts = foundation
    base = read_weights(found_dir)
    results = {}
    for lang in ("ky", "tt"):
        mod, result = _train(recipe, root, found_dir, cuts, lang)
        results[lang] = result
        summary = json.loads((Path(result.final_dir).parent / "train_summary.json").read_text())
        share = summary["trainable_parameters"] / summary["total_parameters"]
        assert 0 < share < 0.2
        assert summary["average"]["chosen"].startswith("step-")  # the best single checkpoint
        # frozen base weights bit-identical in every checkpoint and in the export
        ckpt_dirs = sorted((Path(result.final_dir).parent / "checkpoints").glob("step-*"))
        assert len(ckpt_dirs) == 3
        for d in [*ckpt_dirs, Path(result.final_dir)]:
            w = read_weights(d)
            for k, v in base.items():
                assert torch.equal(w[k], v), (d, k)
            assert any(f".lda@{lang}." in k for k in w)
        adapter = read_adapter(summary["adapter_file"])
        assert adapter.language == lang and adapter.meta["base_hash"] == base_model_hash(base)
        assert adapter.meta["num_params"] == summary["trainable_parameters"]
        assert set(adapter.meta["hosts"]) == {"encoder.conformer", "second_encoder"}
        trained = load_model_dir(result.final_dir).module
        assert not torch.equal(  # it trained (the up projection left zero)
            adapter.state[next(k for k in adapter.state if k.endswith("up.weight"))],
            torch.zeros_like(adapter.state[next(k for k in adapter.state if k.endswith("up.weight"))]))
        assert base_model_hash(base_state_dict(trained)) == base_model_hash(base)

    # noisy student: the foundation + ky's adapter label ky's audio, the student trains on
    # the kept labels plus the labelled cuts, with SpecAugment and speed perturbation
    spec = importlib.util.spec_from_file_location("_lda_pl", REPO / "recipes/lda/pseudo_label.py")
    pl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pl)
    out = root / "pl_ky"
    assert pl.main(["--teacher", str(found_dir), "--adapters", results["ky"].summary["adapter_file"],
                    "--language", "ky", "--cuts", str(cuts), "--out", str(out),
                    "--references", str(cuts), "--labelled", str(cuts),
                    "--labelled-repeat", "2"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_labels"] == len(TEXTS["ky"]) and stats["labelled"] == len(TEXTS["ky"])
    assert stats["train_cuts"] == stats["num_kept"] + 2 * len(TEXTS["ky"])
    assert "all_cer" in stats and stats["pass_"] == "final"
    _, student = _train(recipe, root, found_dir, out / "train.jsonl.gz", "ky", speed_perturb=True,
                        exp_dir=str(root / "exp_ky_student"))
    assert Path(student.summary["adapter_file"]).is_file()

    merged = _merge_module().merge(found_dir, [results[lang].summary["adapter_file"]
                                               for lang in ("ky", "tt")], root / "merged")
    model = speechfm.load(merged)
    assert model.languages == ["ky", "tt"]
    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (9000, 12000, 7000)]
    for lang in ("ky", "tt"):
        own = speechfm.load(results[lang].final_dir)
        # vad=False: the noise inputs are decoded (the detector would give "" for both)
        assert model.transcribe(waves, sample_rate=16000, lang=lang, vad=False) == own.transcribe(
            waves, sample_rate=16000, lang=lang, vad=False)
        feats, lens = model.module.encoder.feature_extractor()(
            torch.from_numpy(waves[1])[None], torch.tensor([12000]))
        with torch.no_grad():
            for final_pass in (True, False):
                a = model.module.encode(feats, lens, language=lang, final_pass=final_pass)[0]
                b = own.module.encode(feats, lens, language=lang, final_pass=final_pass)[0]
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    from speechfm.errors import DataError

    with pytest.raises(DataError, match="second adapter"):
        _merge_module().merge(found_dir, [results["ky"].summary["adapter_file"]] * 2,
                              root / "bad")
    _language_id(found_dir, cuts, root, [results[lang].summary["adapter_file"] for lang in ("ky", "tt")],
                 waves)


def _language_id(found_dir, cuts, root, adapter_files, waves):
    """train_lid.py trains a head on the frozen foundation, merge.py --language-id adds it;
    without a language the merged model then runs, per input, the adapter of the language
    the head picks, in the API and in ``decode_manifest(language="auto")``."""
    import speechfm
    from speechfm.decode.asr import decode_manifest
    from speechfm.errors import DataError, SpeechfmError
    from speechfm.models.language_id import LanguageIdHead, save_language_id

    spec = importlib.util.spec_from_file_location("_lda_lid", REPO / "recipes/lda/train_lid.py")
    lid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lid)
    head_file = root / "lid" / "language_id.safetensors"
    report = lid.train(str(found_dir), [str(cuts)], [str(cuts)], head_file, steps=100,
                       max_duration=3.0)
    assert report["languages"] == ["en", "ky", "tt"]
    assert report["train_utts"] == {lang: len(t) for lang, t in sorted(TEXTS.items())}
    assert 0.0 <= report["dev"]["accuracy"] <= 1.0 and head_file.with_suffix(".json").is_file()
    merged = _merge_module().merge(found_dir, adapter_files, root / "merged_lid", head_file)
    model = speechfm.load(merged)
    assert model.language_id is not None and model.language_id.languages == ["en", "ky", "tt"]
    picked = model.identify_language(waves, sample_rate=16000)
    assert len(picked) == len(waves) and set(picked) <= {"en", "ky", "tt"}
    assert model.identify_language(waves[0], sample_rate=16000) == picked[0]
    auto = model.transcribe(waves, sample_rate=16000, vad=False)
    assert auto == model.transcribe(waves, sample_rate=16000, lang="auto", vad=False)
    assert auto == [model.transcribe(w, sample_rate=16000, lang=lang, vad=False)
                    for w, lang in zip(waves, picked, strict=True)]
    with pytest.raises(ValueError, match="auto"):
        model.stream(lang="auto")
    with pytest.raises(SpeechfmError, match="language-ID head"):
        speechfm.load(found_dir).transcribe(waves[0], sample_rate=16000, lang="auto")

    results = decode_manifest(merged, cuts, root / "decode_auto", language="auto")
    lid_lines = dict(line.split() for line in (root / "decode_auto/lid.txt").read_text().splitlines())
    assert results["language_id"]["num_utts"] == len(lid_lines) == sum(map(len, TEXTS.values()))
    hyps = dict((line.split(" ", 1) + [""])[:2] for line in
                (root / "decode_auto/hyps.txt").read_text().splitlines())
    for lang in ("ky", "tt", "en"):  # each cut decoded with the language picked for it
        ids = sorted(k for k, v in lid_lines.items() if v == lang)
        if not ids:
            continue
        one = decode_manifest(merged, cuts, root / f"decode_{lang}", language=lang)
        del one
        own = dict((line.split(" ", 1) + [""])[:2] for line in
                   (root / f"decode_{lang}/hyps.txt").read_text().splitlines())
        assert {k: hyps[k] for k in ids} == {k: own[k] for k in ids}

    # a head trained on another base model is refused, by merge and by decode
    other = save_language_id(LanguageIdHead(32, ["ky", "tt"]), root / "other.safetensors",
                             base_hash="0" * 64)
    with pytest.raises(DataError, match="another base model"):
        _merge_module().merge(found_dir, adapter_files, root / "bad_lid", other)
    with pytest.raises(DataError, match="language-ID head"):
        decode_manifest(found_dir, cuts, root / "decode_none", language="auto")


def test_config_checks(recipe, foundation):
    mod = recipe("lda")
    root, found_dir, cuts = foundation
    with pytest.raises(ValueError, match="select_metric"):
        mod.LdaConfig(foundation=str(found_dir), language="ky", train_cuts=str(cuts),
                      max_steps=2, select_metric="loss").validate()
    with pytest.raises(ValueError, match="method"):
        mod.LdaConfig(foundation=str(found_dir), language="ky", train_cuts=str(cuts),
                      max_steps=2, method="lora").validate()
    with pytest.raises(ValueError, match="unknown keys"):
        mod.LdaConfig(foundation=str(found_dir), language="ky", train_cuts=str(cuts),
                      max_steps=2, adapter={"name": "a", "kind": "bottleneck",
                                            "points": ["after_block"], "size": 3}).validate()
    config = mod.LdaConfig(foundation=str(found_dir), language="ky", train_cuts=str(cuts),
                           max_steps=2)
    model, model_config = mod.build_model(config)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lda@ky." in k for k in trainable)
    assert model_config.adapters[-1]["languages"] == ["ky"]
