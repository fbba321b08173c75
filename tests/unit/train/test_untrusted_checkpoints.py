"""Untrusted files: a checkpoint or model directory carrying a malicious pickle is refused.

A pickle can name any importable callable to run while it is read. speechfm only reads
pickles with ``torch.load(weights_only=True)`` (``training_state.pt``) and weights only
with safetensors (``model.safetensors``), so such a file must fail to load with an error,
never run its code. ``torch>=2.6`` in pyproject.toml: before 2.6, ``weights_only=True``
could be bypassed (CVE-2025-32434).

The payload here touches a marker file when unpickled; every test first shows that it
really does (with a plain ``pickle``/``torch.load(weights_only=False)``), so a refusal is
not a harmless file passing for a safe one.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from torch import nn

import speechfm
from speechfm import train as T
from speechfm.errors import DataError
from speechfm.train.checkpoint import MODEL_FILE, STATE_FILE

V1_CTC_DIR = Path(__file__).resolve().parents[1] / "models" / "data" / "v1_ctc_tiny"


class RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: stands for any code an attacker picks."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _assert_payload_runs(file: Path, marker: Path) -> None:
    """Positive control: loading (a copy of) ``file`` without weights_only runs the payload.

    The copy is named .pt: torch.load hands a ``*.safetensors`` path to safetensors.
    """
    assert not marker.exists()
    control = marker.with_name("control.pt")
    shutil.copy(file, control)
    torch.load(control, map_location="cpu", weights_only=False)
    assert marker.exists(), "the planted payload is not malicious: the test would prove nothing"
    marker.unlink()


def _checkpoint(root: Path) -> Path:
    """A valid checkpoint of a tiny nn.Linear with optimizer and loop state, as --resume reads."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = T.TrainState()
    return T.save_checkpoint(
        root, "step-000001", model=model, optimizer=optimizer, state=state, config={"dim": 3}
    )


def _resume(root: Path) -> None:
    """What ``--resume`` does: find the latest checkpoint and restore model and optimizer."""
    path = T.find_latest_checkpoint(root)
    assert path is not None
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    T.load_checkpoint(path, model=model, optimizer=optimizer, state=T.TrainState())


def test_payload_runs_when_unpickled(tmp_path):
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.exists()


def test_valid_checkpoint_resumes(tmp_path):
    """The control for the tests below: the untouched checkpoint loads."""
    _checkpoint(tmp_path / "ckpt")
    _resume(tmp_path / "ckpt")


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", ["inside", "whole"])
def test_resume_refuses_a_malicious_training_state(tmp_path, where, zipfile):
    """training_state.pt (the one file read with torch.load) carrying a code-running pickle."""
    root = tmp_path / "ckpt"
    path = _checkpoint(root)
    marker = tmp_path / "MARKER"
    file = path / STATE_FILE
    if where == "inside":  # an otherwise valid training state with one poisoned entry
        training_state = torch.load(file, map_location="cpu", weights_only=True)
        training_state["extra"]["note"] = RunsCode(marker)
    else:
        training_state = RunsCode(marker)
    torch.save(training_state, file, _use_new_zipfile_serialization=zipfile)
    _assert_payload_runs(file, marker)
    assert T.is_complete_checkpoint(path)

    with pytest.raises(pickle.UnpicklingError, match="(?i)weights.only"):
        _resume(root)
    assert not marker.exists()


def test_resume_refuses_a_pickle_in_place_of_the_weights(tmp_path):
    root = tmp_path / "ckpt"
    path = _checkpoint(root)
    marker = tmp_path / "MARKER"
    torch.save({"weight": RunsCode(marker)}, path / MODEL_FILE)
    _assert_payload_runs(path / MODEL_FILE, marker)

    with pytest.raises(SafetensorError):
        _resume(root)
    assert not marker.exists()


def _init_ctc_from(directory):
    """``init_from`` (speechfm.models.io.init_weights, what every recipe's run starts from)."""
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.models.io import init_weights

    init_weights(create_ctc_model(ctc_tiny(5)), directory)


@pytest.mark.parametrize("loader", [speechfm.load, _init_ctc_from], ids=["load", "init_from"])
@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_a_pickle_in_place_of_model_safetensors_is_refused(tmp_path, zipfile, loader):
    """speechfm.load and init_from on a model directory whose model.safetensors is a
    torch.save pickle."""
    directory = tmp_path / "model"
    shutil.copytree(V1_CTC_DIR, directory)
    marker = tmp_path / "MARKER"
    weights = directory / "model.safetensors"
    weights.chmod(0o644)
    torch.save({"encoder.weight": RunsCode(marker)}, weights, _use_new_zipfile_serialization=zipfile)
    _assert_payload_runs(weights, marker)

    with pytest.raises(DataError, match="model.safetensors"):
        loader(directory)
    assert not marker.exists()
