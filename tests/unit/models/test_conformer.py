"""The shared Conformer encoder: config, sizes, forward, streaming, adapters, training aids."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from functools import partial

import pytest
import torch

from speechfm.models.conformer import (
    ConformerConfig,
    conformer_base,
    conformer_large,
    conformer_small,
    conformer_tiny,
    create_conformer_encoder,
)
from speechfm.nn.adapters import (
    BottleneckAdapter,
    LoRA,
    PromptTuning,
    count_parameters,
    freeze_all_but_adapters,
)
from speechfm.nn.masks import sample_dynamic_chunk

POS_TYPES = ["rel_pos", "relative_key", "rotary", "abs", "none"]


def _tiny(**overrides) -> ConformerConfig:
    return dataclasses.replace(conformer_tiny(), **overrides)


def _encoder(**overrides):
    torch.manual_seed(0)
    return create_conformer_encoder(_tiny(**overrides)).eval()


def _batch(lens=(61, 44), feat=80, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lens), max(lens), feat, generator=g)
    return x, torch.tensor(lens)


# ------------------------------------------------------------------ config and sizes


def _expected_params(c: ConformerConfig) -> int:
    """Parameter count written out from the architecture, independently of the code."""

    def lin(i, o, bias=True):
        return i * o + (o if bias else 0)

    def ln(d):
        return 2 * d

    d, f = c.dim, c.input_dim
    if c.front_end == "conv2d":
        layers = {4: [(3, 2), (3, 2)], 6: [(3, 2), (5, 3)], 8: [(3, 2)] * 3}[c.subsampling_factor]
        ch, c_in, total = c.front_end_channels, 1, 0
        for k, s in layers:
            total += c_in * ch * k * k + ch
            c_in = ch
            f = (f - k) // s + 1
        front = total + lin(ch * f, d)
    elif c.front_end == "vgg":
        c1, c2 = c.front_end_channels // 2, c.front_end_channels
        convs = [(1, c1), (c1, c1), (c1, c2), (c2, c2)]
        front = sum(i * o * 9 + o for i, o in convs)
        front += lin(c2 * math.ceil(math.ceil(f / 2) / 2), d)
    elif c.front_end == "patch":
        front = c.patch_size[0] * c.patch_size[1] * d + d  # Conv2d(1, d, patch)
    else:
        s = c.subsampling_factor
        front = ln(f * s) + lin(f * s, d)
    ffn = ln(d) + lin(d, c.ffn_dim) + lin(c.ffn_dim, d)
    attn = ln(d) + 4 * lin(d, d)
    head = d // c.num_heads
    if c.pos_type == "rel_pos":
        attn += d * d + 2 * d  # linear_pos (no bias), pos_bias_u, pos_bias_v
    elif c.pos_type == "relative_key":
        attn += (c.rel_left_max + c.rel_right_max + 1) * head
    conv = (
        ln(d)
        + lin(d, 2 * d, c.conv_bias)
        + d * c.conv_kernel
        + (d if c.conv_bias else 0)
        + 2 * d  # LayerNorm or BatchNorm affine
        + lin(d, d, c.conv_bias)
    )
    block = 2 * ffn + attn + conv + ln(d)
    return front + c.num_layers * block + (ln(d) if c.final_norm else 0)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"subsampling_factor": 6, "pos_type": "relative_key"},
        {"subsampling_factor": 8, "pos_type": "rotary", "final_norm": True},
        {"front_end": "vgg", "pos_type": "abs", "conv_norm": "batch_norm"},
        {"front_end": "stack", "subsampling_factor": 2, "conv_bias": False, "pos_type": "none"},
        {"front_end": "patch", "subsampling_factor": 10},
    ],
)
def test_parameter_count_matches_analytic_formula(overrides):
    cfg = _tiny(**overrides)
    assert count_parameters(create_conformer_encoder(cfg)) == _expected_params(cfg)


def test_named_sizes_on_meta_device():
    expected = {
        conformer_small: (15e6, 25e6),
        conformer_base: (90e6, 110e6),
        conformer_large: (580e6, 620e6),
    }
    for make, (lo, hi) in expected.items():
        cfg = make()
        with torch.device("meta"):
            enc = create_conformer_encoder(cfg)
        n = count_parameters(enc)
        assert n == _expected_params(cfg), make.__name__
        assert lo <= n <= hi, (make.__name__, n)
    large = conformer_large()
    assert (large.num_layers, large.dim, large.num_heads, large.ffn_dim) == (24, 1024, 16, 4096)
    assert (large.pos_type, large.rel_left_max, large.rel_right_max) == ("relative_key", 64, 8)
    assert large.input_dim * large.subsampling_factor == 160


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conv_kernel": 4}, "conv_kernel"),
        ({"dim": 30, "num_heads": 4}, "divisible"),
        ({"front_end": "conv2d", "subsampling_factor": 3}, "4, 6 or 8"),
        ({"front_end": "mel"}, "front_end"),
        ({"pos_type": "alibi"}, "pos_type"),
        ({"dropout": 1.5}, "dropout"),
        ({"layer_drop": 1.0}, "layer_drop"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"stack_mode": "round"}, "stack_mode"),
        ({"dim": 12, "num_heads": 4, "pos_type": "rotary"}, "even head dim"),
        ({"patch_size": (16,)}, "patch_size"),
        ({"patch_size": [16, 16]}, "patch_size"),
        ({"patch_stride": (0, 10)}, "patch_stride"),
        ({"front_end": "patch", "subsampling_factor": 4}, r"patch_stride\[0\]"),
        ({"front_end": "patch", "subsampling_factor": 10, "input_dim": 12}, "input_dim"),
    ],
)
def test_validate_names_the_bad_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**overrides).validate()


def test_config_dict_round_trip():
    cfg = conformer_large()
    assert ConformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ConformerConfig fields"):
        ConformerConfig.from_dict({**cfg.to_dict(), "dimm": 3})


def test_patch_config_round_trip_through_json():
    cfg = _tiny(front_end="patch", patch_size=(8, 20), patch_stride=(4, 12), subsampling_factor=4)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["patch_size"] == [8, 20]  # JSON has no tuples
    back = ConformerConfig.from_dict(data)
    assert back == cfg and back.patch_size == (8, 20) and back.patch_stride == (4, 12)
    assert ConformerConfig.from_dict(json.loads(json.dumps(_tiny().to_dict()))) == _tiny()


# ------------------------------------------------------------------ forward


def test_forward_shapes_lengths_and_layers():
    enc = _encoder()
    x, x_lens = _batch()
    out, out_lens, layers = enc(x, x_lens, return_layers=[0, 1, -1])
    assert out_lens.tolist() == [(61 - 3) // 4, (44 - 3) // 4] and out_lens.dtype == torch.int64
    assert out.shape == (2, 14, 32)
    assert torch.equal(enc.output_lengths(x_lens), out_lens)
    assert len(layers) == 3 and all(t.shape == out.shape for t in layers)
    torch.testing.assert_close(layers[2], out)  # -1 = last block (no final norm here)
    assert (out[1, out_lens[1] :] == 0).all() and (layers[0][1, out_lens[1] :] == 0).all()
    front, _ = enc.front_end(x, x_lens)
    torch.testing.assert_close(layers[0][0], front[0])
    with pytest.raises(ValueError, match="out of range"):
        enc(x, x_lens, return_layers=[3])


@pytest.mark.parametrize("pos_type", POS_TYPES)
def test_padding_invariance_and_lone_equality(pos_type):
    enc = _encoder(pos_type=pos_type)
    x, x_lens = _batch()
    x2 = x.clone()
    x2[1, 44:] = 1e4
    with torch.no_grad():
        a, lens = enc(x, x_lens)
        b, _ = enc(x2, x_lens)
        alone, _ = enc(x[1:, :44], x_lens[1:])
    n = int(lens[1])
    torch.testing.assert_close(a[1, :n], b[1, :n], atol=1e-6, rtol=0)
    torch.testing.assert_close(a[1, :n], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("patch", "stride"),
    [((16, 16), (10, 10)), ((4, 32), (3, 24)), ((6, 80), (4, 80))],  # AST; 3 bins; 1 bin
)
def test_patch_front_end_lengths_and_padding(patch, stride):
    enc = _encoder(
        front_end="patch", patch_size=patch, patch_stride=stride, subsampling_factor=stride[0]
    )
    freq = (80 - patch[1]) // stride[1] + 1
    x, x_lens = _batch()
    x2 = x.clone()
    x2[1, 44:] = 1e4  # garbage padding must not reach valid tokens
    with torch.no_grad():
        out, out_lens, layers = enc(x, x_lens, return_layers=[0])
        out2, _ = enc(x2, x_lens)
        alone, alone_lens = enc(x[1:, :44], x_lens[1:])
    expect = [((n - patch[0]) // stride[0] + 1) * freq for n in (61, 44)]
    assert out_lens.tolist() == expect and out_lens.dtype == torch.int64
    assert torch.equal(enc.output_lengths(x_lens), out_lens)
    assert out.shape == (2, expect[0], 32)
    assert (out[1, expect[1] :] == 0).all() and (layers[0][1, expect[1] :] == 0).all()
    assert alone_lens.tolist() == [expect[1]] and alone.shape[1] == expect[1]
    torch.testing.assert_close(out2[1, : expect[1]], out[1, : expect[1]], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone[0], out[1, : expect[1]], atol=1e-5, rtol=1e-5)
    # Tokens are patches, time-major: token t * freq + f is patch (t, f) of the front end.
    front, front_lens = enc.front_end(x, x_lens)
    assert torch.equal(front_lens, out_lens)
    w = enc.front_end.proj.weight[:, 0]  # (C, patch_t, patch_f)
    t, f = 1, freq - 1
    window = x[
        0, t * stride[0] : t * stride[0] + patch[0], f * stride[1] : f * stride[1] + patch[1]
    ]
    expect_token = (window * w).sum((1, 2)) + enc.front_end.proj.bias
    torch.testing.assert_close(front[0, t * freq + f], expect_token, atol=1e-5, rtol=1e-5)


def test_chunked_attention_limits_what_frames_see():
    enc = _encoder(conv_causal=True)
    x, x_lens = _batch(lens=(61,))
    x2 = x.clone()
    x2[:, 40:] += 1.0  # subsampled frames >= 9 depend on these (frame t reads 4t..4t+6)
    with torch.no_grad():
        full, _ = enc(x, x_lens)
        a, _ = enc(x, x_lens, chunk_size=4, left_context=-1)
        b, _ = enc(x2, x_lens, chunk_size=4, left_context=-1)
    # chunks [0, 4) and [4, 8) never see frames >= 9
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-6, rtol=0)
    assert (a[:, 8:] - b[:, 8:]).abs().amax() > 1e-3
    assert (a - full).abs().amax() > 1e-3  # chunking really changes the computation


# ------------------------------------------------------------------ streaming


def _stream(enc, x, x_lens, chunk, left, sizes):
    state = enc.init_streaming_state(x.shape[0], chunk_size=chunk, left_context=left)
    outs, total, pos, i = [], torch.zeros(x.shape[0], dtype=torch.int64), 0, 0
    stop = int(x_lens.min())
    while pos + sizes[i % len(sizes)] < stop:
        step = sizes[i % len(sizes)]
        out, lens, state = enc.streaming_forward(x[:, pos : pos + step], state)
        assert out.shape[1] % chunk == 0  # outputs come whole chunks at a time
        outs.append(out)
        total += lens
        pos, i = pos + step, i + 1
    out, lens, state = enc.streaming_forward(x[:, pos:], state, x_lens - pos, final=True)
    outs.append(out)
    total += lens
    with pytest.raises(RuntimeError, match="final"):
        enc.streaming_forward(x[:, :1], state)
    return torch.cat(outs, 1), total


@pytest.mark.parametrize("pos_type", POS_TYPES)
@pytest.mark.parametrize(("chunk", "left"), [(1, -1), (2, 0), (3, 4), (4, 8), (5, -1)])
def test_streaming_equals_chunked_full_forward(pos_type, chunk, left):
    enc = _encoder(pos_type=pos_type, conv_causal=True)
    x, x_lens = _batch()
    with torch.no_grad():
        full, full_lens = enc(x, x_lens, chunk_size=chunk, left_context=left)
    streamed, lens = _stream(enc, x, x_lens, chunk, left, sizes=[7, 3, 12, 1, 9])
    assert torch.equal(lens, full_lens)
    for n, length in enumerate(full_lens.tolist()):
        torch.testing.assert_close(streamed[n, :length], full[n, :length], atol=1e-5, rtol=0)


def test_streamed_output_does_not_depend_on_the_piece_sizes():
    """The front end runs on each chunk's own raw frames whatever the calls carried, so
    any split of the input computes exactly the same (not merely close) outputs."""
    enc = _encoder(pos_type="rel_pos", conv_causal=True)
    x, x_lens = _batch()
    runs = [_stream(enc, x, x_lens, 4, 8, sizes=sizes) for sizes in ([7, 3, 12, 1, 9], [1], [40])]
    for out, lens in runs[1:]:
        assert torch.equal(lens, runs[0][1])
        assert torch.equal(out, runs[0][0])


def test_frames_to_next_chunk_is_what_completes_a_chunk():
    enc = _encoder(conv_causal=True)
    x, _ = _batch(lens=(120,))
    state = enc.init_streaming_state(1, chunk_size=3, left_context=6)
    pos = 0
    for _ in range(4):
        need = enc.frames_to_next_chunk(state)
        out, _, state = enc.streaming_forward(x[:, pos : pos + need - 1], state)
        assert out.shape[1] == 0 and enc.frames_to_next_chunk(state) == 1
        out, _, state = enc.streaming_forward(x[:, pos + need - 1 : pos + need], state)
        assert out.shape[1] == 3
        pos += need


def test_streams_share_positional_tables_until_the_weights_change():
    enc = _encoder(pos_type="rel_pos", conv_causal=True)
    x, x_lens = _batch(lens=(61,))
    first = enc.init_streaming_state(1, chunk_size=4, left_context=8)
    assert enc.init_streaming_state(1, chunk_size=2).pos_memos is first.pos_memos
    _stream(enc, x, x_lens, 4, 8, sizes=[9])
    assert first.pos_memos[0]  # the whole chunks' table, now shared
    with torch.no_grad():
        enc.blocks[0].attn.linear_pos.weight.mul_(1.5)  # in place: the same storage
    assert enc.init_streaming_state(1, chunk_size=4).pos_memos is not first.pos_memos
    with torch.no_grad():
        full, _ = enc(x, x_lens, chunk_size=4, left_context=8)
    streamed, _ = _stream(enc, x, x_lens, 4, 8, sizes=[9])
    torch.testing.assert_close(streamed, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_streaming_with_frame_stacking_front_end(mode):
    """w2v-BERT-style front end (stacking + projection), relative_key, odd lengths."""
    enc = _encoder(
        front_end="stack",
        subsampling_factor=2,
        stack_mode=mode,
        pos_type="relative_key",
        rel_left_max=5,
        rel_right_max=2,
        conv_causal=True,
        conv_bias=False,
        final_norm=True,
    )
    x, x_lens = _batch(lens=(37, 30, 23))
    with torch.no_grad():
        full, full_lens = enc(x, x_lens, chunk_size=3, left_context=6)
    streamed, lens = _stream(enc, x, x_lens, 3, 6, sizes=[5, 2, 8])
    assert torch.equal(lens, full_lens)
    for n, length in enumerate(full_lens.tolist()):
        torch.testing.assert_close(streamed[n, :length], full[n, :length], atol=1e-5, rtol=0)


def test_streaming_with_a_one_row_patch_front_end():
    """Patches spanning all 80 bins are conv2d-like time steps: they stream exactly; patches
    that split the frequency axis (several tokens per step) refuse to."""
    enc = _encoder(
        front_end="patch",
        patch_size=(6, 80),
        patch_stride=(4, 80),
        subsampling_factor=4,
        conv_causal=True,
        pos_type="relative_key",
    )
    x, x_lens = _batch(lens=(37, 30, 23))
    with torch.no_grad():
        full, full_lens = enc(x, x_lens, chunk_size=2, left_context=4)
    streamed, lens = _stream(enc, x, x_lens, 2, 4, sizes=[5, 2, 8])
    assert torch.equal(lens, full_lens)
    for n, length in enumerate(full_lens.tolist()):
        torch.testing.assert_close(streamed[n, :length], full[n, :length], atol=1e-5, rtol=0)
    enc = _encoder(front_end="patch", subsampling_factor=10, conv_causal=True)
    state = enc.init_streaming_state(1, chunk_size=2)
    with pytest.raises(ValueError, match="cannot stream"):
        enc.streaming_forward(x[:1], state)


def test_encoder_level_streaming_over_subsampled_frames():
    enc = _encoder(pos_type="rel_pos", conv_causal=True)
    x, x_lens = _batch(lens=(61,))
    with torch.no_grad():
        full, _ = enc(x, x_lens, chunk_size=4, left_context=4)
        front, front_lens = enc.front_end(x, x_lens)
    state = enc.init_streaming_state(1, chunk_size=4, left_context=4)
    pieces = []
    for start in range(0, int(front_lens[0]), 4):
        out, state = enc.forward_chunk(front[:, start : start + 4], state)
        pieces.append(out)
    assert state.attn_caches[0][0].shape[2] == 4  # cache bounded by the left context
    assert state.conv_caches[0].shape == (1, 32, 4)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)


def test_streaming_refuses_what_it_cannot_do_exactly():
    x, _ = _batch(lens=(20,))
    with pytest.raises(ValueError, match="causal"):
        _encoder().init_streaming_state(1, chunk_size=2)
    enc = _encoder(front_end="vgg", conv_causal=True)
    state = enc.init_streaming_state(1, chunk_size=2)
    with pytest.raises(ValueError, match="cannot stream"):
        enc.streaming_forward(x, state)
    enc = _encoder(conv_causal=True)
    with pytest.raises(ValueError, match="positive chunk_size"):
        enc.init_streaming_state(1)
    state = enc.init_streaming_state(2, chunk_size=2)
    with pytest.raises(ValueError, match="only the final call"):
        enc.streaming_forward(torch.randn(2, 8, 80), state, torch.tensor([8, 5]))
    enc.add_adapter("p", partial(PromptTuning, num_prompts=2), points=("prompt",))
    with pytest.raises(ValueError, match="prompt"):
        enc.streaming_forward(torch.randn(2, 30, 80), state)


# ------------------------------------------------------------------ training aids


def test_dynamic_chunk_training_draws_a_chunk_per_batch():
    enc = _encoder(dynamic_chunk=True, dynamic_chunk_max=4, dynamic_left_context=True)
    x, x_lens = _batch()
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        chunk, left = sample_dynamic_chunk(
            14, max_chunk=4, full_context_prob=0.5, dynamic_left_context=True
        )
        seen.add(chunk)
        torch.manual_seed(seed)
        enc.train()
        trained, _ = enc(x, x_lens)
        enc.eval()
        with torch.no_grad():
            expect, _ = enc(x, x_lens, chunk_size=chunk, left_context=left)
        torch.testing.assert_close(trained.detach(), expect, atol=1e-6, rtol=0)
    assert -1 in seen and len(seen) > 1


def test_gradient_checkpointing_gives_the_same_gradients():
    x, x_lens = _batch()
    grads = []
    for ckpt in (False, True):
        enc = _encoder(dropout=0.1, layer_drop=0.3, gradient_checkpointing=ckpt).train()
        torch.manual_seed(7)
        out, _ = enc(x, x_lens)
        out.pow(2).sum().backward()
        grads.append({k: p.grad.clone() for k, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pos_type", POS_TYPES)
def test_bf16_autocast_runs_finite_and_close(pos_type):
    enc = _encoder(pos_type=pos_type)
    x, x_lens = _batch()
    with torch.no_grad():
        ref, _ = enc(x, x_lens, chunk_size=3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, low_lens = enc(x, x_lens, chunk_size=3)
    assert torch.equal(low_lens, x_lens.new_tensor([14, 10]))
    low = low.float()
    assert torch.isfinite(low).all()
    assert (low - ref).norm() / ref.norm() < 0.05


# ------------------------------------------------------------------ adapters


def test_adapters_are_identity_at_insertion():
    enc = _encoder()
    x, x_lens = _batch()
    with torch.no_grad():
        before, _ = enc(x, x_lens)
    enc.add_adapter(
        "houlsby",
        partial(BottleneckAdapter, bottleneck=4),
        points=("after_ffn1", "after_attn", "after_conv", "after_ffn2", "after_block", "parallel"),
    )
    enc.add_adapter(
        "lora", partial(LoRA, rank=2), points=("attn_q", "attn_k", "attn_v", "attn_out")
    )
    assert enc.adapter_names() == {"houlsby", "lora"}
    with torch.no_grad():
        after, _ = enc(x, x_lens)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    # once trained (B/up non-zero) they change the output, and can be switched off per call
    with torch.no_grad():
        for block in enc.blocks:
            block.adapters.slots["attn_v"]["lora"].lora_b.normal_()
        changed, _ = enc(x, x_lens)
        off, _ = enc(x, x_lens, adapters=())
        only_houlsby, _ = enc(x, x_lens, adapters=["houlsby"])
    assert (changed - before).abs().amax() > 1e-3
    torch.testing.assert_close(off, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(only_houlsby, before, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="already exists"):
        enc.add_adapter("lora", partial(LoRA, rank=2), points=("attn_q",))
    with pytest.raises(ValueError, match="out of range"):
        enc.add_adapter("late", partial(LoRA, rank=2), points=("attn_q",), layers=[2])
    with pytest.raises(ValueError, match="unknown adapter point"):
        enc.add_adapter("odd", partial(LoRA, rank=2), points=("attn_z",))
    assert enc.remove_adapter("lora") == 2 * 4
    assert enc.adapter_names() == {"houlsby"}


def test_only_adapters_train_after_freezing():
    enc = _encoder().train()
    base = count_parameters(enc)
    enc.add_adapter("ad", partial(BottleneckAdapter, bottleneck=4), layers=[-1])
    enc.add_adapter("lora", partial(LoRA, rank=2), points=("attn_q", "attn_v"), layers=[0])
    adapter_params = (2 * 32 + 32 * 4 + 4 + 4 * 32 + 32) + 2 * (2 * 32 + 32 * 2)
    assert count_parameters(enc) == base + adapter_params
    assert freeze_all_but_adapters(enc) == adapter_params
    x, x_lens = _batch()
    out, _ = enc(x, x_lens)
    (out - 1).pow(2).sum().backward()
    for name, p in enc.named_parameters():
        if p.requires_grad:
            assert ".adapters." in name
            assert p.grad is not None
        else:
            assert p.grad is None, name
    assert enc.blocks[0].adapters.slots["attn_q"]["lora"].lora_b.grad.abs().sum() > 0


def test_language_dependent_adapters_and_prompts():
    enc = _encoder()
    x, x_lens = _batch()
    with torch.no_grad():
        plain, _ = enc(x, x_lens)
    enc.add_adapter("lid", partial(BottleneckAdapter, bottleneck=4), languages=["en", "pl"])
    with torch.no_grad():
        for block in enc.blocks:
            block.adapters.slots["after_block"]["lid@pl"].up.weight.normal_()
        en, _ = enc(x, x_lens, language="en")
        pl, _ = enc(x, x_lens, language="pl")
        none, _ = enc(x, x_lens)
    torch.testing.assert_close(en, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(none, plain, atol=1e-6, rtol=0)
    assert (pl - plain).abs().amax() > 1e-3

    enc.add_adapter("prompt", partial(PromptTuning, num_prompts=3), points=("prompt",), layers=[1])
    with torch.no_grad():
        prompted, lens, layers = enc(x, x_lens, chunk_size=2, return_layers=[1])
        unprompted, _ = enc(x, x_lens, chunk_size=2, adapters=["lid"])
        ref, _ = enc(x, x_lens, chunk_size=2)
    assert prompted.shape == plain.shape and torch.equal(lens, x_lens.new_tensor([14, 10]))
    assert (prompted - unprompted).abs().amax() > 1e-4  # prefix frames change attention
    assert torch.equal(prompted, ref)
    with torch.no_grad():  # layer 1 comes before the prompt (inserted into block index 1)
        _, _, layers_off = enc(x, x_lens, chunk_size=2, return_layers=[1], adapters=["lid"])
    torch.testing.assert_close(layers[0], layers_off[0])


def test_import_needs_torch_only():
    code = (
        "import sys, speechfm.nn, speechfm.models.conformer; "
        "print(','.join(m for m in ('lhotse', 'soundfile', 'sentencepiece') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
