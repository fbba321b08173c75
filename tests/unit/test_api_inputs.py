"""speechfm.api inputs that were silently misread, and noise-only inputs.

Arrays whose dtype or shape cannot say how to read them (int64, 16-bit values in int32,
unscaled PCM as floats, a batch of clips as a 2-D array, a (2, 0) array) and directory
paths get an AudioError naming the input. Noise and silence give "" through the
voice-activity gate, where the same model without it (``vad=False``) invents text.

The model is a random-weight ctc_tiny whose blank is pushed down, so that it emits
tokens for anything, noise included: the gate, not the model, makes the "".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechfm.errors import AudioError

SR = 16000
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model():
    from speechfm.api import SpeechModel
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.text.char import CharTokenizer

    tok = CharTokenizer.train(["ab ca", "cab"])
    torch.manual_seed(0)
    module = create_ctc_model(ctc_tiny(tok.vocab_size))
    with torch.no_grad():
        module.head.bias[0] -= 8.0  # blank rarely wins: text for any input
    return SpeechModel(module, tok, family="ctc")


def _noise(seconds: float, dbfs: float, alpha: float = 0.0, seed: int = 0) -> np.ndarray:
    """float32 noise with power ~ 1/f^alpha (0 white, 1 pink, 2 brown) at ``dbfs`` RMS."""
    n = int(seconds * SR)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    x = np.fft.irfft(spec / np.maximum(np.fft.rfftfreq(n, 1 / SR), 10.0) ** (alpha / 2), n)
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def _bursts(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Syllable-like tone bursts (what the gate lets through) over a faint noise floor."""
    t = np.arange(int(0.16 * SR)) / SR
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(0.2 * SR))]
    while sum(p.shape[0] for p in parts) < (seconds - 0.4) * SR:
        f = rng.choice([450.0, 900.0, 1600.0])
        parts += [0.4 * np.sin(2 * np.pi * f * t) * np.hanning(t.size), np.zeros(int(0.05 * SR))]
    x = np.concatenate(parts + [np.zeros(int(0.2 * SR))])
    return (x + 3e-3 * rng.standard_normal(x.shape[0])).astype(np.float32)


# ------------------------------------------------------------------------------ noise


def test_noise_only_inputs_give_no_text(model):
    noises = {
        "8 s of background (brown) noise": _noise(8, -35, alpha=2),
        "3 s of white noise at -40 dBFS": _noise(3, -40),
        "5 s of pink noise at -15 dBFS": _noise(5, -15, alpha=1),
        "4 s of 50 Hz hum": (0.05 * np.sin(2 * np.pi * 50 * np.arange(4 * SR) / SR)
                             ).astype(np.float32),
    }
    for what, x in noises.items():
        assert model.transcribe(x, sample_rate=SR) == "", what
        # without the gate the model makes up text
        assert model.transcribe(x, sample_rate=SR, vad=False) != "", what
    assert model.transcribe(np.zeros(3 * SR, np.float32), sample_rate=SR) == ""
    tr = model.transcribe(noises["3 s of white noise at -40 dBFS"], sample_rate=SR,
                          timestamps=True)
    assert tr.text == "" and tr.words == [] and tr.tokens == [] and tr.token_times == []
    # a list: gated inputs are "", the others decoded exactly as without the gate
    items = [_bursts(seed=1), noises["8 s of background (brown) noise"], _bursts(3.0, seed=2)]
    gated = model.transcribe(items, sample_rate=SR, batch_size=2)
    ungated = model.transcribe(items, sample_rate=SR, batch_size=2, vad=False)
    assert gated[1] == "" and ungated[1] != ""
    assert gated[0] == ungated[0] != "" and gated[2] == ungated[2] != ""
    # a long recording of noise (the piece-by-piece path) gives "" too
    long_noise = _noise(45, -30, alpha=1)
    assert model.transcribe(long_noise, sample_rate=SR) == ""
    assert model.transcribe(long_noise, sample_rate=SR, vad=False) != ""


# ------------------------------------------------------------------------------ arrays


def test_integer_arrays(model):
    x = _bursts()
    ref = model.transcribe(x, sample_rate=SR, vad=False)
    pcm16 = np.round(x * 32767).astype(np.int16)
    assert model.transcribe(pcm16, sample_rate=SR, vad=False) == ref
    # genuine 32-bit PCM (soundfile's dtype="int32") is scaled like int16
    pcm32 = pcm16.astype(np.int32) << 16
    assert model.transcribe(pcm32, sample_rate=SR, vad=False) == ref
    with pytest.raises(AudioError, match=r"#0 \(numpy array .*int32 samples that all fit 16 bits"):
        model.transcribe(pcm16.astype(np.int32), sample_rate=SR)
    with pytest.raises(AudioError, match=r"#0 \(numpy array .*int64 samples are no PCM format"):
        model.transcribe(pcm16.astype(np.int64), sample_rate=SR)
    with pytest.raises(AudioError, match=r"#1 \(torch tensor .*int64 .*astype\(np\.int16\)"):
        model.transcribe([x, torch.tensor(pcm16.tolist())], sample_rate=SR)
    with pytest.raises(AudioError, match="uint16 samples are no PCM format"):
        model.transcribe(pcm16.view(np.uint16), sample_rate=SR)
    # 8-bit WAV PCM (offset binary) still works
    pcm8 = (np.round(x * 127) + 128).astype(np.uint8)
    assert isinstance(model.transcribe(pcm8, sample_rate=SR), str)


def test_float_arrays_far_outside_full_scale_are_refused(model):
    x = _bursts()
    with pytest.raises(AudioError, match=r"#0 \(numpy array .*peak at 1\d{4}.*unscaled PCM"):
        model.transcribe(x * 32768, sample_rate=SR)
    with pytest.raises(AudioError, match=r"#0 \(torch tensor.*peak at .*divide by 32768"):
        model.transcribe(torch.from_numpy(x * 300), sample_rate=SR)
    # a little over full scale (gain, resampler overshoot) is fine
    loud = x * (1.6 / np.abs(x).max())
    assert model.transcribe(loud, sample_rate=SR) != ""
    # NaN/Inf keep their own message
    bad = x.copy()
    bad[5] = np.inf
    with pytest.raises(AudioError, match="1 NaN/Inf"):
        model.transcribe(bad, sample_rate=SR)


def test_two_dimensional_arrays(model):
    clips = np.stack([_bursts(seed=i) for i in range(6)])  # (6, S): a batch of clips
    with pytest.raises(AudioError, match=r"#0 \(numpy array of shape \(6, \d+\)\): is this a "
                                         r"batch of 6 clips.*list of 1-D.*channels_first"):
        model.transcribe(clips, sample_rate=SR)
    with pytest.raises(AudioError, match="batch of 6 clips"):
        model.transcribe(clips.T.copy(), sample_rate=SR)
    # as a list they are six inputs; with channels_first they are one 6-channel recording
    assert len(model.transcribe(list(clips), sample_rate=SR)) == 6
    mixed = clips.mean(0)
    ref = model.transcribe(mixed, sample_rate=SR, vad=False)
    assert model.transcribe(clips, sample_rate=SR, channels_first=True, vad=False) == ref
    assert model.transcribe(clips.T.copy(), sample_rate=SR, channels_first=False,
                            vad=False) == ref
    # mono and stereo are still read from the short axis
    stereo = clips[:2]
    ref2 = model.transcribe(stereo.mean(0), sample_rate=SR, vad=False)
    assert model.transcribe(stereo, sample_rate=SR, vad=False) == ref2
    assert model.transcribe(torch.from_numpy(stereo.T.copy()), sample_rate=SR, vad=False) == ref2
    with pytest.raises(AudioError, match=r"#0 \(numpy array of shape \(2, 0\)\): audio is empty"):
        model.transcribe(np.zeros((2, 0), np.float32), sample_rate=SR)
    with pytest.raises(AudioError, match=r"#1 \(torch tensor of shape \(0, 2\)\): audio is empty"):
        model.transcribe([stereo[0], torch.zeros(0, 2)], sample_rate=SR)


def test_a_directory_is_named_as_one(model, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", _bursts(), SR)
    with pytest.raises(AudioError, match=rf"{tmp_path}: is a directory, not an audio file"):
        model.transcribe(tmp_path)
    with pytest.raises(AudioError, match="is a directory"):
        model.transcribe([tmp_path / "a.wav", str(tmp_path)])
    assert isinstance(model.transcribe(tmp_path / "a.wav"), str)
