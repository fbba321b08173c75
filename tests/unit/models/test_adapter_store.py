"""Adapters stored one file per language (speechfm.models.adapter_store): the base-model
hash, save/read, attaching to / detaching from a loaded model without touching its base
weights, refusal of another base model's adapter, a multi-adapter model directory, and the
API's adapters= / lang= (transcribe and stream)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechfm
from speechfm.errors import DataError
from speechfm.models.adapter_store import (
    attach_adapter,
    base_model_hash,
    detach_adapter,
    export_adapter,
    read_adapter,
    save_adapter,
)
from speechfm.models.io import save_model_dir
from speechfm.nn.adapters import adapter_factory, base_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
SPEC = {"kind": "bottleneck", "options": {"bottleneck": 8}, "points": ["after_block"],
        "layers": None}
TEXTS = ["abc", "cab ba", "cc a"]


def _base(seed=0):
    from speechfm.models.transducer import create_transducer_model, transducer_tiny
    from speechfm.text.char import CharTokenizer

    tok = CharTokenizer.train(TEXTS)
    config = transducer_tiny(tok.vocab_size)
    config.encoder.conformer.conv_causal = True
    config.encoder.specaugment = False
    torch.manual_seed(seed)
    model = create_transducer_model(config).eval()
    with torch.no_grad():  # non-trivial emissions from a random model
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return config, model, tok


def _add_language(model, lang, seed):
    """One trained-looking language adapter: added, then given random weights."""
    host = model.encoder.conformer
    host.add_adapter("lda", adapter_factory(SPEC["kind"], **SPEC["options"]),
                     points=SPEC["points"], languages=[lang])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if f".lda@{lang}." in k:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def _encode(model, feats, lens, lang):
    with torch.no_grad():
        return model.encode(feats, lens, language=lang)[0]


def test_hash_covers_base_weights_only():
    _, model, _ = _base()
    h = base_model_hash(model)
    assert h == base_model_hash(base_state_dict(model)) and len(h) == 64
    _add_language(model, "ky", 1)
    assert base_model_hash(model) == h  # adapters are not the base
    with torch.no_grad():
        model.joiner.output_linear.bias[0] += 1e-6
    assert base_model_hash(model) != h


def test_save_read_attach_swap_and_refuse(tmp_path):
    config, model, _ = _base()
    base_before = {k: v.clone() for k, v in base_state_dict(model).items()}
    for i, lang in enumerate(("ky", "tt")):
        _add_language(model, lang, 10 + i)
        adapter = export_adapter(model, "lda", lang, spec=SPEC, extra={"dev": {"wer": 12.5}})
        assert adapter.meta["hosts"] == ["encoder.conformer"]
        assert adapter.meta["num_params"] == sum(v.numel() for v in adapter.state.values()) > 0
        assert all(f".lda@{lang}." in k for k in adapter.state)
        save_adapter(adapter, tmp_path / f"{lang}.safetensors")
    feats, lens = torch.randn(2, 70, 80), torch.tensor([70, 55])
    want = {lang: _encode(model, feats, lens, lang) for lang in ("ky", "tt", "en")}
    assert not torch.allclose(want["ky"], want["en"]) and not torch.allclose(want["ky"], want["tt"])

    _, fresh, _ = _base()  # the same base, no adapters
    for k, v in base_state_dict(fresh).items():
        assert torch.equal(v, base_before[k])
    ky = read_adapter(tmp_path / "ky")  # suffix optional
    assert ky.key == "lda@ky" and ky.meta["dev"] == {"wer": 12.5}
    assert (tmp_path / "ky.json").is_file()
    attach_adapter(fresh, ky)
    attach_adapter(fresh, tmp_path / "tt.json")
    for lang in ("ky", "tt", "en"):  # the same outputs as the model they came from
        torch.testing.assert_close(_encode(fresh, feats, lens, lang), want[lang], rtol=0, atol=0)
    for k, v in base_state_dict(fresh).items():  # attaching never touches the base
        assert torch.equal(v, base_before[k])
    with pytest.raises(DataError, match="already exists"):
        attach_adapter(fresh, ky)

    # swapping ky for another ky adapter changes ky's outputs only
    _, other, _ = _base()
    _add_language(other, "ky", 99)
    save_adapter(export_adapter(other, "lda", "ky", spec=SPEC), tmp_path / "ky2")
    assert detach_adapter(fresh, "lda", "ky") == 2
    attach_adapter(fresh, tmp_path / "ky2")
    assert not torch.allclose(_encode(fresh, feats, lens, "ky"), want["ky"])
    for lang in ("tt", "en"):
        torch.testing.assert_close(_encode(fresh, feats, lens, lang), want[lang], rtol=0, atol=0)

    # an adapter made for another base model is refused, and nothing is left behind
    _, stranger, _ = _base(seed=3)
    before = set(stranger.state_dict())
    with pytest.raises(DataError, match="another base model"):
        attach_adapter(stranger, tmp_path / "tt")
    assert set(stranger.state_dict()) == before
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="cannot read"):
        read_adapter(tmp_path / "junk")
    with pytest.raises(DataError, match="no such adapter"):
        read_adapter(tmp_path / "missing")
    with pytest.raises(ValueError, match="no adapter 'lda@id'"):
        export_adapter(model, "lda", "id", spec=SPEC)


def test_model_directory_with_adapters_and_api(tmp_path):
    config, model, tok = _base()
    base_dir = save_model_dir(tmp_path / "base", model, config, parts={"tokenizer": tok})
    _add_language(model, "ky", 1)
    _add_language(model, "tt", 2)
    files = {}
    for lang in ("ky", "tt"):
        files[lang] = save_adapter(export_adapter(model, "lda", lang, spec=SPEC),
                                   tmp_path / "adapters" / lang)
    # one artifact: the base weights plus every language's adapter
    merged = save_model_dir(tmp_path / "merged", base_state_dict(model), config, parts={
        "tokenizer": tok, "adapters": {lang: read_adapter(f) for lang, f in files.items()}})
    a = speechfm.load(merged)
    b = speechfm.load(base_dir, adapters=[files["ky"], files["tt"]])
    c = speechfm.load(base_dir)
    assert a.languages == b.languages == ["ky", "tt"] and c.languages == []
    assert a.adapters == [("lda", "ky"), ("lda", "tt")]
    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (9000, 14000)]
    for lang in ("ky", "tt", None, "en"):  # vad=False: noise in, the raw search out
        ta = a.transcribe(waves, sample_rate=SR, lang=lang, vad=False)
        assert ta == b.transcribe(waves, sample_rate=SR, lang=lang, vad=False)
        feats, lens = a.module.encoder.feature_extractor()(
            torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waves], batch_first=True),
            torch.tensor([w.shape[0] for w in waves]))
        with torch.no_grad():
            hyps = model.recognize(feats, lens, **({} if lang is None else {"language": lang}))
        assert ta == [tok.decode(h.tokens) for h in hyps]
    assert c.transcribe(waves, sample_rate=SR, lang="ky", vad=False) == a.transcribe(
        waves, sample_rate=SR, lang="en", vad=False)  # no ky adapter: the base model runs
    with torch.no_grad():
        f1, l1 = a.module.encoder.feature_extractor()(torch.from_numpy(waves[1])[None],
                                                      torch.tensor([14000]))
        outs = {lang: a.module.encode(f1, l1, language=lang)[0] for lang in ("ky", "tt", None)}
    assert not torch.allclose(outs["ky"], outs[None]) and not torch.allclose(outs["ky"], outs["tt"])

    # streaming with a language id: the adapter runs chunk by chunk
    for lang in ("ky", "tt"):
        stream = a.stream(chunk_size=4, lang=lang)
        for start in range(0, waves[1].shape[0], 1600):
            stream.accept_waveform(waves[1][start:start + 1600], SR)
        streamed = stream.finalize()
        from speechfm.decode.transducer import greedy_search
        from speechfm.features.fbank import compute_fbank

        feats = torch.from_numpy(compute_fbank(waves[1], SR, a.module.encoder.fbank.config))[None]
        with torch.no_grad():
            enc, lens = a.module.encode(feats, torch.tensor([feats.shape[1]]), chunk_size=4,
                                        language=lang)
        assert streamed == tok.decode(greedy_search(a.module, enc, lens)[0].tokens)
    assert a.remove_adapter("lda", "ky") == 2 and a.languages == ["tt"]
    assert a.add_adapter(files["ky"]) == ("lda", "ky")
    with pytest.raises(DataError, match="another base model"):
        speechfm.load(save_model_dir(tmp_path / "other", _base(seed=5)[1], config,
                                     parts={"tokenizer": tok}), adapters=[files["ky"]])


def test_adapter_attaches_to_a_cast_model(tmp_path):
    """Adapters check the base weights as saved, so they attach after a dtype cast too."""
    config, model, tok = _base()
    base_dir = save_model_dir(tmp_path / "base", model, config, parts={"tokenizer": tok})
    _add_language(model, "ky", 1)
    file = save_adapter(export_adapter(model, "lda", "ky", spec=SPEC), tmp_path / "ky")
    m = speechfm.load(base_dir, dtype="bfloat16")
    assert m.add_adapter(file) == ("lda", "ky")
    params = [p for k, p in m.module.named_parameters() if ".lda@ky." in k]
    assert params and all(p.dtype == torch.bfloat16 for p in params)
    wave = (0.3 * np.random.default_rng(1).standard_normal(8000)).astype(np.float32)
    assert isinstance(m.transcribe(wave, sample_rate=SR, lang="ky"), str)
