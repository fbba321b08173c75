"""transformers AST (``ASTModel`` / ``ASTForAudioClassification``) <-> the ``"ast"`` family.

(1) State dicts: random small HF models (every parameter perturbed, so no bias, norm or
position is trivial), square and non-square strides, 32 and 128 mel bins, converted and
compared on random ``input_values`` (ours takes the raw fbank: fed
``input_values * 2 std + mean``): logits, ``last_hidden_state`` (patch rows permuted
from HF's frequency-major order) and ``pooler_output``; and back, tensor for tensor, in
both tensor-name layouts.  (2) Features on real audio: ``TorchFbank`` / ``compute_fbank``
with :func:`ast_fbank` plus the model's normalisation and padding against
``ASTFeatureExtractor`` (its numpy path; torchaudio is not installed here).
(3) Directories: ``speechfm convert`` both ways, and ``speechfm.load(dst).classify``
against the HF model fed by its own feature extractor on real recordings.

Measured (CPU): from the same input, logits differ by 2.4e-6 at most, hidden states by
4.1e-6, pooled outputs by 2.3e-6 (float32 op-order rounding); features by 7.3e-5 at most
(normalised units, i.e. 6.6e-4 in log-mel) on bins within 80 dB of the frame energy and
2.3e-4 on all bins; through the whole pipeline on real audio (HF fed by its extractor,
ours by ``speechfm.load``), logits by 2.2e-6 and softmax scores by 3.6e-7.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import speechfm  # noqa: E402
from speechfm.cli import main  # noqa: E402
from speechfm.data.audio import read_audio  # noqa: E402
from speechfm.errors import DataError, SpeechfmError  # noqa: E402
from speechfm.features.fbank import TorchFbank, compute_fbank  # noqa: E402
from speechfm.models.ast import AstModelConfig, ast_fbank, ast_mini, create_ast_model  # noqa: E402
from speechfm.models.ast.interop import (  # noqa: E402
    config_from_hf,
    hf_config_from_ast,
    read_hf_weights,
    state_dict_from_hf,
    state_dict_to_hf,
)
from speechfm.models.io import read_model_config, save_model_dir  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4
FEATURE_ATOL = 1e-3
DEPTH_80DB = 8.0 * math.log(10.0)  # 80 dB in natural-log power
LABELS = ["yes", "no", "up", "down", "left"]

# (num_mel_bins, max_length, frequency_stride, time_stride)
SHAPES = [(32, 40, 10, 10), (128, 100, 12, 8), (32, 64, 12, 8)]


def _hf_config(mel=32, max_length=40, fs=10, ts=10, labels=LABELS, **overrides):
    fields = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=48, num_mel_bins=mel, max_length=max_length,
                  frequency_stride=fs, time_stride=ts, patch_size=16, layer_norm_eps=1e-6)
    if labels is not None:
        fields["id2label"] = dict(enumerate(labels))
        fields["label2id"] = {v: i for i, v in enumerate(labels)}
    fields.update(overrides)
    return transformers.ASTConfig(**fields)


def _hf_model(cls, config, seed=0):
    """A random HF model whose every parameter (norms, biases, positions) is perturbed."""
    torch.manual_seed(seed)
    model = cls(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def _ours(hf_model, num_classes):
    config = config_from_hf(hf_model.config, num_classes=num_classes)
    model = create_ast_model(config).eval()
    model.load_state_dict(state_dict_from_hf(hf_model.state_dict(), config), strict=True)
    return model, config


def _raw(input_values, config):
    """HF's normalised input_values -> the raw fbank our model normalises itself."""
    return input_values * (2 * config.norm_std) + config.norm_mean


def _time_major(seq, config):
    """(N, 2 + Pf*Pt, C) HF sequence (patches frequency-major) -> our time-major order."""
    pt, pf = config.grid
    n, _, c = seq.shape
    grid = seq[:, 2:].reshape(n, pf, pt, c).transpose(1, 2).reshape(n, pt * pf, c)
    return torch.cat((seq[:, :2], grid), dim=1)


@pytest.mark.parametrize("mel,max_length,fs,ts", SHAPES)
def test_classifier_logits(mel, max_length, fs, ts):
    hf = _hf_model(transformers.ASTForAudioClassification, _hf_config(mel, max_length, fs, ts))
    model, config = _ours(hf, len(LABELS))
    assert config.patch_stride == (ts, fs) and config.patch_size == (16, 16)
    assert config.grid == ((max_length - 16) // ts + 1, (mel - 16) // fs + 1)
    x = torch.randn(3, max_length, mel, generator=torch.Generator().manual_seed(5))
    lens = torch.full((3,), max_length)
    with torch.no_grad():
        ref = hf(x).logits
        out = model.classify(_raw(x, config), lens)
    assert ref.abs().max() > 0.5  # not a degenerate model
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mel,max_length,fs,ts", SHAPES[:2])
def test_backbone_hidden_states(mel, max_length, fs, ts):
    hf = _hf_model(transformers.ASTModel, _hf_config(mel, max_length, fs, ts, labels=None))
    model, config = _ours(hf, 0)
    assert model.head is None
    x = torch.randn(2, max_length, mel, generator=torch.Generator().manual_seed(6))
    lens = torch.full((2,), max_length)
    with torch.no_grad():
        ref = hf(x)
        seq, _ = model.encoder(_raw(x, config), lens, return_special=True)
        patches, _ = model.encoder(_raw(x, config), lens)
        pooled = model.embedding(_raw(x, config), lens)
    hf_seq = _time_major(ref.last_hidden_state, config)
    torch.testing.assert_close(seq, hf_seq, atol=ATOL, rtol=0)
    torch.testing.assert_close(patches, hf_seq[:, 2:], atol=ATOL, rtol=0)
    torch.testing.assert_close(pooled, ref.pooler_output, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls,labels", [(transformers.ASTForAudioClassification, LABELS),
                                        (transformers.ASTModel, None)])
def test_state_dict_round_trip(tmp_path, cls, labels):
    hf = _hf_model(cls, _hf_config(128, 100, 12, 8, labels=labels))
    k = len(labels or ())
    config = config_from_hf(hf.config, num_classes=k)
    module_sd = hf.state_dict()
    ours = state_dict_from_hf(module_sd, config)
    assert set(ours) == set(create_ast_model(config).state_dict())
    back = state_dict_to_hf(ours, config, layout="module")
    assert set(back) == set(module_sd)
    assert all(torch.equal(back[name], module_sd[name]) for name in module_sd)
    # The checkpoint names save_pretrained writes (and the Hub holds) read and write too.
    hf.save_pretrained(tmp_path / "hf")
    files = read_hf_weights(tmp_path / "hf")
    assert any(".attention.attention.query." in name for name in files)
    from_files = state_dict_from_hf(files, config)
    assert all(torch.equal(from_files[name], ours[name]) for name in ours)
    written = state_dict_to_hf(ours, config, layout="checkpoint")
    assert set(written) == set(files)
    assert all(torch.equal(written[name], files[name]) for name in files)
    # and the configs
    hf_back = hf_config_from_ast(config, labels)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "num_mel_bins", "max_length", "frequency_stride", "time_stride", "patch_size",
                 "layer_norm_eps", "hidden_act", "qkv_bias"):
        assert getattr(hf_back, name) == getattr(hf.config, name), name
    if labels:
        assert hf_back.id2label == hf.config.id2label


def test_refusals():
    base = _hf_config().to_dict()
    for change, field in ((dict(hidden_act="gelu_new"), "hidden_act"),
                          (dict(qkv_bias=False), "qkv_bias"),
                          (dict(patch_size=[16, 8]), "patch_size"),
                          (dict(head_dim=8), "head_dim"),
                          (dict(model_type="vit"), "model_type")):
        with pytest.raises(DataError, match=field):
            config_from_hf({**base, **change})
    with pytest.raises(DataError, match="max_length"):
        config_from_hf(base, feature_extractor={"num_mel_bins": 32, "max_length": 1024})
    # do_normalize false maps exactly: (x - 0) / (2 * 0.5)
    plain = config_from_hf(base, feature_extractor={"num_mel_bins": 32, "max_length": 40,
                                                    "do_normalize": False})
    assert (plain.norm_mean, plain.norm_std) == (0.0, 0.5)
    # what HF's AST cannot express, on export
    for change, field in ((dict(pooling="mean"), "pooling"),
                          (dict(patch_size=(16, 8)), "square"),
                          (dict(fbank=ast_fbank(num_mel_bins=32, sample_rate=8000)), "fbank")):
        config = ast_mini(num_classes=2)
        for name, value in change.items():
            setattr(config, name, value)
        with pytest.raises(DataError, match=field):
            hf_config_from_ast(config)
    config = config_from_hf(base, num_classes=5)
    sd = state_dict_from_hf(_hf_model(transformers.ASTForAudioClassification,
                                      _hf_config()).state_dict(), config)
    with pytest.raises(DataError, match="head|classifier"):
        state_dict_from_hf({**state_dict_to_hf(sd, config)},
                           config_from_hf(base, num_classes=0))
    bad = dict(sd)
    del bad["encoder.blocks.1.ffn.linear2.bias"]
    with pytest.raises(DataError, match="missing"):
        state_dict_to_hf(bad, config)


# ----------------------------------------------------------------------------- real audio


def _recordings(shared_data):
    sc = shared_data / "speech_commands_v2_test12" / "audio" / "down__022cd682_nohash_0.flac"
    if not sc.is_file():
        sc = next(iter(sorted((shared_data / "speech_commands_v2_test12" / "audio")
                              .glob("*.flac"))), None)
    ru = next(iter(sorted((shared_data / "festvox_ru" / "audio").glob("*.flac"))), None)
    if sc is None or ru is None:
        pytest.skip("Speech Commands v2 / festvox_ru FLACs are missing from the shared data")
    return [(p.name, read_audio(p, 16000)) for p in (sc, ru)]


@pytest.mark.parametrize("mel,max_length", [(128, 1024), (32, 100)])
def test_features_match_ast_feature_extractor(shared_data, mel, max_length):
    """ast_fbank + normalise + pad/cut == ASTFeatureExtractor's input_values (numpy path)."""
    fe = transformers.ASTFeatureExtractor(num_mel_bins=mel, max_length=max_length)
    config = AstModelConfig(fbank=ast_fbank(num_mel_bins=mel), target_frames=max_length,
                            dim=32, num_layers=1, num_heads=2, mlp_dim=32)
    encoder = create_ast_model(config).encoder.eval()
    torch_fbank = TorchFbank(config.fbank)
    for name, wav in _recordings(shared_data):
        ref = fe(wav, sampling_rate=16000)["input_values"][0]
        assert ref.shape == (max_length, mel)
        sources = [("TorchFbank", torch_fbank(torch.from_numpy(wav)[None])[0])]
        if mel < 128:  # kaldi-native-fbank refuses 128 bins at 16 kHz (empty low bins)
            sources.append(("knf", torch.from_numpy(compute_fbank(wav, 16000, config.fbank))[None]))
        for source, feats in sources:
            x = encoder.normalize(feats, torch.tensor([feats.shape[1]]))[0].numpy()
            diff = np.abs(x.astype(np.float64) - ref)
            n = min(feats.shape[1], max_length)
            raw = ref[:n].astype(np.float64) * 2 * config.norm_std + config.norm_mean
            depth = np.log(np.exp(raw).sum(1, keepdims=True)) - raw
            resolved = depth < DEPTH_80DB
            assert resolved.mean() > 0.95, (name, source)
            assert diff[:n][resolved].max() < FEATURE_ATOL, (name, source, diff[:n][resolved].max())
            assert diff.max() < FEATURE_ATOL, (name, source, diff.max())
            # padding (the short clip) is the normalised zero fbank, exactly HF's
            np.testing.assert_allclose(x[n:], ref[n:], atol=1e-6)


def _save_hf_dir(path, model, mel, max_length):
    model.save_pretrained(path)
    transformers.ASTFeatureExtractor(num_mel_bins=mel, max_length=max_length).save_pretrained(path)


def test_directory_round_trip_classify(shared_data, tmp_path):
    mel, max_length = 128, 100
    hf = _hf_model(transformers.ASTForAudioClassification,
                   _hf_config(mel, max_length, 12, 8), seed=3)
    _save_hf_dir(tmp_path / "hf", hf, mel, max_length)
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    meta = read_model_config(tmp_path / "ours")
    assert meta["family"] == "ast"
    assert meta["converted_from"]["model_type"] == "audio-spectrogram-transformer"
    assert json.loads((tmp_path / "ours" / "labels.json").read_text()) == LABELS

    model = speechfm.load(tmp_path / "ours")
    clips = _recordings(shared_data)  # a 1 s clip (padded) and an 8.5 s one (cut)
    fe = transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "hf")
    got = model.classify([wav for _, wav in clips], top_k=None, sample_rate=16000)
    for (name, wav), ours in zip(clips, got, strict=True):
        inputs = fe(wav, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(hf(**inputs).logits[0], -1)
        ref = sorted(((LABELS[i], float(p)) for i, p in enumerate(probs)), key=lambda t: -t[1])
        assert [label for label, _ in ours[:3]] == [label for label, _ in ref[:3]], name
        assert np.allclose([s for _, s in ours], [s for _, s in ref], atol=ATOL), name
        alone = model.classify(wav, top_k=2, sample_rate=16000)  # batched == alone
        assert [label for label, _ in alone] == [label for label, _ in ours[:2]], name
        assert np.allclose([s for _, s in alone], [s for _, s in ours[:2]], atol=1e-6), name
    with pytest.raises(SpeechfmError, match="classif"):
        model.transcribe(clips[0][1], sample_rate=16000)

    # back to transformers: the same tensors, labels and feature extractor
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "hf"]) == 0
    back = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "back",
                                                                  local_files_only=True)
    assert back.config.id2label == hf.config.id2label
    sd, ref_sd = back.state_dict(), hf.state_dict()
    assert set(sd) == set(ref_sd) and all(torch.equal(sd[k], ref_sd[k]) for k in ref_sd)
    fe_back = transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "back")
    for name in ("num_mel_bins", "max_length", "mean", "std", "sampling_rate", "do_normalize"):
        assert getattr(fe_back, name) == getattr(fe, name), name


def test_directory_round_trip_backbone(shared_data, tmp_path):
    mel, max_length = 32, 64
    hf = _hf_model(transformers.ASTModel, _hf_config(mel, max_length, 12, 8, labels=None), seed=4)
    _save_hf_dir(tmp_path / "hf", hf, mel, max_length)
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert "labels" not in read_model_config(tmp_path / "ours")["parts"]
    model = speechfm.load(tmp_path / "ours")
    name, wav = _recordings(shared_data)[0]
    fe = transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        ref = hf(**fe(wav, sampling_rate=16000, return_tensors="pt")).pooler_output[0]
    torch.testing.assert_close(model.embed(wav, sample_rate=16000, pooled=True), ref,
                               atol=ATOL, rtol=0)
    with pytest.raises(SpeechfmError, match="no classifier head"):
        model.classify(wav, sample_rate=16000)

    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "hf"]) == 0
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == [
        "ASTModel"]
    back = transformers.ASTModel.from_pretrained(tmp_path / "back", local_files_only=True)
    sd, ref_sd = back.state_dict(), hf.state_dict()
    assert set(sd) == set(ref_sd) and all(torch.equal(sd[k], ref_sd[k]) for k in ref_sd)


def test_convert_errors(tmp_path, capsys):
    # weights that do not fit the config: the message names SRC and the tensors
    hf = _hf_model(transformers.ASTForAudioClassification, _hf_config())
    hf.save_pretrained(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["max_length"] = 60
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "hf") in err and "position_embeddings" in err
    assert not (tmp_path / "x").exists()
    # an ast model HF cannot represent
    config = ast_mini(num_classes=2)
    config.pooling = "mean"
    save_model_dir(tmp_path / "mean", create_ast_model(config), config,
                   parts={"labels": ["a", "b"]})
    assert main(["convert", str(tmp_path / "mean"), str(tmp_path / "y"), "--to", "hf"]) == 2
    assert "pooling" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
