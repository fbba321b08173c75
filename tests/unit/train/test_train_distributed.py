"""Two gloo processes (torchrun) train exactly like one process on the same global batch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechfm import train as T

WORKER = Path(__file__).with_name("ddp_worker.py")
_spec = importlib.util.spec_from_file_location("speechfm_test_ddp_worker", WORKER)
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)


def _single_process(steps: int, *, resume_from: Path | None = None, save_to: Path | None = None):
    model = W.build_model()
    opt = T.create_optimizer(model, T.OptimizerConfig(lr=0.05, weight_decay=0.01))
    sched = T.create_scheduler(opt, T.SchedulerConfig(kind="noam", warmup_steps=2))
    state, avg = T.TrainState(), T.ModelAverager(model, period=1)
    parts = dict(optimizer=opt, scheduler=sched, state=state, model_avg=avg)
    if resume_from is not None:
        T.load_checkpoint(resume_from, model=model, **parts)
    losses = []
    while state.step < steps:
        losses.append(
            T.train_step(
                model,
                [W.global_batch()],
                W.loss_fn,
                opt,
                state=state,
                scheduler=sched,
                max_grad_norm=1.0,
                model_avg=avg,
            ).loss
        )
        if save_to is not None and state.step == 2:
            T.save_checkpoint(save_to, "step-000002", model=model, **parts)
    return dict(model.named_parameters()), losses


def test_two_gloo_ranks_match_single_process_training_ddp_and_fsdp(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        "--out",
        str(tmp_path),
        "--strategies",
        "ddp,fsdp",
        "--steps",
        "3",
        "--save-at",
        "2",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    ref_params, ref_losses = _single_process(3, save_to=tmp_path / "ckpt-single")
    ref_avg = load_file(str(tmp_path / "ckpt-single" / "step-000002" / "model_avg.safetensors"))
    for strategy in ("ddp", "fsdp"):
        saved = torch.load(tmp_path / f"params-{strategy}.pt", weights_only=True)
        for name, ref in ref_params.items():
            torch.testing.assert_close(saved["final"][name], ref.detach(), atol=1e-10, rtol=0)
            # Resuming from the distributed checkpoint (on both ranks) continues identically.
            torch.testing.assert_close(saved["resumed"][name], ref.detach(), atol=1e-10, rtol=0)
        for rank in (0, 1):  # the reported loss is the global mean on every rank
            path = tmp_path / f"losses-{strategy}-rank{rank}.json"
            assert json.loads(path.read_text()) == pytest.approx(ref_losses, abs=1e-10)

        # The distributed checkpoint also resumes in one process (strategy-independent).
        ckpt = T.find_latest_checkpoint(tmp_path / f"ckpt-{strategy}")
        assert ckpt is not None and ckpt.name == "step-000002"
        avg = load_file(str(ckpt / "model_avg.safetensors"))  # gathered from shards for FSDP
        for name, ref in ref_avg.items():
            torch.testing.assert_close(avg[name], ref, atol=1e-10, rtol=0)
        resumed, _ = _single_process(3, resume_from=ckpt)
        for name, ref in ref_params.items():
            torch.testing.assert_close(resumed[name].detach(), ref.detach(), atol=1e-10, rtol=0)


def test_init_distributed_without_torchrun_is_single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = T.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.is_main, info.is_distributed) == (0, 1, True, False)
    assert info.backend is None and info.device == torch.device("cpu")
    model = torch.nn.Linear(2, 2)
    assert T.wrap_model(model, info) is model
    assert T.unwrap_model(model) is model
    T.barrier()  # no-op without a process group
    with pytest.raises(ValueError, match="strategy"):
        T.wrap_model(model, info, strategy="zero3")
