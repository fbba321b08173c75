"""speechfm.api on audio classifiers (the "ast" family): classify, embed, and the errors.

The models are tiny random spectrogram transformers (``ast_mini``: 32 mel bins, 40
frames) saved with :func:`speechfm.models.io.save_model_dir`; the audio is synthetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechfm
from speechfm.errors import SpeechfmError
from speechfm.models.ast import ast_mini, create_ast_model
from speechfm.models.io import save_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
LABELS = ["cat", "dog", "bird", "frog", "cow", "owl", "bee"]


def _save(path, num_classes, labels=None, seed=0):
    torch.manual_seed(seed)
    config = ast_mini(num_classes=num_classes)
    model = create_ast_model(config).eval()
    with torch.no_grad():  # a head that does not give near-uniform scores
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    parts = {"labels": labels} if labels is not None else None
    save_model_dir(path, model, config, parts=parts)
    return model


def _audio(seconds, seed=0, rate=SR):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("ast") / "model"
    module = _save(path, len(LABELS), LABELS)
    return speechfm.load(path), module


def _reference_probs(module, wav):
    feats, lens = module.encoder.fbank(torch.from_numpy(wav)[None])
    with torch.no_grad():
        return torch.softmax(module.classify(feats, lens)[0], -1)


def test_classify_top_k(classifier):
    model, module = classifier
    wav = _audio(0.3)
    out = model.classify(wav, sample_rate=SR)
    assert len(out) == 5
    assert all(isinstance(label, str) and isinstance(score, float) for label, score in out)
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    assert 0.0 < sum(scores) <= 1.0 + 1e-6
    ref = _reference_probs(module, wav)
    order = torch.argsort(ref, descending=True).tolist()
    assert [label for label, _ in out] == [LABELS[i] for i in order[:5]]
    np.testing.assert_allclose(scores, ref[order[:5]].numpy(), atol=1e-6)
    everything = model.classify(wav, top_k=None, sample_rate=SR)
    assert sorted(label for label, _ in everything) == sorted(LABELS)
    assert abs(sum(s for _, s in everything) - 1.0) < 1e-5
    assert model.classify(wav, top_k=100, sample_rate=SR) == everything
    assert model.classify(wav, 1, sample_rate=SR) == everything[:1]
    assert model.classify((wav, SR), top_k=3) == everything[:3]
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="top_k"):
            model.classify(wav, top_k=bad, sample_rate=SR)


def test_classify_list_any_length_any_rate(classifier):
    model, _ = classifier
    # 0.2 s (padded), 0.4 s (exactly target_frames=40 frames is 0.415 s), 2 s (cut), 8 kHz
    waves = [_audio(0.2, 1), _audio(0.4, 2), _audio(2.0, 3)]
    batched = model.classify(waves, top_k=3, sample_rate=SR, batch_size=2)
    assert len(batched) == 3
    for wav, got in zip(waves, batched, strict=True):
        alone = model.classify(wav, top_k=3, sample_rate=SR)
        assert [label for label, _ in got] == [label for label, _ in alone]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in alone], atol=1e-6)
    # longer audio is cut to target_frames: only the first 40 frames count
    long = _audio(2.0, 3)
    head = long[: 160 * 39 + 400]  # exactly 40 frames
    np.testing.assert_allclose([s for _, s in model.classify(long, top_k=None, sample_rate=SR)],
                               [s for _, s in model.classify(head, top_k=None, sample_rate=SR)],
                               atol=1e-6)
    low = model.classify(_audio(0.5, 4, rate=8000), sample_rate=8000)  # resampled
    assert len(low) == 5


def test_classify_without_labels(tmp_path):
    _save(tmp_path / "m", 3)
    model = speechfm.load(tmp_path / "m")
    assert model.labels is None
    out = model.classify(_audio(0.3), sample_rate=SR)
    assert sorted(label for label, _ in out) == ["0", "1", "2"]


def test_no_head_and_no_asr(tmp_path, classifier):
    _save(tmp_path / "backbone", 0)
    backbone = speechfm.load(tmp_path / "backbone")
    assert not backbone.can_classify
    with pytest.raises(SpeechfmError, match="no classifier head"):
        backbone.classify(_audio(0.3), sample_rate=SR)
    model, _ = classifier
    assert model.can_classify and not model.can_transcribe
    with pytest.raises(SpeechfmError, match="no ASR head.*classify"):
        model.transcribe(_audio(0.3), sample_rate=SR)
    with pytest.raises(SpeechfmError, match="no ASR head"):
        model.stream()


def test_labels_mismatch(tmp_path):
    _save(tmp_path / "m", 3, ["a", "b"])
    with pytest.raises(SpeechfmError, match="2 labels.*3 classes"):
        speechfm.load(tmp_path / "m").classify(_audio(0.3), sample_rate=SR)


def test_embed_shapes(classifier):
    model, module = classifier
    enc = module.encoder
    p, c = enc.num_patches, enc.dim
    wav = _audio(0.3)
    (last,) = model.embed(wav, sample_rate=SR)
    assert last.shape == (p, c) and last.dtype == torch.float32
    layers = model.embed([wav, _audio(1.0, 1)], sample_rate=SR, layers=(0, 1, -1))
    assert len(layers) == 2 and all(len(row) == 3 for row in layers)
    assert all(t.shape == (p, c) for row in layers for t in row)
    as_dict = model.embed(wav, sample_rate=SR, layers=(0, -1), as_dict=True)
    assert set(as_dict) == {0, -1}
    pooled = model.embed(wav, sample_rate=SR, pooled=True)
    assert pooled.shape == (c,)
    feats, lens = enc.fbank(torch.from_numpy(wav)[None])
    with torch.no_grad():
        torch.testing.assert_close(pooled, module.embedding(feats, lens)[0], atol=1e-6, rtol=0)
    many = model.embed([wav, _audio(1.0, 1)], sample_rate=SR, pooled=True)
    assert len(many) == 2 and all(e.shape == (c,) for e in many)
    torch.testing.assert_close(many[0], pooled, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="pooled"):
        model.embed(wav, sample_rate=SR, pooled=True, layers=(0,))
