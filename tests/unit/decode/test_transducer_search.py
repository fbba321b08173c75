"""speechfm.decode.transducer: greedy, modified beam search and streaming against references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from speechfm.config import override_dataclass
from speechfm.decode.transducer import (
    TransducerHypothesis,
    TransducerStream,
    greedy_search,
    modified_beam_search,
)
from speechfm.models.transducer import TransducerModel, create_transducer_model, transducer_tiny

FEAT = 20
VOCAB = 5
BLANK = 0


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(
    seed: int = 0, *, vocab: int = VOCAB, context_size: int = 2, normalization: str = "global",
    **conformer,
) -> TransducerModel:
    """A tiny streamable model whose joiner is sharp enough to make non-trivial choices;
    ``conformer`` overrides the Conformer's settings."""
    cfg = override_dataclass(transducer_tiny(vocab), {
        "encoder": {
            "fbank": {"num_mel_bins": FEAT},
            "normalization": normalization,
            "conformer": {"input_dim": FEAT, "conv_causal": True, **conformer},
        },
        "context_size": context_size,
    })
    torch.manual_seed(seed)
    model = create_transducer_model(cfg).eval()
    with torch.no_grad():
        model.joiner.output_linear.weight.mul_(3.0)
        model.joiner.output_linear.bias[BLANK] += 1.0
    return model


def _enc(model, lens=(60, 44, 30), seed=1, **kw):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(lens), max(lens), FEAT, generator=g)
    with torch.no_grad():
        return model.encode(feats, torch.tensor(lens), **kw)


def _log_probs(model, enc_t: torch.Tensor, context: list[int]) -> torch.Tensor:
    """(V,) joiner log-probs at one encoder frame (C,) after a token context (one vector)."""
    with torch.no_grad():
        dec = model.predictor(torch.tensor([context]), need_pad=False)[0, 0]
        return torch.log_softmax(model.joiner(enc_t, dec).double(), dim=-1)


def _replay(model, enc_row: torch.Tensor, hyp: TransducerHypothesis, max_sym: int) -> float:
    """Log-prob of the alignment given by (tokens, frames) under the max-symbols topology."""
    ctx = [BLANK] * model.context_size
    score, k = 0.0, 0
    for t in range(enc_row.shape[0]):
        emitted = 0
        while True:
            lp = _log_probs(model, enc_row[t], ctx)
            if k < len(hyp.tokens) and hyp.frames[k] == t:
                score += float(lp[hyp.tokens[k]])
                ctx = ctx[1:] + [hyp.tokens[k]]
                k += 1
                emitted += 1
                if emitted == max_sym:
                    break
            else:
                score += float(lp[BLANK])
                break
    assert k == len(hyp.tokens)
    return score


def _naive_greedy(model, enc_row: torch.Tensor, max_sym: int) -> tuple[list[int], list[int]]:
    """One utterance, one vector at a time."""
    ctx = [BLANK] * model.context_size
    tokens, frames = [], []
    for t in range(enc_row.shape[0]):
        for _ in range(max_sym):
            v = int(_log_probs(model, enc_row[t], ctx).argmax())
            if v == BLANK:
                break
            tokens.append(v)
            frames.append(t)
            ctx = ctx[1:] + [v]
    return tokens, frames


# ---------------------------------------------------------------------------------- greedy


def test_greedy_with_a_context_free_joiner_is_the_per_frame_argmax():
    model = _model(2)
    with torch.no_grad():  # the joiner ignores the predictor: a CTC-like per-frame choice
        model.joiner.decoder_proj.weight.zero_()
        model.joiner.decoder_proj.bias.zero_()
    enc, enc_lens = _enc(model)
    with torch.no_grad():
        lp = torch.log_softmax(
            model.joiner.output_linear(torch.tanh(model.joiner.encoder_proj(enc))).double(), dim=-1
        )
    for n, hyp in enumerate(greedy_search(model, enc, enc_lens)):
        best = lp[n, : enc_lens[n]].argmax(-1).tolist()
        expected = [(t, v) for t, v in enumerate(best) if v != BLANK]
        assert expected, "the test model should emit something"
        assert hyp.tokens == [v for _, v in expected]
        assert hyp.frames == [t for t, _ in expected]
        assert hyp.score == pytest.approx(float(lp[n, : enc_lens[n]].amax(-1).sum()), abs=1e-4)


@pytest.mark.parametrize("max_sym", [1, 2])
def test_batched_greedy_equals_one_vector_at_a_time(max_sym):
    model = _model(1)
    enc, enc_lens = _enc(model)
    hyps = greedy_search(model, enc, enc_lens, max_sym_per_frame=max_sym)
    assert len(hyps) == 3 and any(h.tokens for h in hyps)
    for n, hyp in enumerate(hyps):
        tokens, frames = _naive_greedy(model, enc[n, : enc_lens[n]], max_sym)
        assert (hyp.tokens, hyp.frames) == (tokens, frames)
        assert hyp.score == pytest.approx(
            _replay(model, enc[n, : enc_lens[n]], hyp, max_sym), abs=1e-4
        )


def test_max_sym_per_frame_bounds_the_tokens_per_frame():
    model = _model(3)
    with torch.no_grad():
        model.joiner.output_linear.bias[BLANK] -= 100.0  # blank never wins
    enc, enc_lens = _enc(model, lens=(30,))
    frames = int(enc_lens[0])
    for max_sym in (1, 3):
        hyp = greedy_search(model, enc, enc_lens, max_sym_per_frame=max_sym)[0]
        assert hyp.frames == [t for t in range(frames) for _ in range(max_sym)]
        beam = modified_beam_search(model, enc, enc_lens, beam=3, max_sym_per_frame=max_sym)[0]
        assert all(len(h.tokens) == max_sym * frames for h in beam)
        assert hyp.score == pytest.approx(_replay(model, enc[0], hyp, max_sym), abs=1e-4)


def test_empty_utterances_and_bad_arguments():
    model = _model()
    enc, _ = _enc(model, lens=(30, 30))
    lens = torch.tensor([0, 5])
    greedy = greedy_search(model, enc, lens)
    assert greedy[0] == TransducerHypothesis(tokens=[], frames=[], score=0.0)
    assert all(f < 5 for f in greedy[1].frames)
    beams = modified_beam_search(model, enc, lens, beam=3)
    assert [h.tokens for h in beams[0]] == [[]] and beams[0][0].score == 0.0
    assert modified_beam_search(model, enc[:0], lens[:0]) == []
    with pytest.raises(ValueError, match="max_sym_per_frame"):
        greedy_search(model, enc, lens, max_sym_per_frame=0)
    with pytest.raises(ValueError, match="beam"):
        modified_beam_search(model, enc, lens, beam=0)
    with pytest.raises(ValueError, match="enc_lens"):
        greedy_search(model, enc, torch.tensor([0, enc.shape[1] + 1]))
    with pytest.raises(ValueError, match="channels"):
        greedy_search(model, enc[..., :8], lens)


# ----------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("max_sym", [1, 2])
def test_beam_of_one_is_greedy(max_sym):
    model = _model(4)
    enc, enc_lens = _enc(model)
    greedy = greedy_search(model, enc, enc_lens, max_sym_per_frame=max_sym)
    beams = modified_beam_search(model, enc, enc_lens, beam=1, max_sym_per_frame=max_sym)
    for g, b in zip(greedy, beams, strict=True):
        assert len(b) == 1
        assert (b[0].tokens, b[0].frames) == (g.tokens, g.frames)
        assert b[0].score == pytest.approx(g.score, abs=1e-4)
        assert b[0].token_log_probs == pytest.approx(g.token_log_probs, abs=1e-4)


def test_token_log_probs_are_the_joiner_probabilities_of_the_emitted_tokens():
    model = _model(5)
    enc, enc_lens = _enc(model)
    for n, hyp in enumerate(greedy_search(model, enc, enc_lens)):
        assert len(hyp.token_log_probs) == len(hyp.tokens) > 0
        ctx = [BLANK] * model.context_size
        for tok, frame, lp in zip(hyp.tokens, hyp.frames, hyp.token_log_probs, strict=True):
            assert lp == pytest.approx(float(_log_probs(model, enc[n, frame], ctx)[tok]), abs=1e-4)
            ctx = ctx[1:] + [tok]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_scores_at_least_greedy(seed):
    model = _model(seed)
    enc, enc_lens = _enc(model, seed=seed + 10)
    greedy = greedy_search(model, enc, enc_lens)
    beams = modified_beam_search(model, enc, enc_lens, beam=4)
    for g, b in zip(greedy, beams, strict=True):
        assert 1 <= len(b) <= 4
        assert [h.score for h in b] == sorted((h.score for h in b), reverse=True)
        assert len({tuple(h.tokens) for h in b}) == len(b)  # merged: no duplicate sequences
        assert b[0].score >= g.score - 1e-5
    assert any(b[0].score > g.score + 1e-3 for g, b in zip(greedy, beams, strict=True))


def test_wide_beam_gives_every_sequence_its_total_probability():
    """T = 4, V = 3, one symbol per frame: 81 alignments, 31 token sequences. A beam wider
    than that loses nothing, so each hypothesis' score is the log-sum over all alignments
    of its tokens, and its frames are those of its best alignment."""
    model = _model(5, vocab=3)
    g = torch.Generator().manual_seed(6)
    enc = 2.0 * torch.randn(1, 4, model.encoder.dim, generator=g)
    lens = torch.tensor([4])
    totals: dict[tuple[int, ...], list[float]] = {}
    best: dict[tuple[int, ...], tuple[float, list[int]]] = {}
    for symbols in itertools.product(range(3), repeat=4):
        ctx, score, tokens, frames = [BLANK] * model.context_size, 0.0, [], []
        for t, s in enumerate(symbols):
            score += float(_log_probs(model, enc[0, t], ctx)[s])
            if s != BLANK:
                tokens.append(s)
                frames.append(t)
                ctx = ctx[1:] + [s]
        totals.setdefault(tuple(tokens), []).append(score)
        if score > best.get(tuple(tokens), (-math.inf, []))[0]:
            best[tuple(tokens)] = (score, frames)
    hyps = modified_beam_search(model, enc, lens, beam=64)[0]
    assert len(hyps) == len(totals) == 31
    for h in hyps:
        expected = torch.logsumexp(torch.tensor(totals[tuple(h.tokens)]), 0).item()
        assert h.score == pytest.approx(expected, abs=1e-4)
        assert h.frames == best[tuple(h.tokens)][1]
    assert sum(math.exp(h.score) for h in hyps) == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(
    ("method", "chunk", "left", "max_sym"),
    [
        ("greedy", 4, 8, 1),
        ("greedy", 3, -1, 2),
        ("modified_beam", 4, 8, 1),
        ("modified_beam", 3, -1, 2),
    ],
)
def test_stream_equals_offline_search_on_the_chunked_encoder(method, chunk, left, max_sym):
    model = _model(7)
    g = torch.Generator().manual_seed(8)
    model.encoder.set_cmvn(torch.randn(FEAT, generator=g), 0.5 + torch.rand(FEAT, generator=g))
    feats = torch.randn(1, 97, FEAT, generator=g)
    lens = torch.tensor([97])
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens, chunk_size=chunk, left_context=left)
    if method == "greedy":
        offline = greedy_search(model, enc, enc_lens, max_sym_per_frame=max_sym)
    else:
        offline = modified_beam_search(model, enc, enc_lens, beam=4, max_sym_per_frame=max_sym)[0]

    stream = TransducerStream(
        model, method=method, beam=4, max_sym_per_frame=max_sym, chunk_size=chunk, left_context=left
    )
    pos, partials = 0, []
    while pos < feats.shape[1]:
        step = int(torch.randint(0, 16, (), generator=g))
        stream.accept_features(feats[0, pos : pos + step])
        pos += step
        assert stream.num_frames % chunk == 0  # whole chunks only until finalize
        partials.append(stream.result())
    final = stream.finalize()
    assert stream.num_frames == int(enc_lens[0]) and stream.num_input_frames == 97
    assert any(h.tokens for h in stream.nbest())
    assert (final.tokens, final.frames) == (offline[0].tokens, offline[0].frames)
    assert final.score == pytest.approx(offline[0].score, abs=1e-4)
    if method == "greedy":  # greedy never revises: every partial result is a prefix
        for p in partials:
            assert final.tokens[: len(p.tokens)] == p.tokens
    else:
        nbest = stream.nbest()
        assert [h.tokens for h in nbest] == [h.tokens for h in offline]
    with pytest.raises(RuntimeError, match="finalized"):
        stream.accept_features(feats[0, :4])
    assert stream.finalize() == final  # idempotent


def test_stream_short_input_and_errors():
    model = _model()
    stream = TransducerStream(model, chunk_size=4)
    assert stream.accept_features(torch.randn(5, FEAT)) == 0  # < receptive field (7)
    assert stream.finalize() == TransducerHypothesis(tokens=[], frames=[], score=0.0)
    with pytest.raises(ValueError, match=r"\(T, 20\)"):
        TransducerStream(model, chunk_size=4).accept_features(torch.randn(3, 8))
    with pytest.raises(ValueError, match="method"):
        TransducerStream(model, method="beam", chunk_size=4)
    with pytest.raises(ValueError, match="eval"):
        TransducerStream(model.train(), chunk_size=4)
    with pytest.raises(ValueError, match="causal"):
        TransducerStream(_model(conv_causal=False).eval(), chunk_size=4)
    with pytest.raises(ValueError, match="per-utterance normalisation cannot stream"):
        TransducerStream(_model(normalization="utterance"), chunk_size=4)
