"""The figure of a detection directory (scores.png): a histogram of the scores, clean against wrong labels where
the truth is known. It lives beside the detection because :meth:`Detection.save` writes it (matplotlib optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from noisysam.core.files import save_figure


def plot_scores(detection: Any, path: Union[str, Path]) -> Path:
    """Histogram of a :class:`noisysam.detect.record.Detection`'s scores: clean against wrong labels where the truth
    is known, all samples otherwise."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    truth = detection.is_noisy
    groups = [("all labels", detection.score)] if truth is None else [
        ("clean labels", detection.score[~truth]), ("wrong labels", detection.score[truth])]
    for name, values in groups:
        ax.hist(values, bins=40, alpha=0.6, label=f"{name} ({values.size})")
    ax.set_xlabel(f"{detection.score_name} score (higher = more likely wrong)")
    ax.set_ylabel("samples")
    ax.legend()
    return save_figure(fig, Path(path))
