"""train_step / train_one_epoch / evaluate: accumulation, clipping, skipping, AMP."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from speechfm.train import (
    ModelAverager,
    NoamSchedule,
    StepScheduler,
    TrainState,
    amp_autocast,
    create_grad_scaler,
    evaluate,
    resolve_amp_dtype,
    train_one_epoch,
    train_step,
)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _data(n=12, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=gen
    )


def ce_sum(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y, reduction="sum"), len(y)


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulation_of_uneven_micro_batches_equals_one_big_batch():
    x, y = _data()
    big, acc = _model(), _model()
    opt_big = torch.optim.AdamW(big.parameters(), lr=1e-2)
    opt_acc = torch.optim.AdamW(acc.parameters(), lr=1e-2)
    for _ in range(3):
        r_big = train_step(big, [(x, y)], ce_sum, opt_big)
        r_acc = train_step(acc, [(x[:5], y[:5]), (x[5:9], y[5:9]), (x[9:], y[9:])], ce_sum, opt_acc)
        assert r_acc.count == r_big.count == 12
        assert r_acc.num_batches == 3
        assert r_acc.loss == pytest.approx(r_big.loss, abs=1e-12)
        assert r_acc.grad_norm == pytest.approx(r_big.grad_norm, abs=1e-12)
    torch.testing.assert_close(_flat(acc), _flat(big), atol=1e-12, rtol=0)


def test_update_uses_the_gradient_of_the_mean_loss():
    x, y = _data()
    model, ref = _model(), _model()
    train_step(model, [(x, y)], ce_sum, torch.optim.SGD(model.parameters(), lr=0.1))
    nn.functional.cross_entropy(ref(x), y).backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    torch.testing.assert_close(_flat(model), _flat(ref), atol=1e-14, rtol=0)


def test_clipping_scales_the_gradient_to_max_norm():
    x, y = _data()
    model, free = _model(), _model()
    before = _flat(model)
    unclipped = train_step(free, [(x, y)], ce_sum, torch.optim.SGD(free.parameters(), lr=1.0))
    result = train_step(
        model, [(x, y)], ce_sum, torch.optim.SGD(model.parameters(), lr=1.0), max_grad_norm=0.05
    )
    assert unclipped.grad_norm > 0.05
    assert result.grad_norm == pytest.approx(unclipped.grad_norm)  # reported before clipping
    delta, free_delta = before - _flat(model), before - _flat(free)
    assert delta.norm().item() == pytest.approx(0.05, rel=1e-4)  # clip adds eps 1e-6
    torch.testing.assert_close(
        delta / delta.norm(), free_delta / free_delta.norm(), atol=1e-12, rtol=0
    )


def _nan_loss(model, batch):
    loss, count = ce_sum(model, batch)
    return loss * torch.tensor(float("nan"), dtype=loss.dtype), count


def _inf_grad_loss(model, batch):
    # Finite loss (sqrt(0) = 0) whose gradient is infinite (d sqrt(u)/du at u = 0).
    loss, count = ce_sum(model, batch)
    p = model[0].bias
    return loss + torch.sqrt(p[0] - p[0].detach()), count


@pytest.mark.parametrize(
    "bad_fn, counter, reason",
    [
        (_nan_loss, "nonfinite_loss_steps", "nonfinite_loss"),
        (_inf_grad_loss, "nonfinite_grad_steps", "nonfinite_grad"),
    ],
)
def test_nonfinite_step_is_skipped_counted_and_leaves_everything_untouched(bad_fn, counter, reason):
    x, y = _data()
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = StepScheduler(opt, NoamSchedule(warmup_steps=5))
    avg = ModelAverager(model, period=1)
    state = TrainState()
    train_step(model, [(x, y)], ce_sum, opt, state=state, scheduler=sched, model_avg=avg)
    params = _flat(model)
    opt_state = copy.deepcopy(opt.state_dict())
    lr = sched.get_last_lr()

    result = train_step(
        model,
        [(x[:6], y[:6]), (x[6:], y[6:])],
        bad_fn,
        opt,
        state=state,
        scheduler=sched,
        model_avg=avg,
        max_grad_norm=1.0,
    )
    assert result.skipped and result.reason == reason
    assert getattr(state, counter) == 1 and state.skipped_steps == 1
    assert state.step == 1
    torch.testing.assert_close(_flat(model), params, atol=0, rtol=0)
    assert all(p.grad is None for p in model.parameters())
    assert sched.get_last_lr() == lr
    assert avg.step == 1
    for key, value in opt.state_dict()["state"].items():
        for name, tensor in value.items():
            torch.testing.assert_close(tensor, opt_state["state"][key][name], atol=0, rtol=0)

    ok = train_step(model, [(x, y)], ce_sum, opt, state=state, scheduler=sched, model_avg=avg)
    assert not ok.skipped and state.step == 2 and math.isfinite(ok.loss)


def test_zero_count_step_is_skipped_without_counting_as_nonfinite():
    x, y = _data()
    model = _model()
    before = _flat(model)
    state = TrainState()
    r = train_step(
        model, [(x[:0], y[:0])], ce_sum, torch.optim.SGD(model.parameters(), lr=0.1), state=state
    )
    assert r.skipped and r.reason == "empty" and state.skipped_steps == 0 and state.step == 0
    torch.testing.assert_close(_flat(model), before, atol=0, rtol=0)


def test_loss_fn_contract_is_checked():
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="loss_sum, count"):
        train_step(model, [(x, y)], lambda m, b: ce_sum(m, b)[0], opt)
    with pytest.raises(ValueError):
        train_step(model, [], ce_sum, opt)


def test_stats_are_normalised_by_count():
    x, y = _data()
    model = _model()

    def with_stats(model, batch):
        loss, count = ce_sum(model, batch)
        return loss, count, {"frames": 10.0 * count}

    r = train_step(
        model,
        [(x[:4], y[:4]), (x[4:], y[4:])],
        with_stats,
        torch.optim.SGD(model.parameters(), lr=0.1),
    )
    assert r.stats == {"frames": pytest.approx(10.0)}


def test_train_one_epoch_groups_counts_and_advances_epoch():
    x, y = _data(14)
    batches = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 14, 2)]  # 7 batches
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState()
    seen = []
    summary = train_one_epoch(
        model,
        batches,
        ce_sum,
        opt,
        state=state,
        accum_grad=3,
        on_step=lambda r, s: seen.append((r.num_batches, s.batch_in_epoch)),
        batch_size_fn=len,
    )
    assert seen == [(3, 3), (3, 6), (1, 7)]  # the short tail still makes an update
    assert summary.completed and summary.steps == 3 and summary.batches == 7
    assert (state.step, state.epoch, state.batch_in_epoch, state.items_seen) == (3, 1, 0, 14.0)

    stop_at = {"step": 4}
    summary = train_one_epoch(
        model,
        batches,
        ce_sum,
        opt,
        state=state,
        accum_grad=2,
        on_step=lambda r, s: s.step >= stop_at["step"],
    )
    assert not summary.completed and summary.batches == 2
    assert (state.step, state.epoch, state.batch_in_epoch) == (4, 1, 2)


def test_evaluate_is_count_weighted_and_restores_mode():
    x, y = _data()
    model = _model()
    model.train()
    out = evaluate(model, [(x[:3], y[:3]), (x[3:], y[3:])], ce_sum)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x), y).item()
    assert out["loss"] == pytest.approx(expected, abs=1e-12)
    assert out["count"] == 12
    assert model.training


def test_amp_resolution_on_cpu():
    assert resolve_amp_dtype("auto", "cpu") is None
    assert resolve_amp_dtype("fp32", "cpu") is None
    assert resolve_amp_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        resolve_amp_dtype("fp16", "cpu")
    with pytest.raises(ValueError):
        resolve_amp_dtype("int8", "cpu")
    assert create_grad_scaler(None, "cpu") is None
    assert create_grad_scaler(torch.bfloat16, "cpu") is None


def test_bf16_autocast_step_keeps_fp32_master_weights():
    lin = nn.Linear(4, 3)
    with amp_autocast("cpu", torch.bfloat16):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with amp_autocast("cpu", None):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    before = _flat(model)
    x, y = _data()
    r = train_step(
        model,
        [(x.float(), y)],
        ce_sum,
        torch.optim.SGD(model.parameters(), lr=0.1),
        amp_dtype=torch.bfloat16,
    )
    assert not r.skipped and math.isfinite(r.loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(before, _flat(model))


def test_train_state_round_trip():
    state = TrainState(step=5, epoch=2, batch_in_epoch=3, items_seen=7.5, nonfinite_loss_steps=1)
    other = TrainState()
    other.load_state_dict(state.state_dict())
    assert other == state and other.skipped_steps == 1


@pytest.mark.gpu
def test_fp16_grad_scaler_on_cuda_skips_overflow_and_lowers_scale():
    dtype = resolve_amp_dtype("fp16", "cuda")
    scaler = create_grad_scaler(dtype, "cuda")
    assert dtype is torch.float16 and scaler is not None
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(6, 4, device="cuda"), torch.randint(0, 3, (6,), device="cuda")
    state = TrainState()
    ok = train_step(model, [(x, y)], ce_sum, opt, state=state, scaler=scaler, amp_dtype=dtype)
    assert not ok.skipped and state.step == 1 and math.isfinite(ok.loss)
    scale = scaler.get_scale()
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()

    def huge(model, batch):  # finite fp32 loss whose scaled gradient overflows
        loss, count = ce_sum(model, batch)
        return loss * 1e35, count

    bad = train_step(model, [(x, y)], huge, opt, state=state, scaler=scaler, amp_dtype=dtype)
    assert bad.skipped and bad.reason == "nonfinite_grad" and state.nonfinite_grad_steps == 1
    assert scaler.get_scale() < scale
    torch.testing.assert_close(
        torch.cat([p.detach().flatten() for p in model.parameters()]), before, atol=0, rtol=0
    )


@pytest.mark.gpu
def test_bf16_autocast_on_cuda_and_cuda_rng_restore():
    from speechfm.train import get_rng_state, set_rng_state

    assert resolve_amp_dtype("auto", "cuda") in (torch.bfloat16, None)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).cuda()
    x, y = torch.randn(6, 4, device="cuda"), torch.randint(0, 3, (6,), device="cuda")
    r = train_step(
        model,
        [(x, y)],
        ce_sum,
        torch.optim.SGD(model.parameters(), lr=0.1),
        amp_dtype=torch.bfloat16,
    )
    assert not r.skipped and model[0].weight.dtype == torch.float32
    state = get_rng_state()
    assert len(state["cuda"]) >= 1
    expected = torch.rand(4, device="cuda")
    set_rng_state(state)
    torch.testing.assert_close(torch.rand(4, device="cuda"), expected, atol=0, rtol=0)
