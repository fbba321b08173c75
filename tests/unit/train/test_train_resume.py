"""Killed-and-resumed training continues exactly: same batches, dropout masks and losses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechfm import train as T

SCRIPT = Path(__file__).with_name("toy_train.py")
STEP_RE = re.compile(r"^step (\d+) loss (\S+)$")


def _losses(lines: list[str]) -> dict[int, float]:
    out = {}
    for line in lines:
        match = STEP_RE.match(line.strip())
        if match:
            out[int(match.group(1))] = float(match.group(2))
    return out


def _final(lines: list[str]) -> list[float]:
    (line,) = [x for x in lines if x.startswith("final params")]
    return [float(v) for v in line.split()[2:4] + line.split()[5:6]]


def _cmd(exp: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--exp",
        str(exp),
        "--epochs",
        "3",
        "--accum",
        "2",
        "--save-every",
        "2",
        *extra,
    ]


def test_sigkill_mid_epoch_then_resume_reproduces_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.Popen(
        _cmd(tmp_path / "ref"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    # 47 items / batch 5 = 10 batches = 5 updates per epoch with --accum 2; checkpoints
    # every 2 updates, so step 6 is saved after batch 2 of epoch 1: mid-epoch.
    victim = subprocess.Popen(
        _cmd(tmp_path / "run", "--hang-after", "7"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen: list[str] = []
    saved_mid_epoch = False
    try:
        for line in victim.stdout:
            seen.append(line)
            if line.startswith("saved step 6 "):
                saved_mid_epoch = int(line.split()[-1]) % 10 != 0
            if saved_mid_epoch and line.startswith("step 7 "):
                victim.send_signal(signal.SIGKILL)
                break
    finally:
        if victim.poll() is None:
            victim.kill()  # never leave a hanging child behind
    victim.wait(timeout=30)
    errors = victim.stderr.read() if victim.returncode != -signal.SIGKILL else ""
    victim.stdout.close()
    victim.stderr.close()
    assert saved_mid_epoch, "".join(seen) + errors
    assert victim.returncode == -signal.SIGKILL, errors
    killed_losses = _losses(seen)
    assert max(killed_losses) < 15  # it really was interrupted

    latest = T.find_latest_checkpoint(tmp_path / "run" / "ckpt")
    assert latest is not None
    saved = torch.load(latest / "training_state.pt", weights_only=True)["state"]
    assert saved["batch_in_epoch"] % 10 != 0  # resuming mid-epoch, not at a boundary

    resumed = subprocess.run(
        _cmd(tmp_path / "run", "--resume"), capture_output=True, text=True, env=env, timeout=60
    )
    assert resumed.returncode == 0, resumed.stderr
    ref_out, ref_err = reference.communicate(timeout=60)
    assert reference.returncode == 0, ref_err

    ref_lines, res_lines = ref_out.splitlines(), resumed.stdout.splitlines()
    assert res_lines[0].startswith(f"resumed {latest.name} step {saved['step']} ")
    ref_losses, res_losses = _losses(ref_lines), _losses(res_lines)
    assert sorted(ref_losses) == list(range(1, 16))
    assert sorted(res_losses) == list(range(saved["step"] + 1, 16))
    for step, loss in res_losses.items():
        assert loss == pytest.approx(ref_losses[step], abs=1e-6), step
    # Steps the killed run logged before dying agree as well.
    for step, loss in killed_losses.items():
        assert loss == pytest.approx(ref_losses[step], abs=1e-6), step
    assert _final(res_lines) == pytest.approx(_final(ref_lines), abs=1e-6)


class _CutFeatures(torch.utils.data.Dataset):
    """Deterministic per-cut features and labels (no audio needed)."""

    def __getitem__(self, cuts):
        xs, ys = [], []
        for cut in cuts:
            index = int(cut.id.rsplit("-", 1)[1])
            gen = torch.Generator().manual_seed(index)
            xs.append(torch.randn(6, generator=gen, dtype=torch.float64) * cut.duration)
            ys.append(index % 3)
        return torch.stack(xs), torch.tensor(ys)


def _lhotse_run(cuts, ckpt_root, *, resume: bool, save_at: int, steps_total: int):
    from speechfm.data.sampler import make_sampler

    T.seed_everything(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.4), torch.nn.Linear(16, 3)
    ).double()
    opt = T.create_optimizer(model, T.OptimizerConfig(lr=1e-2))
    sampler = T.ResumableSampler(make_sampler(cuts, max_duration=6.0, seed=3, num_buckets=2))
    # One worker with prefetching: the sampler runs ahead of training.
    loader = torch.utils.data.DataLoader(
        _CutFeatures(),
        sampler=sampler,
        batch_size=None,
        num_workers=1,
        prefetch_factor=4,
        generator=torch.Generator().manual_seed(1),
    )
    state = T.TrainState()
    if resume:
        T.load_checkpoint(
            T.find_latest_checkpoint(ckpt_root),
            model=model,
            optimizer=opt,
            sampler=sampler,
            state=state,
        )
    losses = {}

    def loss_fn(model, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y, reduction="sum"), len(y)

    def on_step(result, state):
        losses[state.step] = result.loss
        if state.step == save_at:
            T.save_checkpoint(
                ckpt_root,
                T.checkpoint_name(step=state.step),
                model=model,
                optimizer=opt,
                sampler=sampler,
                state=state,
            )
        return state.step >= steps_total

    while state.step < steps_total:
        sampler.set_epoch(state.epoch)
        T.train_one_epoch(model, sampler.track(loader), loss_fn, opt, state=state, on_step=on_step)
    return losses


def test_lhotse_bucketing_sampler_behind_prefetching_loader_resumes_exactly(tmp_path):
    from lhotse import CutSet
    from lhotse.testing.dummies import dummy_cut

    cuts = CutSet.from_cuts(dummy_cut(i, duration=0.5 + (i * 37 % 10) / 4) for i in range(40))
    reference = _lhotse_run(cuts, tmp_path / "ref", resume=False, save_at=5, steps_total=14)
    # Resume from the mid-epoch checkpoint at step 5 (the first epoch has ~8-10 batches).
    state = torch.load(tmp_path / "ref" / "step-000005" / "training_state.pt", weights_only=True)
    assert state["state"]["epoch"] == 0 and state["state"]["batch_in_epoch"] == 5
    assert state["sampler"]["diagnostics"]["stats_per_epoch"][0]["kept_batches"] == 5
    resumed = _lhotse_run(cuts, tmp_path / "ref", resume=True, save_at=-1, steps_total=14)
    assert sorted(resumed) == list(range(6, 15))
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], abs=1e-6), step
