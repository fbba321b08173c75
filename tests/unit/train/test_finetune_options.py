"""Fine-tuning options of RunConfig: frozen prefixes, an encoder held for the first
updates (exactly resumable), and layer-wise learning-rate decay; the param-group builders
behind them, and a toy model family run through speechfm.train.run."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from speechfm.config import config_from_dict
from speechfm.models.io import read_weights
from speechfm.train import RunConfig, run
from speechfm.train.checkpoint import STATE_FILE, checkpoint_name
from speechfm.train.optim import (
    OptimizerConfig,
    create_optimizer,
    freeze_parameters,
    hold_parameters,
    layer_lr_scales,
    param_groups,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FRONT_END = "encoder.conformer.front_end."
LR = 3e-3


from toy_family import ToyConfig, create_toy  # noqa: E402


def _run(corpus, exp, *, resume=False, model_seed=None, **kw):
    """A tiny run; returns (result, the trained model, its initial weights)."""
    cuts, tokenizer = corpus
    settings = dict(
        train_cuts=str(cuts), max_duration=2.0, num_workers=0, num_threads=1, max_steps=4,
        save_every=1, keep_last=4, average="last", progress=False, exp_dir=str(exp), seed=3,
        scheduler={"kind": "constant", "warmup_steps": 0},
        optimizer={"lr": LR, "weight_decay": 0.1})
    config = config_from_dict(RunConfig, {**settings, **kw})
    torch.manual_seed(config.seed if model_seed is None else model_seed)
    model_config = ToyConfig(vocab_size=tokenizer.vocab_size)
    model = create_toy(model_config)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def loss_fn(net, batch, ctx):
        return net(dict(batch, targets=[tokenizer.encode(t) for t in batch["texts"]]))

    result = run(config, model=model, model_config=model_config, loss_fn=loss_fn,
                 parts={"tokenizer": tokenizer}, resume=resume)
    return result, model, initial


def _ckpt(exp, step):
    return exp / "checkpoints" / checkpoint_name(step=step)


def _same(a, b, prefix=""):
    keys = [k for k in a if k.startswith(prefix)]
    assert keys
    return all(torch.equal(a[k], b[k]) for k in keys)


def _changed(a, b, prefix):
    """Every parameter under prefix differs (buffers such as CMVN stats excluded)."""
    keys = [k for k in a if k.startswith(prefix) and k.endswith(("weight", "bias"))]
    assert keys
    return all(not torch.equal(a[k], b[k]) for k in keys)


# --------------------------------------------------------------- param-group builders


def test_layer_lr_scales_follow_the_documented_convention():
    names = ["encoder.conformer.front_end.conv.0.weight", "encoder.conformer.blocks.0.ffn.w",
             "encoder.conformer.blocks.1.ffn.w", "encoder.conformer.blocks.2.attn_norm.bias",
             "encoder.conformer.final_norm.weight", "head.weight", "joiner.out.bias"]
    scales = layer_lr_scales(names, 0.5)  # L = 3
    assert scales == {
        "encoder.conformer.front_end.conv.0.weight": 0.5 ** 4,
        "encoder.conformer.blocks.0.ffn.w": 0.5 ** 3,
        "encoder.conformer.blocks.1.ffn.w": 0.5 ** 2,
        "encoder.conformer.blocks.2.attn_norm.bias": 0.5,
        "encoder.conformer.final_norm.weight": 1.0,
        "head.weight": 1.0,
        "joiner.out.bias": 1.0,
    }
    assert set(layer_lr_scales(names, 1.0).values()) == {1.0}
    with pytest.raises(ValueError, match="encoder blocks"):
        layer_lr_scales(["head.weight"], 0.9)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="in \\(0, 1\\]"):
            layer_lr_scales(names, bad)


def test_groups_by_scale_keep_weight_decay_split_and_leave_frozen_out():
    model = create_toy(ToyConfig())
    names = [n for n, _ in model.named_parameters()]
    plain = {n: g["weight_decay"] for g in param_groups(model, 0.1) for n in g["names"]}
    scales = layer_lr_scales(names, 0.8)
    groups = param_groups(model, 0.1, freeze_prefixes=(FRONT_END,), lr_scales=scales)
    seen = [n for g in groups for n in g["names"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {n for n in names if not n.startswith(FRONT_END)}
    for group in groups:
        assert len(group["params"]) == len(group["names"])
        for name in group["names"]:
            assert group["lr_scale"] == scales[name]
            assert group["weight_decay"] == plain[name]  # the decay split is unchanged
    group_scales = [g["lr_scale"] for g in groups]
    assert group_scales == sorted(group_scales, reverse=True) and group_scales[0] == 1.0
    # one decayed and one non-decayed group per block and one pair for the head
    assert sorted(set(group_scales), reverse=True) == [1.0, 0.8, 0.8 ** 2]
    assert len(groups) == 6

    opt = create_optimizer(model, OptimizerConfig(lr=0.01, weight_decay=0.1),
                           freeze_prefixes=(FRONT_END,), layer_lr_decay=0.8)
    assert [g["lr"] for g in opt.param_groups] == [0.01 * s for s in group_scales]
    assert all("names" not in g for g in opt.param_groups)
    # defaults: the two plain groups, no scale, no own lr beyond the peak
    default = create_optimizer(model, OptimizerConfig(lr=0.01, weight_decay=0.1))
    assert [g["weight_decay"] for g in default.param_groups] == [0.1, 0.0]
    assert all("lr_scale" not in g and g["lr"] == 0.01 for g in default.param_groups)


def test_freeze_parameters_sets_requires_grad_and_refuses_a_prefix_matching_nothing():
    model = create_toy(ToyConfig())
    frozen = freeze_parameters(model, (FRONT_END,))
    assert frozen and all(n.startswith(FRONT_END) for n in frozen)
    assert all(p.requires_grad == (not n.startswith(FRONT_END))
               for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="encoder.typo"):
        freeze_parameters(model, ("head.", "encoder.typo."))


@pytest.mark.parametrize("kind", ["adamw", "adam"])
@pytest.mark.parametrize("impl", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_held_parameters_are_bit_identical_and_start_with_fresh_adam_state(kind, impl):
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam

    def setup():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        with torch.no_grad():
            model[0].bias[0] = -0.0  # a negative zero stays one
        return model, cls(model.parameters(), lr=0.1, weight_decay=0.5, **impl)

    def train(model, opt, before_step):
        torch.manual_seed(1)
        for step in range(4):
            model(torch.randn(3, 4)).square().sum().backward()
            before_step(step)
            opt.step()
            opt.zero_grad()
            yield step

    model, opt = setup()
    steps = {"n": 0}
    held0 = [p.detach().clone() for p in model[0].parameters()]
    head0 = [p.detach().clone() for p in model[1].parameters()]
    hold_parameters(opt, model[0].parameters(), lambda: steps["n"] < 2)
    for step in train(model, opt, lambda step: None):
        steps["n"] += 1
        if step == 1:  # two updates: the held layer untouched, its Adam state fresh
            for a, b in zip(held0, model[0].parameters(), strict=True):
                assert torch.equal(a, b) and torch.equal(a.signbit(), b.signbit())
            assert all(not torch.equal(a, b)
                       for a, b in zip(head0, model[1].parameters(), strict=True))
            for p in model[0].parameters():
                state = opt.state[p]
                assert float(state["step"]) == 0
                assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    assert all(not torch.equal(a, b) for a, b in zip(held0, model[0].parameters(), strict=True))
    assert all(float(opt.state[p]["step"]) == 2 for p in model[0].parameters())
    assert all(float(opt.state[p]["step"]) == 4 for p in model[1].parameters())

    # the same as an optimizer that simply never saw the layer's gradients in 2 updates
    ref, ref_opt = setup()

    def drop(step):
        if step < 2:
            for p in ref[0].parameters():
                p.grad = None

    for _ in train(ref, ref_opt, drop):
        pass
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)

    with pytest.raises(TypeError, match="Adam"):
        hold_parameters(torch.optim.SGD(model.parameters(), lr=0.1), model.parameters(), bool)


def test_run_config_validates_the_options():
    base = dict(train_cuts="x.jsonl.gz", max_steps=1)
    for bad in ({"freeze_prefixes": ("",)}, {"freeze_encoder_steps": -1},
                {"layer_lr_decay": 0.0}, {"layer_lr_decay": 1.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RunConfig(**base, **bad).validate()
    RunConfig(**base, freeze_prefixes=("encoder.",), freeze_encoder_steps=5,
              layer_lr_decay=0.9).validate()


# ------------------------------------------------------------------------ through run()


def test_frozen_prefix_never_changes(toy_family, corpus, tmp_path):
    result, model, initial = _run(corpus, tmp_path / "exp", max_steps=2,
                                  freeze_prefixes=[FRONT_END])
    assert result.summary["num_trainable_params"] < result.summary["num_params"]
    final = model.state_dict()
    assert _same(initial, final, FRONT_END)
    assert _same(initial, read_weights(_ckpt(tmp_path / "exp", 2)), FRONT_END)
    assert _changed(initial, final, "encoder.conformer.blocks.")
    assert _changed(initial, final, "head.")
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(FRONT_END))


def test_encoder_held_for_the_first_updates_and_exact_resume(toy_family, corpus, tmp_path):
    straight = tmp_path / "straight"
    _, _, initial = _run(corpus, straight, freeze_encoder_steps=2)
    at = {step: read_weights(_ckpt(straight, step)) for step in (1, 2, 3, 4)}
    assert _same(initial, at[2], "encoder.")
    assert _changed(initial, at[1], "head.") and _changed(at[1], at[2], "head.")
    assert _changed(at[2], at[3], "encoder.conformer.")
    assert _changed(initial, at[4], "encoder.conformer.")
    # during the hold the encoder's Adam state is the fresh one (step 0, zero moments)
    saved = torch.load(_ckpt(straight, 2) / STATE_FILE, weights_only=True)["optimizer"]["state"]
    encoder = {k: v for k, v in saved.items() if k.startswith("encoder.")}
    assert encoder
    assert all(float(v["step"]) == 0 and not v["exp_avg"].any() for v in encoder.values())
    assert all(float(v["step"]) == 2 for k, v in saved.items() if k.startswith("head."))

    # resume mid-hold from the step-1 checkpoint: the same step-4 weights, bit for bit
    # (the model starts from other weights: only the checkpoint can make them match)
    resumed = tmp_path / "resumed"
    shutil.copytree(_ckpt(straight, 1), _ckpt(resumed, 1))
    result, model, other = _run(corpus, resumed, freeze_encoder_steps=2, resume=True,
                                model_seed=11)
    assert not _same(other, initial, "encoder.") and result.summary["steps"] == 4
    assert _same(read_weights(_ckpt(resumed, 2)), at[2])
    assert _same(model.state_dict(), at[4])
    assert _same(read_weights(_ckpt(resumed, 4)), at[4])


def test_layer_lr_decay_sets_the_group_rates(toy_family, corpus, tmp_path, monkeypatch):
    import speechfm.train.optim as optim

    original, built = optim.create_optimizer, []

    def capture(model, *args, **kwargs):
        built.append((model, original(model, *args, **kwargs)))
        return built[-1][1]

    monkeypatch.setattr(optim, "create_optimizer", capture)
    _run(corpus, tmp_path / "exp", max_steps=1, layer_lr_decay=0.5)
    ((model, opt),) = built
    names = {id(p): n for n, p in model.named_parameters()}
    expected = layer_lr_scales(names.values(), 0.5)  # 2 blocks: 0.25, 0.5; front end 0.125
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == [0.125, 0.25, 0.5, 1.0]
    for group in opt.param_groups:  # after a step of the constant schedule
        assert group["lr"] == LR * group["lr_scale"]
        assert all(expected[names[id(p)]] == group["lr_scale"] for p in group["params"])
    assert opt.param_groups[0]["lr"] == LR
    assert names[id(opt.param_groups[0]["params"][0])] == "head.weight"
    assert {g["weight_decay"] for g in opt.param_groups} == {0.1, 0.0}
    assert all(p in opt.state for g in opt.param_groups for p in g["params"])  # stepped
    # the checkpoint keeps the per-group rates (a resume restores them)
    saved = torch.load(_ckpt(tmp_path / "exp", 1) / STATE_FILE, weights_only=True)["optimizer"]
    for group in saved["param_groups"]:
        assert group["lr"] == LR * group["lr_scale"]
        assert all(expected[n] == group["lr_scale"] for n in group["params"])


def test_frozen_submodules_stay_in_eval_mode():
    """A frozen module applies no dropout and keeps its BatchNorm statistics."""
    from speechfm.train.optim import freeze_parameters, keep_frozen_in_eval

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4),
                                               torch.nn.Dropout(0.5))
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.encoder(x))

    torch.manual_seed(0)
    net = Net()
    freeze_parameters(net, ["encoder."])
    assert keep_frozen_in_eval(net, ["encoder."]) == ["encoder"]
    stats = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    net.train()
    x = torch.randn(8, 4)
    a, b = net(x), net(x)
    assert torch.equal(a, b)  # no dropout draws
    assert not net.encoder.training and net.head.training
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, stats[key]), key
