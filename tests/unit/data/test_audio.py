"""speechfm.data.audio: formats, rates, mono mix-down, lhotse cuts, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest

from speechfm.data.audio import (
    BadAudioError,
    load_cut_audio,
    load_cut_samples,
    probe_recording,
    read_audio,
    to_mono_resampled,
)
from speechfm.errors import AudioError

RATES = (8000, 16000, 22050, 44100)
LOSSY = ("ogg", "mp3")


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
@pytest.mark.parametrize("sr", RATES)
def test_read_audio_any_format_and_rate_gives_16k_mono(tmp_path, h, ext, sr):
    path = h.write_audio(tmp_path / f"a.{ext}", sr, 0.5)
    x = read_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    # soxr output length is round(S * 16000 / sr); lossless formats keep S exactly
    if ext in LOSSY:
        assert abs(len(x) - 8000) <= 0.02 * 16000
    else:
        assert len(x) == round(round(sr * 0.5) * 16000 / sr)
    # the pitch survives resampling (a wrong rate would move it)
    assert abs(h.peak_frequency(x, 16000) - 440) < 10
    assert 0.2 < np.abs(x).max() < 0.4


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_stereo_is_mixed_to_mono(tmp_path, h, ext):
    # left = tone, right = tone / 2  ->  mix = 0.75 * tone
    path = h.write_audio(tmp_path / f"s.{ext}", 44100, 0.5, channels=2)
    x = read_audio(path, 16000)
    assert x.ndim == 1
    ref = read_audio(h.write_audio(tmp_path / f"m.{ext}", 44100, 0.5), 16000)
    assert np.abs(x).max() == pytest.approx(0.75 * np.abs(ref).max(), rel=0.1)
    if ext not in LOSSY:
        np.testing.assert_allclose(x, 0.75 * ref, atol=2e-3)


def test_native_rate_offset_and_duration(tmp_path, h):
    path = h.write_audio(tmp_path / "a.wav", 22050, 1.0)
    full = read_audio(path, None)
    assert len(full) == 22050
    part = read_audio(path, None, offset=0.25, duration=0.5)
    np.testing.assert_array_equal(part, full[5512 : 5512 + 11025])  # round(0.25 * 22050) = 5512
    tail = read_audio(path, 16000, offset=0.5)
    assert len(tail) == round(11025 * 16000 / 22050)


def test_to_mono_resampled_layouts():
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal(800), rng.standard_normal(800)
    cf = np.stack([left, right])  # (C, S), lhotse's layout
    expected = (left + right) / 2
    np.testing.assert_allclose(to_mono_resampled(cf, 8000, None), expected, rtol=1e-6)
    np.testing.assert_allclose(
        to_mono_resampled(cf.T, 8000, None, channels_last=True), expected, rtol=1e-6
    )
    y = to_mono_resampled(left, 8000, 16000)
    assert y.dtype == np.float32 and y.shape == (1600,)
    assert to_mono_resampled(left.astype(np.float32), 16000, 16000).shape == (800,)
    with pytest.raises(AudioError):
        to_mono_resampled(np.zeros((2, 2, 2)), 16000)


# --- bad inputs -------------------------------------------------------------------------


def _bad(path, **kw) -> BadAudioError:
    with pytest.raises(BadAudioError) as e:
        read_audio(path, **kw)
    return e.value


def test_missing_file(tmp_path):
    err = _bad(tmp_path / "nope.wav", utt_id="utt7")
    assert err.reason == "missing_file"
    assert "nope.wav" in str(err) and "utt7" in str(err) and "does not exist" in str(err)
    assert isinstance(err, AudioError)


def test_garbage_bytes_are_unreadable(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"this is not audio at all" * 50)
    err = _bad(path)
    assert err.reason == "unreadable" and "junk.wav" in str(err) and "cannot decode" in str(err)


def test_zero_length_file_is_empty(tmp_path, h):
    path = h.write_audio(tmp_path / "empty.wav", samples=np.zeros(0))
    err = _bad(path)
    assert err.reason == "empty_audio" and "empty.wav" in str(err)


@pytest.mark.parametrize("value,word", [(np.nan, "1 NaN"), (np.inf, "1 Inf")])
def test_non_finite_samples(tmp_path, h, value, word):
    x = h.tone(16000, 0.2).astype(np.float32)
    x[100] = value
    path = h.write_audio(tmp_path / "nf.wav", samples=x, subtype="FLOAT")
    err = _bad(path)
    assert err.reason == "non_finite" and "nf.wav" in str(err) and word in str(err)


def test_too_long_is_rejected_before_decoding(tmp_path, h):
    path = h.write_audio(tmp_path / "long.wav", 16000, 1.0)
    err = _bad(path, max_duration=0.5)
    assert err.reason == "too_long" and "long.wav" in str(err) and "0.5 s limit" in str(err)
    assert len(read_audio(path, max_duration=None)) == 16000


def test_offset_past_end(tmp_path, h):
    path = h.write_audio(tmp_path / "a.wav", 16000, 0.5)
    assert _bad(path, offset=1.0).reason == "empty_audio"


def test_probe_recording(tmp_path, h):
    rec = probe_recording(h.write_audio(tmp_path / "a.flac", 22050, 0.5, channels=2), "r1")
    assert (rec.id, rec.sampling_rate, rec.num_samples, rec.num_channels) == ("r1", 22050, 11025, 2)
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BadAudioError) as e:
        probe_recording(junk, "r2")
    assert e.value.reason == "unreadable" and "r2" in str(e.value) and "junk.flac" in str(e.value)
    with pytest.raises(BadAudioError) as e:
        probe_recording(tmp_path / "gone.wav", "r3")
    assert e.value.reason == "missing_file"


def test_probe_kaldi_pipe_command(tmp_path, h):
    path = h.write_audio(tmp_path / "a.wav", 8000, 0.5)
    rec = probe_recording(f"cat {path} |", "piped")
    assert rec.sources[0].type == "command" and rec.sampling_rate == 8000
    x = load_cut_audio(rec.to_cut(), 16000)
    np.testing.assert_allclose(x, read_audio(path, 16000), atol=1e-6)


# --- lhotse cuts --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_lhotse_recording_from_file_and_resample(tmp_path, h, ext):
    from lhotse import Recording

    path = h.write_audio(tmp_path / f"a.{ext}", 22050, 0.5, channels=2)
    rec = Recording.from_file(path)
    assert rec.sampling_rate == 22050 and rec.num_channels == 2
    cut = rec.to_cut().resample(16000)
    x = load_cut_audio(cut)
    assert x.shape == (cut.num_samples,) and cut.num_samples == 8000
    assert abs(h.peak_frequency(x, 16000) - 440) < 10
    # the same samples as reading the file directly
    np.testing.assert_allclose(x, read_audio(path), atol=1e-4)


def test_fsdd_8k_cuts_resample_without_torchaudio(shared_data):
    import soundfile as sf
    from lhotse import Recording

    files = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[:5]
    assert files
    for f in files:
        frames = sf.info(str(f)).frames
        assert sf.info(str(f)).samplerate == 8000
        x = read_audio(f)
        assert x.dtype == np.float32 and x.shape == (2 * frames,)
        assert np.isfinite(x).all() and np.abs(x).max() > 0
        cut = Recording.from_file(f).to_cut()
        resampled = cut.resample(16000)
        y = load_cut_audio(resampled)  # the speechfm path for lhotse's cut.resample()
        assert y.shape == (resampled.num_samples,) == (2 * frames,)
        np.testing.assert_allclose(y, x, atol=1e-6)
        # a sub-segment of the cut, resampled twice over, still lines up with the file
        seg = cut.truncate(offset=0.05, duration=0.1).resample(22050).resample(16000)
        z = load_cut_audio(seg)
        assert z.shape == (1600,)
        np.testing.assert_allclose(z[100:-100], x[800:2400][100:-100], atol=0.02)


def test_load_cut_audio_of_padded_mixed_cut(tmp_path, h):
    from lhotse import Recording

    cut = Recording.from_file(h.write_audio(tmp_path / "a.wav", 8000, 0.5)).to_cut()
    padded = cut.pad(duration=1.0)
    x = load_cut_audio(padded, 16000)
    assert x.shape == (16000,)
    assert np.abs(x[:7900]).max() > 0.2 and np.abs(x[8200:]).max() < 1e-3


def test_cut_errors_name_utterance_and_file(tmp_path, h):
    from lhotse import Recording

    path = h.write_audio(tmp_path / "gone.wav", 16000, 0.5)
    cut = Recording.from_file(path, recording_id="utt-42").to_cut()
    path.unlink()
    with pytest.raises(BadAudioError) as e:
        load_cut_audio(cut)
    assert e.value.reason == "missing_file"
    assert "utt-42" in str(e.value) and "gone.wav" in str(e.value)

    x = h.tone(16000, 0.2).astype(np.float32)
    x[5] = np.nan
    nan_path = h.write_audio(tmp_path / "nan.wav", samples=x, subtype="FLOAT")
    nan_cut = Recording.from_file(nan_path, recording_id="utt-nan").to_cut()
    with pytest.raises(BadAudioError) as e:
        load_cut_audio(nan_cut)
    assert e.value.reason == "non_finite" and "utt-nan" in str(e.value)
    samples, sr = load_cut_samples(nan_cut)  # raw decoding does not judge
    assert sr == 16000 and np.isnan(samples).sum() == 1
    long_cut = Recording.from_file(h.write_audio(tmp_path / "long.wav", 16000, 1.0)).to_cut()
    with pytest.raises(BadAudioError) as e:
        load_cut_audio(long_cut, max_duration=0.1)
    assert e.value.reason == "too_long" and "long.wav" in str(e.value)
