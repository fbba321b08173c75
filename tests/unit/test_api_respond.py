"""speechfm.api on speech LMs: a local transformers causal LM plugged in with
``speech_lm_from_pretrained_lm`` (its encoder from another speechfm model directory),
trained two steps, saved as a speechfm model directory and served by
``speechfm.load(dir).respond`` with the same answers as the model in memory.

The LM is a random 2 x 32 ``LlamaForCausalLM`` with a byte-level BPE from
``train_lm_tokenizer``, both written with ``save_pretrained``; the encoder comes from a
tiny random classifier directory; the audio is synthetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechfm
from speechfm.errors import SpeechfmError
from speechfm.models.classifier import classifier_tiny, create_classifier_model
from speechfm.models.io import save_model_dir
from speechfm.models.speech_lm import (
    decode_response,
    prompt_segments,
    speech_lm_from_pretrained_lm,
    train_lm_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
BEFORE, AFTER = "User: ", "\nAssistant:"
CORPUS = ["User: what is said here?\nAssistant: the cat sat on the mat.",
          "User: Hello, World!\nAssistant: Hi! How are you?"] * 10


def _audio(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 150 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def plugged(tmp_path_factory):
    """(speechfm.load of the saved model, the model in memory, its tokenizer, the
    classifier the encoder came from)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("respond")
    torch.manual_seed(0)
    tok = train_lm_tokenizer(CORPUS, 300, None)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, initializer_range=0.3,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id))
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    classifier = create_classifier_model(classifier_tiny(num_classes=3))
    save_model_dir(root / "clf", classifier, classifier_tiny(num_classes=3))

    model, config, lm_tok = speech_lm_from_pretrained_lm(
        root / "lm", encoder_source=root / "clf", stack=2, adaptor_dim=32)
    assert config.lm["model_type"] == "llama" and len(lm_tok) == len(tok)
    for name, p in classifier.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], p)
    feats = [model.encoder.fbank(torch.from_numpy(_audio(s, i))[None])[0][0]
             for i, s in enumerate((0.6, 0.4))]
    seqs = [prompt_segments(lm_tok, speech=feats[0], prompt_before=BEFORE, prompt_after=AFTER,
                            response="the cat sat on the mat."),
            prompt_segments(lm_tok, text="Hello, World!", prompt_before=BEFORE,
                            prompt_after=AFTER, response="Hi! How are you?")]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    before = model.lm.get_input_embeddings().weight.detach().clone()
    for _ in range(2):
        loss, count, _ = model(seqs)
        opt.zero_grad()
        (loss / count).backward()
        opt.step()
    assert torch.isfinite(loss) and count > 0
    assert not torch.equal(before, model.lm.get_input_embeddings().weight)
    model.eval()
    save_model_dir(root / "slm", model, config, parts={"lm_tokenizer": lm_tok})
    return speechfm.load(root / "slm"), model, lm_tok, root / "clf"


def _reference(model, tok, *, wav=None, text=None, max_new_tokens=12):
    speech = None
    if wav is not None:
        speech = model.encoder.fbank(torch.from_numpy(wav)[None])[0][0]
    prefix = prompt_segments(tok, speech=speech, text=text, prompt_before=BEFORE,
                             prompt_after=AFTER)
    ids = model.generate([prefix], max_new_tokens=max_new_tokens, eos_id=tok.eos_token_id)[0]
    return decode_response(tok, ids), ids


def test_respond_to_audio_matches_the_model_in_memory(plugged):
    loaded, model, tok, _ = plugged
    wav = _audio(0.6)
    expected, ids = _reference(model, tok, wav=wav)
    assert ids  # a non-trivial answer
    answer = loaded.respond(wav, sample_rate=SR, prompt_before=BEFORE, prompt_after=AFTER,
                            max_new_tokens=12)
    assert answer == expected
    assert loaded.respond((wav, SR), prompt_before=BEFORE, prompt_after=AFTER,
                          max_new_tokens=12) == expected
    # The directory's lm_tokenizer part is the plugged-in LM's tokenizer.
    assert loaded.lm_tokenizer.encode(BEFORE + AFTER) == tok.encode(BEFORE + AFTER)


def test_respond_to_text_matches_the_model_in_memory(plugged):
    loaded, model, tok, _ = plugged
    expected, _ = _reference(model, tok, text="Hello, World!")
    assert loaded.respond(text="Hello, World!", prompt_before=BEFORE, prompt_after=AFTER,
                          max_new_tokens=12) == expected


def test_respond_batch_equals_one_by_one(plugged):
    loaded, _, _, _ = plugged
    kw = {"prompt_before": BEFORE, "prompt_after": AFTER, "max_new_tokens": 10}
    waves = [_audio(0.6, 0), _audio(0.3, 1), _audio(0.9, 2)]
    one_by_one = [loaded.respond(w, sample_rate=SR, **kw) for w in waves]
    assert loaded.respond_batch(waves, sample_rate=SR, batch_size=2, **kw) == one_by_one
    texts = ["Hello", "the cat sat on the mat, said the cat", "?"]
    assert loaded.respond_batch(texts=texts, **kw) == [loaded.respond(text=t, **kw)
                                                       for t in texts]


def test_respond_errors(plugged):
    loaded, _, _, clf_dir = plugged
    wav = _audio(0.3)
    with pytest.raises(ValueError, match="one input"):
        loaded.respond()
    with pytest.raises(ValueError, match="one input"):
        loaded.respond(wav, text="hi", sample_rate=SR)
    with pytest.raises(ValueError, match="respond_batch"):
        loaded.respond([wav, wav], sample_rate=SR)
    with pytest.raises(TypeError, match="list of strings"):
        loaded.respond_batch(texts="hi")
    with pytest.raises(SpeechfmError, match="not a speech LM"):
        speechfm.load(clf_dir).respond(text="hi")
    with pytest.raises(SpeechfmError, match="speech LM.*respond"):
        loaded.transcribe(wav, sample_rate=SR)


def test_speech_lm_embeds_like_every_family(plugged):
    loaded, model, _, _ = plugged
    wav = _audio(0.5)
    (last,) = loaded.embed(wav, sample_rate=SR)
    feats, lens = model.encoder.fbank(torch.from_numpy(wav)[None])
    with torch.no_grad():
        out, _ = model.encoder(feats, lens)
    torch.testing.assert_close(last, out[0])


def test_respond_uses_the_trained_framing_by_default_and_reads_a_file(plugged, tmp_path):
    """A model directory with inserter.json answers with its training framing when no
    prompt is given (an explicit prompt still wins); a TTS-style file path works as input."""
    import json
    import shutil

    import soundfile as sf

    loaded, model, tok, _ = plugged
    framed = tmp_path / "framed"
    shutil.copytree(loaded.path, framed)
    (framed / "inserter.json").write_text(json.dumps(
        {"framing": {"prompt_before": BEFORE, "prompt_after": AFTER}}))
    wav = _audio(0.6)
    sf.write(tmp_path / "spoken.wav", wav, SR)
    expected, _ = _reference(model, tok, wav=wav)
    again = speechfm.load(framed)
    assert again.framing["prompt_before"] == BEFORE
    assert again.respond(str(tmp_path / "spoken.wav"), max_new_tokens=12) == expected
    assert again.respond(text="Hello", max_new_tokens=12) == _reference(model, tok, text="Hello")[0]
    # no inserter.json: no framing (empty prompts), unless given
    assert loaded.framing == {}
    assert loaded.respond(wav, sample_rate=SR, max_new_tokens=12) == \
        loaded.respond(wav, sample_rate=SR, prompt_before="", prompt_after="", max_new_tokens=12)
    (framed / "inserter.json").write_text("[1, 2]")
    with pytest.raises(SpeechfmError, match="inserter.json"):
        speechfm.load(framed).respond(text="Hello")
