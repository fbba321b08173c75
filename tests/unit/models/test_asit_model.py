"""speechfm.models.asit: GMML masking statistics and alignment, views, patch folding, the
DINO head, the pretraining model's loss terms and gradients, the EMA teacher (momentum
schedule, update, state) and the family's config and model directory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechfm.models.asit import (
    AsitModelConfig,
    AsitTeacher,
    DinoHead,
    asit_mini,
    asit_tiny,
    cell_grid,
    create_asit_model,
    draw_cell_mask,
    fill_masked,
    fold_patches,
    gmml_mask,
    make_views,
    patch_mask,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ masking

# AST over one-second clips: 100 frames x 128 bins = 10 x 13 cells of 10 x 10 (the last 8 wide)
FRAMES, BINS, CELL = 100, 128, (10, 10)


@pytest.mark.parametrize("shape", ["block", "time", "freq"])
def test_masked_fraction_is_drawn_in_range_and_aligned_to_cells(shape):
    n = 300
    mask = gmml_mask(n, FRAMES, BINS, cell=CELL, shape=shape, generator=_gen(0))
    assert mask.shape == (n, FRAMES, BINS) and mask.dtype == torch.bool
    ct, cf = cell_grid(FRAMES, BINS, CELL)
    assert (ct, cf) == (10, 13)
    # aligned: every cell is all masked or all clear
    padded = F.pad(mask.float(), (0, cf * 10 - BINS))
    cells = padded.view(n, ct, 10, cf, 10).amax(dim=(2, 4))
    lows = padded.view(n, ct, 10, cf, 10)[..., :8].amin(dim=(2, 4))  # inside the bins
    assert torch.equal(cells, lows)
    units = {"block": ct * cf, "time": ct, "freq": cf}[shape]
    per_draw = cells.flatten(1).mean(1)
    # exact: round(r * units) units with r in [0.5, 0.7]
    lo, hi = (0.5 * units - 0.5) / units, (0.7 * units + 0.5) / units
    assert float(per_draw.min()) >= lo - 1e-9 and float(per_draw.max()) <= hi + 1e-9
    assert 0.57 < float(per_draw.mean()) < 0.63
    elements = mask.float().mean(dim=(1, 2))
    assert 0.5 <= float(elements.mean()) <= 0.7
    assert float(per_draw.std()) > 0.02  # a fraction per draw, not one for all
    if shape == "time":  # whole time columns
        assert torch.equal(mask.any(2), mask.all(2))
    if shape == "freq":  # whole bin rows
        assert torch.equal(mask.any(1), mask.all(1))


def test_blocks_are_groups_not_scattered_cells():
    cells = draw_cell_mask(200, (10, 13), shape="block", generator=_gen(1))
    # neighbouring cells agree far more often than independent coin flips (p ~ 0.5) would
    same = (cells[:, 1:] == cells[:, :-1]).float().mean()
    assert float(same) > 0.65


def test_masks_are_deterministic_given_a_generator():
    a = gmml_mask(8, FRAMES, BINS, generator=_gen(5))
    b = gmml_mask(8, FRAMES, BINS, generator=_gen(5))
    c = gmml_mask(8, FRAMES, BINS, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    x = torch.randn(8, FRAMES, BINS, generator=_gen(0))
    torch.testing.assert_close(fill_masked(x, a, generator=_gen(9)),
                               fill_masked(x, a, generator=_gen(9)))


def test_fills_replace_masked_elements_only():
    x = torch.randn(4, FRAMES, BINS, generator=_gen(2)) * 3 + 1
    mask = gmml_mask(4, FRAMES, BINS, generator=_gen(3))
    zeros = fill_masked(x, mask, "zeros")
    assert torch.equal(zeros[~mask], x[~mask]) and bool((zeros[mask] == 0).all())
    noisy = fill_masked(x, mask, "noise", generator=_gen(4))
    assert torch.equal(noisy[~mask], x[~mask])
    for i in range(4):  # noise with the input's own statistics
        values = noisy[i][mask[i]]
        assert abs(float(values.mean()) - float(x[i].mean())) < 0.1
        assert abs(float(values.std()) / float(x[i].std()) - 1) < 0.1
    with pytest.raises(ValueError, match="fill"):
        fill_masked(x, mask, "ones")


def test_patch_mask_rule_mostly_or_any():
    mask = torch.zeros(1, 36, 36, dtype=torch.bool)  # 3 x 3 patches of 16 with stride 10
    mask[0, 0:10, 0:10] = True  # one cell: 100 / 256 of patch (0, 0)
    mostly, frac = patch_mask(mask, (16, 16), (10, 10), threshold=0.5)
    assert frac.shape == (1, 9) and frac[0, 0] == pytest.approx(100 / 256)
    assert not bool(mostly.any())
    anyp, _ = patch_mask(mask, (16, 16), (10, 10), threshold=0.0)
    assert anyp[0].tolist() == [True] + [False] * 8
    mask[0, 10:20, 0:10] = True  # + the cell below in time: 160 / 256 of patch (0, 0)
    mostly, frac = patch_mask(mask, (16, 16), (10, 10), threshold=0.5)
    assert mostly[0].tolist() == [True] + [False] * 8  # patch (1, 0) holds 100/256 only
    assert frac[0, 3] == pytest.approx(100 / 256)


# ------------------------------------------------------------------------------ views, folding


def test_views_shift_crop_and_gain_deterministically():
    feats = torch.arange(1, 61, dtype=torch.float32)[None, :, None].repeat(2, 1, 3)
    x_lens = torch.tensor([60, 25])
    plain = make_views(feats, x_lens, frames=40, num_views=2, max_shift=0, gain_db=0.0,
                       generator=_gen(0))
    assert plain.shape == (4, 40, 3)
    # a crop of the long clip, the short clip padded with zero fbank
    for row in (0, 2):
        start = int(plain[row, 0, 0]) - 1
        torch.testing.assert_close(plain[row, :, 0], feats[0, start:start + 40, 0])
    torch.testing.assert_close(plain[1, :25, 0], feats[1, :25, 0])
    assert bool((plain[1, 25:] == 0).all())
    shifted = make_views(feats, x_lens, frames=40, num_views=2, max_shift=5, gain_db=6.0,
                         generator=_gen(1))
    again = make_views(feats, x_lens, frames=40, num_views=2, max_shift=5, gain_db=6.0,
                       generator=_gen(1))
    assert torch.equal(shifted, again)
    valid = shifted[:, :, 0] != 0
    steps = (shifted[:, 1:, 0] - shifted[:, :-1, 0])[valid[:, 1:] & valid[:, :-1]]
    torch.testing.assert_close(steps, torch.ones_like(steps))  # consecutive frames, one gain
    assert valid.any(1).all()  # no view without any frame of its clip


def test_fold_patches_inverts_unfolding_on_covered_elements():
    x = torch.randn(2, 40, 32, generator=_gen(0))
    patches = F.unfold(x[:, None], kernel_size=(16, 16), stride=(10, 10)).transpose(1, 2)
    assert patches.shape == (2, 3 * 2, 256)  # time-major grid of 3 x 2 patches
    back, covered = fold_patches(patches, (40, 32), (16, 16), (10, 10))
    assert covered.shape == (40, 32) and bool(covered[:36, :26].all())
    assert not bool(covered[36:].any()) and not bool(covered[:, 26:].any())
    torch.testing.assert_close(back[:, covered], x[:, covered])


def test_dino_head_normalises_its_last_layer():
    head = DinoHead(16, 10, hidden_dim=24, bottleneck_dim=8, num_layers=3)
    x = torch.randn(5, 7, 16, generator=_gen(0))
    y = head(x)
    assert y.shape == (5, 7, 10)
    assert float(y.detach().abs().max()) <= 1.0 + 1e-5  # cosine scores
    with torch.no_grad():
        head.prototypes.mul_(3.0)  # only the direction of each prototype counts
    torch.testing.assert_close(head(x), y)


# ------------------------------------------------------------------------------ the model


def _batch(n: int = 3, frames: int = 50, bins: int = 32, seed: int = 0) -> dict:
    feats = torch.randn(n, frames, bins, generator=_gen(seed)) - 6.0
    lens = torch.tensor([frames - 7 * i for i in range(n)])
    return {"features": feats, "x_lens": lens, "cut_ids": [f"c{i}" for i in range(n)]}


def _model(**loss) -> torch.nn.Module:
    config = asit_mini()
    for key, value in loss.items():
        setattr(config.loss, key, value)
    torch.manual_seed(0)
    return create_asit_model(config)


def test_the_loss_has_every_term_and_trains_the_student_not_the_teacher():
    model = _model()
    teacher = AsitTeacher(model, total_steps=10)
    loss, count, stats = model(_batch(), teacher=teacher.module, step=0)
    assert count == 3 and torch.isfinite(loss)
    assert {"global_loss", "local_loss", "recon_loss", "teacher_temperature", "teacher_entropy",
            "mask_fraction", "masked_patches"} <= set(stats)
    assert stats["teacher_temperature"] == pytest.approx(3 * 0.04)
    assert 0.5 * 3 <= stats["mask_fraction"] <= 0.75 * 3  # edge cells are narrower
    w = {"global": 1.0, "local": 1.0, "recon": 2.0}
    expected = 3 * sum(w[k] * stats[f"{k}_loss"] / 3 for k in w)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    for name in ("encoder.patch_embed.proj.weight", "encoder.blocks.0.attn_norm.weight",
                 "global_head.prototypes", "local_head.prototypes", "recon_head.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert all(p.grad is None and not p.requires_grad for p in teacher.module.parameters())


def test_ablation_weights_leave_terms_out():
    model = _model(global_weight=0.0, local_weight=0.0)
    loss, _, stats = model(_batch(), step=5)
    assert "global_loss" not in stats and "local_loss" not in stats
    assert float(loss.detach()) == pytest.approx(2.0 * stats["recon_loss"], rel=1e-5)
    model = _model(global_weight=0.0)
    _, _, stats = model(_batch(), step=5)
    assert {"local_loss", "recon_loss"} <= set(stats) and "global_loss" not in stats


def test_centres_move_in_training_only_and_validation_is_reproducible():
    model = _model()
    teacher = AsitTeacher(model, total_steps=10)
    model.eval()
    a = model(_batch(), teacher=teacher.module, generator=_gen(3))
    b = model(_batch(), teacher=teacher.module, generator=_gen(3))
    assert float(a[0].detach()) == float(b[0].detach())
    assert float(model.global_center.abs().sum()) == 0.0  # eval: unchanged
    assert a[2]["teacher_temperature"] == pytest.approx(3 * 0.07)  # no step: the final one
    model.train()
    with torch.no_grad():
        model(_batch(), teacher=teacher.module, step=1)
    assert float(model.global_center.abs().sum()) > 0 and float(model.local_center.abs().sum()) > 0


def test_an_empty_batch_gives_a_zero_loss_in_the_graph():
    model = _model()
    loss, count, stats = model({"features": torch.zeros(0, 10, 32),
                                "x_lens": torch.zeros(0, dtype=torch.int64), "cut_ids": []})
    assert count == 0 and float(loss.detach()) == 0.0 and set(stats.values()) == {0.0}
    loss.backward()
    assert float(model.global_center.abs().sum()) == 0.0


# ------------------------------------------------------------------------------ the teacher


def test_teacher_momentum_follows_a_cosine_from_0996_to_1():
    teacher = AsitTeacher(_model(), total_steps=100)
    assert teacher.momentum(0) == pytest.approx(0.996)
    assert teacher.momentum(50) == pytest.approx(0.998)
    assert teacher.momentum(100) == pytest.approx(1.0)
    assert teacher.momentum(1000) == pytest.approx(1.0)
    # a cosine, not a line: a quarter of the way it has risen by (1 - cos(pi / 4)) / 2 only
    assert teacher.momentum(25) == pytest.approx(1.0 - 0.004 * (1 + 2 ** -0.5) / 2)


def test_teacher_is_an_ema_of_the_student_updated_once_per_step():
    student = _model()
    teacher = AsitTeacher(student, total_steps=4, momentum_start=0.5)
    start = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    name = "encoder.blocks.0.ffn.linear1.weight"
    torch.testing.assert_close(start[name], student.state_dict()[name])
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    m = teacher.momentum(0)
    teacher.follow(1)
    teacher.follow(1)  # accumulation: a second forward at the same step moves nothing
    now = teacher.module.state_dict()
    torch.testing.assert_close(now[name], m * start[name] + (1 - m) * student.state_dict()[name])
    assert teacher.step == 1
    # state round trip into a fresh teacher (what --resume does)
    other = AsitTeacher(_model(), total_steps=4, momentum_start=0.5)
    other.load_state_dict(teacher.state_dict())
    assert other.step == 1
    torch.testing.assert_close(other.module.state_dict()[name], now[name])
    assert not teacher.module.training


# ------------------------------------------------------------------------------ the family


def test_config_round_trip_validation_and_family(tmp_path):
    from speechfm.models.io import get_family, load_model_dir, save_model_dir

    config = asit_tiny()
    assert config.backbone.specaugment is False and config.backbone.num_classes == 0
    assert AsitModelConfig.from_dict(config.to_dict()) == config
    bad = asit_mini()
    bad.masking.min_fraction = 0.8
    with pytest.raises(ValueError, match="min_fraction"):
        bad.validate()
    bad = asit_mini()
    bad.masking.shape = "diagonal"
    with pytest.raises(ValueError, match="shape"):
        bad.validate()
    bad = asit_mini()
    bad.loss.global_weight = bad.loss.local_weight = bad.loss.recon_weight = 0.0
    with pytest.raises(ValueError, match="weights"):
        bad.validate()
    family = get_family("asit")
    assert family.config_class is AsitModelConfig
    model = _model()
    with torch.no_grad():
        model.global_center.fill_(0.5)
    save_model_dir(tmp_path / "m", model, asit_mini())
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.family == "asit"
    assert float(loaded.module.global_center.mean()) == pytest.approx(0.5)
    feats = torch.randn(2, 40, 32)
    out, lens, layers = loaded.module.encode(feats, torch.tensor([40, 30]), return_layers=(1, -1))
    assert out.shape == (2, 6, 32) and len(layers) == 2 and lens.tolist() == [6, 6]
