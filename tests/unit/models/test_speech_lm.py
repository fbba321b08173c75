"""The speech LM family ("speech_lm"): splicing of speech between its markers, masks and
positions of padded batches, the loss on trainable text only, frame stacking, cached
encoder outputs, a frozen encoder, batched greedy generation, the model directory
round trip, and a short overfit run.

The models are ``speech_lm_tiny`` (conformer_tiny + a 2 x 64 Llama) with a byte-level BPE
trained on a few sentences.
"""

from __future__ import annotations

import json

import pytest
import torch

from speechfm.models.io import get_family, load_model_dir, save_model_dir
from speechfm.models.speech_lm import (
    IGNORE,
    FrameStackAdaptor,
    SpeechLMConfig,
    SpeechSegment,
    TextSegment,
    create_speech_lm_model,
    load_lm_tokenizer,
    prompt_segments,
    speech_lm_small,
    speech_lm_tiny,
    train_lm_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = [
    "Hello, World! How are you today?",
    "The cat sat on the mat.",
    "What is the capital of France? Paris.",
    "Speech in, text out: 42 tokens.",
] * 10


@pytest.fixture(scope="module")
def tok():
    return train_lm_tokenizer(CORPUS, 320, None)


def _model(tok, *, seed=0, freeze=True, perturb=0.1):
    torch.manual_seed(seed)
    config = speech_lm_tiny(len(tok))
    config.freeze_encoder = freeze
    model = create_speech_lm_model(config).eval()
    if perturb:
        with torch.no_grad():  # logits far from uniform: no near-ties in greedy search
            for p in model.parameters():
                p.add_(perturb * torch.randn_like(p))
    return config, model


def _sequences(tok, seed=0):
    """Three sequences of different lengths: speech, text-only and interleaved."""
    g = torch.Generator().manual_seed(seed)
    return [
        prompt_segments(tok, speech=torch.randn(50, 80, generator=g), prompt_before="Q: ",
                        prompt_after=" A:", response="the cat"),
        prompt_segments(tok, text="Hello", prompt_after=" A:", response="Hello, World!"),
        [TextSegment([tok.bos_token_id]), TextSegment(tok.encode("The cat"), train=True),
         SpeechSegment(feats=torch.randn(30, 80, generator=g)),
         TextSegment(tok.encode(" sat on the mat."), train=True),
         SpeechSegment(feats=torch.randn(70, 80, generator=g)),
         TextSegment([tok.eos_token_id], train=True)],
    ]


def test_tokenizer_keeps_case_punctuation_and_reloads(tmp_path):
    tok = train_lm_tokenizer(CORPUS, 300, tmp_path / "tok")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    text = "Hello, World! Ünïcode 42? the CAT."
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text and 1 not in ids and 2 not in ids
    again = load_lm_tokenizer(tmp_path / "tok")
    assert again.encode(text, add_special_tokens=False) == ids and len(again) == len(tok)
    with pytest.raises(ValueError, match="vocab_size"):
        train_lm_tokenizer(CORPUS, 100, None)


def test_config_round_trip_and_validation(tok):
    config = speech_lm_tiny(len(tok))
    again = SpeechLMConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.to_dict() == config.to_dict()
    assert get_family("speech_lm").config_class is SpeechLMConfig
    assert config.frame_shift_s == pytest.approx(0.08)  # 10 ms x 4 (conv) x 2 (stack)
    small = speech_lm_small(1000)
    assert (small.lm["num_hidden_layers"], small.lm["hidden_size"], small.stack) == (4, 256, 4)
    for change, match in [({"stack": 0}, "stack"), ({"adaptor_dim": 0}, "adaptor_dim"),
                          ({"lm": {}}, "model_type"),
                          ({"lm": {"model_type": "llama"}}, "vocab_size")]:
        bad = speech_lm_tiny(len(tok))
        for k, v in change.items():
            setattr(bad, k, v)
        with pytest.raises(ValueError, match=match):
            bad.validate()


def test_adaptor_stacks_frames_and_ignores_padding():
    torch.manual_seed(0)
    adaptor = FrameStackAdaptor(8, 16, stack=4, hidden=32)
    lens = torch.tensor([9, 8, 1, 4])
    x = torch.randn(4, 9, 8)
    for i, n in enumerate(lens.tolist()):
        x[i, n:] = 1e3  # padding garbage must not reach the last group
    y, y_lens = adaptor(x, lens)
    assert y.shape == (4, 3, 16) and y_lens.tolist() == [3, 2, 1, 1]
    # Frame j of row 0 is the MLP of frames 4j..4j+3 concatenated, zeros past the end.
    padded = torch.cat([x[0], torch.zeros(3, 8)])
    expected = adaptor.proj(padded.reshape(3, 32))
    torch.testing.assert_close(y[0], expected)
    for i, n in enumerate(lens.tolist()):
        alone, alone_lens = adaptor(x[i : i + 1, :n], lens[i : i + 1])
        torch.testing.assert_close(y[i, : int(alone_lens[0])], alone[0], atol=1e-6, rtol=1e-6)


def test_encode_speech_lengths(tok):
    _, model = _model(tok)
    feats, lens = torch.randn(2, 50, 80), torch.tensor([50, 29])
    with torch.no_grad():
        out, out_lens = model.encode_speech(feats, lens)
        enc, enc_lens = model.run_encoder(feats, lens)
        again, again_lens = model.encode_speech(enc, enc_lens, encoded=True)
    assert enc_lens.tolist() == model.encoder.output_lengths(lens).tolist()
    assert out_lens.tolist() == [(n + 1) // 2 for n in enc_lens.tolist()]
    assert out.shape == (2, max(out_lens.tolist()), 64)
    torch.testing.assert_close(out, again)


@pytest.mark.parametrize("padding", ["right", "left"])
def test_speech_is_spliced_between_the_markers(tok, padding):
    _, model = _model(tok)
    enc = torch.randn(7, 32)
    seq = [TextSegment([1, 5, 6]), SpeechSegment(encoded=enc), TextSegment([7, 8, 9], train=True)]
    longer = [TextSegment(list(range(3, 20)))]
    with torch.no_grad():
        inputs = model.build_inputs([seq, longer], padding=padding)
        frames, _ = model.encode_speech(enc[None], torch.tensor([7]), encoded=True)
        table = model.lm.get_input_embeddings()
        expected = torch.cat([table(torch.tensor([1, 5, 6])), model.speech_begin[None], frames[0],
                              model.speech_end[None], table(torch.tensor([7, 8, 9]))])
    n, size = 3 + 1 + 4 + 1 + 3, 17  # 7 encoder frames -> ceil(7 / 2) = 4 adaptor frames
    assert inputs.embeds.shape == (2, size, 64) and inputs.lengths.tolist() == [n, size]
    span = slice(0, n) if padding == "right" else slice(size - n, size)
    torch.testing.assert_close(inputs.embeds[0, span], expected)
    assert inputs.labels[0, span].tolist() == [IGNORE] * 9 + [7, 8, 9]
    assert inputs.position_ids[0, span].tolist() == list(range(n))
    assert inputs.attention_mask[0].sum() == n and inputs.attention_mask[0, span].all()
    rest = torch.ones(size, dtype=torch.bool)
    rest[span] = False
    assert (inputs.embeds[0, rest] == 0).all() and (inputs.labels[0, rest] == IGNORE).all()
    assert (inputs.position_ids[0, rest] == 0).all()
    assert inputs.position_ids[1].tolist() == list(range(size))
    assert (inputs.labels[1] == IGNORE).all()  # no train=True segment


def test_features_and_cached_encoder_outputs_give_the_same_inputs(tok):
    _, model = _model(tok)
    seqs = _sequences(tok)
    cached = []
    with torch.no_grad():
        for seq in seqs:
            out = []
            for seg in seq:
                if isinstance(seg, SpeechSegment):
                    enc, n = model.run_encoder(seg.feats[None], torch.tensor([len(seg.feats)]))
                    seg = SpeechSegment(encoded=enc[0, : int(n[0])])
                out.append(seg)
            cached.append(out)
        a, b = model.build_inputs(seqs), model.build_inputs(cached)
        mixed = model.build_inputs([seqs[0], cached[1], [*seqs[2][:3], *cached[2][3:]]])
    torch.testing.assert_close(a.embeds, b.embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.embeds, mixed.embeds, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.position_ids, b.position_ids)
    with pytest.raises(ValueError, match="exactly one"):
        SpeechSegment()
    with pytest.raises(ValueError, match="80 dims"):
        model.build_inputs([[SpeechSegment(feats=torch.randn(20, 40))]])
    with pytest.raises(ValueError, match="32 dims"):
        model.build_inputs([[SpeechSegment(encoded=torch.randn(5, 16))]])


@pytest.mark.parametrize("padding", ["right", "left"])
def test_padded_batch_equals_each_sequence_alone(tok, padding):
    _, model = _model(tok)
    seqs = _sequences(tok)
    with torch.no_grad():
        inputs = model.build_inputs(seqs, padding=padding)
        logits = model.logits(inputs)
        size = logits.shape[1]
        for i, seq in enumerate(seqs):
            alone = model.logits([seq])[0]
            n = alone.shape[0]
            got = logits[i, :n] if padding == "right" else logits[i, size - n :]
            torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
        loss, count, _ = model(seqs)
        singles = [model([seq]) for seq in seqs]
    torch.testing.assert_close(loss, sum(s[0] for s in singles), atol=1e-4, rtol=1e-5)
    assert count == sum(s[1] for s in singles)


def test_loss_is_on_trainable_text_only(tok):
    _, model = _model(tok)
    seqs = _sequences(tok)
    trainable = sum(len(s) for seq in seqs for s in seq
                    if isinstance(s, TextSegment) and s.train)
    with torch.no_grad():
        inputs = model.build_inputs(seqs)
        loss, count, stats = model({"sequences": seqs})
        logits = model.logits(inputs)
    assert int((inputs.labels != IGNORE).sum()) == trainable == count
    # The loss is the next-token cross-entropy at exactly those positions.
    logp = torch.log_softmax(logits.float(), -1)
    n, t = torch.nonzero(inputs.labels != IGNORE, as_tuple=True)
    expected = -logp[n, t - 1, inputs.labels[n, t]].sum()
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-5)
    assert 0 <= stats["correct"] <= count
    # Other speech (a shift would be normalised away): other context, the same labels.
    other = [[SpeechSegment(feats=torch.randn_like(s.feats)) if isinstance(s, SpeechSegment) else s
              for s in seq] for seq in seqs]
    with torch.no_grad():
        assert torch.equal(model.build_inputs(other).labels, inputs.labels)
        assert not torch.allclose(model(other)[0], loss)
    # A prompt made trainable adds exactly its tokens to the labels.
    prompt = seqs[0][0]
    flipped = [[TextSegment(prompt.ids, train=True), *seqs[0][1:]], *seqs[1:]]
    labels = model.build_inputs(flipped).labels
    changed = torch.nonzero(labels != inputs.labels).tolist()
    assert changed == [[0, t] for t in range(len(prompt))]
    assert labels[0, : len(prompt)].tolist() == list(prompt.ids)


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval(tok):
    for freeze in (True, False):
        _, model = _model(tok, freeze=freeze, perturb=0.0)
        model.train()
        assert model.encoder.training is not freeze and model.lm.training
        loss, count, _ = model(_sequences(tok))
        (loss / count).backward()
        enc_grads = [p.grad for p in model.encoder.parameters()]
        assert all(g is None for g in enc_grads) is freeze
        assert model.speech_begin.grad is not None and model.speech_end.grad is not None
        assert all(p.grad is not None for p in model.adaptor.parameters())
        assert model.lm.get_input_embeddings().weight.grad is not None


def _greedy_without_cache(model, prefix, steps):
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model.logits([[*prefix, TextSegment(out)]])
            out.append(int(logits[0, -1].argmax()))
    return out


def test_batched_greedy_generation_equals_single(tok):
    _, model = _model(tok)
    prefixes = [seq[:-1] for seq in _sequences(tok)]
    batched = model.generate(prefixes, max_new_tokens=8)
    singles = [model.generate([p], max_new_tokens=8)[0] for p in prefixes]
    assert batched == singles and all(len(row) == 8 for row in batched)
    # The KV cache and positions match recomputing the whole sequence each step.
    assert singles[0] == _greedy_without_cache(model, prefixes[0], 8)
    # eos ends a row (and is not returned); the other rows go on.
    eos = batched[0][3]
    stopped = model.generate(prefixes, max_new_tokens=8, eos_id=eos)
    for row, full in zip(stopped, batched, strict=True):
        assert row == (full[: full.index(eos)] if eos in full else full)
    assert model.generate(prefixes, max_new_tokens=0) == [[], [], []]


def test_model_dir_round_trip(tok, tmp_path):
    config, model = _model(tok)
    path = save_model_dir(tmp_path / "slm", model, config, parts={"lm_tokenizer": tok})
    meta = json.loads((path / "config.json").read_text())
    assert meta["family"] == "speech_lm" and meta["parts"] == {"lm_tokenizer": "lm_tokenizer"}
    assert meta["frame_shift_s"] == pytest.approx(0.08)
    loaded = load_model_dir(path)
    assert loaded.config.to_dict() == config.to_dict()
    seqs = _sequences(tok)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.logits(seqs), model.logits(seqs))
    from speechfm.models.io import load_part

    again = load_part(path, "lm_tokenizer")
    assert again.encode(CORPUS[0]) == tok.encode(CORPUS[0]) and len(again) == len(tok)


def test_short_overfit_run_learns_the_responses(tok):
    _, model = _model(tok, perturb=0.0)
    g = torch.Generator().manual_seed(1)
    seqs = [prompt_segments(tok, speech=torch.randn(40, 80, generator=g), prompt_after=" A:",
                            response="the cat sat"),
            prompt_segments(tok, text="France?", prompt_after=" A:", response="Paris.")]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    losses = []
    for _ in range(40):
        loss, count, _ = model(seqs)
        opt.zero_grad()
        (loss / count).backward()
        opt.step()
        losses.append(float(loss.detach()) / count)
    assert losses[-1] < 0.1 * losses[0], losses
    model.eval()
    answers = model.generate([s[:-1] for s in seqs], max_new_tokens=10, eos_id=tok.eos_token_id)
    assert [tok.decode(a) for a in answers] == ["the cat sat", "Paris."]
