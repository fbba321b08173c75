"""Checkpoint directories: round trip, weights_only loading, atomicity under SIGKILL, pruning."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from speechfm import train as T


class ListSampler:
    """Deterministic batch iterator with lhotse-like resumable state."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.position = 0
        self._restored = False

    def __iter__(self):
        start = self.position if self._restored else 0
        self._restored = False
        self.position = start
        for batch in self.batches[start:]:
            self.position += 1
            yield batch

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state.pop("position")  # mutates, as lhotse does
        self._restored = True


class Tok:
    def save(self, directory):
        (directory / "tokenizer.json").write_text(json.dumps({"kind": "char", "vocab": ["a"]}))


def _model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Embedding(5, 4), nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 5)
    )
    model[4].weight = model[0].weight  # tied weights must survive safetensors
    return model


def _loss(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y, reduction="sum"), len(y)


def _batches(n=6):
    gen = torch.Generator().manual_seed(3)
    return [
        (torch.randint(0, 5, (4,), generator=gen), torch.randint(0, 5, (4,), generator=gen))
        for _ in range(n)
    ]


def _setup(seed=0):
    model = _model(seed)
    opt = T.create_optimizer(model, T.OptimizerConfig(lr=1e-2))
    sched = T.create_scheduler(opt, T.SchedulerConfig(kind="noam", warmup_steps=3))
    return (
        model,
        opt,
        sched,
        ListSampler(_batches()),
        T.TrainState(),
        T.ModelAverager(model, period=1),
    )


def _run(model, opt, sched, it, state, avg, steps):
    losses = []
    for _ in range(steps):
        result = T.train_step(
            model, [next(it)], _loss, opt, state=state, scheduler=sched, model_avg=avg
        )
        losses.append(result.loss)
    return losses


def test_round_trip_restores_everything_and_training_continues_identically(tmp_path):
    model, opt, sched, sampler, state, avg = _setup()
    it = iter(sampler)
    _run(model, opt, sched, it, state, avg, 3)
    config = {"model": {"dim": 4}, "features": {"num_mel_bins": 80}, "tokenizer": "tokenizer"}
    path = T.save_checkpoint(
        tmp_path,
        T.checkpoint_name(step=state.step),
        model=model,
        config=config,
        optimizer=opt,
        scheduler=sched,
        sampler=sampler,
        state=state,
        model_avg=avg,
        tokenizer=Tok(),
        extra={"best": 1.5},
    )
    assert path == tmp_path / "step-000003"
    assert T.find_latest_checkpoint(tmp_path) == path
    assert T.load_config(path) == config
    assert json.loads((path / "tokenizer" / "tokenizer.json").read_text())["kind"] == "char"
    # Continue the original for 2 more steps (3 batches remain in the sampler).
    expected = _run(model, opt, sched, it, state, avg, 2)

    model2, opt2, sched2, sampler2, state2, avg2 = _setup(seed=1)  # different init
    saved = T.load_checkpoint(
        path,
        model=model2,
        optimizer=opt2,
        scheduler=sched2,
        sampler=sampler2,
        state=state2,
        model_avg=avg2,
    )
    assert saved["extra"] == {"best": 1.5}
    assert (state2.step, avg2.step) == (3, 3)
    assert model2[4].weight is model2[0].weight
    got = _run(model2, opt2, sched2, iter(sampler2), state2, avg2, 2)
    assert got == pytest.approx(expected, abs=1e-7)  # same batches, dropout, lr, moments
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for key, value in avg.averaged_state_dict().items():
        torch.testing.assert_close(avg2.averaged_state_dict()[key], value, atol=1e-12, rtol=0)


def test_training_state_is_weights_only_loadable(tmp_path):
    model, opt, sched, sampler, state, avg = _setup()
    _run(model, opt, sched, iter(sampler), state, avg, 1)
    path = T.save_checkpoint(
        tmp_path,
        "step-000001",
        model=model,
        optimizer=opt,
        scheduler=sched,
        sampler=sampler,
        state=state,
        model_avg=avg,
    )
    file = path / "training_state.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(file)) == []
    loaded = torch.load(file, weights_only=True)
    assert set(loaded) >= {"optimizer", "scheduler", "sampler", "rng", "state", "grad_scaler"}
    assert isinstance(loaded["rng"][0]["python"]["state"], torch.Tensor)


def test_rng_is_restored_by_load(tmp_path):
    model = nn.Linear(2, 2)
    torch.manual_seed(123)
    T.save_checkpoint(tmp_path, "a", model=model)
    expected = torch.rand(3)
    torch.rand(10)
    T.load_checkpoint(tmp_path / "a")
    torch.testing.assert_close(torch.rand(3), expected, atol=0, rtol=0)
    torch.rand(10)
    T.load_checkpoint(tmp_path / "a", restore_rng=False)
    assert not torch.equal(torch.rand(3), expected)


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from torch import nn
    from speechfm import train as T

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def partial_save(obj, f, *args, **kwargs):
        f.write(b"PK\\x03\\x04 half a file")  # some bytes reach the disk, then death
        f.flush()
        os.fsync(f.fileno())
        die()

    def rename_twice_then_die(real):
        calls = []
        def rename(src, dst):
            calls.append(src)
            if len(calls) == 2:  # old copy moved aside, new one not yet in place
                die()
            real(src, dst)
        return rename

    def scenario(root, name, patch):
        model = nn.Linear(3, 2)
        with torch.no_grad():
            model.weight.fill_(1.0)
        T.save_checkpoint(root, "step-000001", model=model, config={"v": 1},
                          state=T.TrainState(step=1))
        pid = os.fork()
        if pid == 0:
            patch()
            with torch.no_grad():
                model.weight.fill_(2.0)
            T.save_checkpoint(root, name, model=model, config={"v": 2},
                              state=T.TrainState(step=2))
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)

    base = sys.argv[1]
    scenario(base + "/a", "step-000002", lambda: setattr(torch, "save", partial_save))
    scenario(base + "/b", "step-000002", lambda: setattr(os, "replace", die))
    scenario(base + "/c", "step-000001", lambda: setattr(os, "rename", rename_twice_then_die(os.rename)))
    """
)


def test_sigkill_during_save_never_corrupts_latest(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _KILLER, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]  # each writer died by SIGKILL

    def weight_of(path):
        model = nn.Linear(3, 2)
        T.load_checkpoint(path, model=model)
        return model.weight.detach().unique().tolist()

    # a: killed while writing training_state.pt -> the half-written dir is hidden.
    a = tmp_path / "a"
    assert any(p.name.startswith(".tmp-step-000002") for p in a.iterdir())
    assert not (a / "step-000002").exists()
    assert T.find_latest_checkpoint(a) == a / "step-000001"
    assert weight_of(a / "step-000001") == [1.0]
    # b: killed after the rename but before "latest" moved: both complete, latest is old.
    b = tmp_path / "b"
    assert T.is_complete_checkpoint(b / "step-000002")
    assert T.find_latest_checkpoint(b) == b / "step-000001"
    # c: killed while overwriting step-000001: the old copy is still found and loadable.
    c = tmp_path / "c"
    latest_c = T.find_latest_checkpoint(c)
    assert latest_c is not None and latest_c.name.startswith("step-000001.old-")
    assert weight_of(latest_c) == [1.0]
    # The next save cleans leftovers of interrupted saves.
    T.save_checkpoint(a, "step-000003", model=nn.Linear(3, 2), state=T.TrainState(step=3))
    assert not any(p.name.startswith(".") for p in a.iterdir())
    assert T.find_latest_checkpoint(a) == a / "step-000003"
    T.save_checkpoint(c, "step-000001", model=nn.Linear(3, 2), state=T.TrainState(step=1))
    assert sorted(p.name for p in c.iterdir()) == ["latest", "step-000001"]


def test_latest_pointer_to_missing_dir_falls_back_to_highest_step(tmp_path):
    model = nn.Linear(2, 2)
    for step in (1, 2, 3):
        T.save_checkpoint(
            tmp_path, T.checkpoint_name(step=step), model=model, state=T.TrainState(step=step)
        )
    (tmp_path / "latest").write_text("step-000009\n")
    assert T.find_latest_checkpoint(tmp_path) == tmp_path / "step-000003"
    (tmp_path / "step-000003" / "meta.json").unlink()  # incomplete now
    assert T.find_latest_checkpoint(tmp_path) == tmp_path / "step-000002"
    assert T.find_latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        T.load_checkpoint(tmp_path / "step-000003")


def test_keep_last_prunes_per_prefix(tmp_path):
    model = nn.Linear(2, 2)
    T.save_checkpoint(tmp_path, "epoch-1", model=model, state=T.TrainState(step=2, epoch=1))
    for step in range(3, 8):
        T.save_checkpoint(
            tmp_path,
            T.checkpoint_name(step=step),
            model=model,
            state=T.TrainState(step=step),
            keep_last=2,
        )
    names = [p.name for p in T.list_checkpoints(tmp_path)]
    assert names == ["epoch-1", "step-000006", "step-000007"]
    assert [p.name for p in T.list_checkpoints(tmp_path, prefix="epoch-")] == ["epoch-1"]


def test_missing_parts_and_bad_names_are_reported(tmp_path):
    model = nn.Linear(2, 2)
    path = T.save_checkpoint(tmp_path, "x", model=model)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no saved optimizer state"):
        T.load_checkpoint(path, model=model, optimizer=sgd)
    with pytest.raises(ValueError, match="needs the model"):
        T.load_checkpoint(path, optimizer=sgd)
    T.save_checkpoint(tmp_path, "y", model=model, optimizer=sgd)
    only_weight = torch.optim.SGD([model.weight], lr=0.1)
    with pytest.raises(ValueError, match="param group 0 differs"):
        T.load_checkpoint(tmp_path / "y", model=model, optimizer=only_weight)
    with pytest.raises(ValueError, match="invalid checkpoint name"):
        T.save_checkpoint(tmp_path, "../evil", model=model)
    with pytest.raises(ValueError):
        T.checkpoint_name(step=1, epoch=1)


class _ItemDataset(torch.utils.data.Dataset):
    def __getitem__(self, batch):
        return torch.tensor(batch)


def test_resumable_sampler_state_counts_consumed_not_prefetched_batches():
    batches = [[i, i + 100] for i in range(8)]
    sampler = T.ResumableSampler(ListSampler(batches))
    loader = torch.utils.data.DataLoader(
        _ItemDataset(), sampler=sampler, batch_size=None, num_workers=1, prefetch_factor=3
    )
    seen = []
    for batch in sampler.track(loader):
        seen.append(batch.tolist())
        if len(seen) == 3:
            state = sampler.state_dict()
            break
    # The loader had pulled more than 3 batches from the sampler, but the state says 3.
    assert sampler.sampler.position > 3
    assert state == {"position": 3}
    fresh = T.ResumableSampler(ListSampler(batches))
    fresh.load_state_dict(state)
    assert state == {"position": 3}  # the caller's dict is not consumed
    rest = [
        b.tolist()
        for b in fresh.track(
            torch.utils.data.DataLoader(_ItemDataset(), sampler=fresh, batch_size=None)
        )
    ]
    assert seen + rest == batches
    assert fresh.state_dict() == {"position": 8}
