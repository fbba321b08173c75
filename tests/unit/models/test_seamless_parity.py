"""w2v-BERT 2.0 front-end parity with transformers, on real audio.

(1) speechfm's fbank (:func:`seamless_m4t_fbank_config`) -> per-utterance normalisation
(ddof 1, eps 1e-7) -> stride-2 stacking gives ``SeamlessM4TFeatureExtractor``'s
``input_features``; (2) a ``Wav2Vec2BertModel`` converted with ``speechfm convert`` and
run through ``speechfm.load(dst).embed`` gives the HF model's hidden states, HF being fed
by its own feature extractor.  Audio: FSDD digits (8 kHz, resampled to 16 kHz: an empty
4-8 kHz band, the hard case for float32 FFTs), festvox_ru and Speech Commands (16 kHz).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from speechfm.data.audio import read_audio  # noqa: E402
from speechfm.features.fbank import TorchFbank  # noqa: E402
from speechfm.models.conformer.interop import seamless_m4t_fbank_config  # noqa: E402
from speechfm.models.conformer.speech_encoder import _utterance_normalize  # noqa: E402

# Measured max |diff| on these clips (CPU): 4.6e-6 for the features, the float32 rounding
# of log-mel values ~20 and of the per-bin normalisation (both sides compute the fbank in
# float64 and normalise in float32), and 1.6e-5 for the layer outputs (values up to ~5.5),
# which is that feature rounding carried through the random model: fed the same
# features, the converted encoder gives HF's hidden states to float32 op-order rounding
# (0.0 on most clips, 1.6e-6 at most).
FEATURE_ATOL = 1e-5
EMBED_ATOL = 3e-5
SAME_FEATURES_ATOL = 5e-6

FSDD = ("0_george_0.wav", "0_george_1.wav", "3_jackson_1.wav", "7_theo_12.wav",
        "9_yweweler_5.wav")


def _extractor():
    # facebook/w2v-bert-2.0's preprocessor_config.json values, spelled out (no download).
    return transformers.SeamlessM4TFeatureExtractor(
        feature_size=80, num_mel_bins=80, sampling_rate=16000, padding_value=1.0, stride=2
    )


def _clips(shared_data) -> list[tuple[str, np.ndarray]]:
    clips = []
    for name in FSDD:
        path = shared_data / "fsdd" / "recordings" / name
        if path.is_file():
            clips.append((name, read_audio(path, 16000)))
    ru = sorted((shared_data / "festvox_ru" / "audio").glob("*.flac"))[:1]
    sc = sorted((shared_data / "speech_commands_mini").rglob("*.wav"))[:1]
    for path in ru + sc:
        clips.append((path.name, read_audio(path, 16000)))
    if not clips:
        pytest.skip("no FSDD / festvox_ru / speech_commands_mini audio in the shared data")
    return clips


def _reference(extractor, audio: np.ndarray) -> tuple[torch.Tensor, int]:
    out = extractor(audio, sampling_rate=16000, return_tensors="pt")
    mask = out["attention_mask"][0]
    return out["input_features"][0], int(mask.sum())


def test_fbank_front_end_matches_seamless_m4t_feature_extractor(shared_data):
    extractor = _extractor()
    fbank = TorchFbank(seamless_m4t_fbank_config())
    worst = 0.0
    odd_seen = False
    for name, audio in _clips(shared_data):
        ref, valid = _reference(extractor, audio)
        feats, lens = fbank(torch.from_numpy(audio)[None])  # float32 in, as embed() does
        assert feats.dtype == torch.float32
        z = _utterance_normalize(feats, lens, eps=1e-7, ddof=1)[0]
        t = int(lens[0])
        odd_seen |= t % 2 == 1
        # Stacking by hand: floor(T / 2) pairs. SeamlessM4T pads an odd T to a pair
        # whose attention_mask is 0, so its valid frames are the same floor(T / 2).
        assert valid == t // 2, name
        assert ref.shape[0] == (t + 1) // 2, name
        stacked = z[: 2 * valid].reshape(valid, 160)
        diff = float((stacked.double() - ref[:valid].double()).abs().max())
        worst = max(worst, diff)
        assert diff < FEATURE_ATOL, f"{name}: max |diff| {diff:.2e}"
    print(f"max |diff| of stacked normalised features: {worst:.2e}")
    assert odd_seen  # the odd-frame rule was exercised (0_george_1: 57 frames)


def test_waveform_scale_is_honoured_by_knf_and_torch_fbank(shared_data):
    import dataclasses

    from speechfm.features.fbank import compute_fbank

    pytest.importorskip("kaldi_native_fbank")
    cfg = seamless_m4t_fbank_config()
    plain = dataclasses.replace(cfg, waveform_scale=1.0)
    clips = dict(_clips(shared_data))
    for name in ("0_george_1.wav", next(n for n in clips if n.endswith(".flac"))):
        audio = clips[name]
        scaled = audio * np.float32(32768)
        # Scaling by a power of two is exact: the option equals scaling the input.
        knf = compute_fbank(audio, 16000, cfg)
        assert np.array_equal(knf, compute_fbank(scaled, 16000, plain)), name
        torch_feats = TorchFbank(cfg)(torch.from_numpy(audio)[None])[0][0]
        again = TorchFbank(plain)(torch.from_numpy(scaled)[None])[0][0]
        assert torch.equal(torch_feats, again), name
        if name.endswith(".flac"):
            # Native 16 kHz speech: knf (float32 FFT) within 2e-3 of the float64 fbank
            # (9.2e-4 measured). FSDD's empty upsampled band is knf's float32 noise.
            assert float(np.abs(knf - torch_feats.numpy()).max()) < 2e-3, name


def _perturb_layer_norms(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(0.3 * torch.randn(module.weight.shape, generator=gen))
                module.bias.add_(0.1 * torch.randn(module.bias.shape, generator=gen))


@pytest.mark.parametrize("layers", [(0, 1, -1)])
def test_converted_checkpoint_embeds_like_wav2vec2_bert(shared_data, tmp_path, layers):
    import speechfm
    from speechfm.cli import main

    config = transformers.Wav2Vec2BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        conv_depthwise_kernel_size=5, position_embeddings_type="relative_key",
        feature_projection_input_dim=160, layerdrop=0.0, apply_spec_augment=False,
        mask_time_prob=0.0, mask_feature_prob=0.0, hidden_dropout=0.0,
        activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
    )
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2BertModel(config)
    _perturb_layer_norms(hf, torch.Generator().manual_seed(1))
    hf.eval()
    hf_dir, dst = tmp_path / "hf", tmp_path / "converted"
    hf.save_pretrained(hf_dir)
    assert main(["convert", str(hf_dir), str(dst)]) == 0

    model = speechfm.load(dst)
    extractor = _extractor()
    clips = _clips(shared_data)
    worst = 0.0
    for name, audio in clips:
        batch = extractor(audio, sampling_rate=16000, return_tensors="pt")
        valid = int(batch["attention_mask"][0].sum())
        with torch.no_grad():
            out = hf(batch["input_features"], attention_mask=batch["attention_mask"],
                     output_hidden_states=True)
        hidden = out.hidden_states  # [0] = feature projection, [i] = layer i
        ours = model.embed(audio, sample_rate=16000, layers=layers)
        # The encoder alone, on HF's own (unstacked) features: only the model differs.
        with torch.no_grad():
            x = batch["input_features"][:, :valid].reshape(1, 2 * valid, 80)
            _, _, same = model.module.encoder.conformer(
                x, torch.tensor([2 * valid]), return_layers=layers
            )
        for layer, emb in zip(layers, same, strict=True):
            diff = float((emb[0] - hidden[layer][0, :valid]).abs().max())
            assert diff < SAME_FEATURES_ATOL, f"{name} layer {layer} (same features): {diff:.2e}"
        for layer, emb in zip(layers, ours, strict=True):
            want = hidden[layer][0, :valid]
            assert emb.shape == want.shape, (name, layer)
            diff = float((emb - want).abs().max())
            worst = max(worst, diff)
            assert diff < EMBED_ATOL, f"{name} layer {layer}: max |diff| {diff:.2e}"
    print(f"max |diff| of layer outputs: {worst:.2e}")
