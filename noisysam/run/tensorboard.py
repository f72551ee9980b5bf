"""TensorBoard logging of runs: every per-epoch metric of ``metrics.jsonl`` as a scalar, and the run's
hyperparameters with its final metrics for TensorBoard's HParams dashboard, through
``torch.utils.tensorboard``: live with :class:`TensorBoardLogger` (a ``train()`` callback), or afterwards from
a finished run's files with :func:`log_finished_run`.

tensorboard is an optional extra (``pip install 'noisysam[tensorboard]'``): it is imported when a
:class:`TensorBoardLogger` is made, which raises ImportError with that hint when it is missing.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional, Union

from noisysam.run.rundir import RunDir, comparable_config

#: The tag of each per-epoch field of metrics.jsonl, grouped by the data it is measured on (memorisation,
#: recovery and the noise AUROC are measured on the training split). A field missing here (a metric added
#: later) is written as ``metrics/<field>``; ``epoch`` is the step, not a scalar.
TAGS = {
    "train_loss": "train/loss",
    "train_noisy_accuracy": "train/noisy_accuracy",
    "train_clean_accuracy": "train/clean_accuracy",
    "memorisation": "train/memorisation",
    "recovery": "train/recovery",
    "noise_auroc": "train/noise_auroc",
    "test_accuracy": "test/accuracy",
    "val_accuracy": "val/accuracy",
    "lr": "optim/lr",
    "seconds": "time/seconds",
    "stage": "run/stage",
    "forward_passes": "cost/forward_passes",  # counted training passes of the epoch (noisysam.run.loop.PassCounter)
    "backward_passes": "cost/backward_passes",
    "steps": "cost/steps",
}

#: The final metrics beside the hyperparameters (HParams dashboard): tag -> path in result.json. Their own
#: tags, so they do not add a point to the per-epoch curves.
FINAL = {
    "final/test_accuracy_last": ("test_accuracy", "last"),
    "final/test_accuracy_selected": ("test_accuracy", "selected"),
    "final/test_accuracy_best": ("test_accuracy", "best"),
    "final/val_accuracy": ("val_accuracy_last",),
    "final/memorisation": ("memorisation_last",),
    "final/recovery": ("recovery_last",),
    "final/noise_auroc": ("noise_auroc_last",),
}

LOG_DIR = "tensorboard"


def _summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(f"TensorBoard logging needs the tensorboard package ({e}): "
                          "pip install 'noisysam[tensorboard]'") from None
    return SummaryWriter


def step(record: dict, epochs: int) -> int:
    """The global step of a metrics.jsonl record: epochs counted over all stages (stage 2 of relabel-and-retrain
    follows stage 1), so runs of one and of two stages share an axis."""
    return (record["stage"] - 1) * epochs + record["epoch"]


def _number(value: Any) -> Optional[float]:
    """A value TensorBoard can plot; None for what metrics.jsonl stores as null (None, NaN, inf) or non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def hparams(config: dict) -> dict[str, Union[float, str]]:
    """The hyperparameters of a run (its config without where it lives or runs): method and model parameters
    flattened as ``method_params.p``; booleans and lists as text, unset (None) ones left out."""
    flat: dict[str, Any] = {}
    for key, value in comparable_config(config).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    out: dict[str, Union[float, str]] = {}
    for key, value in flat.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            value = json.dumps(value)
        out[key] = value
    return out


def _final_metrics(summary: dict) -> dict[str, float]:
    out = {}
    for tag, path in FINAL.items():
        value: Any = summary
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if _number(value) is not None:
            out[tag] = float(value)
    return out


def _wait_for_a_later_second(log_dir: Path) -> None:
    """TensorBoard reads a directory's event files in name order, whose first key is the second the file was
    made: wait until that second is later than every existing file's, so that a resumed run's purge marker is
    read after the events it supersedes (only a resume within the same second waits, at most 1 s)."""
    stamps = [int(p.name.split(".")[3]) for p in log_dir.glob("events.out.tfevents.*")
              if p.name.split(".")[3].isdigit()]
    if stamps:
        time.sleep(max(0.0, max(stamps) + 1 - time.time()))


class TensorBoardLogger:
    """A :func:`noisysam.run.loop.train` callback writing TensorBoard event files: after each epoch every number
    of its metrics.jsonl record as a scalar (tags :data:`TAGS`, step :func:`step`), and when the run ends its
    hyperparameters (:func:`hparams`) with the final metrics (:data:`FINAL`) for the HParams dashboard.

    ``log_dir``: where to write; None (default): ``<run directory>/tensorboard`` of each run, so one logger
    serves a whole grid (``noisysam.grid.cells.run_grid``) and ``tensorboard --logdir GRID_DIR`` compares the
    cells. A resumed run rewrites its log from the run's history behind a purge marker at step 1
    (``SummaryWriter(purge_step=1)``): TensorBoard then shows each epoch once, including epochs the
    interrupted session never flushed or ran without a logger. Use as a context manager, or call
    :meth:`close`, so an interrupted run's writer is closed.
    """

    def __init__(self, log_dir: Union[str, Path, None] = None):
        self._writer_class = _summary_writer()
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.writer: Any = None
        self.epochs = self.last_step = 0

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __call__(self, event: str, info: dict) -> None:
        if event == "start":
            self._start(info)
        elif event == "epoch":
            self._epoch(info)
            self.writer.flush()  # a killed run keeps what it logged
        elif event == "end":
            self._end(info)
            self.close()

    def _start(self, info: dict) -> None:
        self.close()
        config = info["config"]
        if self.log_dir is None and config.out is None:
            raise ValueError("TensorBoardLogger needs log_dir, or a run with out (its log goes to <out>/tensorboard)")
        log_dir = self.log_dir if self.log_dir is not None else Path(config.out) / LOG_DIR
        history = info["history"]
        if history:
            _wait_for_a_later_second(log_dir)
        self.writer = self._writer_class(log_dir=str(log_dir), purge_step=1 if history else None)
        self.epochs, self.last_step, self.config = info["epochs"], 0, config
        for record in history:
            self._epoch(record)

    def _epoch(self, record: dict) -> None:
        at = self.last_step = step(record, self.epochs)
        for key, value in record.items():
            number = _number(value)
            if key != "epoch" and number is not None:
                self.writer.add_scalar(TAGS.get(key, f"metrics/{key}"), number, at)

    def _end(self, summary: dict) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = _final_metrics(summary)
        # SummaryWriter.add_hparams writes into a new sub-run; these are its writes, made into this run's log.
        for part in hparams_summary(hparams(self.config.to_dict()), metrics):
            self.writer.file_writer.add_summary(part, self.last_step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, self.last_step)


def log_finished_run(run_dir: Union[str, Path]) -> Path:
    """Write ``run_dir/tensorboard`` for a finished run from its files (config.json, metrics.jsonl, result.json),
    as :class:`TensorBoardLogger` would have while it trained: for runs trained without it. Returns the log dir."""
    run = RunDir(run_dir)
    saved = run.config()
    try:
        config = saved.train_config()
    except ValueError as e:
        raise ValueError(f"cannot log {str(run.path)!r}: {e}") from None
    history = run.metrics()
    result = run.result()  # both read before the log is written
    log_dir = run.path / LOG_DIR
    with TensorBoardLogger(log_dir) as logger:
        logger("start", dict(config=config, epochs=config.epochs, history=history))
        logger("end", result)
    return log_dir
