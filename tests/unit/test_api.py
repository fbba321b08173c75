"""speechfm.api: load a checkpoint directory, transcribe files/arrays at any rate, embed.

The model under test is a ctc_tiny trained here for a second or two to memorise three
synthetic "utterances": every letter is a tone of its own frequency and the word gap a
low hum, so the texts that come back are meaningful and must survive resampling and
lossy coding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SR = 16000
TEXTS = ("ab ca", "cab", "bc a")
FREQS = {"a": 450.0, "b": 900.0, "c": 1600.0, " ": 220.0}
LEAD_S, SYMBOL_S, GAP_S = 0.10, 0.16, 0.04


def synth(
    text: str, sr: int = SR, *, gain: float = 0.5, lead_s: float = LEAD_S, seed: int = 0
) -> np.ndarray:
    """float32 (S,): ``lead_s`` of quiet, then per symbol a windowed tone and a short gap.

    A faint noise floor everywhere: digital silence (log of 0) would make the features
    of the gaps hinge on the 16-bit quantisation noise of whatever file format comes back.
    """
    parts = [np.zeros(int(lead_s * sr))]
    n = int(SYMBOL_S * sr)
    t = np.arange(n) / sr
    for ch in text:
        parts.append(gain * np.sin(2 * np.pi * FREQS[ch] * t) * np.hanning(n))
        parts.append(np.zeros(int(GAP_S * sr)))
    parts.append(np.zeros(int(0.1 * sr)))
    x = np.concatenate(parts)
    x += 3e-3 * np.random.default_rng(seed).standard_normal(x.shape[0])
    return x.astype(np.float32)


def symbol_span(text: str, index: int, lead_s: float = LEAD_S) -> tuple[float, float]:
    """(start, end) seconds of symbol ``index`` of ``text`` as :func:`synth` lays it out."""
    start = lead_s + index * (SYMBOL_S + GAP_S)
    return start, start + SYMBOL_S


def train_ctc_model(*, steps: int = 150):
    """(model, config, tokenizer): a ctc_tiny trained on the synthetic texts."""
    from speechfm.config import override_dataclass
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.text.char import CharTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = CharTokenizer.train(TEXTS)
        cfg = override_dataclass(ctc_tiny(tok.vocab_size), {"encoder": {
            # Mel filters up to 3.8 kHz: the band every tested rate (8 kHz too) carries.
            "fbank": {"num_mel_bins": 40, "high_freq": 3800.0},
            "conformer": {"input_dim": 40},
            "specaugment": False,
        }})
        torch.manual_seed(0)
        model = create_ctc_model(cfg)
        # Each text at a few gains and offsets, so the model keys on the tones themselves.
        # Each text at a few gains, offsets and noise draws (none of them the tests' seed 0),
        # so the model keys on the tones rather than on one waveform.
        variants = [
            (text, gain, lead, seed)
            for seed, text in enumerate(TEXTS, start=1)
            for gain, lead in ((0.5, 0.1), (0.15, 0.22))
        ]
        waves = [
            torch.from_numpy(synth(t, gain=g, lead_s=ld, seed=sd + int(10 * ld)))
            for t, g, ld, sd in variants
        ]
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
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            loss, _, _ = model(train_batch)  # the training contract: summed loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval(), cfg, tok
    finally:
        torch.set_num_threads(threads)


def build_model_dir(root: Path, *, steps: int = 150) -> Path:
    """Train a ctc_tiny on the synthetic texts and save it as a training run does: a
    checkpoint ``root/final`` (a model directory with training state beside it) that
    ``root/latest`` names."""
    from speechfm.models.io import PARTS, model_dir_config
    from speechfm.train.checkpoint import save_checkpoint

    model, cfg, tok = train_ctc_model(steps=steps)
    parts = {"tokenizer": tok}

    def write_parts(directory: Path) -> None:
        for name, value in parts.items():
            PARTS[name].save(value, directory / PARTS[name].file)

    return save_checkpoint(root, "final", model=model, config=model_dir_config(cfg, parts=parts),
                           write_files=write_parts)


# ------------------------------------------------------------------------------ fixtures

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("api_model"))


@pytest.fixture(scope="module")
def model(model_dir):
    import speechfm

    return speechfm.load(model_dir)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> dict[tuple[str, int], list[Path]]:
    """The three texts written as wav/flac/mp3/ogg at 8, 16 and 44.1 kHz."""
    root = tmp_path_factory.mktemp("api_audio")
    files = {}
    for sr in (8000, 16000, 44100):
        for fmt in ("wav", "flac", "mp3", "ogg"):
            paths = []
            for i, text in enumerate(TEXTS):
                path = root / f"utt{i}_{sr}.{fmt}"
                sf.write(path, synth(text, sr), sr)
                paths.append(path)
            files[fmt, sr] = paths
    return files


# ------------------------------------------------------------------------------ loading


def test_load_rebuilds_model_tokenizer_and_features(model, model_dir):
    import speechfm
    from speechfm.api import SpeechModel

    assert isinstance(model, SpeechModel) and model.family == "ctc"
    assert model.path == model_dir
    assert model.sample_rate == 16000 and model.frame_shift_s == pytest.approx(0.04)
    assert model.tokenizer.kind == "char" and model.tokenizer.vocab_size == 6
    assert not model.module.training and model.can_transcribe
    assert model.config["format_version"] == 2 and model.config["family"] == "ctc"
    assert model.config["parts"] == {"tokenizer": "tokenizer"}
    # CMVN statistics travel in the weights: they are not the identity they start as.
    assert model.module.encoder.normalization == "global"
    assert float(model.module.encoder.cmvn.mean.abs().max()) > 1.0
    # A training run's root works too: its `latest` file names the checkpoint.
    again = speechfm.load(model_dir.parent)
    assert again.path == model_dir
    assert again.transcribe(synth(TEXTS[1]), sample_rate=SR) == TEXTS[1]


def test_package_import_stays_light_and_load_is_lazy():
    code = (
        "import sys, speechfm; light = 'torch' not in sys.modules; "
        "from speechfm.api import load; print(light, speechfm.load is load)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


# ------------------------------------------------------------------------------ transcribe


@pytest.mark.parametrize("sr", [8000, 16000, 44100])
def test_transcribe_files_any_format_and_rate(model, audio_files, sr):
    for fmt in ("wav", "flac", "mp3", "ogg"):
        paths = audio_files[fmt, sr]
        assert model.transcribe(paths[0]) == TEXTS[0], (fmt, sr)
        assert model.transcribe(str(paths[2])) == TEXTS[2], (fmt, sr)
        assert model.transcribe(paths) == list(TEXTS), (fmt, sr)


def test_transcribe_arrays_and_tensors(model):
    text = TEXTS[0]
    x16 = synth(text, 16000)
    x22 = synth(text, 22050)
    assert model.transcribe(x16, sample_rate=16000) == text
    assert model.transcribe(x22, sample_rate=22050) == text
    assert model.transcribe(torch.from_numpy(x22), sample_rate=22050) == text
    assert model.transcribe((x22, 22050)) == text
    assert model.transcribe(torch.from_numpy(x16).double(), sample_rate=16000) == text
    # Channels: (C, S) and (S, C) are both mixed down.
    stereo = np.stack([x22, x22])
    assert model.transcribe(stereo, sample_rate=22050) == text
    assert model.transcribe(torch.from_numpy(stereo.T.copy()), sample_rate=22050) == text
    # PCM integers are scaled from full scale.
    pcm = np.round(x16 * 32767).astype(np.int16)
    assert model.transcribe(pcm, sample_rate=16000) == text


def test_batched_list_keeps_order_and_matches_one_by_one(model, audio_files):
    items = [
        audio_files["flac", 44100][1],
        (synth(TEXTS[0], 8000), 8000),
        torch.from_numpy(synth(TEXTS[2], 16000)),
        audio_files["wav", 8000][0],
        synth("ca", 16000),
    ]
    expected = [TEXTS[1], TEXTS[0], TEXTS[2], TEXTS[0]]
    batched = model.transcribe(items, sample_rate=16000, batch_size=2)
    single = [model.transcribe(x, sample_rate=16000) for x in items]
    assert batched == single
    assert batched[:4] == expected
    full = model.transcribe(items, sample_rate=16000, batch_size=8, timestamps=True)
    one = [model.transcribe(x, sample_rate=16000, timestamps=True) for x in items]
    for a, b in zip(full, one, strict=True):
        assert a.text == b.text and a.token_times == b.token_times
        assert a.token_confidences == pytest.approx(b.token_confidences, abs=1e-4)
    assert model.transcribe([]) == []


def test_beam_search_agrees_with_greedy(model, audio_files):
    paths = audio_files["wav", 16000]
    assert model.transcribe(paths, method="beam", beam=4) == list(TEXTS)
    best = model.transcribe(paths[0], method="beam", beam=2, confidences=True)
    assert best.text == TEXTS[0]
    assert all(0.0 <= c <= 1.0 for c in best.token_confidences)
    with pytest.raises(ValueError, match="method"):
        model.transcribe(paths[0], method="viterbi")


def test_timestamps_follow_the_audio(model):
    from speechfm.api import Transcript

    for text in TEXTS:
        x = synth(text, 44100)
        duration = x.shape[0] / 44100
        tr = model.transcribe(x, sample_rate=44100, timestamps=True)
        assert isinstance(tr, Transcript) and tr.text == text
        assert [w.word for w in tr.words] == text.split()
        assert tr.tokens == [("▁" if c == " " else c) for c in text]
        prev_end = 0.0
        for w in tr.words:
            assert prev_end <= w.start < w.end <= duration
            assert 0.0 <= w.confidence <= 1.0
            prev_end = w.end
        starts = [s for s, _ in tr.token_times]
        assert starts == sorted(starts)
        assert all(0.0 <= s < e <= duration for s, e in tr.token_times)
        assert all(0.0 <= c <= 1.0 for c in tr.token_confidences)
        # Each word lies where its tones are (CTC spikes land inside or near them).
        first = 0
        for w in tr.words:
            last = first + len(w.word) - 1
            assert abs(w.start - symbol_span(text, first)[0]) < 0.12, (text, w)
            assert abs(w.end - symbol_span(text, last)[1]) < 0.12, (text, w)
            first = last + 2
        assert json.loads(json.dumps(tr.to_dict()))["words"][0]["word"] == text.split()[0]


def test_confidences_alone_return_transcripts(model):
    trs = model.transcribe([synth(t) for t in TEXTS], sample_rate=SR, confidences=True)
    assert [t.text for t in trs] == list(TEXTS)
    assert all(0.5 < c <= 1.0 for t in trs for c in t.token_confidences)


def test_very_short_audio_gives_empty_text(model):
    assert model.transcribe(np.zeros(80, np.float32), sample_rate=SR) == ""
    out = model.transcribe([np.zeros(80, np.float32), synth(TEXTS[1])], sample_rate=SR)
    assert out == ["", TEXTS[1]]


def test_other_dtypes_give_the_same_text(model_dir):
    import speechfm

    m64 = speechfm.load(model_dir, dtype="float64")
    assert m64.dtype == torch.float64
    assert m64.transcribe([synth(t) for t in TEXTS], sample_rate=SR) == list(TEXTS)
    mbf = speechfm.load(model_dir, dtype=torch.bfloat16)
    assert mbf.transcribe(synth(TEXTS[1]), sample_rate=SR) == TEXTS[1]


# ------------------------------------------------------------------------------ embed


def test_embed_returns_layer_outputs(model, audio_files):
    x = synth(TEXTS[0])
    frames = int(model.module.encoder.output_lengths(torch.tensor([round(x.shape[0] / 160)]))[0])
    layers = model.embed(x, sample_rate=SR, layers=(0, 1, -1))
    assert len(layers) == 3
    assert all(t.shape == (frames, 32) and t.dtype == torch.float32 for t in layers)
    assert not torch.equal(layers[0], layers[2])
    # Ordinary tensors: usable as inputs to something trained with autograd.
    probe = torch.zeros(32, requires_grad=True)
    (layers[2] @ probe).sum().backward()
    assert probe.grad is not None and not layers[2].is_inference()
    # -1 is the last block (2 in ctc_tiny), before any final norm: what the head sees.
    by_name = model.embed(x, sample_rate=SR, layers=(2, -1), as_dict=True)
    assert set(by_name) == {2, -1} and torch.equal(by_name[2], by_name[-1])
    assert torch.allclose(by_name[-1], layers[2], atol=1e-6)
    with torch.no_grad():
        log_probs = torch.log_softmax(model.module.head(by_name[-1][None]), dim=-1)
    assert (
        model.tokenizer.decode(
            [int(t) for t in torch.unique_consecutive(log_probs[0].argmax(-1)) if t != 0]
        )
        == TEXTS[0]
    )
    # A list: one entry per input, in order, each of its own length; batching changes nothing.
    many = model.embed([audio_files["wav", 8000][1], (x, SR)], layers=[-1], batch_size=2)
    assert len(many) == 2 and torch.allclose(many[1][0], layers[2], atol=1e-4)
    assert many[0][0].shape[0] < frames
    with pytest.raises(ValueError, match="layer 5 out of range"):
        model.embed(x, sample_rate=SR, layers=(5,))


# ------------------------------------------------------------------------------ formats


def test_format_1_directory_is_upgraded_on_load(model, model_dir, tmp_path):
    """A directory written before the shared front end (fbank/CMVN/SpecAugment beside the
    Conformer in the model config, ``cmvn.*``/``encoder.*`` weights) loads as it did."""
    from safetensors.torch import load_file, save_file

    import speechfm
    from speechfm.errors import DataError

    d = _copy_model(model_dir, tmp_path / "v1")
    config = json.loads((d / "config.json").read_text())
    enc = config["model"]["encoder"]
    old_model = {
        "family": "ctc",
        "encoder": enc["conformer"],
        "vocab_size": config["model"]["vocab_size"],
        "fbank": enc["fbank"],
        "use_cmvn": True,
        "head_dropout": config["model"]["head_dropout"],
        "specaugment": enc["specaugment"],
        **{f"specaug_{k}": v for k, v in enc["specaug"].items()},
    }
    (d / "config.json").write_text(json.dumps({
        "family": "ctc", "model": old_model, "tokenizer": "tokenizer",
        "frame_shift_s": config["frame_shift_s"], "speechfm_version": "0.1.0"}))
    state = load_file(str(d / "model.safetensors"))
    old_state = {}
    for key, value in state.items():
        if key.startswith("encoder.cmvn."):
            key = key[len("encoder."):]
        elif key.startswith("encoder.conformer."):
            key = "encoder." + key[len("encoder.conformer."):]
        old_state[key] = value
    assert "cmvn.mean" in old_state and "encoder.cmvn.mean" not in old_state
    save_file(old_state, str(d / "model.safetensors"))

    old = speechfm.load(d)
    assert old.family == "ctc" and old.config["format_version"] == 1
    for key, value in model.module.state_dict().items():
        assert torch.equal(old.module.state_dict()[key], value), key
    assert old.transcribe([synth(t) for t in TEXTS], sample_rate=SR) == list(TEXTS)
    # use_cmvn false becomes normalization "none" (and then the cmvn weights are extra).
    old_model["use_cmvn"] = False
    (d / "config.json").write_text(json.dumps({"family": "ctc", "model": old_model}))
    with pytest.raises(DataError, match=r"unexpected keys: encoder\.cmvn"):
        speechfm.load(d)


def test_encoder_only_directory_embeds_as_the_asr_model_does(model, tmp_path):
    """(tests/unit/models/test_model_dir.py covers encoder-only loading in general.)"""
    import speechfm
    from speechfm.api import SpeechModel
    from speechfm.errors import SpeechfmError
    from speechfm.models.ctc import CtcModelConfig
    from speechfm.models.encoder import EncoderModel, EncoderModelConfig
    from speechfm.models.io import save_model_dir

    # The CTC model's front end alone: its encoder.* weights are the encoder model's.
    cfg = EncoderModelConfig(encoder=CtcModelConfig.from_dict(model.config["model"]).encoder)
    state = {k: v for k, v in model.module.state_dict().items() if k.startswith("encoder.")}
    d = save_model_dir(tmp_path / "encoder", state, cfg)
    enc = speechfm.load(d)
    assert isinstance(enc.module, EncoderModel) and enc.family == "encoder"
    assert enc.tokenizer is None and not enc.can_transcribe
    x = synth(TEXTS[0])
    ours = enc.embed(x, sample_rate=SR, layers=(1, -1))
    theirs = model.embed(x, sample_rate=SR, layers=(1, -1))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(SpeechfmError, match="no ASR head"):
        enc.transcribe(x, sample_rate=SR)
    # A module with a search but no tokenizer cannot transcribe either.
    bare = SpeechModel(model.module, None, family="ctc")
    with pytest.raises(SpeechfmError, match="no ASR head.*no tokenizer"):
        bare.transcribe(x, sample_rate=SR)
    # SpeechModel around a module and tokenizer: what load() builds.
    again = SpeechModel(model.module, model.tokenizer, family="ctc", path=model.path)
    assert again.transcribe(x, sample_rate=SR) == TEXTS[0]


# ------------------------------------------------------------------------------ errors


def _copy_model(model_dir: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(model_dir, dest))


def test_load_errors_name_what_is_missing(model_dir, tmp_path):
    import speechfm
    from speechfm.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        speechfm.load(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"config\.json is missing"):
        speechfm.load(tmp_path)

    d = _copy_model(model_dir, tmp_path / "no_weights")
    (d / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"model\.safetensors is missing"):
        speechfm.load(d)

    d = _copy_model(model_dir, tmp_path / "no_tok")
    import shutil

    shutil.rmtree(d / "tokenizer")
    with pytest.raises(DataError, match=r"lists a tokenizer \(tokenizer\) that is missing"):
        speechfm.load(d)

    d = _copy_model(model_dir, tmp_path / "family")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "family": "wavenet"}))
    with pytest.raises(DataError, match=r"unknown model family 'wavenet'.*ctc"):
        speechfm.load(d)

    (d / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        speechfm.load(d)

    (d / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "x": 1}}))
    with pytest.raises(DataError, match=r"invalid ctc model config.*model\.x"):
        speechfm.load(d)


def test_load_lists_mismatched_weights(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    import speechfm
    from speechfm.errors import DataError

    d = _copy_model(model_dir, tmp_path / "weights")
    state = load_file(str(d / "model.safetensors"))
    state.pop("head.weight")
    state["extra.bias"] = torch.zeros(3)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(DataError) as info:
        speechfm.load(d)
    msg = str(info.value)
    assert "missing keys: head.weight" in msg and "unexpected keys: extra.bias" in msg

    # A config that describes another size than the weights: shapes are named.
    config = json.loads((model_dir / "config.json").read_text())
    config["model"]["encoder"]["conformer"]["ffn_dim"] = 48
    d = _copy_model(model_dir, tmp_path / "shapes")
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"shape mismatches.*\(64, 32\) vs \(48, 32\)"):
        speechfm.load(d)

    (d / "model.safetensors").write_bytes(b"garbage")
    (d / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(DataError, match="cannot read the weights"):
        speechfm.load(d)


def test_transcribe_errors_name_the_input(model, tmp_path):
    from speechfm.errors import AudioError

    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match=r"missing\.wav: audio file does not exist"):
        model.transcribe(missing)
    fake = tmp_path / "notes.mp3"
    fake.write_text("these are not audio samples\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.mp3: cannot decode audio"):
        model.transcribe(fake)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav.*no samples"):
        model.transcribe([synth(TEXTS[0]), empty], sample_rate=SR)
    with pytest.raises(AudioError, match=r"#0 \(numpy array.*no sample rate"):
        model.transcribe(synth(TEXTS[0]))
    with pytest.raises(AudioError, match=r"#1 \(torch tensor.*empty"):
        model.transcribe([synth(TEXTS[0]), torch.zeros(0)], sample_rate=SR)
    with pytest.raises(AudioError, match=r"#0 .*NaN"):
        model.transcribe(np.full(1600, np.nan, np.float32), sample_rate=SR)
    with pytest.raises(AudioError, match="positive integer"):
        model.transcribe(synth(TEXTS[0]), sample_rate=-5)
    with pytest.raises(AudioError, match="got int"):
        model.transcribe(12345)
    with pytest.raises(AudioError, match=r"#1: expected a file path"):
        model.transcribe([synth(TEXTS[0]), 3.5], sample_rate=SR)
