"""Checkpoint averaging and the running model average (icefall's model_avg)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from speechfm import train as T


def _set(model, value):
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.full_like(p, value + 0.1 * i))


def _model():
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_average_state_dicts_means_floats_keeps_last_ints():
    sds = [
        {"w": torch.tensor([1.0, 2.0], dtype=torch.float16), "n": torch.tensor(3)},
        {"w": torch.tensor([3.0, 6.0], dtype=torch.float16), "n": torch.tensor(5)},
    ]
    out = T.average_state_dicts(sds)
    assert out["w"].dtype == torch.float16
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0], dtype=torch.float16))
    assert out["n"].item() == 5
    with pytest.raises(ValueError, match="different keys"):
        T.average_state_dicts([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])
    with pytest.raises(ValueError):
        T.average_state_dicts([])


def test_average_checkpoints_of_saved_dirs(tmp_path):
    model = _model()
    snapshots = []
    for step, value in enumerate([1.0, 2.0, 6.0], start=1):
        _set(model, value)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        T.save_checkpoint(
            tmp_path,
            T.checkpoint_name(epoch=step),
            model=model,
            state=T.TrainState(step=step, epoch=step),
        )
    last_two = T.list_checkpoints(tmp_path, prefix="epoch-")[-2:]
    avg = T.average_checkpoints(last_two)
    for key, value in avg.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (snapshots[1][key] + snapshots[2][key]) / 2)
    fresh = _model()
    fresh.load_state_dict(avg)  # directly loadable
    with pytest.raises(FileNotFoundError):
        T.average_checkpoints([tmp_path / "nope"])


def _train(model, avg, steps, values):
    for step in range(1, steps + 1):
        _set(model, values[step])
        avg.update(model, step)


def test_model_averager_is_the_mean_of_periodic_snapshots():
    model = _model()
    avg = T.ModelAverager(model, period=3)
    values = {s: float(s) ** 1.5 for s in range(1, 13)}
    _train(model, avg, 12, values)
    assert avg.step == 12
    expected = sum(values[s] for s in (3, 6, 9, 12)) / 4
    weight = avg.averaged_state_dict()["0.weight"]
    assert weight.dtype == torch.float64
    torch.testing.assert_close(weight, torch.full_like(weight, expected))
    assert not avg.update(model, 13) and not avg.update(model, 12)  # off-period / repeated
    assert avg.averaged_state_dict(torch.float32)["0.weight"].dtype == torch.float32


def test_average_between_two_checkpoints_recovers_the_range_mean(tmp_path):
    model = _model()
    avg = T.ModelAverager(model, period=2)
    values = {s: (s * 7 % 5) + 0.25 * s for s in range(1, 13)}
    for step in range(1, 13):
        _set(model, values[step])
        avg.update(model, step)
        if step in (4, 12):
            T.save_checkpoint(
                tmp_path,
                T.checkpoint_name(step=step),
                model=model,
                state=T.TrainState(step=step),
                model_avg=avg,
            )
    out = T.average_between(tmp_path / "step-000004", tmp_path / "step-000012")
    expected = sum(values[s] for s in (6, 8, 10, 12)) / 4  # snapshots after step 4
    torch.testing.assert_close(out["0.weight"], torch.full((2, 3), expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="must come after"):
        T.average_between(tmp_path / "step-000012", tmp_path / "step-000004")
