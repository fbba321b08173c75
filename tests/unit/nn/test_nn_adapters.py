"""Adapter modules, insertion slots, freezing and parameter counting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from speechfm.nn.adapters import (
    AdapterContext,
    AdapterSlots,
    BottleneckAdapter,
    LoRA,
    LoRALinear,
    PromptTuning,
    count_parameters,
    freeze_all_but_adapters,
)


def test_bottleneck_adapter_starts_as_zero_and_learns():
    torch.manual_seed(0)
    a = BottleneckAdapter(12, 12, bottleneck=4)
    x = torch.randn(3, 5, 12)
    assert torch.equal(a(x), torch.zeros(3, 5, 12))
    (a(x) - 1).pow(2).sum().backward()
    assert a.up.weight.grad.abs().sum() > 0
    assert count_parameters(a) == 2 * 12 + 12 * 4 + 4 + 4 * 12 + 12


def test_lora_linear_math_and_merge():
    torch.manual_seed(1)
    base = nn.Linear(6, 5)
    lin = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(4, 6)
    torch.testing.assert_close(lin(x), base(x))  # B = 0 at start
    with torch.no_grad():
        lin.lora.lora_b.normal_()
    a, b = lin.lora.lora_a, lin.lora.lora_b
    expect = base(x) + (4.0 / 2) * x @ a.t() @ b.t()
    torch.testing.assert_close(lin(x), expect)
    merged = lin.merged()
    assert isinstance(merged, nn.Linear)
    torch.testing.assert_close(merged(x), expect, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rank"):
        LoRA(4, 4, rank=0)


def test_prompt_tuning_shape_and_checks():
    p = PromptTuning(8, 8, num_prompts=3)
    assert p().shape == (3, 8)
    with pytest.raises(ValueError, match="in_dim == out_dim"):
        PromptTuning(8, 4)


def test_slots_select_by_name_and_language():
    slots = AdapterSlots(["after_block", "attn_q"])
    shared = BottleneckAdapter(4, 4)
    fr = BottleneckAdapter(4, 4)
    de = BottleneckAdapter(4, 4)
    slots.add("after_block", "shared", shared)
    slots.add("after_block", "lang", fr, language="fr")
    slots.add("after_block", "lang", de, language="de")
    assert slots.names() == {"shared", "lang"}

    def active(names=None, language=None):
        return slots.active("after_block", AdapterContext.make(names, language))

    assert active() == [shared]  # language-keyed adapters need a language
    assert active(language="fr") == [shared, fr]
    assert active(language="de") == [shared, de]
    assert active(names=["lang"], language="de") == [de]
    assert active(names="shared", language="de") == [shared]
    assert active(names=()) == []
    assert slots.active("attn_q", None) == []
    with pytest.raises(ValueError, match="already exists"):
        slots.add("after_block", "shared", BottleneckAdapter(4, 4))
    with pytest.raises(ValueError, match="unknown adapter point"):
        slots.add("after_conv", "x", BottleneckAdapter(4, 4))
    with pytest.raises(ValueError, match="without"):
        slots.add("after_block", "a.b", BottleneckAdapter(4, 4))
    assert slots.remove("lang") == 2
    assert slots.names() == {"shared"}


def test_residual_and_input_points_compute_sums():
    slots = AdapterSlots(["after_block", "parallel"])
    slots.add("after_block", "a", nn.Linear(3, 3))
    slots.add("parallel", "b", nn.Linear(3, 3))
    h, x = torch.randn(2, 3), torch.randn(2, 3)
    a = slots.slots["after_block"]["a"]
    b = slots.slots["parallel"]["b"]
    torch.testing.assert_close(slots.residual("after_block", h, None), h + a(h))
    torch.testing.assert_close(slots.add_from_input("parallel", x, h, None), h + b(x))


def test_freeze_all_but_adapters_counts():
    model = nn.Sequential(nn.Linear(5, 5), LoRALinear(nn.Linear(5, 3), rank=2))
    model.append(AdapterSlots(["after_block"]))
    model[2].add("after_block", "plain", nn.Linear(3, 3))  # any module in a slot counts
    total = count_parameters(model)
    assert total == (25 + 5) + (15 + 3) + (2 * 5 + 3 * 2) + (9 + 3)
    trainable = freeze_all_but_adapters(model)
    assert trainable == (2 * 5 + 3 * 2) + (9 + 3)
    assert count_parameters(model, trainable_only=True) == trainable
    assert not model[0].weight.requires_grad
    assert not model[1].base.weight.requires_grad
    assert model[1].lora.lora_a.requires_grad


def test_language_adapters_one_language_at_a_time():
    """Language-dependent adapters: one name gains languages one by one, each language can
    be removed alone, its weights read out alone, and trained alone."""
    from functools import partial

    from speechfm.models.conformer.config import conformer_tiny
    from speechfm.models.conformer.factory import create_conformer_encoder
    from speechfm.nn.adapters import (
        adapter_of_key,
        adapter_state_dict,
        base_state_dict,
        freeze_all_but,
    )

    torch.manual_seed(0)
    enc = create_conformer_encoder(conformer_tiny()).eval()
    make = partial(BottleneckAdapter, bottleneck=4)
    enc.add_adapter("lda", make, languages=["ky"])
    enc.add_adapter("lda", make, languages=["tt", "sv"])
    enc.add_adapter("shared", make)
    assert enc.adapter_languages("lda") == {"ky", "tt", "sv"}
    assert enc.adapter_languages("shared") == set()
    with pytest.raises(ValueError, match="already exists for language"):
        enc.add_adapter("lda", make, languages=["id", "tt"])
    with pytest.raises(ValueError, match="already exists"):
        enc.add_adapter("lda", make)  # a language-keyed name stays language-keyed
    with pytest.raises(ValueError, match="already exists"):
        enc.add_adapter("shared", make, languages=["ky"])
    with pytest.raises(ValueError, match="listed twice"):
        enc.add_adapter("other", make, languages=["ky", "ky"])
    assert "other" not in enc.adapter_names()

    ky = adapter_state_dict(enc, "lda", "ky")
    assert ky and all(".lda@ky." in k for k in ky)
    assert len(adapter_state_dict(enc, "lda")) == 3 * len(ky)
    base = base_state_dict(enc)
    assert all(adapter_of_key(k) is None for k in base)
    assert len(base) + 4 * len(ky) == len(enc.state_dict())
    assert adapter_of_key("blocks.0.adapters.slots.after_block.lda@tt.up.weight") == ("lda", "tt")
    assert adapter_of_key("blocks.0.adapters.slots.after_block.shared.up.weight") == ("shared", None)

    n = freeze_all_but(enc, "lda", "tt")
    trainable = [k for k, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all(".lda@tt." in k for k in trainable)
    assert n == sum(v.numel() for k, v in adapter_state_dict(enc, "lda", "tt").items())
    with pytest.raises(ValueError, match="no adapter 'lda@id'"):
        freeze_all_but(enc, "lda", "id")

    assert enc.remove_adapter("lda", "tt") == 2  # conformer_tiny: two blocks
    assert enc.adapter_languages("lda") == {"ky", "sv"}
    enc.add_adapter("lda", make, languages=["tt"])  # and can come back
    assert enc.remove_adapter("lda") == 6 and "lda" not in enc.adapter_names()
