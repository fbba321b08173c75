"""``speechfm convert``: transformers Wav2Vec2BertModel <-> speechfm model directory."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import speechfm  # noqa: E402
from speechfm.cli import main  # noqa: E402
from speechfm.errors import SpeechfmError  # noqa: E402
from speechfm.models.conformer.interop import conformer_config_from_hf  # noqa: E402
from speechfm.models.io import load_model_dir, read_model_config, save_model_dir  # noqa: E402

FBANK, STACK = 80, 2


def _hf_config(**overrides):
    fields = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_depthwise_kernel_size=5,
        position_embeddings_type="relative_key",
        left_max_position_embeddings=6,
        right_max_position_embeddings=2,
        feature_projection_input_dim=FBANK * STACK,
        layerdrop=0.0,
        apply_spec_augment=False,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
    )
    fields.update(overrides)
    return transformers.Wav2Vec2BertConfig(**fields)


def _hf_dir(path, seed=0, **overrides):
    """A saved random HF model whose every parameter (LayerNorms included) is perturbed."""
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2BertModel(_hf_config(**overrides)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(path)
    return model


def _assert_same_layers(conformer, hf_model, lens=(13, 9, 4)):
    """(N, 2T, 80) frames into ours, the same frames stacked (N, T, 160) into HF."""
    lens = torch.tensor(lens)
    n, t = len(lens), int(lens.max())
    fbank = torch.randn(n, STACK * t, FBANK, generator=torch.Generator().manual_seed(2))
    fbank_lens = lens * STACK
    valid = torch.arange(STACK * t)[None, :] < fbank_lens[:, None]
    fbank = fbank.masked_fill(~valid[..., None], 0.0)
    mask = (torch.arange(t)[None, :] < lens[:, None]).to(torch.int64)
    with torch.no_grad():
        _, out_lens, layers = conformer(fbank, fbank_lens,
                                        return_layers=list(range(conformer.num_layers + 1)))
        hidden = hf_model(input_features=fbank.reshape(n, t, STACK * FBANK), attention_mask=mask,
                          output_hidden_states=True).hidden_states
    assert torch.equal(out_lens, mask.sum(-1))
    assert len(layers) == len(hidden) == hf_model.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(layers, hidden, strict=True)):
        diff = float((a - b).abs()[mask.bool()].max())
        assert diff < 1e-4, (i, diff)


def _fail(capsys, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("speechfm convert: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_round_trip_through_speechfm(tmp_path, capsys):
    hf_model = _hf_dir(tmp_path / "hf")
    dst = tmp_path / "ours"
    assert main(["convert", str(tmp_path / "hf"), str(dst)]) == 0
    assert "converted" in capsys.readouterr().out

    meta = read_model_config(dst)
    assert meta["family"] == "encoder"
    assert meta["converted_from"]["model_type"] == "wav2vec2-bert"
    assert meta["converted_from"]["path"] == str(tmp_path / "hf")
    enc = meta["model"]["encoder"]
    assert enc["normalization"] == "utterance" and enc["specaugment"] is False
    fb = enc["fbank"]
    assert (fb["num_mel_bins"], fb["sample_rate"], fb["window_type"], fb["dither"],
            fb["preemph_coeff"], fb["snip_edges"]) == (80, 16000, "povey", 0.0, 0.97, True)

    model = speechfm.load(dst)
    assert model.family == "encoder" and model.frame_shift_s == pytest.approx(0.02)
    _assert_same_layers(model.module.encoder.conformer, hf_model)
    with pytest.raises(SpeechfmError, match="no ASR head"):
        model.transcribe(torch.zeros(1600).numpy(), sample_rate=16000)

    back = tmp_path / "hf2"
    assert main(["convert", str(dst), str(back), "--to", "hf"]) == 0
    assert (back / "model.safetensors").is_file()
    hf2 = transformers.Wav2Vec2BertModel.from_pretrained(back, local_files_only=True)
    theirs, ours = hf_model.state_dict(), hf2.state_dict()
    assert sorted(theirs) == sorted(ours)
    for key, value in theirs.items():
        assert torch.equal(value, ours[key]), key
    assert hf2.config.position_embeddings_type == "relative_key"


def test_masked_spec_embed_is_skipped(tmp_path):
    hf_model = _hf_dir(tmp_path / "hf", seed=3, mask_time_prob=0.05, apply_spec_augment=True)
    assert "masked_spec_embed" in hf_model.state_dict()
    dst = tmp_path / "ours"
    assert main(["convert", str(tmp_path / "hf"), str(dst)]) == 0
    assert read_model_config(dst)["converted_from"]["skipped"] == ["masked_spec_embed"]
    loaded = load_model_dir(dst, tokenizer=False)
    _assert_same_layers(loaded.module.encoder.conformer, hf_model, lens=(7, 5))
    assert main(["convert", str(dst), str(tmp_path / "hf2"), "--to", "hf"]) == 0
    back = transformers.Wav2Vec2BertModel.from_pretrained(tmp_path / "hf2", local_files_only=True)
    expected = {k: v for k, v in hf_model.state_dict().items() if k != "masked_spec_embed"}
    assert sorted(back.state_dict()) == sorted(expected)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in expected.items())


def test_ctc_model_exports_its_encoder(tmp_path):
    from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig
    from speechfm.models.ctc import CtcModelConfig, create_ctc_model

    hf_config = _hf_config()
    config = CtcModelConfig(encoder=SpeechEncoderConfig(
        normalization="global", conformer=conformer_config_from_hf(hf_config)), vocab_size=7)
    torch.manual_seed(0)
    model = create_ctc_model(config).eval()
    save_model_dir(tmp_path / "ctc", model, config)
    assert main(["convert", str(tmp_path / "ctc"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    hf_model = transformers.Wav2Vec2BertModel.from_pretrained(tmp_path / "hf",
                                                              local_files_only=True).eval()
    _assert_same_layers(model.encoder.conformer, hf_model, lens=(6,))


def test_errors(tmp_path, capsys):
    hf = tmp_path / "hf"
    _hf_dir(hf)
    dst = tmp_path / "ours"
    dst.mkdir()
    _fail(capsys, ["convert", str(hf), str(dst)], "already exists", "--force")
    assert main(["convert", str(hf), str(dst), "--force"]) == 0
    assert read_model_config(dst)["family"] == "encoder"

    _fail(capsys, ["convert", str(dst), str(tmp_path / "x")], "already a speechfm model",
          "--to")
    _fail(capsys, ["convert", str(hf), str(tmp_path / "x"), "--to", "hf"], "not a speechfm")
    _fail(capsys, ["convert", str(tmp_path / "missing"), str(tmp_path / "x")],
          "missing: does not exist")
    _fail(capsys, ["convert", str(dst), str(dst), "--to", "hf", "--force"], "is SRC itself")

    other = tmp_path / "ast"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    _fail(capsys, ["convert", str(other), str(tmp_path / "x")],
          "no converter for transformers model_type 'whisper'",
          "wav2vec2-bert")
    (other / "config.json").write_text(json.dumps({"hello": 1}))
    _fail(capsys, ["convert", str(other), str(tmp_path / "x")], "neither a speechfm",
          "model_type")

    # an encoder HF cannot represent: the message names SRC and the field
    from speechfm.models.conformer import conformer_tiny
    from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig
    from speechfm.models.encoder import EncoderModelConfig, create_encoder_model

    config = EncoderModelConfig(encoder=SpeechEncoderConfig(conformer=conformer_tiny()))
    save_model_dir(tmp_path / "conv2d", create_encoder_model(config), config)
    _fail(capsys, ["convert", str(tmp_path / "conv2d"), str(tmp_path / "x"), "--to", "hf"],
          str(tmp_path / "conv2d"), "front_end")
    assert not (tmp_path / "x").exists()
