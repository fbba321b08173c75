"""The cascaded transducer: a causal streaming first encoder, a full-context second encoder
on its output, one predictor/joiner, a joint loss over both passes; language-dependent
adapters built from the config in both encoders."""

from __future__ import annotations

import pytest
import torch

from speechfm.losses.transducer import TransducerLossConfig
from speechfm.models.conformer.config import ConformerConfig
from speechfm.models.io import load_model_dir, save_model_dir
from speechfm.models.transducer import TransducerModelConfig, create_transducer_model
from speechfm.models.transducer.config import transducer_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

V = 7


def _second(dim=32, **kw):
    return ConformerConfig(input_dim=dim, front_end="stack", subsampling_factor=1, dim=dim,
                           num_layers=1, num_heads=4, ffn_dim=64, conv_kernel=5,
                           dropout=0.0, **kw)


def _config(adapters=()):
    config = transducer_tiny(V)
    config.encoder.conformer.conv_causal = True
    config.encoder.specaugment = False
    config.second_encoder = _second()
    config.adapters = list(adapters)
    return config


def _model(config, seed=0):
    torch.manual_seed(seed)
    model = create_transducer_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def _batch(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 80, 80, generator=g)
    lens = torch.tensor([80, 64, 48][:n])
    targets = [[1, 2, 3], [4, 5], [6, 1, 1, 2]][:n]
    return feats, lens, targets


def test_config_checks_and_round_trip():
    config = _config()
    config.validate()
    back = TransducerModelConfig.from_dict(config.to_dict())
    assert back.second_encoder == config.second_encoder
    conv2d = ConformerConfig(input_dim=32, dim=32, num_layers=1, num_heads=4)
    wider = ConformerConfig(input_dim=32, front_end="stack", subsampling_factor=1, dim=64,
                            num_layers=1, num_heads=4)
    for bad, match in ((conv2d, "front_end: stack"), (wider, "width 32"),
                       (_second(chunk_size=4), "full-context")):
        c = _config()
        c.second_encoder = bad
        with pytest.raises(ValueError, match=match):
            c.validate()
    c = transducer_tiny(V)  # one encoder: asking for the second's adapters is an error
    c.adapters = [{"name": "a", "kind": "bottleneck", "points": ["after_block"],
                   "encoders": ["second"]}]
    with pytest.raises(ValueError, match="no"):
        c.validate()


def test_joint_loss_is_the_weighted_sum_of_both_passes():
    model = _model(_config())
    model.train()
    feats, lens, targets = _batch()

    def loss(a, b):
        cfg = TransducerLossConfig(first_pass_scale=a, final_pass_scale=b, warm_steps=0)
        return model.compute_loss(feats, lens, targets, loss_config=cfg, step=10)

    first, s1 = loss(1.0, 0.0)
    final, s2 = loss(0.0, 1.0)
    both, s = loss(0.3, 0.7)
    torch.testing.assert_close(both, 0.3 * first + 0.7 * final)
    assert s["first_pass_loss"] == pytest.approx(s1["first_pass_loss"])
    assert s["final_pass_loss"] == pytest.approx(s2["final_pass_loss"])
    # the first pass is the first encoder's output
    enc, _ = model.encode(feats, lens, final_pass=False)
    torch.testing.assert_close(enc, model.encoder(feats, lens)[0])
    both.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("second_encoder.") for n in grads)
    assert any(n.startswith("encoder.conformer.") for n in grads)


def test_passes_stream_and_language_adapters(tmp_path):
    adapters = [{"name": "lda", "kind": "bottleneck", "points": ["after_block"],
                 "options": {"bottleneck": 4}, "languages": ["ky", "tt"]}]
    config = _config(adapters)
    model = _model(config)
    hosts = (model.encoder.conformer, model.second_encoder)
    assert all(h.adapter_languages("lda") == {"ky", "tt"} for h in hosts)
    feats, lens, _ = _batch(2)
    with torch.no_grad():
        final = model.encode(feats, lens)[0]
        first = model.encode(feats, lens, final_pass=False)[0]
        ky = model.encode(feats, lens, language="ky")[0]
        tt = model.encode(feats, lens, language="tt")[0]
    assert final.shape == first.shape and not torch.allclose(final, first)
    assert not torch.allclose(ky, final) and not torch.allclose(ky, tt)
    hyps_final = model.recognize(feats, lens)
    hyps_first = model.recognize(feats, lens, final_pass=False, chunk_size=4)
    assert len(hyps_final) == len(hyps_first) == 2

    # streaming runs the first pass chunk by chunk, with the language's adapters
    from speechfm.decode.transducer import greedy_search

    for lang in (None, "ky"):
        stream = model.stream(chunk_size=4, language=lang)
        x = feats[1, : int(lens[1])]
        for start in range(0, x.shape[0], 7):
            stream.accept_features(x[start:start + 7])
        streamed = stream.finalize().tokens
        with torch.no_grad():
            enc, enc_lens = model.encode(x[None], lens[1:2], final_pass=False, chunk_size=4,
                                         language=lang)
        assert streamed == greedy_search(model, enc, enc_lens)[0].tokens

    out = save_model_dir(tmp_path / "m", model, config)
    loaded = load_model_dir(out).module
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(feats, lens, language="tt")[0], tt)
