"""Conformer <-> transformers Wav2Vec2BertModel: configs, weights, and equal hidden states."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from speechfm.models.conformer import ConformerConfig, create_conformer_encoder  # noqa: E402
from speechfm.models.conformer.config import LengthAdapterConfig  # noqa: E402
from speechfm.models.conformer.interop import (  # noqa: E402
    SKIPPED_HF_KEYS,
    conformer_config_from_hf,
    convert_from_hf_dir,
    convert_to_hf_dir,
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
        ({"add_adapter": True, "adapter_act": "quick_gelu"}, "adapter_act"),
        ({"add_adapter": True, "output_hidden_size": 30}, "output_hidden_size"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"position_embeddings_type": "rotary"}, "position_embeddings_type"),
        ({"feature_projection_input_dim": 100}, "feature_projection_input_dim"),
    ],
)
def test_unsupported_hf_options_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        conformer_config_from_hf(_hf_config(**overrides))


def test_intermediate_ffn_without_adapter_layers():
    """HF's config refuses the intermediate FFN without add_adapter, but its model builds
    and runs it: a length adapter of 0 layers, which HF writes as add_adapter=True with
    num_adapter_layers=0 (an adapter computing the identity)."""

    class Fake:
        def __init__(self, base):
            self.__dict__.update(base.to_dict())

    fake = Fake(_hf_config())
    fake.use_intermediate_ffn_before_adapter = True
    cfg = conformer_config_from_hf(fake)
    assert cfg.length_adapter == LengthAdapterConfig(num_layers=0, intermediate_ffn=True)
    assert conformer_config_from_hf(Fake(_hf_config())).length_adapter is None

    back = hf_config_from_conformer(cfg)
    assert (back.add_adapter, back.num_adapter_layers) == (True, 0)
    assert back.use_intermediate_ffn_before_adapter
    assert conformer_config_from_hf(back) == cfg
    hf_model = _hf_model(back)
    assert {k.split(".")[0] for k in hf_model.state_dict()} == {
        "feature_projection", "encoder", "intermediate_ffn"}
    ours = _converted(hf_model)
    assert ours.output_dim == ours.dim == 32
    _assert_adapter_matches_hf(ours, hf_model, [9, 6])


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
    with pytest.raises(ValueError, match="has no counterpart .* in this encoder"):
        # an adapter tensor for an encoder without a length adapter
        load_hf_weights(create_conformer_encoder(cfg),
                        {**state, "adapter.layers.0.ffn.output_dense.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="'adapter.layers.0.conv.weight' has no speechfm"):
        state_dict_from_hf({**state, "adapter.layers.0.conv.weight": torch.zeros(1)})
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


# ----------------------------------------------------------------------------- adapter
#
# HF's adapter (add_adapter=True) and intermediate FFN become the encoder's length adapter.
# HF lets a batch's padding leak into the last valid frames' convolution windows (ours
# zeroes it), so the adapter output is compared with HF run per utterance, unpadded.

NO_DROPOUT = dict(
    hidden_dropout=0.0,
    activation_dropout=0.0,
    attention_dropout=0.0,
    feat_proj_dropout=0.0,
    conformer_conv_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
)

ADAPTER_VARIANTS = {
    "one_layer": dict(num_adapter_layers=1),
    "two_layers_proj_ffn": dict(
        num_adapter_layers=2, output_hidden_size=24, use_intermediate_ffn_before_adapter=True
    ),
    "two_layers_wider_8_heads_gelu": dict(
        num_adapter_layers=2,
        num_attention_heads=8,
        output_hidden_size=48,
        adapter_act="gelu",
        position_embeddings_type=None,
    ),
    "one_layer_ffn_2_heads_relative": dict(
        num_attention_heads=2,
        position_embeddings_type="relative",
        use_intermediate_ffn_before_adapter=True,
        adapter_act="swish",
        layer_norm_eps=1e-6,
    ),
    "kernel_8_stride_8_proj": dict(adapter_kernel_size=8, adapter_stride=8, output_hidden_size=16),
    # kernel // 2 != stride // 2: HF's lengths pad by 2, its convolutions by 1
    "kernel_5_stride_2_two_layers_ffn": dict(
        num_adapter_layers=2,
        adapter_kernel_size=5,
        adapter_stride=2,
        use_intermediate_ffn_before_adapter=True,
    ),
}


def _adapter_hf_config(**overrides):
    return _hf_config(**{"add_adapter": True, **NO_DROPOUT, **overrides})


def _hf_lengths(hf_model, lens):
    return hf_model._get_feat_extract_output_lengths(torch.as_tensor(lens)).to(torch.int64)


def _paddings_agree(ours):
    la = ours.length_adapter
    return la is None or not la.layers or la.kernel_size // 2 == la.stride // 2


def _assert_adapter_matches_hf(ours, hf_model, lens):
    """Ours on the padded batch, HF per utterance (unpadded, all-ones attention_mask): the
    blocks' layers, the output on every frame HF computes, and HF's lengths.  Returns the
    largest output difference."""
    fbank, fbank_lens, stacked, mask = _batch(lens)
    with torch.no_grad():
        out, out_lens, layers = ours(
            fbank, fbank_lens, return_layers=list(range(ours.num_layers + 1))
        )
    expected = _hf_lengths(hf_model, mask.sum(-1))
    assert torch.equal(out_lens, expected)
    assert torch.equal(ours.output_lengths(fbank_lens), expected)
    assert torch.equal(ours.layer_lengths(fbank_lens), mask.sum(-1))
    assert out.shape[1] >= int(expected.max()) and out.shape[2] == ours.output_dim
    padded = torch.arange(out.shape[1])[None, :] >= out_lens[:, None]
    assert not out[padded].any()  # padding zeroed
    worst = 0.0
    for b, length in enumerate(lens):
        with torch.no_grad():
            ref = hf_model(
                input_features=stacked[b : b + 1, :length],
                attention_mask=torch.ones(1, length, dtype=torch.int64),
                output_hidden_states=True,
            )
        for i, (a, h) in enumerate(zip(layers, ref.hidden_states, strict=True)):
            diff = float((a[b, :length] - h[0]).abs().max())
            assert diff < 1e-4, (b, i, diff)
        hf_out = ref.last_hidden_state[0]
        if _paddings_agree(ours):
            assert hf_out.shape[0] == int(out_lens[b])
        n = min(hf_out.shape[0], int(out_lens[b]))
        assert n > 0
        diff = float((out[b, :n] - hf_out[:n]).abs().max())
        assert diff < 1e-4, (b, diff)
        worst = max(worst, diff)
    return worst


def _assert_adapter_matches_hf_batch(ours, hf_model, length, n=2):
    """Equal lengths: ours and HF on the same batch, compared as they are."""
    fbank, fbank_lens, stacked, mask = _batch([length] * n, seed=5)
    with torch.no_grad():
        out, out_lens = ours(fbank, fbank_lens)
        ref = hf_model(input_features=stacked, attention_mask=mask).last_hidden_state
    assert torch.equal(out_lens, _hf_lengths(hf_model, mask.sum(-1)))
    k = min(ref.shape[1], int(out_lens[0]))
    diff = float((out[:, :k] - ref[:, :k]).abs().max())
    assert diff < 1e-4, diff
    return diff


@pytest.mark.parametrize("variant", sorted(ADAPTER_VARIANTS))
def test_adapter_matches_hf(variant):
    hf_model = _hf_model(_adapter_hf_config(**ADAPTER_VARIANTS[variant]))
    ours = _converted(hf_model)
    la = hf_model.config
    assert ours.length_adapter is not None
    assert len(ours.length_adapter.layers) == la.num_adapter_layers
    assert ours.output_dim == la.output_hidden_size
    # every length, and the padded batches below
    lens = torch.arange(0, 80)
    assert torch.equal(ours.output_lengths(2 * lens), _hf_lengths(hf_model, lens))
    for mode in ("eval", "train"):  # training mode: every dropout and masking off
        ours.train(mode == "train")
        hf_model.train(mode == "train")
        _assert_adapter_matches_hf(ours, hf_model, [23, 17, 12])
        _assert_adapter_matches_hf_batch(ours, hf_model, 19)


@pytest.mark.parametrize("variant", sorted(ADAPTER_VARIANTS))
def test_adapter_state_dict_round_trip(variant):
    hf_model = _hf_model(_adapter_hf_config(**ADAPTER_VARIANTS[variant]))
    hf_state = hf_model.state_dict()
    assert any(k.startswith("adapter.layers.") for k in hf_state)
    ours = state_dict_from_hf(hf_state)
    enc = create_conformer_encoder(conformer_config_from_hf(hf_model.config))
    assert ours.keys() == enc.state_dict().keys()  # every name both ways, no leftovers
    assert state_dict_to_hf(enc.state_dict()).keys() == hf_state.keys()
    back = state_dict_to_hf(ours)
    assert back.keys() == hf_state.keys()
    for key, value in hf_state.items():
        assert torch.equal(back[key], value), key
    for name in ours:
        if "length_adapter" in name:
            assert name.startswith("length_adapter.")
    hf_names = {k for k in hf_state if k.startswith(("adapter.", "intermediate_ffn."))}
    our_names = {k for k in ours if k.startswith("length_adapter.")}
    assert len(hf_names) == len(our_names) > 0
    assert load_hf_weights(enc, hf_model) == []
    torch.testing.assert_close(
        enc.length_adapter.layers[0].attn.q_proj.weight,
        hf_model.adapter.layers[0].self_attn.linear_q.weight,
        rtol=0,
        atol=0,
    )


def test_adapter_config_mapping_and_round_trip():
    hf = _adapter_hf_config(
        num_adapter_layers=2,
        adapter_kernel_size=5,
        adapter_stride=3,
        output_hidden_size=24,
        adapter_act="gelu_pytorch_tanh",
        use_intermediate_ffn_before_adapter=True,
    )
    cfg = conformer_config_from_hf(hf)
    assert cfg.length_adapter == LengthAdapterConfig(
        num_layers=2,
        kernel_size=5,
        stride=3,
        output_dim=24,
        activation="gelu_tanh",
        intermediate_ffn=True,
    )
    assert (cfg.output_dim, cfg.output_subsampling_factor) == (24, 2 * 9)
    # output_hidden_size == hidden_size: no projection
    same = conformer_config_from_hf(_adapter_hf_config(output_hidden_size=32))
    assert same.length_adapter == LengthAdapterConfig() and same.output_dim == 32
    assert conformer_config_from_hf(_hf_config()).length_adapter is None
    back = hf_config_from_conformer(cfg)
    assert (back.add_adapter, back.num_adapter_layers, back.adapter_kernel_size) == (True, 2, 5)
    assert (back.adapter_stride, back.output_hidden_size, back.adapter_act) == (
        3,
        24,
        "gelu_pytorch_tanh",
    )
    assert back.use_intermediate_ffn_before_adapter
    assert conformer_config_from_hf(back) == cfg
    assert hf_config_from_conformer(conformer_config_from_hf(back)).to_dict() == back.to_dict()
    # ours -> HF -> ours, every activation
    for act in ("relu", "gelu", "gelu_tanh", "silu", "tanh"):
        la = LengthAdapterConfig(num_layers=3, kernel_size=4, stride=4, output_dim=16,
                                 activation=act)
        ours = ConformerConfig(
            front_end="stack", subsampling_factor=2, dim=32, num_layers=1, num_heads=4,
            ffn_dim=40, conv_kernel=5, conv_causal=True, conv_bias=False, dropout=0.0,
            pos_type="relative_key", length_adapter=la,
        )
        assert conformer_config_from_hf(hf_config_from_conformer(ours)) == ours
    # gelu_new is the same tanh approximation
    assert conformer_config_from_hf(
        _adapter_hf_config(adapter_act="gelu_new")
    ).length_adapter.activation == "gelu_tanh"
    # ConformerConfig's own dict / JSON round trip keeps the nested config
    import json

    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["length_adapter"]["output_dim"] == 24
    assert ConformerConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown LengthAdapterConfig fields"):
        ConformerConfig.from_dict({**data, "length_adapter": {"strides": 2}})


@pytest.mark.parametrize(
    ("adapter", "match"),
    [
        (dict(num_layers=-1), "length_adapter.num_layers"),
        (dict(kernel_size=0), "length_adapter.kernel_size"),
        (dict(stride=0), "length_adapter.stride"),
        (dict(output_dim=0), "length_adapter.output_dim"),
        (dict(output_dim=30), "not divisible by num_heads 4"),
        (dict(activation="swish"), "length_adapter.activation"),
    ],
)
def test_length_adapter_config_validation(adapter, match):
    with pytest.raises(ValueError, match=match):
        ConformerConfig(dim=32, num_heads=4, length_adapter=LengthAdapterConfig(**adapter)).validate()
    with pytest.raises(ValueError, match="LengthAdapterConfig or None"):
        ConformerConfig(length_adapter={"num_layers": 1}).validate()


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (1, 2), (8, 8)])
def test_adapter_output_does_not_depend_on_padding(kernel, stride):
    """An utterance's adapter output is the same alone and next to longer ones (HF's is not:
    its last valid frames read the batch's padding)."""
    cfg = ConformerConfig(
        front_end="stack", subsampling_factor=2, dim=32, num_layers=1, num_heads=4, ffn_dim=40,
        conv_kernel=5, conv_causal=True, conv_bias=False, dropout=0.0,
        length_adapter=LengthAdapterConfig(num_layers=2, kernel_size=kernel, stride=stride,
                                           output_dim=24, intermediate_ffn=True),
    )
    torch.manual_seed(0)
    enc = create_conformer_encoder(cfg).eval()
    x = torch.randn(1, 34, 80)
    with torch.no_grad():
        alone, alone_lens = enc(x, torch.tensor([34]))
        for extra in (1, 7, 40):
            batch = torch.cat((x, torch.zeros(1, extra, 80)), dim=1)
            other = torch.randn(1, 34 + extra, 80)
            out, lens = enc(torch.cat((batch, other)), torch.tensor([34, 34 + extra]))
            assert torch.equal(lens[:1], alone_lens)
            n = int(alone_lens[0])
            torch.testing.assert_close(out[0, :n], alone[0, :n], rtol=0, atol=1e-5)
            assert not out[0, n:].any()
    assert torch.equal(alone_lens, enc.output_lengths(torch.tensor([34])))


def test_hf_adapter_reads_batch_padding():
    """Why the comparisons above run HF per utterance: in a padded HF batch the last valid
    frame's convolution window of a shorter utterance reads the padding, and through the
    adapter's attention every frame of it changes (ours does not)."""
    hf_model = _hf_model(_adapter_hf_config())
    ours = _converted(hf_model)
    fbank, fbank_lens, stacked, mask = _batch([13, 7])
    with torch.no_grad():
        batched = hf_model(input_features=stacked, attention_mask=mask).last_hidden_state
        alone = hf_model(input_features=stacked[1:, :7]).last_hidden_state
        out, out_lens = ours(fbank, fbank_lens)
    n = int(out_lens[1])
    assert n == alone.shape[1] == 4
    assert (batched[1, :n] - alone[0]).abs().max() > 1e-3
    torch.testing.assert_close(batched[0], out[0, : batched.shape[1]], rtol=0, atol=1e-4)
    torch.testing.assert_close(out[1, :n], alone[0], rtol=0, atol=1e-4)


def test_adapter_encoder_cannot_stream():
    ours = _converted(_hf_model(_adapter_hf_config())).eval()
    with pytest.raises(ValueError, match="length adapter"):
        ours.init_streaming_state(1, chunk_size=4)
    with pytest.raises(ValueError, match="length adapter"):
        ours.forward_chunk(torch.zeros(1, 4, 32), None)
    with pytest.raises(ValueError, match="length adapter"):
        ours.streaming_forward(torch.zeros(1, 8, 80), None)


def test_adapter_heads_use_the_output_width():
    from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig
    from speechfm.models.ctc import CtcModelConfig, create_ctc_model

    conformer = conformer_config_from_hf(
        _adapter_hf_config(num_adapter_layers=2, output_hidden_size=24)
    )
    config = CtcModelConfig(encoder=SpeechEncoderConfig(
        normalization="none", specaugment=False, conformer=conformer), vocab_size=7)
    torch.manual_seed(0)
    model = create_ctc_model(config).eval()
    assert model.encoder.dim == 24 and model.encoder.conformer.dim == 32
    assert model.head.in_features == 24
    assert config.frame_shift_s == pytest.approx(0.01 * 2 * 4)
    feats = torch.randn(2, 40, 80)
    x_lens = torch.tensor([40, 26])
    with torch.no_grad():
        out, out_lens = model.encoder(feats, x_lens)
        assert out.shape[-1] == 24
        assert torch.equal(out_lens, model.encoder.output_lengths(x_lens))
        assert model.head(out).shape[:2] == out.shape[:2]


def test_adapter_directory_round_trip(tmp_path, capsys):
    import numpy as np

    import speechfm
    from speechfm.cli import main
    from speechfm.models.io import read_model_config

    hf_model = _hf_model(_adapter_hf_config(
        num_adapter_layers=2, output_hidden_size=24, use_intermediate_ffn_before_adapter=True))
    hf_model.save_pretrained(tmp_path / "hf")
    dst = tmp_path / "ours"
    assert main(["convert", str(tmp_path / "hf"), str(dst)]) == 0
    assert "converted" in capsys.readouterr().out
    conformer = read_model_config(dst)["model"]["encoder"]["conformer"]
    assert conformer["length_adapter"] == {
        "num_layers": 2, "kernel_size": 3, "stride": 2, "output_dim": 24,
        "activation": "relu", "intermediate_ffn": True,
    }

    model = speechfm.load(dst)
    assert model.frame_shift_s == pytest.approx(0.02 * 4)
    encoder = model.module.encoder
    assert encoder.dim == 24
    _assert_adapter_matches_hf(encoder.conformer.eval(), hf_model, [23, 17, 12])
    # embed returns the blocks' layers, at their frame rate and width
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype(np.float32)
    (emb,) = model.embed(tone, sample_rate=16000, layers=(-1,))
    frames = encoder.layer_lengths(torch.tensor([(8000 - 400) // 160 + 1]))
    assert emb.shape == (int(frames[0]), 32)

    back = tmp_path / "hf2"
    convert_to_hf_dir(dst, back)
    hf2 = transformers.Wav2Vec2BertModel.from_pretrained(back, local_files_only=True)
    assert hf2.config.add_adapter and hf2.config.num_adapter_layers == 2
    assert hf2.config.output_hidden_size == 24 and hf2.config.use_intermediate_ffn_before_adapter
    theirs, again = hf_model.state_dict(), hf2.state_dict()
    assert sorted(theirs) == sorted(again)
    for key, value in theirs.items():
        assert torch.equal(value, again[key]), key

    # and the function the CLI calls, on the exported directory
    convert_from_hf_dir(back, tmp_path / "ours2")
    assert read_model_config(tmp_path / "ours2")["model"]["encoder"]["conformer"] == conformer
