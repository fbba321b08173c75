"""speechfm.api with transducer checkpoints: transcribe, and live streaming in pieces.

The model is a transducer_tiny trained here for a few seconds on the tone "speech" of
tests/unit/test_api.py (each letter its own tone), with dynamic chunk training and causal
convolutions, so that it decodes both offline and chunk by chunk.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "speechfm_test_api_synth", Path(__file__).with_name("test_api.py"))
_api_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_api_test)
synth, TEXTS, SR = _api_test.synth, _api_test.TEXTS, _api_test.SR
CHUNK = 4  # encoder frames per streaming chunk (160 ms)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build_transducer_dir(root: Path, *, steps: int = 250) -> Path:
    """Train the transducer and export it as a model directory (``root/final``)."""
    from speechfm.config import override_dataclass
    from speechfm.losses.transducer import TransducerLossConfig
    from speechfm.models.io import save_model_dir
    from speechfm.models.transducer import create_transducer_model, transducer_tiny
    from speechfm.text.char import CharTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = CharTokenizer.train(TEXTS)
        cfg = override_dataclass(transducer_tiny(tok.vocab_size), {"encoder": {
            "fbank": {"num_mel_bins": 40, "high_freq": 3800.0},
            "conformer": {"input_dim": 40, "conv_causal": True, "dynamic_chunk": True,
                          "dynamic_chunk_max": 8},
            "specaugment": False,
        }})
        torch.manual_seed(0)
        model = create_transducer_model(cfg)
        variants = [(text, gain, lead, seed) for seed, text in enumerate(TEXTS, start=1)
                    for gain, lead in ((0.5, 0.1), (0.15, 0.22))]
        waves = [torch.from_numpy(synth(t, gain=g, lead_s=ld, seed=sd + int(10 * ld)))
                 for t, g, ld, sd in variants]
        lens = torch.tensor([w.shape[0] for w in waves])
        batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        feats, feat_lens = model.encoder.feature_extractor()(batch, lens)
        frames = torch.cat([feats[i, : feat_lens[i]] for i in range(len(waves))])
        model.encoder.set_cmvn(frames.mean(0).double(), frames.var(0).double())
        train_batch = {
            "features": feats,
            "x_lens": feat_lens,
            "targets": [tok.encode(v[0]) for v in variants],
            "cut_ids": [f"{t}-{g}-{ld}" for t, g, ld, _ in variants],
        }
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        loss_config = TransducerLossConfig(warm_steps=steps // 4)
        model.train()
        for step in range(steps):
            # the training contract: (summed loss, token count, stats)
            loss, _, _ = model(train_batch, step=step, loss_config=loss_config)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return save_model_dir(root / "final", model, cfg, parts={"tokenizer": tok})
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import speechfm

    return speechfm.load(build_transducer_dir(tmp_path_factory.mktemp("transducer_api")))


def _offline_chunked(model, audio: np.ndarray) -> str:
    """Whole-utterance decoding with the stream's chunked attention (kaldi-native-fbank)."""
    from speechfm.decode.transducer import greedy_search
    from speechfm.features.fbank import compute_fbank

    feats = torch.from_numpy(compute_fbank(audio, SR, model.module.encoder.fbank.config))[None]
    with torch.no_grad():
        enc, lens = model.module.encode(feats, torch.tensor([feats.shape[1]]), chunk_size=CHUNK)
    return model.tokenizer.decode(greedy_search(model.module, enc, lens)[0].tokens)


def test_transcribe_a_transducer_with_timestamps(model, tmp_path):
    import soundfile as sf

    assert model.family == "transducer" and model.can_transcribe
    assert model.config["parts"] == {"tokenizer": "tokenizer"}
    audio = synth(TEXTS[0])
    sf.write(tmp_path / "a.wav", audio, SR)
    assert model.transcribe(str(tmp_path / "a.wav")) == TEXTS[0]
    assert model.transcribe([audio, synth(TEXTS[1])], sample_rate=SR, method="beam") == list(TEXTS[:2])
    tr = model.transcribe(audio, sample_rate=SR, timestamps=True)
    assert tr.text == TEXTS[0] and [w.word for w in tr.words] == TEXTS[0].split()
    assert len(tr.token_confidences) == len(tr.tokens) > 0
    assert all(0.0 < c <= 1.0 for c in tr.token_confidences)
    starts = [s for s, _ in tr.token_times]
    assert starts == sorted(starts) and tr.token_times[-1][1] <= audio.shape[0] / SR


@pytest.mark.parametrize("text", TEXTS)
def test_stream_in_random_pieces_equals_chunked_offline_decoding(model, text):
    audio = synth(text, seed=5)
    stream = model.stream(chunk_size=CHUNK)
    rng = np.random.default_rng(len(text))
    pos, partials, frames_seen = 0, [], []
    while pos < audio.shape[0]:
        n = int(rng.integers(0, 2400))  # 0-150 ms, empty pieces included
        partials.append(stream.accept_waveform(audio[pos : pos + n], SR))
        frames_seen.append(stream.num_frames)
        pos += n
    # Results arrive while audio does: most encoder frames are decoded before the end.
    total = stream.num_frames
    final = stream.finalize()
    assert frames_seen[len(frames_seen) // 2] > 0 and total >= stream.num_frames - CHUNK * 2
    assert final == _offline_chunked(model, audio) == text
    assert all(final.startswith(p.strip()) for p in partials if p.strip())


def test_stream_decodes_each_chunk_as_soon_as_its_audio_is_in(model):
    """The audio stream holds feature frames back until they complete a chunk: nothing is
    decoded later, or differently, than with every frame passed on at once."""
    import kaldi_native_fbank as knf

    audio = synth(TEXTS[1], seed=6)
    stream = model.stream(chunk_size=CHUNK)
    fbank = knf.OnlineFbank(model.module.encoder.fbank.config.to_knf())
    eager = model.module.stream(chunk_size=CHUNK)
    rng = np.random.default_rng(3)
    pos, used = 0, 0
    while pos < audio.shape[0]:
        # 10 ms pieces (a frame each) first, so that some piece exactly completes a chunk
        size = 160 if pos < audio.shape[0] // 2 else int(rng.integers(0, 2400))
        piece = audio[pos : pos + size]
        text = stream.accept_waveform(piece, SR)
        fbank.accept_waveform(float(SR), piece)
        ready = fbank.num_frames_ready
        frames = [fbank.get_frame(i) for i in range(used, ready)]
        eager.accept_features(torch.from_numpy(np.array(frames, np.float32).reshape(-1, 40)))
        used, pos = ready, pos + piece.shape[0]
        assert stream.num_frames == eager.num_frames
        assert text == model.tokenizer.decode(eager.result().tokens)


def test_stream_resamples_pcm_pieces_and_gives_timestamps(model):
    import soxr

    audio = synth(TEXTS[2], seed=7)
    pcm8k = (soxr.resample(audio, SR, 8000) * 32767).astype(np.int16)
    stream = model.stream(chunk_size=CHUNK)
    for start in range(0, pcm8k.shape[0], 800):
        stream.accept_waveform(pcm8k[start : start + 800], 8000)
    tr = stream.finalize(timestamps=True)
    assert tr.text == TEXTS[2]
    assert abs(stream.num_samples - audio.shape[0]) < 200  # 8 kHz -> 16 kHz, same length
    assert [w.word for w in tr.words] == TEXTS[2].split()


def test_stream_errors(model, tmp_path):
    from speechfm.errors import AudioError, SpeechfmError

    stream = model.stream()
    with pytest.raises(AudioError, match="sample_rate"):
        stream.accept_waveform(np.zeros(100, np.float32))
    stream.accept_waveform(np.zeros(100, np.float32), SR)
    with pytest.raises(AudioError, match="8000 Hz"):
        stream.accept_waveform(np.zeros(100, np.float32), 8000)
    with pytest.raises(AudioError, match="NaN"):
        stream.accept_waveform(np.full(100, np.nan, np.float32))
    stream.finalize()
    with pytest.raises(AudioError, match="finalized"):
        stream.accept_waveform(np.zeros(100, np.float32), SR)
    with pytest.raises(ValueError, match="method"):
        model.stream(method="viterbi")

    import speechfm

    ctc = speechfm.load(_api_test.build_model_dir(tmp_path, steps=1))
    with pytest.raises(SpeechfmError, match="transducer"):
        ctc.stream()
