"""Optimizer builders: weight-decay grouping and Adam/AdamW construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from speechfm.train import OptimizerConfig, create_optimizer, param_groups


class ScaledNorm(nn.Module):
    """A custom norm (caught by its class name) with a 2-D parameter."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, dim))

    def forward(self, x):
        return x * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.ln = nn.LayerNorm(6)
        self.custom = ScaledNorm(6)
        self.proj = nn.Linear(6, 10)
        self.proj.weight = self.embed.weight  # tied: must appear once
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.pos_bias_u = nn.Parameter(torch.zeros(2, 3))
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)


def _names(groups):
    return {g["weight_decay"]: set(g["names"]) for g in groups}


def test_norms_biases_and_vectors_are_not_decayed():
    groups = _names(param_groups(Net(), 0.1, no_decay=["*pos_bias_*"]))
    assert groups[0.1] == {"embed.weight", "conv.weight"}
    assert groups[0.0] == {
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "ln.weight",
        "ln.bias",
        "custom.scale",
        "proj.bias",
        "temperature",
        "pos_bias_u",
    }


def test_without_pattern_matrix_extra_is_decayed_and_frozen_left_out():
    groups = _names(param_groups(Net(), 0.1))
    assert "pos_bias_u" in groups[0.1]
    everything = groups[0.1] | groups[0.0]
    assert not any(name.startswith("frozen.") for name in everything)
    assert "proj.weight" not in everything  # the tied copy is listed under embed.weight


@pytest.mark.parametrize("kind, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_create_optimizer_kind_and_groups(kind, cls):
    model = Net()
    opt = create_optimizer(model, OptimizerConfig(kind=kind, lr=2e-3, weight_decay=0.5))
    assert type(opt) is cls
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    assert all(g["lr"] == 2e-3 for g in opt.param_groups)
    assert "names" not in opt.param_groups[0]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable


def test_adamw_decays_only_the_decayed_group():
    model = nn.Linear(3, 3)
    weight0, bias0 = model.weight.detach().clone(), model.bias.detach().clone()
    opt = create_optimizer(model, OptimizerConfig(lr=0.1, weight_decay=0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only weight decay moves parameters
    opt.step()
    torch.testing.assert_close(model.weight.detach(), weight0 * (1 - 0.1 * 0.5))
    torch.testing.assert_close(model.bias.detach(), bias0)


@pytest.mark.parametrize(
    "kwargs",
    [{"kind": "sgd"}, {"lr": 0.0}, {"betas": (0.9, 1.0)}, {"eps": 0.0}, {"weight_decay": -1.0}],
)
def test_invalid_config_rejected(kwargs):
    with pytest.raises(ValueError):
        OptimizerConfig(**kwargs).validate()


def test_model_without_trainable_parameters_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        create_optimizer(model, OptimizerConfig())
