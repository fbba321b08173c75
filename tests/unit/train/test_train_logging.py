"""Run monitoring: TensorBoard event files, curves PNG regenerated from them, text log."""

from __future__ import annotations

import logging

import pytest

from speechfm import train as T
from speechfm.train.loop import StepResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _log_run(run_dir, steps, *, start=0, loss_offset=0.0):
    logger = T.TrainLogger(run_dir, start_step=start, total_steps=10)
    state = T.TrainState(step=start)
    for _ in range(steps):
        state.step += 1
        result = StepResult(
            loss=10.0 / state.step + loss_offset, count=4, lr=1e-3 * state.step, grad_norm=0.5
        )
        logger.log_step(state, result, num_items=4)
    logger.log_scalars({"valid/loss": 1.5}, state.step)
    return logger


def test_tensorboard_events_and_png_are_written(tmp_path):
    logger = _log_run(tmp_path, 5)
    png = logger.close()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert png == tmp_path / "curves.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    scalars = T.read_scalars(tmp_path)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5]
    assert scalars["train/loss"][1][1] == pytest.approx(5.0)
    assert scalars["train/lr"][-1][1] == pytest.approx(5e-3)
    assert scalars["valid/loss"] == [(5, 1.5)]
    assert {"train/grad_norm", "train/utts_per_sec"} <= set(scalars)

    png.unlink()  # regenerated from the run directory alone
    again = T.plot_curves(tmp_path, tmp_path / "plots" / "again.png")
    assert again.read_bytes()[:8] == PNG_MAGIC


def test_resumed_run_replaces_steps_logged_after_the_checkpoint(tmp_path):
    _log_run(tmp_path, 6).close(plot=False)  # "killed" at step 6, checkpoint was at step 3
    _log_run(tmp_path, 4, start=3, loss_offset=100.0).close(plot=False)
    scalars = T.read_scalars(tmp_path)
    steps = [s for s, _ in scalars["train/loss"]]
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    values = dict(scalars["train/loss"])
    assert values[3] == pytest.approx(10.0 / 3)  # before the resume point: the first run
    assert values[5] == pytest.approx(100.0 + 2.0)  # after it: the resumed run


def test_disabled_logger_writes_nothing_and_missing_events_are_reported(tmp_path):
    logger = T.TrainLogger(tmp_path / "rank1", enabled=False)
    logger.log_step(T.TrainState(step=1), StepResult(loss=1.0, count=1, lr=1.0, grad_norm=1.0))
    assert logger.close() is None
    assert not (tmp_path / "rank1").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        T.plot_curves(tmp_path / "empty")


def test_setup_logging_writes_a_file_per_rank(tmp_path):
    log = T.setup_logging(tmp_path, rank=1)
    log.info("hello from rank 1")
    for handler in log.handlers:
        handler.flush()
    text = (tmp_path / "log" / "train-rank1.log").read_text()
    assert "hello from rank 1" in text
    # Only the handlers setup_logging installed count: other tests (pytest's caplog) may
    # have attached their own to the same logger.
    ours = [h for h in log.handlers if getattr(h, "_speechfm", False)]
    assert not any(
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        for h in ours
    )  # only rank 0 prints
    T.setup_logging(None, rank=0)  # replaces, does not duplicate, its handlers
    assert len([h for h in log.handlers if getattr(h, "_speechfm", False)]) == 1


def test_curve_panels_group_the_metrics():
    from speechfm.train.logging import curve_panels

    ssl = ["train/loss", "valid/loss", "train/lr", "train/grad_norm", "train/utts_per_sec",
           "train/contrastive_loss", "valid/contrastive_loss", "train/diversity_loss",
           "train/contrastive_acc", "valid/contrastive_acc", "train/mlm_acc", "valid/mlm_acc",
           "train/code_perplexity", "valid/code_perplexity", "train/temperature",
           "valid/used_fraction", "train/used_fraction"]
    panels = dict(curve_panels(ssl))
    assert list(panels) == ["loss terms", "accuracy", "perplexity", "used_fraction"]
    assert panels["loss terms"] == ["train/contrastive_loss", "valid/contrastive_loss",
                                    "train/diversity_loss"]
    assert panels["accuracy"] == ["train/contrastive_acc", "valid/contrastive_acc",
                                  "train/mlm_acc", "valid/mlm_acc"]
    assert panels["used_fraction"] == ["train/used_fraction", "valid/used_fraction"]
    asr = ["train/loss", "valid/loss", "train/lr", "valid/cer", "valid/wer", "train/num_utts"]
    assert curve_panels(asr) == [("error rate", ["valid/cer", "valid/wer"])]


def test_plot_curves_draws_the_metric_panels(tmp_path):
    from speechfm.train.logging import TrainLogger, plot_curves

    logger = TrainLogger(tmp_path, total_steps=3, progress=False)
    for step in range(1, 4):
        logger.log_scalars({"train/loss": 3.0 / step, "train/lr": 1e-3,
                            "train/mlm_acc": 0.1 * step}, step)
    logger.log_scalars({"valid/loss": 1.0, "valid/mlm_acc": 0.25}, 3)
    logger.close(plot=False)
    from PIL import Image

    with_metrics = Image.open(plot_curves(tmp_path, tmp_path / "a.png")).size
    without = Image.open(plot_curves(tmp_path, tmp_path / "b.png", metrics=False)).size
    assert with_metrics[1] > without[1]  # one more panel (accuracy)
