"""Run monitoring: text log, tqdm progress bar, TensorBoard scalars, PNG of the curves.

Layout under a run directory::

    <run_dir>/log/train-rank<R>.log   text log (every rank, see setup_logging)
    <run_dir>/tensorboard/            TensorBoard event files (rank 0)
    <run_dir>/curves.png              loss, metric and learning-rate curves (plot_curves)

:func:`plot_curves` reads the curves back from the event files, so the PNG can be
regenerated from a finished (or killed) run directory at any time.
tqdm, TensorBoard and matplotlib are imported only when used.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TrainLogger", "curve_panels", "plot_curves", "read_scalars", "setup_logging",
           "splice_tables"]

TB_DIR = "tensorboard"
CURVES_FILE = "curves.png"
_LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s:%(lineno)d] %(message)s"


def setup_logging(
    run_dir: str | os.PathLike | None = None, *, rank: int = 0, level: int = logging.INFO
) -> logging.Logger:
    """Configure the ``speechfm`` logger: console on rank 0, a file per rank under ``run_dir/log``.

    Calling it again replaces the handlers it installed before (safe on resume).

    Returns:
        The ``speechfm`` logger.
    """
    logger = logging.getLogger("speechfm")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_speechfm", False):
            logger.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(_LOG_FORMAT)
    handlers: list[logging.Handler] = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stderr))
    if run_dir is not None:
        log_dir = Path(run_dir) / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_dir / f"train-rank{rank}.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._speechfm = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger


class TrainLogger:
    """Progress bar + TensorBoard scalars for a training run (a no-op when ``enabled`` is False).

    Pass ``enabled=info.is_main`` so only rank 0 reports.

    Args:
        run_dir: run directory; event files go to ``run_dir/tensorboard``.
        enabled: report at all (rank 0 only).
        total_steps: total optimizer updates, for the bar's ETA (None = open-ended).
        start_step: updates already done (on resume); events logged after it by a killed
            run are purged from TensorBoard's view, and the bar starts there.
        progress: show the tqdm bar.
        tensorboard: write TensorBoard event files.
        log_every: write TensorBoard scalars every this many updates.
        desc: bar description.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        enabled: bool = True,
        total_steps: int | None = None,
        start_step: int = 0,
        progress: bool = True,
        tensorboard: bool = True,
        log_every: int = 1,
        desc: str = "train",
    ) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.log_every = log_every
        self._bar = None
        self._writer = None
        self._last_time = time.perf_counter()
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True
            )
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                log_dir=str(self.run_dir / TB_DIR),
                purge_step=start_step + 1 if start_step > 0 else None,
            )

    def log_step(self, state: Any, result: Any, *, num_items: int | None = None) -> None:
        """Report one :func:`~speechfm.train.loop.train_step` result.

        Args:
            state: the run's ``TrainState`` (its ``step`` is the x axis).
            result: the ``StepResult``.
            num_items: utterances in the step's batches, for the utterances/s display.
        """
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        self._last_time = now
        if self._bar is not None:
            parts = [f"loss={result.loss:.4g}", f"lr={result.lr:.3g}"]
            if num_items:
                parts.append(f"utt/s={num_items / elapsed:.1f}")
            if state.skipped_steps:
                parts.append(f"skipped={state.skipped_steps}")
            self._bar.set_postfix_str(" ".join(parts), refresh=False)
            if not result.skipped:
                self._bar.update(1)
        if self._writer is not None and not result.skipped and state.step % self.log_every == 0:
            scalars = {"train/loss": result.loss, "train/lr": result.lr}
            if math.isfinite(result.grad_norm):
                scalars["train/grad_norm"] = result.grad_norm
            if num_items:
                scalars["train/utts_per_sec"] = num_items / elapsed
            scalars.update({f"train/{k}": v for k, v in result.stats.items()})
            self.log_scalars(scalars, state.step)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Write scalars (e.g. ``{"valid/loss": 1.2}``) at ``step``."""
        if self._writer is None:
            return
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), global_step=step)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self, *, plot: bool = True) -> Path | None:
        """Flush and close; with ``plot`` write ``curves.png`` and return its path."""
        if not self.enabled:
            return None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        png = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
            if plot:
                png = plot_curves(self.run_dir)
        return png


def _event_dir(run_dir: Path) -> Path:
    tb = run_dir / TB_DIR
    return tb if tb.is_dir() else run_dir


def read_scalars(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """All scalars logged under a run directory: ``{tag: [(step, value), ...]}`` by step.

    Events re-logged after a resume replace those of the killed run at the same step.
    """
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    directory = _event_dir(Path(run_dir))
    if not any(p.name.startswith("events.out.tfevents") for p in directory.iterdir()):
        raise FileNotFoundError(f"{directory}: no TensorBoard event files")
    acc = EventAccumulator(str(directory), size_guidance={SCALARS: 0})
    acc.Reload()
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in acc.Tags().get(SCALARS, []):
        by_step: dict[int, tuple[float, float]] = {}
        for event in acc.Scalars(tag):
            old = by_step.get(event.step)
            if old is None or event.wall_time >= old[0]:
                by_step[event.step] = (event.wall_time, float(event.value))
        out[tag] = [(step, by_step[step][1]) for step in sorted(by_step)]
    return out


# Panels of curves.png beyond the loss and the learning rate: tags are grouped by the
# metric name after "train/" / "valid/".
_PANEL_GROUPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("loss terms", lambda n: n.endswith("_loss")),
    ("error rate", lambda n: n in ("cer", "wer", "per", "ser")),
    ("accuracy", lambda n: n.endswith("_acc") or n in ("acc", "accuracy")),
    ("perplexity", lambda n: n.endswith("perplexity")),
)


def curve_panels(tags: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The metric panels of curves.png for the logged ``tags``: ``[(title, tags)]``.

    Every metric validated (``valid/<name>``, the loss aside) gets drawn with its
    ``train/<name>`` twin; loss terms (``*_loss``), error rates, accuracies and
    perplexities share a panel per kind (train-only ones included: e.g. a diversity
    loss); other train-only scalars (gradient norm, throughput) are left to TensorBoard.
    """
    names: dict[str, list[str]] = {}
    for tag in sorted(tags):
        split, _, name = tag.partition("/")
        if split in ("train", "valid") and name and name not in ("loss", "lr"):
            names.setdefault(name, []).append(tag)
    panels: list[tuple[str, list[str]]] = []
    used: set[str] = set()
    for title, member in _PANEL_GROUPS:
        group = [t for n, ts in sorted(names.items()) if member(n) for t in ts]
        if group:
            panels.append((title, group))
            used.update(n for n in names if member(n))
    for name, ts in sorted(names.items()):
        if name not in used and any(t.startswith("valid/") for t in ts):
            panels.append((name, ts))
    return panels


def plot_curves(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    loss_tags: Sequence[str] | None = None,
    lr_tag: str = "train/lr",
    metrics: bool = True,
) -> Path:
    """Draw the curves of a run into a PNG: the loss, the learning rate, and (``metrics``)
    the metric panels of :func:`curve_panels` (loss terms, error rates, accuracies,
    perplexities, every validated metric).

    Args:
        run_dir: run directory (with ``tensorboard/``) or the event directory itself.
        out: PNG path; default ``run_dir/curves.png``.
        loss_tags: loss tags to draw on the top panel; default every tag ending in
            ``/loss`` (train and valid).
        lr_tag: tag of the learning rate (skipped when absent).
        metrics: also draw the metric panels.

    Returns:
        The PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir)
    if loss_tags is None:
        loss_tags = sorted(t for t in scalars if t.endswith("/loss"))
    loss_tags = [t for t in loss_tags if t in scalars]
    if not loss_tags and lr_tag not in scalars:
        raise ValueError(f"{run_dir}: no loss or learning-rate scalars to plot")
    extra = curve_panels(list(scalars)) if metrics else []
    panels: list[tuple[str, list[str]]] = []
    if loss_tags:
        panels.append(("loss", loss_tags))
    panels += extra
    if lr_tag in scalars:
        panels.append(("learning rate", [lr_tag]))
    # The Figure/Agg canvas pair avoids pyplot's global backend state.
    fig = Figure(figsize=(8, 2.8 * len(panels) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (title, tags) in zip(axes, panels, strict=True):
        for tag in tags:
            steps, values = zip(*scalars[tag], strict=True)
            if title == "learning rate":
                ax.plot(steps, values, color="tab:green")
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
            else:
                ax.plot(steps, values, label=tag, marker="o" if len(steps) < 30 else None, ms=3)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if title != "learning rate":
            ax.legend(fontsize="small")
    axes[-1].set_xlabel("optimizer step")
    fig.tight_layout()
    path = Path(out) if out is not None else run_dir / CURVES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


TABLES_BEGIN, TABLES_END = "<!-- tables: begin -->", "<!-- tables: end -->"


def splice_tables(path: str | os.PathLike, body: str, title: str) -> Path:
    """Write generated ``body`` between the ``<!-- tables: begin/end -->`` markers of a
    RESULTS.md (the hand-written prose around them stays), or a new file headed ``title``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if TABLES_BEGIN in text and TABLES_END in text:
        head, rest = text.split(TABLES_BEGIN, 1)
        text = head + TABLES_BEGIN + "\n" + body + "\n" + TABLES_END + rest.split(TABLES_END, 1)[1]
    else:
        text = f"{title}\n\n{TABLES_BEGIN}\n{body}\n{TABLES_END}\n"
    path.write_text(text, encoding="utf-8")
    return path
