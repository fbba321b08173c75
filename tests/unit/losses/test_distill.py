"""speechfm.losses.distill: DINO cross-entropy with centring and sharpening, the global
(cross-view) and local (masked-patch) terms, masked L1 reconstruction, the teacher
temperature warm-up and the centre's EMA, on hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speechfm.losses.distill import (
    dino_cross_entropy,
    global_distillation_loss,
    local_distillation_loss,
    masked_l1_loss,
    teacher_entropy,
    teacher_probs,
    teacher_temperature,
    update_center,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_teacher_temperature_warms_up_linearly_then_holds():
    kw = dict(warmup_steps=100, start=0.04, end=0.07)
    assert teacher_temperature(0, **kw) == pytest.approx(0.04)
    assert teacher_temperature(50, **kw) == pytest.approx(0.055)
    assert teacher_temperature(100, **kw) == pytest.approx(0.07)
    assert teacher_temperature(10_000, **kw) == pytest.approx(0.07)
    assert teacher_temperature(None, **kw) == pytest.approx(0.07)  # validation
    assert teacher_temperature(0, warmup_steps=0, start=0.04, end=0.07) == pytest.approx(0.07)


def test_identical_teacher_and_student_at_one_temperature_give_the_entropy():
    logits = torch.randn(6, 16, generator=_gen(0), dtype=torch.float64)
    ce = dino_cross_entropy(logits, logits, None, student_temperature=0.1,
                            teacher_temperature=0.1)
    p = F.softmax(logits / 0.1, dim=-1)
    entropy = -(p * p.log()).sum(-1)
    torch.testing.assert_close(ce, entropy)
    # uniform scores: log K, and a constant centre changes nothing (softmax is shift-invariant)
    flat = torch.zeros(3, 8, dtype=torch.float64)
    ce = dino_cross_entropy(flat, flat, torch.full((1, 8), 5.0, dtype=torch.float64))
    torch.testing.assert_close(ce, torch.full((3,), math.log(8), dtype=torch.float64))
    assert teacher_entropy(flat, None, 0.04) == pytest.approx(math.log(8))


def test_centring_and_sharpening_of_the_teacher():
    t = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    center = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    # centring removes the dominant prototype's lead: uniform target
    torch.testing.assert_close(teacher_probs(t, center, 0.04),
                               torch.full((1, 3), 1 / 3, dtype=torch.float64))
    # a lower temperature sharpens
    assert teacher_probs(t, None, 0.04)[0, 0] > teacher_probs(t, None, 0.07)[0, 0] > 0.9
    expected = torch.softmax(t / 0.05, dim=-1)
    torch.testing.assert_close(teacher_probs(t, None, 0.05), expected)


def test_global_loss_pairs_each_teacher_view_with_the_other_student_views():
    g = _gen(1)
    v, n, k = 3, 4, 10
    s = torch.randn(v, n, k, generator=g, dtype=torch.float64)
    t = torch.randn(v, n, k, generator=g, dtype=torch.float64)
    c = torch.randn(1, k, generator=g, dtype=torch.float64)
    kw = dict(student_temperature=0.1, teacher_temperature=0.05)
    expected = torch.stack([dino_cross_entropy(s[j], t[i], c, **kw).mean()
                            for i in range(v) for j in range(v) if i != j]).mean()
    torch.testing.assert_close(global_distillation_loss(s, t, c, **kw), expected)
    one = global_distillation_loss(s[:1], t[:1], c, **kw)
    torch.testing.assert_close(one, dino_cross_entropy(s[0], t[0], c, **kw).mean())
    with pytest.raises(ValueError, match="V, N, K"):
        global_distillation_loss(s[0], t[0])


def test_local_loss_is_the_mean_over_selected_patches_and_zero_without_any():
    g = _gen(2)
    s = torch.randn(7, 12, generator=g, requires_grad=True)
    t = torch.randn(7, 12, generator=g)
    c = torch.randn(1, 12, generator=g)
    loss = local_distillation_loss(s, t, c, student_temperature=0.1, teacher_temperature=0.04)
    ref = dino_cross_entropy(s, t, c, student_temperature=0.1, teacher_temperature=0.04).mean()
    torch.testing.assert_close(loss, ref)
    empty = local_distillation_loss(s[:0], t[:0], c)
    assert float(empty.detach()) == 0.0
    empty.backward()  # still connected to the graph (DDP needs every head in it)
    assert s.grad is not None and float(s.grad.abs().sum()) == 0.0


def test_gradient_reaches_the_student_never_the_teacher():
    g = _gen(3)
    s = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    t = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    c = torch.zeros(1, 8, requires_grad=True)
    (global_distillation_loss(s, t, c) + local_distillation_loss(s[0], t[0], c)).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None and c.grad is None


def test_masked_l1_counts_masked_elements_only():
    target = torch.zeros(2, 4, 3)
    pred = torch.full((2, 4, 3), 100.0)  # wrong everywhere ...
    mask = torch.zeros(2, 4, 3, dtype=torch.bool)
    mask[0, 1, :] = True
    mask[1, 3, 2] = True
    pred[mask] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # ... but only masked elements count
    assert float(masked_l1_loss(pred, target, mask)) == pytest.approx((1 + 2 + 3 + 6) / 4)
    pred = pred.clone().requires_grad_(True)
    zero = masked_l1_loss(pred, target, torch.zeros_like(mask))
    assert float(zero.detach()) == 0.0
    zero.backward()
    with pytest.raises(ValueError, match="one shape"):
        masked_l1_loss(pred, target[:1], mask)


def test_center_follows_the_teacher_mean_with_momentum():
    center = torch.ones(1, 4)
    rows = torch.tensor([[0.0, 2.0, 4.0, 6.0], [2.0, 2.0, 0.0, 2.0]])  # mean 1, 2, 2, 4
    update_center(center, rows, momentum=0.9)
    torch.testing.assert_close(center, torch.tensor([[1.0, 1.1, 1.1, 1.3]]))
    update_center(center, rows[:0], momentum=0.9)  # no rows: unchanged
    torch.testing.assert_close(center, torch.tensor([[1.0, 1.1, 1.1, 1.3]]))
    # (V, N, K) scores are rows too
    c2 = torch.zeros(4)
    update_center(c2, rows.view(1, 2, 4), momentum=0.0)
    torch.testing.assert_close(c2, torch.tensor([1.0, 2.0, 2.0, 4.0]))
