"""speechfm.nn.quantizer: straight-through gradients, exact eval codes, temperature schedule,
perplexities on constructed assignments, padding and the collapse warning."""

from __future__ import annotations

import math

import pytest
import torch

from speechfm.nn.quantizer import (
    GumbelVectorQuantizer,
    QuantizerConfig,
    collapse_warning,
    create_gumbel_quantizer,
    gumbel_temperature,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _codebook_rows(q: GumbelVectorQuantizer, ids: torch.Tensor) -> torch.Tensor:
    """(N, T, G) ids -> (N, T, code_dim) concatenated codebook entries, by a plain loop."""
    book = q.codebook.detach().view(q.num_groups, q.num_entries, -1)
    n, t, g = ids.shape
    out = torch.empty(n, t, q.code_dim)
    for i in range(n):
        for j in range(t):
            out[i, j] = torch.cat([book[k, ids[i, j, k]] for k in range(g)])
    return out


def _one_hot_quantizer(v: int, groups: int = 1, scale: float = 20.0) -> GumbelVectorQuantizer:
    """input_dim = V, group k's logits = scale * x: frame x = e_i picks entry i in every group."""
    q = GumbelVectorQuantizer(v, num_groups=groups, num_entries=v, code_dim=4 * groups)
    with torch.no_grad():
        q.proj.weight.copy_(scale * torch.eye(v).repeat(groups, 1))
        q.proj.bias.zero_()
    return q.eval()


def test_training_is_straight_through_with_gradients_to_projection_codebook_and_input():
    torch.manual_seed(0)
    q = GumbelVectorQuantizer(8, num_groups=2, num_entries=16, code_dim=12).train()
    q.set_step(0)
    x = torch.randn(3, 5, 8, requires_grad=True)
    out = q(x, generator=_gen(1))
    # Forward value: exact codebook entries of the sampled ids.
    assert torch.allclose(out.quantized, _codebook_rows(q, out.sampled_ids), atol=1e-6)
    (out.quantized * torch.randn_like(out.quantized)).sum().backward()
    for grad in (q.proj.weight.grad, q.proj.bias.grad, q.codebook.grad, x.grad):
        assert grad is not None and bool(torch.isfinite(grad).all())
        assert float(grad.abs().sum()) > 0
    # The codebook gradient lands on the sampled entries only.
    hit = torch.zeros(2 * 16, dtype=torch.bool)
    for k in range(2):
        hit[k * 16 + out.sampled_ids[..., k].reshape(-1)] = True
    row_grad = q.codebook.grad[0].abs().sum(-1)
    assert bool((row_grad[~hit] == 0).all()) and bool((row_grad[hit] > 0).all())


def test_gumbel_sampling_is_seeded_and_noisy_at_high_temperature():
    torch.manual_seed(0)
    q = GumbelVectorQuantizer(4, num_entries=8, code_dim=4).train()
    x = torch.randn(2, 50, 4)
    a = q(x, generator=_gen(3)).sampled_ids
    assert torch.equal(a, q(x, generator=_gen(3)).sampled_ids)
    q.temperature = 100.0
    with torch.no_grad():
        q.proj.weight.mul_(0.01)  # flat logits: the noise decides
    out = q(x, generator=_gen(4))
    assert not torch.equal(out.sampled_ids, out.code_ids)


def test_eval_outputs_are_exactly_codebook_entries_of_the_argmax():
    torch.manual_seed(1)
    q = GumbelVectorQuantizer(6, num_groups=3, num_entries=10, code_dim=9).eval()
    x = torch.randn(2, 7, 6)
    out = q(x)
    assert out.code_ids.shape == (2, 7, 3) and out.code_ids.dtype == torch.int64
    assert torch.equal(out.code_ids, out.logits.argmax(-1))
    assert torch.equal(out.code_ids, q.proj(x).view(2, 7, 3, 10).argmax(-1))
    assert torch.equal(out.sampled_ids, out.code_ids)
    assert torch.equal(out.quantized, _codebook_rows(q, out.code_ids))


def test_temperature_schedule():
    assert gumbel_temperature(0, start=2.0, end=0.5, decay=0.9) == 2.0
    assert gumbel_temperature(3, start=2.0, end=0.5, decay=0.9) == pytest.approx(2.0 * 0.729)
    assert gumbel_temperature(100, start=2.0, end=0.5, decay=0.9) == 0.5
    q = GumbelVectorQuantizer(4, num_entries=8, code_dim=8)
    assert q.temperature == 2.0
    # Defaults reach the 0.1 floor at log(0.05) / log(0.999995) ~ 599 k steps.
    floor_step = math.ceil(math.log(0.1 / 2.0) / math.log(0.999995))
    assert q.temperature_at(10_000) == pytest.approx(2.0 * 0.999995**10_000)
    assert q.temperature_at(floor_step - 1000) > 0.1
    assert q.temperature_at(floor_step + 1) == 0.1
    assert q.temperature == 2.0  # temperature_at is pure
    q.set_step(10_000)
    assert q.temperature == pytest.approx(1.9024588)
    assert q(torch.randn(1, 2, 4)).temperature == q.temperature
    with pytest.raises(ValueError):
        q.temperature_at(-1)


@pytest.mark.parametrize("groups", [1, 2])
def test_perplexity_uniform_assignment_is_the_codebook_size(groups):
    v = 8
    q = _one_hot_quantizer(v, groups)
    x = torch.eye(v).repeat(3, 1).view(2, 12, v)  # every entry used equally often
    out = q(x)
    assert float(out.code_perplexity) == pytest.approx(groups * v, rel=1e-5)
    assert out.prob_perplexity.item() == pytest.approx(groups * v, rel=1e-5)
    assert out.diversity_loss.item() == pytest.approx(0.0, abs=1e-5)
    assert int(out.num_used_codes) == groups * v and float(out.used_fraction) == 1.0
    assert collapse_warning(out) is None


def test_perplexity_collapsed_assignment_is_one_per_group():
    v, groups = 16, 2
    q = GumbelVectorQuantizer(5, num_groups=groups, num_entries=v, code_dim=8).eval()
    with torch.no_grad():
        q.proj.weight.zero_()
        q.proj.bias.zero_()
        q.proj.bias[3] = 50.0  # group 0 -> entry 3
        q.proj.bias[v + 7] = 50.0  # group 1 -> entry 7
    out = q(torch.randn(4, 10, 5))
    assert bool((out.code_ids[..., 0] == 3).all()) and bool((out.code_ids[..., 1] == 7).all())
    assert float(out.code_perplexity) == pytest.approx(groups, abs=1e-4)
    assert out.prob_perplexity.item() == pytest.approx(groups, abs=1e-4)
    assert out.diversity_loss.item() == pytest.approx(1 - 1 / v, abs=1e-4)
    assert int(out.num_used_codes) == groups
    message = collapse_warning(out)
    assert message is not None and "collapse" in message and "2 of 32 codes" in message


def test_diversity_loss_bounds_and_gradient():
    torch.manual_seed(2)
    for groups, v in ((1, 4), (2, 32), (4, 8)):
        q = GumbelVectorQuantizer(6, num_groups=groups, num_entries=v, code_dim=4 * groups)
        with torch.no_grad():
            q.proj.weight.mul_(torch.rand(()) * 3)
        out = q(torch.randn(3, 9, 6), generator=_gen(groups))
        assert groups - 1e-4 <= out.prob_perplexity.item() <= groups * v + 1e-4
        assert groups - 1e-4 <= float(out.code_perplexity) <= groups * v + 1e-4
        assert -1e-6 <= out.diversity_loss.item() <= 1 - 1 / v + 1e-6
        assert out.diversity_loss.item() == pytest.approx(
            (groups * v - out.prob_perplexity.item()) / (groups * v)
        )
        out.diversity_loss.backward()
        assert float(q.proj.weight.grad.abs().sum()) > 0
        assert not out.code_perplexity.requires_grad


def test_padding_is_excluded_and_never_makes_nans():
    v = 8
    q = _one_hot_quantizer(v)
    x = torch.zeros(2, 6, v)
    x[0, :4] = torch.eye(v)[:4]
    x[1, :2] = torch.eye(v)[4:6]
    valid = torch.zeros(2, 6, dtype=torch.bool)
    valid[0, :4], valid[1, :2] = True, True
    x[0, 4:] = float("nan")
    x[1, 2:] = torch.eye(v)[7] * 1e30
    ref = q(torch.eye(v)[:6].view(1, 6, v))
    for mode in ("eval", "train"):
        getattr(q, mode)()
        xg = x.clone().requires_grad_(True)
        out = q(xg, valid, generator=_gen(5))
        assert float(out.code_perplexity) == pytest.approx(float(ref.code_perplexity), rel=1e-5)
        assert out.prob_perplexity.item() == pytest.approx(ref.prob_perplexity.item(), rel=1e-5)
        assert int(out.num_used_codes) == 6 and int(out.num_frames) == 6
        assert bool(torch.isfinite(out.quantized).all())
        (out.quantized.sum() + out.diversity_loss).backward()
        assert bool(torch.isfinite(xg.grad).all()) and bool((xg.grad[~valid] == 0).all())
        assert bool(torch.isfinite(q.proj.weight.grad).all())
        q.zero_grad()
    # No valid frame at all: finite statistics.
    out = q.eval()(torch.randn(1, 3, v), torch.zeros(1, 3, dtype=torch.bool))
    assert math.isfinite(out.prob_perplexity.item()) and int(out.num_used_codes) == 0
    assert collapse_warning(out) is None


def test_collapse_warning_thresholds():
    v = 256
    q = _one_hot_quantizer(v)
    # 8 frames on 8 distinct codes: healthy, although 8 / 256 codes is a small fraction.
    small = q(torch.eye(v)[:8].view(1, 8, v))
    assert float(small.used_fraction) == pytest.approx(8 / 256)
    assert collapse_warning(small) is None
    # 400 frames on 5 codes: few codes used.
    few = q(torch.eye(v)[torch.arange(400) % 5].view(2, 200, v))
    assert collapse_warning(few) is not None
    assert collapse_warning(few, min_used_fraction=0.01) is None
    # Most frames on one code: perplexity near 1 although 40 codes appear.
    ids = torch.cat([torch.zeros(960, dtype=torch.int64), torch.arange(1, 41)])
    skewed = q(torch.eye(v)[ids].view(4, 250, v))
    assert int(skewed.num_used_codes) == 41
    message = collapse_warning(skewed, min_used_fraction=0.1)
    assert message is not None and "perplexity" in message


def test_config_and_factory():
    config = QuantizerConfig(num_groups=2, num_entries=64, code_dim=32)
    config.validate()
    q = create_gumbel_quantizer(16, config)
    assert q.codebook.shape == (1, 128, 16) and q.proj.out_features == 128
    assert q(torch.randn(2, 3, 16)).quantized.shape == (2, 3, 32)
    for bad in (
        dict(num_groups=0),
        dict(num_entries=0),
        dict(code_dim=33, num_groups=2),
        dict(start_temperature=0.05, end_temperature=0.1),
        dict(end_temperature=0.0),
        dict(temperature_decay=1.5),
    ):
        with pytest.raises(ValueError):
            QuantizerConfig(**bad).validate()
        with pytest.raises(ValueError):
            GumbelVectorQuantizer(4, **bad)
    with pytest.raises(ValueError, match="x must be"):
        q(torch.randn(2, 3, 15))
    with pytest.raises(TypeError):
        QuantizerConfig(2)  # type: ignore[misc]  # kw_only
