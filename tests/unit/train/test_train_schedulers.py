"""Learning-rate schedules: warmup peaks, hold, decay shapes, and scheduler state."""

from __future__ import annotations

import math

import pytest
import torch

from speechfm.train import (
    ConstantSchedule,
    CosineSchedule,
    NoamSchedule,
    SchedulerConfig,
    StepScheduler,
    TriStageSchedule,
    create_scheduler,
)


def test_noam_peaks_at_warmup_then_decays_as_inverse_sqrt():
    s = NoamSchedule(warmup_steps=10)
    values = [s(i) for i in range(100)]
    assert values[9] == pytest.approx(1.0)  # the 10th update uses the peak rate
    assert max(values) == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values[:9], values[1:10], strict=True))
    assert all(a > b for a, b in zip(values[9:], values[10:], strict=False))
    assert s(39) == pytest.approx(math.sqrt(10 / 40))


def test_tri_stage_warmup_hold_decay_floor():
    s = TriStageSchedule(
        warmup_steps=10, hold_steps=5, decay_steps=20, init_scale=0.1, final_scale=0.05
    )
    assert s(0) == pytest.approx(0.1)
    assert s(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert [s(i) for i in range(10, 15)] == [1.0] * 5
    assert s(15) == pytest.approx(1.0)
    assert s(25) == pytest.approx(math.sqrt(0.05))  # exponential: half-way is the geometric mean
    decay = [s(i) for i in range(15, 35)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert s(35) == pytest.approx(0.05)
    assert s(10_000) == pytest.approx(0.05)


def test_tri_stage_from_ratios_splits_total_steps():
    s = TriStageSchedule.from_ratios(100, (0.1, 0.4, 0.5))
    assert (s.warmup_steps, s.hold_steps, s.decay_steps) == (10, 40, 50)
    with pytest.raises(ValueError):
        TriStageSchedule.from_ratios(100, (0.1, 0.4, 0.4))


def test_cosine_warmup_then_half_cosine_to_floor():
    s = CosineSchedule(warmup_steps=4, total_steps=24, min_scale=0.1)
    assert [s(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert s(4) == pytest.approx(1.0)
    assert s(14) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way
    assert s(24) == pytest.approx(0.1)
    assert s(1000) == pytest.approx(0.1)


def test_constant_with_warmup():
    s = ConstantSchedule(warmup_steps=2)
    assert [s(i) for i in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert ConstantSchedule()(0) == 1.0


def _opt(lr=1.0):
    params = [torch.nn.Parameter(torch.zeros(2))]
    return torch.optim.SGD(
        [{"params": params}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 2 * lr}], lr=lr
    )


def test_step_scheduler_drives_all_groups_and_matches_lambdalr():
    schedule = TriStageSchedule(warmup_steps=3, hold_steps=2, decay_steps=4)
    ours, ref = _opt(), _opt()
    sched = StepScheduler(ours, schedule)
    lam = torch.optim.lr_scheduler.LambdaLR(ref, schedule)
    for step in range(12):
        assert sched.get_last_lr() == pytest.approx([schedule(step), 2 * schedule(step)])
        assert sched.get_last_lr() == pytest.approx(lam.get_last_lr())
        ours.step()
        ref.step()
        sched.step()
        lam.step()


def test_step_scheduler_state_round_trip_without_compounding():
    opt = _opt(0.5)
    sched = create_scheduler(opt, SchedulerConfig(kind="noam", warmup_steps=4))
    for _ in range(6):
        sched.step()
    saved = sched.state_dict()
    assert saved["step"] == 6
    # A fresh optimizer + scheduler (as after a restart) picks up the same rate.
    opt2 = _opt(0.5)
    sched2 = create_scheduler(opt2, SchedulerConfig(kind="noam", warmup_steps=4))
    sched2.load_state_dict(saved)
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    assert sched2.get_last_lr()[0] == pytest.approx(0.5 * NoamSchedule(warmup_steps=4)(6))
    # Re-wrapping an optimizer whose lr was already scaled keeps the peak (initial_lr).
    sched3 = StepScheduler(opt, NoamSchedule(warmup_steps=4))
    assert sched3.base_lrs == [0.5, 1.0]


@pytest.mark.parametrize(
    "config",
    [
        SchedulerConfig(kind="linear"),
        SchedulerConfig(kind="noam", warmup_steps=0),
        SchedulerConfig(kind="cosine", warmup_steps=10, total_steps=5),
        SchedulerConfig(kind="tri_stage", final_scale=0.0),
    ],
)
def test_invalid_scheduler_config(config):
    with pytest.raises(ValueError):
        config.validate()
