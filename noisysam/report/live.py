"""``noisysam.train``, the Python API's way to train one run: the run engine (:func:`noisysam.run.loop.train`) with the
live progress display of ``noisysam train`` where the output is a terminal (:class:`~noisysam.report.console.RunProgress`).
"""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Console

from noisysam.report.console import RunProgress
from noisysam.run.config import TrainConfig
from noisysam.run.loop import Callback, TrainResult, chain
from noisysam.run.loop import train as run

__all__ = ["train"]


def train(config: Optional[TrainConfig] = None, *, progress: Optional[bool] = None,
          callback: Optional[Callback] = None, **kwargs: Any) -> TrainResult:
    """Train one run, as :func:`noisysam.run.loop.train` (its arguments, its result), drawing the command line's
    live progress (epochs, batches, loss, test accuracy and memorisation per epoch) on the console: ``progress``
    True or False, or None (the default) where standard output is a terminal (not in a notebook's captured output,
    a pipe or a log file). ``callback(event, info)`` receives every event as well."""
    console = Console()
    if not (console.is_terminal if progress is None else progress):
        return run(config, callback=callback, **kwargs)
    with RunProgress(console) as bars:
        return run(config, callback=chain(bars, callback), **kwargs)
