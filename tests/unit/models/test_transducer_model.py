"""speechfm.models.transducer: config, predictor/joiner semantics, model interface, training
contract, search, learning."""

from __future__ import annotations

import dataclasses
import json

import kaldialign
import pytest
import torch

from speechfm.config import override_dataclass
from speechfm.decode.ctc import CtcHypothesis
from speechfm.decode.transducer import TransducerStream, greedy_search, modified_beam_search
from speechfm.errors import DataError
from speechfm.losses import pad_targets
from speechfm.losses.transducer import TransducerLossConfig
from speechfm.models.transducer import (
    Joiner,
    StatelessPredictor,
    TransducerModel,
    TransducerModelConfig,
    create_transducer_model,
    transducer_base,
    transducer_large,
    transducer_small,
    transducer_tiny,
)
from speechfm.ops import do_rnnt_pruning

FEAT = 20
VOCAB = 6
TORCH_LOSS = TransducerLossConfig(backend="torch")  # no kernel build inside unit tests

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _config(**overrides) -> TransducerModelConfig:
    """transducer_tiny on 20-dim fbank; ``overrides`` are nested mappings of fields, e.g.
    ``encoder={"normalization": "none"}``."""
    base = override_dataclass(
        transducer_tiny(VOCAB),
        {"encoder": {"fbank": {"num_mel_bins": FEAT}, "conformer": {"input_dim": FEAT}}},
    )
    return override_dataclass(base, overrides)


def _model(**overrides) -> TransducerModel:
    torch.manual_seed(0)
    return create_transducer_model(_config(**overrides))


def _batch(lens=(48, 40, 44), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lens), max(lens), FEAT, generator=g), torch.tensor(lens)


def _train_batch(feats, lens, targets, cut_ids=None):
    """The training contract's batch dict."""
    ids = cut_ids if cut_ids is not None else [f"utt{i}" for i in range(len(targets))]
    return {"features": feats, "x_lens": lens, "targets": targets, "cut_ids": ids}


# ------------------------------------------------------------------------------ config


def test_config_round_trip_through_json():
    cfg = _config(encoder={"normalization": "none", "specaug": {"time_warp": 2}},
                  context_size=3, decoder_dim=24)
    data = json.loads(json.dumps(cfg.to_dict()))
    # The family is the class' (config.json's top level names it), not a config key.
    assert "family" not in data and TransducerModelConfig.family == "transducer"
    assert data["context_size"] == 3 and data["decoder_dim"] == 24
    enc = data["encoder"]
    assert enc["conformer"]["dim"] == cfg.encoder.conformer.dim
    assert enc["fbank"]["num_mel_bins"] == FEAT and enc["conformer"]["input_dim"] == FEAT
    assert enc["normalization"] == "none" and enc["specaug"]["time_warp"] == 2
    back = TransducerModelConfig.from_dict(data)
    assert back == cfg
    assert back.frame_shift_s == pytest.approx(0.04)


def test_config_errors():
    data = _config().to_dict()
    with pytest.raises(ValueError, match="unknown TransducerModelConfig keys"):
        TransducerModelConfig.from_dict({**data, "predictor_dim": 3})
    # "family" is no config key (any value), and the pre-SpeechEncoder fields are gone.
    with pytest.raises(ValueError, match=r"unknown TransducerModelConfig keys.*family"):
        TransducerModelConfig.from_dict({**data, "family": "ctc"})
    with pytest.raises(ValueError, match=r"unknown TransducerModelConfig keys.*fbank"):
        TransducerModelConfig.from_dict({**data, "fbank": data["encoder"]["fbank"]})
    with pytest.raises(ValueError, match="input_dim"):
        _config(encoder={"fbank": {"num_mel_bins": 40}}).validate()
    cases = {
        "vocab_size": {"vocab_size": 1},
        "blank_id": {"blank_id": VOCAB},
        "context_size": {"context_size": 0},
        "decoder_dim": {"decoder_dim": 0},
        "joiner_dim": {"joiner_dim": 0},
        r"specaug\.num_time_masks": {"encoder": {"specaug": {"num_time_masks": -1}}},
        r"specaug\.time_mask_max_frac": {"encoder": {"specaug": {"time_mask_max_frac": 1.5}}},
        "normalization": {"encoder": {"normalization": "batch"}},
    }
    for field_name, overrides in cases.items():
        with pytest.raises(ValueError, match=field_name):
            _config(**overrides).validate()
        with pytest.raises(ValueError, match=field_name):  # from_dict validates too
            TransducerModelConfig.from_dict(_config(**overrides).to_dict())


def test_named_sizes_and_parameter_counts():
    counts = {}
    for size in (transducer_tiny, transducer_small, transducer_base, transducer_large):
        cfg = size(500)
        cfg.validate()
        assert cfg.vocab_size == 500
        assert cfg.encoder.conformer.input_dim == cfg.encoder.fbank.feature_dim
        with torch.device("meta"):  # count without allocating 600M parameters
            model = create_transducer_model(
                override_dataclass(cfg, {"encoder": {"normalization": "none"}}))
        counts[size.__name__] = sum(p.numel() for p in model.parameters()) / 1e6
    assert counts["transducer_tiny"] < 0.2
    assert 18 < counts["transducer_small"] < 30
    assert 90 < counts["transducer_base"] < 130
    assert 540 < counts["transducer_large"] < 650


# ------------------------------------------------------------------------- predictor


def test_predictor_output_depends_on_the_last_context_tokens_only():
    torch.manual_seed(0)
    pred = StatelessPredictor(VOCAB, 8, blank_id=0, context_size=3)
    g = torch.Generator().manual_seed(3)
    y = torch.randint(1, VOCAB, (2, 7), generator=g)
    sos = torch.cat((torch.zeros(2, 1, dtype=torch.long), y), dim=1)  # (N, U + 1)
    out = pred(sos)
    assert out.shape == (2, 8, 8) and bool((out >= 0).all())  # ReLU output
    for pos in range(sos.shape[1]):
        changed = sos.clone()
        changed[:, pos] = (changed[:, pos] % (VOCAB - 1)) + 1  # a different non-blank token
        diff = (pred(changed) - out).abs().amax(dim=(0, 2))
        window = set(range(pos, min(pos + 3, sos.shape[1])))
        for u in range(sos.shape[1]):
            if u in window:
                assert diff[u] > 1e-6, (pos, u)
            else:
                assert diff[u] == 0, (pos, u)
    # Search feeds the last context_size tokens unpadded; before any label that is blanks.
    for u in range(sos.shape[1]):
        ctx = torch.nn.functional.pad(sos, (2, 0))[:, u : u + 3]
        torch.testing.assert_close(pred(ctx, need_pad=False)[:, 0], out[:, u])
    # context_size 1: the embedding alone (no convolution)
    uni = StatelessPredictor(VOCAB, 8, context_size=1)
    assert uni.conv is None
    torch.testing.assert_close(uni(sos), torch.relu(uni.embedding(sos)))


@pytest.mark.parametrize("context_size", [1, 2, 3])
def test_predictor_step_is_the_unpadded_forward(context_size):
    """``step`` (search: one context per row) gives ``forward(need_pad=False)[:, 0]``."""
    torch.manual_seed(0)
    pred = StatelessPredictor(VOCAB, 8, blank_id=0, context_size=context_size)
    g = torch.Generator().manual_seed(4)
    ctx = torch.randint(0, VOCAB, (5, context_size), generator=g)
    torch.testing.assert_close(pred.step(ctx), pred(ctx, need_pad=False)[:, 0])
    with pytest.raises(ValueError, match="context must be"):
        pred.step(torch.zeros(2, context_size + 1, dtype=torch.long))


def test_joiner_broadcast_and_pruned_inputs_agree():
    torch.manual_seed(0)
    joiner = Joiner(12, 8, 16, VOCAB)
    enc = torch.randn(2, 5, 12)
    dec = torch.randn(2, 4, 8)
    full = joiner(enc.unsqueeze(2), dec.unsqueeze(1))
    assert full.shape == (2, 5, 4, VOCAB)
    ranges = torch.tensor([[0, 1], [0, 1], [1, 2], [2, 3], [2, 3]]).expand(2, 5, 2)
    enc_p, dec_p = do_rnnt_pruning(joiner.encoder_proj(enc), joiner.decoder_proj(dec), ranges)
    pruned = joiner(enc_p, dec_p, project_input=False)
    assert pruned.shape == (2, 5, 2, VOCAB)
    torch.testing.assert_close(pruned, full.gather(2, ranges[..., None].expand(2, 5, 2, VOCAB)))


# ----------------------------------------------------------------------------- model


def test_encode_shapes_cmvn_and_waveforms():
    model = _model().eval()
    feats, lens = _batch()
    enc, enc_lens = model.encode(feats, lens)
    assert enc_lens.tolist() == model.encoder.output_lengths(lens).tolist()
    assert enc.shape == (3, int(enc_lens.max()), model.encoder.dim)
    assert model.encoder.frame_shift_s == pytest.approx(0.04)
    assert model.encoder.sample_rate == 16000
    state = model.state_dict()
    assert {"encoder.cmvn.mean", "encoder.cmvn.var", "encoder.cmvn.inv_std"} <= set(state)
    assert any(k.startswith("encoder.conformer.") for k in state)
    assert not any(k.startswith("cmvn.") for k in state)
    _, _, layers = model.encode(feats, lens, return_layers=[0, -1])
    assert len(layers) == 2 and torch.equal(layers[-1], enc)  # tiny: no final norm
    mean, var = torch.linspace(-1, 1, FEAT), torch.linspace(0.5, 2, FEAT)
    model.encoder.set_cmvn(mean, var)
    after, _ = model.encode(feats, lens)
    plain = _model(encoder={"normalization": "none"}).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "cmvn" not in k})
    valid = (torch.arange(feats.shape[1])[None, :] < lens[:, None]).unsqueeze(-1)
    ref, _ = plain.encode(((feats - mean) / var.sqrt()).masked_fill(~valid, 0.0), lens)
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'none'.*no CMVN buffers"):
        plain.encoder.set_cmvn(mean, var)

    wavs = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(2))
    wav_lens = torch.tensor([8000, 5600])
    enc_w, lens_w = model.encoder.forward_waveforms(wavs, wav_lens)
    f, f_lens = model.encoder.feature_extractor()(wavs, wav_lens)
    ref_w, ref_lens = model.encode(f, f_lens)
    torch.testing.assert_close(enc_w, ref_w)
    assert lens_w.tolist() == ref_lens.tolist()
    with pytest.raises(ValueError, match="8000 Hz"):
        model.encoder.forward_waveforms(wavs, wav_lens, sample_rate=8000)


def test_compute_loss_forms_stats_and_errors():
    model = _model().eval()
    feats, lens = _batch()
    targets = [[1, 2, 3], [4, 4], [5]]
    loss, stats = model.compute_loss(feats, lens, targets, step=0, loss_config=TORCH_LOSS)
    padded, y_lens = pad_targets(targets, pad_value=-1)
    loss2, stats2 = model.compute_loss(feats, lens, padded, y_lens, step=0, loss_config=TORCH_LOSS)
    torch.testing.assert_close(loss, loss2)
    assert stats == stats2
    assert stats["num_utts"] == 3 and stats["num_infinite"] == 0 and stats["num_tokens"] == 6
    assert stats["num_frames"] == float(model.encoder.output_lengths(lens).sum())
    assert stats["num_input_frames"] == float(lens.sum())
    assert (stats["simple_scale"], stats["pruned_scale"]) == (1.0, pytest.approx(0.1))
    assert stats["loss"] == pytest.approx(
        stats["simple_loss"] + 0.1 * stats["pruned_loss"], rel=1e-5
    )
    assert loss.item() == pytest.approx(stats["loss"], rel=1e-6)
    full_cfg = dataclasses.replace(TORCH_LOSS, kind="full")
    _, full_stats = model.compute_loss(feats, lens, targets, step=0, loss_config=full_cfg)
    assert "full_loss" in full_stats and "pruned_loss" not in full_stats
    assert full_stats["loss"] == pytest.approx(full_stats["full_loss"])

    with pytest.raises(ValueError, match="y_lens is required"):
        model.compute_loss(feats, lens, padded, step=0, loss_config=TORCH_LOSS)
    short = torch.tensor([48, 5, 44])  # 5 frames < the 7 the x4 front end needs
    with pytest.raises(DataError, match="utterance 'b'.*0 encoder frames"):
        model.compute_loss(feats, short, targets, step=0, utt_ids=["a", "b", "c"])
    with pytest.raises(DataError, match="utterance 'c'.*blank"):
        model.compute_loss(feats, lens, [[1], [2], [0, 3]], step=0, utt_ids=["a", "b", "c"])
    with pytest.raises(DataError, match="utterance 'a'.*outside"):
        model.compute_loss(feats, lens, [[VOCAB], [2], [3]], step=0, utt_ids=["a", "b", "c"])


def test_ctc_head_adds_the_auxiliary_ctc_loss():
    from speechfm.losses.ctc import ctc_loss

    model = _model(ctc_head=True).eval()
    assert model.ctc_output.out_features == VOCAB
    assert TransducerModelConfig.from_dict(_config(ctc_head=True).to_dict()).ctc_head
    feats, lens = _batch()
    targets = [[1, 2, 3], [4, 4], [5]]
    base, base_stats = model.compute_loss(feats, lens, targets, step=0, loss_config=TORCH_LOSS)
    assert "ctc_loss" not in base_stats
    with_ctc = dataclasses.replace(TORCH_LOSS, ctc_scale=0.5)
    loss, stats = model.compute_loss(feats, lens, targets, step=0, loss_config=with_ctc)
    # the CTC term is the plain CTC loss of the head's log-probs, weighted
    enc, enc_lens = model.encode(feats, lens)
    padded, y_lens = pad_targets(targets)
    _, per_utt = ctc_loss(torch.log_softmax(model.ctc_output(enc), -1), enc_lens, padded, y_lens)
    assert stats["ctc_loss"] == pytest.approx(float(per_utt.sum()), rel=1e-5)
    assert loss.item() == pytest.approx(base.item() + 0.5 * stats["ctc_loss"], rel=1e-5)
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert model.ctc_output.weight.grad.abs().sum() > 0
    # a CTC weight without a head is a configuration error, named
    with pytest.raises(ValueError, match="ctc_head"):
        _model().compute_loss(feats, lens, targets, step=0, loss_config=with_ctc)
    with pytest.raises(ValueError, match="ctc_scale"):
        TransducerLossConfig(ctc_scale=-1.0).validate()


def test_loss_is_float32_under_bf16_autocast():
    model = _model().train()
    feats, lens = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = model.compute_loss(
            feats, lens, [[1, 2], [3], [4, 5]], step=10, loss_config=TORCH_LOSS
        )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert model.joiner.output_linear.weight.grad is not None


def test_infeasible_pruned_utterance_is_counted_not_fatal():
    model = _model().train()
    feats, lens = _batch()
    frames = model.encoder.output_lengths(lens).tolist()  # [11, 9, 10]
    cfg = dataclasses.replace(TORCH_LOSS, prune_range=2)  # at most 1 token per frame
    targets = [[1, 2], [3] * (frames[1] + 2), [4, 5]]
    loss, stats = model.compute_loss(feats, lens, targets, step=0, loss_config=cfg)
    assert stats["num_infinite"] == 1 and stats["num_utts"] == 2
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    strict = dataclasses.replace(cfg, zero_infinity=False)
    loss_inf, _ = model.compute_loss(feats, lens, targets, step=0, loss_config=strict)
    assert torch.isinf(loss_inf)


# ------------------------------------------------------------------- training contract


def test_training_contract_is_the_summed_loss_per_token():
    model = _model().eval()
    feats, lens = _batch()
    targets = [[1, 2, 3], [4, 4], [5]]
    loss, count, stats = model(_train_batch(feats, lens, targets), step=0, loss_config=TORCH_LOSS)
    ref, ref_stats = model.compute_loss(feats, lens, targets, step=0, loss_config=TORCH_LOSS)
    torch.testing.assert_close(loss, ref)
    assert count == 6 == ref_stats["num_tokens"]
    assert stats == {
        "simple_loss": pytest.approx(ref_stats["simple_loss"]),
        "pruned_loss": pytest.approx(ref_stats["pruned_loss"]),
        "num_utts": 3.0,
        "num_infeasible": 0.0,
    }
    with_ctc = _model(ctc_head=True).eval()
    ctc_cfg = dataclasses.replace(TORCH_LOSS, ctc_scale=0.3, kind="full")
    _, _, ctc_stats = with_ctc(_train_batch(feats, lens, targets), step=0, loss_config=ctc_cfg)
    assert set(ctc_stats) == {"full_loss", "ctc_loss", "num_utts", "num_infeasible"}

    # An infeasible utterance adds nothing, neither loss nor tokens, and is counted.
    frames = model.encoder.output_lengths(lens).tolist()
    cfg = dataclasses.replace(TORCH_LOSS, prune_range=2)
    bad = [[1, 2], [3] * (frames[1] + 2), [4, 5]]
    loss, count, stats = model.train()(_train_batch(feats, lens, bad, ["a", "b", "c"]),
                                       step=0, loss_config=cfg)
    assert torch.isfinite(loss) and count == 4
    assert (stats["num_utts"], stats["num_infeasible"]) == (2.0, 1.0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(DataError, match="utterance 'c'.*blank"):
        model(_train_batch(feats, lens, [[1], [2], [0, 3]], ["a", "b", "c"]), step=0,
              loss_config=TORCH_LOSS)

    # A batch whose cuts were all bad: a zero loss that still reaches the parameters
    # (DDP's gradient collectives stay in step), and nothing counted.
    model.zero_grad()
    empty = {"features": feats[:0], "x_lens": lens[:0], "targets": [], "cut_ids": []}
    loss, count, _ = model(empty, step=0, loss_config=TORCH_LOSS)
    assert loss.item() == 0.0 and count == 0 and loss.requires_grad
    loss.backward()
    assert model.joiner.output_linear.weight.grad is not None
    assert not model.joiner.output_linear.weight.grad.any()


# ------------------------------------------------------------------------------ search


def test_recognize_and_stream_wrap_the_searches():
    model = _model(encoder={"conformer": {"conv_causal": True}}).eval()
    feats, lens = _batch()
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        greedy = greedy_search(model, enc, enc_lens)
        beams = modified_beam_search(model, enc, enc_lens, beam=3)
        rec_greedy = model.recognize(feats, lens)
        rec_beam = model.recognize(feats, lens, method="beam", beam=3)
    # In the CTC hypothesis' shape: each token on one frame, confidences the joiner's.
    assert all(isinstance(h, CtcHypothesis) for h in rec_greedy + rec_beam)
    assert all(h.tokens for h in rec_greedy)  # the random model emits: a real comparison
    for h, g in zip(rec_greedy, greedy, strict=True):
        assert h.tokens == g.tokens and h.token_frames == h.token_end_frames == g.frames
        assert h.token_confidences == pytest.approx([float(torch.tensor(p).exp())
                                                     for p in g.token_log_probs])
        assert h.score == pytest.approx(g.score)
    assert [h.tokens for h in rec_beam] == [b[0].tokens if b else [] for b in beams]
    with pytest.raises(ValueError, match="method"):
        model.recognize(feats, lens, method="viterbi")

    # stream(): a TransducerStream over the model; its result is chunked-offline search.
    chunk = 4
    with torch.no_grad():
        enc_c, enc_c_lens = model.encode(feats[:1, : lens[0]], lens[:1], chunk_size=chunk)
    offline = greedy_search(model, enc_c, enc_c_lens)[0]
    stream = model.stream(chunk_size=chunk)
    assert isinstance(stream, TransducerStream)
    stream.accept_features(feats[0, :20])
    stream.accept_features(feats[0, 20 : lens[0]])
    final = stream.finalize()
    assert final.tokens and (final.tokens, final.frames) == (offline.tokens, offline.frames)
    beam_stream = model.stream(method="beam", beam=3, chunk_size=chunk)
    beam_stream.accept_features(feats[0, : lens[0]])
    offline_beam = modified_beam_search(model, enc_c, enc_c_lens, beam=3)[0]
    assert beam_stream.finalize().tokens == offline_beam[0].tokens


def test_stream_rejects_an_unknown_method():
    model = _model(encoder={"conformer": {"conv_causal": True}}).eval()
    with pytest.raises(ValueError, match="method"):
        model.stream(method="viterbi", chunk_size=4)


# -------------------------------------------------------------------------- learning


def _synthetic_batch(n: int, patterns: torch.Tensor, g: torch.Generator):
    """Utterances of 2-4 tokens; each token is its own 8-frame feature pattern in noise."""
    feats, targets = [], []
    for _ in range(n):
        tokens = torch.randint(
            1, VOCAB, (int(torch.randint(2, 5, (), generator=g)),), generator=g
        ).tolist()
        parts = [0.5 * torch.randn(int(torch.randint(4, 9, (), generator=g)), FEAT, generator=g)]
        for tok in tokens:
            parts.append(patterns[tok] + 0.5 * torch.randn(8, FEAT, generator=g))
            gap = int(torch.randint(4, 9, (), generator=g))
            parts.append(0.5 * torch.randn(gap, FEAT, generator=g))
        feats.append(torch.cat(parts))
        targets.append(tokens)
    lens = torch.tensor([f.shape[0] for f in feats])
    x = torch.zeros(n, int(lens.max()), FEAT)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    return x, lens, targets


def _token_error_rate(refs, hyps) -> float:
    errors = sum(kaldialign.edit_distance(r, h)["total"] for r, h in zip(refs, hyps, strict=True))
    return errors / sum(len(r) for r in refs)


def test_learns_a_synthetic_task_with_the_pruned_loss():
    """300 Adam steps on fresh batches; held-out utterances then decode almost perfectly."""
    model = _model(encoder={"specaugment": False})
    g = torch.Generator().manual_seed(0)
    patterns = 2.0 * torch.randn(VOCAB, FEAT, generator=g)
    test_x, test_lens, test_targets = _synthetic_batch(24, patterns, g)
    cfg = dataclasses.replace(TORCH_LOSS, warm_steps=50)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for step in range(300):
        x, lens, targets = _synthetic_batch(16, patterns, g)
        loss, stats = model.compute_loss(x, lens, targets, step=step, loss_config=cfg)
        opt.zero_grad()
        (loss / stats["num_utts"]).backward()
        opt.step()
        losses.append(stats["pruned_loss"] / stats["num_utts"])
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < 0.1 * first, (first, last)
    model.eval()
    with torch.no_grad():
        enc, enc_lens = model.encode(test_x, test_lens)
        recognized = [h.tokens for h in model.recognize(test_x, test_lens, method="beam", beam=4)]
    greedy = [h.tokens for h in greedy_search(model, enc, enc_lens)]
    beam = [b[0].tokens for b in modified_beam_search(model, enc, enc_lens, beam=4)]
    assert _token_error_rate(test_targets, greedy) < 0.1
    assert _token_error_rate(test_targets, beam) < 0.1
    assert recognized == beam
