"""Conformer <-> transformers Wav2Vec2BertModel: configs, weights, and equal hidden states."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from speechfm.models.conformer import ConformerConfig, create_conformer_encoder  # noqa: E402
from speechfm.models.conformer.interop import (  # noqa: E402
    SKIPPED_HF_KEYS,
    conformer_config_from_hf,
    hf_config_from_conformer,
    load_hf_weights,
    state_dict_from_hf,
    state_dict_to_hf,
)

FBANK = 80
STACK = 2


def _hf_config(**overrides):
    fields = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_depthwise_kernel_size=5,
        left_max_position_embeddings=6,
        right_max_position_embeddings=2,
        feature_projection_input_dim=FBANK * STACK,
        layerdrop=0.0,
        apply_spec_augment=False,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
    )
    fields.update(overrides)
    return transformers.Wav2Vec2BertConfig(**fields)


def _hf_model(config, seed=0):
    """A random HF model with every parameter perturbed (LayerNorms off identity, biases
    and pos_bias_u/v off zero), so that no mapping can hide behind an identity."""
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2BertModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _batch(lens, seed=2):
    """The same padded batch both ways: speechfm's (N, 2T, 80) fbank with fbank_lens, HF's
    (N, T, 160) stacked frames with an (N, T) attention mask (as bench/conformer.py)."""
    lens = torch.tensor(lens)
    n, t = len(lens), int(lens.max())
    gen = torch.Generator().manual_seed(seed)
    fbank = torch.randn(n, STACK * t, FBANK, generator=gen)
    fbank_lens = lens * STACK
    valid = torch.arange(STACK * t).unsqueeze(0) < fbank_lens.unsqueeze(1)
    fbank = fbank.masked_fill(~valid.unsqueeze(-1), 0.0)
    stacked = fbank.reshape(n, t, STACK * FBANK)
    mask = (torch.arange(t).unsqueeze(0) < lens.unsqueeze(1)).to(torch.int64)
    return fbank, fbank_lens, stacked, mask


def _converted(hf_model, **kwargs):
    ours = create_conformer_encoder(conformer_config_from_hf(hf_model.config, **kwargs)).eval()
    assert load_hf_weights(ours, hf_model) == []
    return ours


def _assert_same_layers(ours, hf_model, lens):
    fbank, fbank_lens, stacked, mask = _batch(lens)
    with torch.no_grad():
        out, out_lens, layers = ours(
            fbank, fbank_lens, return_layers=list(range(ours.num_layers + 1))
        )
        hf_out = hf_model(input_features=stacked, attention_mask=mask, output_hidden_states=True)
    assert torch.equal(out_lens, mask.sum(-1))
    hidden = hf_out.hidden_states
    assert len(hidden) == len(layers) == hf_model.config.num_hidden_layers + 1
    valid = mask.bool()
    for i, (a, b) in enumerate(zip(layers, hidden, strict=True)):
        diff = (a - b).abs()[valid].max()
        assert diff < 1e-4, (i, float(diff))
    assert (out - hf_out.last_hidden_state).abs()[valid].max() < 1e-4


HF_VARIANTS = {
    "relative_key": dict(),
    "relative": dict(
        position_embeddings_type="relative",
        hidden_size=48,
        num_attention_heads=2,
        conv_depthwise_kernel_size=3,
        layer_norm_eps=1e-6,
    ),
    "none": dict(position_embeddings_type=None, hidden_size=64, num_attention_heads=8),
}


@pytest.mark.parametrize("variant", sorted(HF_VARIANTS))
def test_every_layer_matches_hf(variant):
    hf_model = _hf_model(_hf_config(**HF_VARIANTS[variant]))
    ours = _converted(hf_model)
    _assert_same_layers(ours, hf_model, lens=[11])  # no padding
    _assert_same_layers(ours, hf_model, lens=[13, 9, 4])  # padding: x_lens vs attention_mask


def test_stride_one_encoder_takes_hf_input_features():
    hf_model = _hf_model(_hf_config())
    ours = _converted(hf_model, input_dim=STACK * FBANK)
    assert ours.front_end.stride == 1
    _, _, stacked, mask = _batch([9, 6])
    with torch.no_grad():
        out, _ = ours(stacked, mask.sum(-1))
        ref = hf_model(input_features=stacked, attention_mask=mask).last_hidden_state
    assert (out - ref).abs()[mask.bool()].max() < 1e-4


def test_config_mapping_and_round_trip():
    hf = _hf_config(
        hidden_dropout=0.05,
        activation_dropout=0.1,
        conformer_conv_dropout=0.15,
        feat_proj_dropout=0.0,
        attention_dropout=0.2,
        layerdrop=0.25,
    )
    cfg = conformer_config_from_hf(hf)
    assert (cfg.front_end, cfg.input_dim, cfg.subsampling_factor) == ("stack", 80, 2)
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, cfg.conv_kernel) == (
        32,
        2,
        4,
        48,
        5,
    )
    assert (cfg.pos_type, cfg.rel_left_max, cfg.rel_right_max) == ("relative_key", 6, 2)
    assert cfg.conv_causal and not cfg.conv_bias and cfg.conv_norm == "layer_norm"
    assert not cfg.final_norm and cfg.stack_mode == "floor"
    assert (cfg.dropout, cfg.attn_dropout, cfg.layer_drop) == (0.15, 0.2, 0.25)
    # ours -> HF -> ours is exact for what HF can represent
    for pos in ("relative_key", "rel_pos", "none"):
        ours = ConformerConfig(
            front_end="stack",
            subsampling_factor=2,
            dim=48,
            num_layers=3,
            num_heads=6,
            ffn_dim=80,
            conv_kernel=7,
            conv_causal=True,
            conv_bias=False,
            pos_type=pos,
            rel_left_max=10,
            rel_right_max=3,
            dropout=0.1,
            attn_dropout=0.05,
            layer_drop=0.2,
            layer_norm_eps=1e-6,
        )
        back = hf_config_from_conformer(ours)
        assert back.feature_projection_input_dim == 160
        assert conformer_config_from_hf(back) == ours
        # ... and HF -> ours -> HF keeps every field that matters
        again = hf_config_from_conformer(conformer_config_from_hf(back))
        assert again.to_dict() == back.to_dict()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"add_adapter": True}, "add_adapter"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"position_embeddings_type": "rotary"}, "position_embeddings_type"),
        ({"feature_projection_input_dim": 100}, "feature_projection_input_dim"),
    ],
)
def test_unsupported_hf_options_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        conformer_config_from_hf(_hf_config(**overrides))


def test_intermediate_ffn_is_refused():
    class Fake:  # HF itself refuses this flag without add_adapter, so fake a config
        def __init__(self, base):
            self.__dict__.update(base.to_dict())

    fake = Fake(_hf_config())
    fake.use_intermediate_ffn_before_adapter = True
    with pytest.raises(ValueError, match="use_intermediate_ffn_before_adapter"):
        conformer_config_from_hf(fake)
    conformer_config_from_hf(Fake(_hf_config()))  # the fake itself is fine


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"front_end": "conv2d", "subsampling_factor": 4}, "front_end"),
        ({"stack_mode": "ceil"}, "stack_mode"),
        ({"pos_type": "rotary"}, "pos_type"),
        ({"pos_type": "abs"}, "pos_type"),
        ({"conv_causal": False}, "conv_causal"),
        ({"conv_bias": True}, "conv_bias"),
        ({"conv_norm": "batch_norm"}, "conv_norm"),
        ({"final_norm": True}, "final_norm"),
        ({"chunk_size": 4}, "chunk_size"),
        ({"left_context": 8}, "left_context"),
        ({"dynamic_chunk": True}, "dynamic_chunk"),
    ],
)
def test_unsupported_speechfm_options_name_the_field(overrides, field):
    base = dict(
        front_end="stack",
        subsampling_factor=2,
        dim=32,
        num_layers=1,
        num_heads=4,
        ffn_dim=64,
        conv_kernel=5,
        conv_causal=True,
        conv_bias=False,
    )
    base.update(overrides)
    with pytest.raises(ValueError, match=field):
        hf_config_from_conformer(ConformerConfig(**base))


@pytest.mark.parametrize("pos", [None, "relative", "relative_key"])
def test_state_dict_round_trip_is_exact(pos):
    hf_model = _hf_model(_hf_config(position_embeddings_type=pos))
    hf_state = hf_model.state_dict()
    ours = state_dict_from_hf(hf_state)
    assert ours["blocks.1.conv.pointwise1.weight"].shape == (64, 32)
    back = state_dict_to_hf(ours)
    assert back.keys() == hf_state.keys()
    for key, value in hf_state.items():
        assert torch.equal(back[key], value), key
    # the names are exactly the encoder's
    enc = create_conformer_encoder(conformer_config_from_hf(hf_model.config))
    assert ours.keys() == enc.state_dict().keys()
    assert state_dict_to_hf(enc.state_dict()).keys() == hf_state.keys()


def test_skipped_and_prefixed_keys():
    # mask_time_prob > 0 gives the HF model a masked_spec_embed the encoder has no use for
    hf_model = _hf_model(_hf_config(num_hidden_layers=1, mask_time_prob=0.05))
    assert "masked_spec_embed" in hf_model.state_dict()
    ours = create_conformer_encoder(conformer_config_from_hf(hf_model.config))
    assert load_hf_weights(ours, hf_model) == list(SKIPPED_HF_KEYS)
    assert "masked_spec_embed" not in state_dict_from_hf(hf_model.state_dict())

    # a CTC model: the module is unwrapped, a state dict needs its prefix
    torch.manual_seed(0)
    ctc = transformers.Wav2Vec2BertForCTC(_hf_config(num_hidden_layers=1, vocab_size=5))
    assert load_hf_weights(ours, ctc) == []
    skipped = load_hf_weights(ours, ctc.state_dict(), prefix="wav2vec2_bert.")
    assert sorted(skipped) == ["lm_head.bias", "lm_head.weight"]
    torch.testing.assert_close(
        ours.blocks[0].attn.q_proj.weight,
        ctc.wav2vec2_bert.encoder.layers[0].self_attn.linear_q.weight,
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match="pass prefix='wav2vec2_bert.'"):
        load_hf_weights(ours, ctc.state_dict())
    with pytest.raises(ValueError, match="'lm_head.weight' has no speechfm counterpart"):
        with_head = {**state_dict_to_hf(ours.state_dict()), "lm_head.weight": torch.zeros(5, 32)}
        load_hf_weights(ours, with_head)  # without a prefix a head is no encoder tensor


def test_load_hf_weights_is_strict():
    hf_model = _hf_model(_hf_config())
    cfg = conformer_config_from_hf(hf_model.config)
    state = hf_model.state_dict()
    with pytest.raises(ValueError, match="shape"):
        cfg2 = conformer_config_from_hf(hf_model.config)
        cfg2.ffn_dim = 96
        load_hf_weights(create_conformer_encoder(cfg2), hf_model)
    with pytest.raises(ValueError, match="without an HF counterpart"):
        partial = {k: v for k, v in state.items() if "final_layer_norm" not in k}
        load_hf_weights(create_conformer_encoder(cfg), partial)
    with pytest.raises(ValueError, match="has no counterpart"):  # one block too few
        cfg3 = conformer_config_from_hf(hf_model.config)
        cfg3.num_layers = 1
        load_hf_weights(create_conformer_encoder(cfg3), hf_model)
    with pytest.raises(ValueError, match="not supported yet"):
        state_dict_from_hf({**state, "adapter.layers.0.ffn.output_dense.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="kernel-1 Conv1d"):
        bad = dict(state)
        key = "encoder.layers.0.conv_module.pointwise_conv2.weight"
        bad[key] = bad[key].squeeze(-1)
        state_dict_from_hf(bad)
    with pytest.raises(ValueError, match="final_norm.weight"):
        enc = create_conformer_encoder(ConformerConfig(**{**cfg.to_dict(), "final_norm": True}))
        state_dict_to_hf(enc.state_dict())


def test_import_without_transformers():
    code = (
        "import sys; sys.modules['transformers'] = None; "
        "import speechfm.models.conformer.interop as m, speechfm.models.conformer; "
        "from speechfm.models.conformer import conformer_tiny; "
        "import dataclasses; "
        "cfg = dataclasses.replace(conformer_tiny(), front_end='stack', subsampling_factor=2, "
        "conv_causal=True, conv_bias=False)\n"
        "try:\n    m.hf_config_from_conformer(cfg)\n"
        "except ImportError as e:\n    print('ImportError', 'speechfm[hf]' in str(e))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ImportError True"


def test_w2v_bert_2_0_config_values_and_training_mode():
    """facebook/w2v-bert-2.0's exact config values (transformers' defaults for
    Wav2Vec2BertConfig: width 1024, 16 heads, FFN 4096, kernel 31, relative_key 64/8,
    160-dim input), one layer instead of 24, so every real weight name and shape is
    covered; layers match in eval mode and in training mode with dropout and masking off."""
    defaults = transformers.Wav2Vec2BertConfig()
    assert (defaults.hidden_size, defaults.num_attention_heads, defaults.intermediate_size,
            defaults.conv_depthwise_kernel_size, defaults.position_embeddings_type,
            defaults.feature_projection_input_dim) == (1024, 16, 4096, 31, "relative_key", 160)
    config = transformers.Wav2Vec2BertConfig(
        num_hidden_layers=1, layerdrop=0.0, apply_spec_augment=False, mask_time_prob=0.0,
        mask_feature_prob=0.0, hidden_dropout=0.0, activation_dropout=0.0,
        attention_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
        conformer_conv_dropout=0.0)
    hf_model = _hf_model(config)
    ours = _converted(hf_model)
    assert ours.num_layers == 1 and ours.dim == 1024
    names = set(state_dict_to_hf(ours.state_dict()))
    assert names == set(hf_model.state_dict())
    _assert_same_layers(ours, hf_model, lens=[9, 5])
    ours.train()
    hf_model.train()
    _assert_same_layers(ours, hf_model, lens=[9, 5])
