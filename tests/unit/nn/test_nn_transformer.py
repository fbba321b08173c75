"""The plain transformer block, prefix tuning, the convolution adapter and the spectrogram
transformer's adapters (PETL methods): zero-initialised adapters change nothing at start,
frozen weights stay bit-identical through adapter training, trainable-parameter counts."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch

from speechfm.models.ast import AstModelConfig, ast_mini, create_ast_model
from speechfm.nn.adapters import (
    BottleneckAdapter,
    ConvAdapter,
    LoRA,
    PrefixTuning,
    PromptTuning,
    adapter_factory,
    count_parameters,
    freeze_all_but_adapters,
)
from speechfm.nn.attention import MultiHeadSelfAttention
from speechfm.nn.conformer import ConformerBlock
from speechfm.nn.transformer import TransformerBlock


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_block_matches_manual_prenorm():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 32, eps=1e-6).eval()
    x = torch.randn(2, 5, 16)
    a = block.attn
    h = block.attn_norm(x)
    q, k, v = (m(h).view(2, 5, 2, 8).transpose(1, 2) for m in (a.q_proj, a.k_proj, a.v_proj))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
    y = x + a.out_proj(att.transpose(1, 2).reshape(2, 5, 16))
    f = block.ffn
    y = y + f.linear2(torch.nn.functional.gelu(f.linear1(block.ffn_norm(y))))
    torch.testing.assert_close(block(x), y, atol=1e-6, rtol=1e-5)


def test_prefix_tuning_is_attention_over_extra_keys():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(8, 2, pos_type="none").eval()
    block = TransformerBlock(8, 2, 16)
    slots = block.adapters
    prefix = PrefixTuning(8, 8, num_prefixes=3)
    slots.add("prefix", "p", prefix)
    x = torch.randn(2, 4, 8)
    y, (k_cache, _) = attn(x, adapters=slots)
    assert y.shape == x.shape and k_cache.shape[2] == 4  # prefixes never enter the cache
    q = attn.q_proj(x).view(2, 4, 2, 4).transpose(1, 2)
    k = torch.cat((prefix.keys.expand(2, 3, 8), attn.k_proj(x)), 1).view(2, 7, 2, 4)
    v = torch.cat((prefix.values.expand(2, 3, 8), attn.v_proj(x)), 1).view(2, 7, 2, 4)
    att = torch.softmax(q @ k.transpose(1, 2).transpose(-1, -2) / 2.0, -1) @ v.transpose(1, 2)
    ref = attn.out_proj(att.transpose(1, 2).reshape(2, 4, 8))
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=1e-5)
    # A padding mask still hides padded keys but never the prefixes.
    mask = torch.tensor([[True, True, False, False]] * 2).view(2, 1, 1, 4)
    y_masked, _ = attn(x, mask, adapters=slots)
    y_short, _ = attn(x[:, :2], adapters=slots)
    torch.testing.assert_close(y_masked[:, :2], y_short, atol=1e-6, rtol=1e-5)


def test_prefix_on_relative_position_conformer():
    torch.manual_seed(0)
    block = ConformerBlock(8, 2, 16, 3, pos_type="rel_pos").eval()
    x = torch.randn(1, 5, 8)
    base = block(x)
    block.adapters.add("prefix", "p", PrefixTuning(8, 8, num_prefixes=2))
    out = block(x)
    assert out.shape == base.shape and not torch.allclose(out, base)


@pytest.mark.parametrize("points", [("after_attn", "after_ffn"), ("after_ffn",),
                                    ("parallel_attn", "parallel_ffn"), ("parallel_ffn",)])
@pytest.mark.parametrize("kind", ["bottleneck", "conv"])
def test_zero_initialised_adapters_change_nothing(points, kind):
    model = create_ast_model(ast_mini(num_classes=3)).eval()
    _randomise(model)
    feats, lens = torch.randn(2, 30, 32), torch.tensor([30, 21])
    before = model.classify(feats, lens)
    model.encoder.add_adapter("a", adapter_factory(kind, bottleneck=8), points=points)
    assert torch.equal(model.classify(feats, lens), before)


def test_zero_initialised_lora_changes_nothing_and_prompts_do():
    model = create_ast_model(ast_mini(num_classes=3)).eval()
    _randomise(model)
    feats, lens = torch.randn(2, 30, 32), torch.tensor([30, 21])
    before = model.classify(feats, lens)
    model.encoder.add_adapter("lora", partial(LoRA, rank=4, alpha=8), points=("attn_q", "attn_v"))
    assert torch.equal(model.classify(feats, lens), before)
    model.encoder.add_adapter("prompt", partial(PromptTuning, num_prompts=5), points=("prompt",))
    assert not torch.allclose(model.classify(feats, lens), before)
    assert torch.equal(model.classify(feats, lens, adapters=("lora",)), before)


def test_adapters_in_config_rebuild_with_the_model():
    config = ast_mini(num_classes=3)
    config.adapters = [{"name": "ad", "kind": "conv", "points": ["after_ffn"],
                        "options": {"bottleneck": 8, "kernel": 5}},
                       {"name": "pre", "kind": "prefix", "points": ["prefix"],
                        "options": {"num_prefixes": 4}}]
    model = create_ast_model(config)
    assert model.encoder.adapter_names() == {"ad", "pre"}
    same = create_ast_model(AstModelConfig.from_dict(config.to_dict()))
    assert same.state_dict().keys() == model.state_dict().keys()
    bad = ast_mini()
    bad.adapters = [{"name": "x", "kind": "conv", "points": ["after_conv"]}]
    with pytest.raises(ValueError, match="points"):
        bad.validate()
    bad.adapters = [{"name": "x", "kind": "lora", "points": ["attn_q"], "options": {"rnk": 2}}]
    with pytest.raises(ValueError, match="rnk"):
        bad.validate()


@pytest.mark.parametrize("kind,points", [
    ("bottleneck", ("after_ffn",)), ("conv", ("parallel_ffn",)), ("lora", ("attn_q", "attn_v")),
    ("prompt", ("prompt",)), ("prefix", ("prefix",))])
def test_frozen_weights_bit_identical_through_adapter_training(kind, points):
    torch.manual_seed(0)
    model = create_ast_model(ast_mini(num_classes=3))
    opts = {"bottleneck": {"bottleneck": 8}, "conv": {"bottleneck": 8, "kernel": 3},
            "lora": {"rank": 2}, "prompt": {"num_prompts": 3}, "prefix": {"num_prefixes": 3}}
    model.encoder.add_adapter("a", adapter_factory(kind, **opts[kind]), points=points)
    freeze_all_but_adapters(model)
    for p in model.head.parameters():
        p.requires_grad_(True)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and trained
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=0.1)
    batch = {"features": torch.randn(4, 30, 32), "x_lens": torch.tensor([30, 28, 25, 30]),
             "targets": torch.tensor([0, 1, 2, 1]), "cut_ids": list("abcd")}
    for _ in range(3):
        opt.zero_grad()
        loss, _, _ = model(batch)
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, trained[n]) for n, p in model.named_parameters()
               if n in trained and ".adapters." in n)


def test_adapter_parameter_counts():
    dim, layers = 32, 2
    assert count_parameters(BottleneckAdapter(dim, dim, bottleneck=8)) == 2 * dim + dim * 8 + 8 + 8 * dim + dim
    conv = ConvAdapter(dim, dim, bottleneck=8, kernel=5)
    assert count_parameters(conv) == 2 * dim + dim * 16 + 16 + 8 * 5 + 8 + 2 * 8 + 8 * dim + dim
    assert count_parameters(LoRA(dim, dim, rank=4)) == 2 * 4 * dim
    assert count_parameters(PrefixTuning(dim, num_prefixes=5)) == 2 * 5 * dim
    model = create_ast_model(ast_mini(num_classes=3))
    model.encoder.add_adapter("l", partial(LoRA, rank=4), points=("attn_q", "attn_v"))
    assert freeze_all_but_adapters(model) == layers * 2 * 2 * 4 * dim
    clone = copy.deepcopy(model)
    assert clone.encoder.remove_adapter("l") == layers * 2
