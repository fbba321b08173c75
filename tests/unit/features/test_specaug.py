"""SpecAugment: mask geometry, x_lens handling, determinism, eval identity, time warp."""

from __future__ import annotations

import torch

from speechfm.features.specaug import SpecAugment

SENTINEL = -1234.0


def _batch(n: int = 4, t: int = 300, c: int = 80, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, t, c, generator=g) + 1.0  # strictly positive: masked cells stand out


def _runs(mask_1d: torch.Tensor) -> list[tuple[int, int]]:
    """(start, width) of the True runs of a 1-D bool tensor."""
    runs, start = [], None
    for i, v in enumerate(mask_1d.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_eval_mode_is_identity():
    aug = SpecAugment().eval()
    x = _batch()
    assert aug(x, torch.tensor([300, 200, 100, 10])) is x


def test_shapes_and_determinism():
    aug = SpecAugment(time_warp=5)
    x = _batch()
    lens = torch.tensor([300, 250, 120, 40])
    a = aug(x, lens, generator=torch.Generator().manual_seed(7))
    b = aug(x, lens, generator=torch.Generator().manual_seed(7))
    c = aug(x, lens, generator=torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_frequency_masks_geometry():
    aug = SpecAugment(num_freq_masks=1, freq_mask_width=15, num_time_masks=0, mask_value=SENTINEL)
    x = _batch(n=32, t=50)
    y = aug(x, generator=torch.Generator().manual_seed(0))
    widths = []
    for i in range(32):
        masked = y[i] == SENTINEL  # (T, C)
        cols = masked.all(dim=0)
        # a frequency mask covers whole columns, and nothing else is masked
        assert torch.equal(masked, cols[None, :].expand_as(masked))
        runs = _runs(cols)
        assert len(runs) <= 1
        widths.append(runs[0][1] if runs else 0)
    assert max(widths) <= 15 and max(widths) >= 8  # widths ~ U{0..15} over 32 draws
    assert len(set(widths)) > 4


def test_time_masks_stay_inside_x_lens_and_adapt_to_length():
    aug = SpecAugment(
        num_freq_masks=0,
        num_time_masks=1,
        time_mask_multiplicity=0.0,
        time_mask_max_frac=0.1,
        mask_value=SENTINEL,
    )
    lens = torch.tensor([400, 100, 30] * 8)
    x = _batch(n=24, t=400)
    y = aug(x, lens, generator=torch.Generator().manual_seed(1))
    for i in range(24):
        n = int(lens[i])
        masked = y[i] == SENTINEL
        rows = masked.all(dim=1)
        assert torch.equal(masked, rows[:, None].expand_as(masked))
        assert not rows[n:].any()  # padding never masked ...
        assert torch.equal(y[i, n:], x[i, n:])  # ... nor changed
        runs = _runs(rows)
        assert len(runs) <= 1
        if runs:
            assert runs[0][1] <= n // 10  # adaptive width: at most 10% of this utterance


def test_adaptive_number_of_time_masks():
    aug = SpecAugment(
        num_freq_masks=0,
        num_time_masks=10,
        time_mask_multiplicity=0.04,
        time_mask_max_frac=0.05,
        mask_value=SENTINEL,
    )
    x = _batch(n=2, t=1000)
    # 20 frames -> floor(0.04 * 20) = 0 masks; 1000 frames -> min(10, 40) = 10 masks
    masked_short, masked_long = 0, 0
    for seed in range(5):
        y = aug(x, torch.tensor([20, 1000]), generator=torch.Generator().manual_seed(seed))
        masked_short += int((y[0] == SENTINEL).all(dim=1).sum())
        rows = (y[1] == SENTINEL).all(dim=1)
        masked_long += int(rows.sum())
        assert int(rows.sum()) <= 10 * 50
    assert masked_short == 0
    assert masked_long > 0


def test_probability_zero_and_default_no_warp():
    x = _batch()
    assert torch.equal(SpecAugment(p=0.0)(x), x)
    assert SpecAugment().time_warp == 0


def test_time_warp_keeps_length_and_padding():
    aug = SpecAugment(num_freq_masks=0, num_time_masks=0, time_warp=20)
    t = torch.linspace(0, 1, 200)
    x = t[None, :, None].repeat(2, 1, 3)  # a ramp: warping moves values along time
    lens = torch.tensor([200, 120])
    y = aug(x, lens, generator=torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    assert torch.equal(y[1, 120:], x[1, 120:])
    assert not torch.allclose(y[0], x[0])
    # endpoints are anchored; a linear warp of a ramp stays monotonic
    assert torch.allclose(y[0, 0], x[0, 0], atol=1e-2)
    assert (y[0, 1:, 0] - y[0, :-1, 0] >= -1e-6).all()
