"""speechfm.models.conformer.speech_encoder: the shared front end every family holds.

Normalisation (global CMVN buffers, per-utterance statistics, none), SpecAugment in
training only, the config, waveforms in, and streaming through the whole front end.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechfm.config import config_from_dict, config_to_dict, override_dataclass
from speechfm.features.fbank import FbankConfig
from speechfm.models.conformer import conformer_tiny
from speechfm.models.conformer.speech_encoder import (
    SpeechEncoder,
    SpeechEncoderConfig,
    create_speech_encoder,
)

FEAT = 20

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _config(**overrides) -> SpeechEncoderConfig:
    """conformer_tiny (no dropout) on 20-dim fbank, no SpecAugment unless asked for."""
    base = SpeechEncoderConfig(
        fbank=FbankConfig(num_mel_bins=FEAT),
        specaugment=False,
        conformer=override_dataclass(conformer_tiny(), {"input_dim": FEAT}),
    )
    return override_dataclass(base, overrides)


def _encoder(**overrides) -> SpeechEncoder:
    torch.manual_seed(0)
    return create_speech_encoder(_config(**overrides)).eval()


def _feats(lens=(48, 40, 44), seed=1, pad_value=0.0):
    """Features far from zero mean / unit variance, a different offset and scale per
    channel and utterance; frames past each length are ``pad_value``."""
    g = torch.Generator().manual_seed(seed)
    n, t = len(lens), max(lens)
    offset = 5.0 * torch.randn(n, 1, FEAT, generator=g)
    scale = 0.5 + 3.0 * torch.rand(n, 1, FEAT, generator=g)
    x = offset + scale * torch.randn(n, t, FEAT, generator=g)
    lens = torch.tensor(lens)
    valid = torch.arange(t)[None, :] < lens[:, None]
    return x.masked_fill(~valid.unsqueeze(-1), pad_value), lens


def _valid(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    return (torch.arange(x.shape[1])[None, :] < lens[:, None]).unsqueeze(-1)


# ------------------------------------------------------------------------------ config


def test_config_round_trip_validation_and_properties():
    cfg = _config(normalization="utterance", specaugment=True, specaug={"time_warp": 2})
    data = json.loads(json.dumps(config_to_dict(cfg)))
    assert set(data) == {"fbank", "normalization", "utterance_norm_ddof", "utterance_norm_eps",
                         "specaugment", "specaug", "conformer"}
    assert config_from_dict(SpeechEncoderConfig, data) == cfg
    assert cfg.frame_shift_s == pytest.approx(0.04)
    assert _config(conformer={"subsampling_factor": 6}).frame_shift_s == pytest.approx(0.06)
    with pytest.raises(ValueError, match=r"encoder\.normalization.*'cepstral'"):
        _config(normalization="cepstral").validate()
    with pytest.raises(ValueError, match=r"conformer\.input_dim \(20\).*\(40\)"):
        _config(fbank={"num_mel_bins": 40}).validate()
    with pytest.raises(ValueError, match=r"specaug\.num_freq_masks"):
        _config(specaug={"num_freq_masks": -1}).validate()
    with pytest.raises(ValueError, match="input_dim"):
        create_speech_encoder(_config(fbank={"num_mel_bins": 40}))

    enc = _encoder()
    assert enc.dim == 32 and enc.num_layers == 2 and enc.feature_dim == FEAT
    assert enc.sample_rate == 16000 and enc.frame_shift_s == pytest.approx(0.04)
    assert enc.chunk_size == -1 and enc.feature_extractor() is enc.fbank
    lens = torch.tensor([48, 7, 6])
    assert enc.output_lengths(lens).tolist() == [11, 1, 0]
    # Global normalisation needs its buffers, and only it takes them.
    with pytest.raises(ValueError, match="global normalization needs cmvn"):
        SpeechEncoder(enc.conformer, fbank=enc.fbank, normalization="global")
    with pytest.raises(ValueError, match="global normalization needs cmvn"):
        SpeechEncoder(enc.conformer, fbank=enc.fbank, normalization="none", cmvn=enc.cmvn)
    with pytest.raises(ValueError, match="normalization must be one of"):
        SpeechEncoder(enc.conformer, fbank=enc.fbank, normalization="speaker")


def test_weights_are_the_cmvn_buffers_and_the_conformer():
    keys = set(_encoder().state_dict())
    assert {"cmvn.mean", "cmvn.var", "cmvn.inv_std"} <= keys
    assert all(k.startswith(("cmvn.", "conformer.")) for k in keys)  # fbank, SpecAugment: none
    for norm in ("utterance", "none"):
        keys = set(_encoder(normalization=norm, specaugment=True).state_dict())
        assert keys and all(k.startswith("conformer.") for k in keys)


# ------------------------------------------------------------------------ normalisation


def test_utterance_normalisation_statistics_padding_and_invariance():
    enc = _encoder(normalization="utterance")
    assert enc.cmvn is None
    feats, lens = _feats(pad_value=123.0)  # garbage in the padding
    y = enc.normalize(feats, lens)
    assert y.shape == feats.shape
    valid = _valid(feats, lens)
    # Each utterance's valid frames: per-channel mean 0 and (biased) variance 1.
    for n, length in enumerate(lens.tolist()):
        frames = y[n, :length].double()
        torch.testing.assert_close(frames.mean(0), torch.zeros(FEAT, dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(frames.var(0, unbiased=False),
                                   torch.ones(FEAT, dtype=torch.float64), atol=1e-3, rtol=0)
    # Padding comes out as 0, whatever it held.
    assert not y.masked_select(~valid).any()
    # Padding-invariant: each utterance alone, or padded with zeros instead, normalises
    # the same, and so is encoded the same.
    zero_padded, _ = _feats(pad_value=0.0)
    torch.testing.assert_close(enc.normalize(zero_padded, lens), y)
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
        for n, length in enumerate(lens.tolist()):
            torch.testing.assert_close(enc.normalize(feats[n : n + 1, :length], lens[n : n + 1]),
                                       y[n : n + 1, :length])
            alone, alone_lens = enc(feats[n : n + 1, :length], lens[n : n + 1])
            assert alone_lens[0] == out_lens[n]
            torch.testing.assert_close(alone[0], out[n, : out_lens[n]], atol=1e-5, rtol=0)
    # The statistics are the utterance's own: a per-channel gain and offset of one
    # utterance changes nothing, and the other utterances are untouched.
    shifted = feats.clone()
    gain, offset = 0.5 + torch.rand(FEAT), 10.0 * torch.randn(FEAT)
    shifted[1, : lens[1]] = gain * shifted[1, : lens[1]] + offset
    torch.testing.assert_close(enc.normalize(shifted, lens), y, atol=1e-4, rtol=1e-4)


def test_global_cmvn_buffers_are_applied_saved_and_restored(tmp_path):
    enc = _encoder()
    feats, lens = _feats(pad_value=7.0)
    valid = _valid(feats, lens)
    # Fresh buffers are the identity (padding still zeroed).
    torch.testing.assert_close(enc.normalize(feats, lens), feats.masked_fill(~valid, 0.0))
    mean = torch.linspace(-2.0, 2.0, FEAT)
    var = torch.linspace(0.5, 4.0, FEAT)
    enc.set_cmvn(mean, var)
    expected = ((feats - mean) / var.sqrt()).masked_fill(~valid, 0.0)
    torch.testing.assert_close(enc.normalize(feats, lens), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        out, _ = enc(feats, lens)

    # The weights file alone carries the statistics.
    save_file(enc.state_dict(), tmp_path / "encoder.safetensors")
    fresh = _encoder()
    assert not torch.equal(fresh.cmvn.mean, mean.double())
    fresh.load_state_dict(load_file(tmp_path / "encoder.safetensors"))
    torch.testing.assert_close(fresh.cmvn.mean, mean.double())
    torch.testing.assert_close(fresh.cmvn.var, var.double())
    torch.testing.assert_close(fresh.cmvn.inv_std, var.double().rsqrt())
    with torch.no_grad():
        restored, _ = fresh(feats, lens)
    torch.testing.assert_close(restored, out)

    # A variance floor keeps a constant channel finite.
    flat = var.clone()
    flat[3] = 0.0
    enc.set_cmvn(mean, flat, var_floor=0.01)
    assert float(enc.cmvn.inv_std[3]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match=r"\(20,\)"):
        enc.set_cmvn(mean[:5], var[:5])
    with pytest.raises(ValueError, match="non-negative"):
        enc.set_cmvn(mean, -var)
    with pytest.raises(ValueError, match="non-finite"):
        enc.set_cmvn(mean, torch.full((FEAT,), float("inf")))


def test_no_normalisation_has_no_buffers_and_refuses_statistics():
    for norm in ("none", "utterance"):
        enc = _encoder(normalization=norm)
        assert enc.cmvn is None and enc.normalization == norm
        assert not any("cmvn" in k for k in enc.state_dict())
        with pytest.raises(ValueError, match=f"normalises with '{norm}'.*no CMVN buffers"):
            enc.set_cmvn(torch.zeros(FEAT), torch.ones(FEAT))
    enc = _encoder(normalization="none")
    feats, lens = _feats()
    torch.testing.assert_close(enc.normalize(feats, lens), feats)  # features as they come
    # Padding is the Conformer's to ignore: what it holds changes no output.
    garbage, _ = _feats(pad_value=1e3)
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
        out_g, _ = enc(garbage, lens)
    for n, length in enumerate(out_lens.tolist()):
        torch.testing.assert_close(out_g[n, :length], out[n, :length])
    # Same Conformer weights as a global-CMVN encoder at its identity statistics: same output.
    ident = _encoder()
    assert ident.load_state_dict(enc.state_dict(), strict=False).missing_keys == [
        "cmvn.mean", "cmvn.var", "cmvn.inv_std"]
    with torch.no_grad():
        torch.testing.assert_close(enc(feats, lens)[0], ident(feats, lens)[0])


# -------------------------------------------------------------------------- SpecAugment


def test_specaugment_only_in_training():
    enc = _encoder(specaugment=True, specaug={"freq_mask_width": 8, "num_time_masks": 4})
    assert enc.specaugment is not None and enc.specaugment.freq_mask_width == 8
    feats, lens = _feats()
    enc.set_cmvn(feats.mean((0, 1)), feats.var((0, 1)))
    valid = _valid(feats, lens)
    reference = enc.normalize(feats, lens)
    with torch.no_grad():
        out_eval, _ = enc(feats, lens)
        out_eval2, _ = enc(feats, lens)
    torch.testing.assert_close(out_eval, out_eval2)

    enc.train()  # tiny has no dropout: only SpecAugment can make a difference
    torch.manual_seed(3)
    masked = enc.normalize(feats, lens)
    changed = masked != reference
    assert changed.any()
    assert not masked[changed].any()  # masking writes zeros ...
    assert not changed.masked_select(~valid).any()  # ... inside the valid frames only
    assert not masked.masked_select(~valid).any()
    torch.manual_seed(4)
    with torch.no_grad():
        out_train, _ = enc(feats, lens)
    assert not torch.allclose(out_train, out_eval)

    no_aug = _encoder(specaugment=False)
    no_aug.load_state_dict(enc.state_dict())
    assert no_aug.specaugment is None
    no_aug.train()
    torch.testing.assert_close(no_aug.normalize(feats, lens), reference)
    with torch.no_grad():
        torch.testing.assert_close(no_aug(feats, lens)[0], out_eval)


# ---------------------------------------------------------------------------- waveforms


def test_forward_waveforms_is_fbank_then_forward():
    enc = _encoder()
    g = torch.Generator().manual_seed(2)
    wavs = 0.1 * torch.randn(2, 8000, generator=g)
    lens = torch.tensor([8000, 5600])
    with torch.no_grad():
        out, out_lens, layers = enc.forward_waveforms(wavs, lens, return_layers=[0, -1])
        feats, feat_lens = enc.feature_extractor()(wavs, lens)
        ref, ref_lens, ref_layers = enc(feats, feat_lens, return_layers=[0, -1])
    assert feats.shape[-1] == FEAT
    torch.testing.assert_close(out, ref)
    assert out_lens.tolist() == ref_lens.tolist() == enc.output_lengths(feat_lens).tolist()
    for a, b in zip(layers, ref_layers, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="8000 Hz.*16000 Hz"):
        enc.forward_waveforms(wavs, lens, sample_rate=8000)


# ---------------------------------------------------------------------------- streaming


def _stream(enc, x, x_lens, chunk, left, sizes):
    """Feed ``x`` to ``enc.streaming_forward`` in pieces of ``sizes`` frames, then the rest."""
    state = enc.init_streaming_state(x.shape[0], chunk_size=chunk, left_context=left)
    outs, total, pos, i = [], torch.zeros(x.shape[0], dtype=torch.int64), 0, 0
    stop = int(x_lens.min())
    while pos + sizes[i % len(sizes)] < stop:
        step = sizes[i % len(sizes)]
        out, lens, state = enc.streaming_forward(x[:, pos : pos + step], state)
        assert out.shape[1] % chunk == 0  # outputs come whole chunks at a time
        outs.append(out)
        total += lens
        pos, i = pos + step, i + 1
    out, lens, state = enc.streaming_forward(x[:, pos:], state, x_lens=x_lens - pos, final=True)
    outs.append(out)
    total += lens
    with pytest.raises(RuntimeError, match="final"):
        enc.streaming_forward(x[:, :1], state)
    return torch.cat(outs, 1), total


@pytest.mark.parametrize(("chunk", "left"), [(1, -1), (2, 0), (3, 4), (4, 8)])
@pytest.mark.parametrize("normalization", ["global", "none"])
def test_streaming_equals_the_chunked_full_forward(normalization, chunk, left):
    enc = _encoder(normalization=normalization, conformer={"conv_causal": True})
    feats, lens = _feats(lens=(61, 44))
    if normalization == "global":  # statistics far from the identity: CMVN must be applied
        g = torch.Generator().manual_seed(5)
        enc.set_cmvn(3.0 * torch.randn(FEAT, generator=g), 0.5 + 4.0 * torch.rand(FEAT, generator=g))
    with torch.no_grad():
        full, full_lens = enc(feats, lens, chunk_size=chunk, left_context=left)
        streamed, stream_lens = _stream(enc, feats, lens, chunk, left, sizes=[7, 3, 12, 1, 9])
    assert torch.equal(stream_lens, full_lens)
    for n, length in enumerate(full_lens.tolist()):
        torch.testing.assert_close(streamed[n, :length], full[n, :length], atol=1e-5, rtol=0)
    if normalization == "global":  # the comparison is not blind to CMVN
        with torch.no_grad():
            raw, _ = enc.conformer(feats, lens, chunk_size=chunk, left_context=left)
        assert (raw[0, : full_lens[0]] - full[0, : full_lens[0]]).abs().amax() > 1e-2


def test_utterance_normalisation_refuses_to_stream():
    enc = _encoder(normalization="utterance", conformer={"conv_causal": True})
    with pytest.raises(ValueError, match="per-utterance normalisation cannot stream"):
        enc.init_streaming_state(1, chunk_size=4)
    # Global statistics stream (they are per frame); the same Conformer then can.
    ok = _encoder(conformer={"conv_causal": True})
    assert ok.init_streaming_state(1, chunk_size=4) is not None
