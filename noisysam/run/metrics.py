"""Evaluation metrics for training under label noise: pure functions of predictions and labels.

Inputs may be numpy arrays, torch tensors (any device) or sequences; they are 1-D, one entry per
sample. Results are Python floats; ``nan`` where the quantity is undefined (no samples of a kind).
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

__all__ = ["accuracy", "memorisation_recovery", "noise_auroc"]

ArrayLike = Union[np.ndarray, torch.Tensor, list, tuple]


def _as_numpy(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.is_floating_point():  # numpy has no bfloat16
            values = values.double()
        values = values.numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per sample), got shape {array.shape}")
    return array


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Share of samples with ``pred == target`` (predicted class indices vs labels); nan if empty."""
    p, t = _as_numpy(pred, "pred"), _as_numpy(target, "target")
    _same_length(pred=p, target=t)
    return float(np.mean(p == t)) if len(p) else math.nan


def memorisation_recovery(pred: ArrayLike, noisy: ArrayLike, clean: ArrayLike) -> tuple[float, float]:
    """Memorisation and recovery over the corrupted samples only (those with ``noisy != clean``).

    memorisation = share of corrupted samples predicted as their (wrong) noisy label: how much of the
    noise the model has fitted; recovery = share predicted as their true clean label. Both nan when
    no sample is corrupted. The rest (1 - mem - rec) is predicted as some third class.
    """
    p, n, c = _as_numpy(pred, "pred"), _as_numpy(noisy, "noisy"), _as_numpy(clean, "clean")
    _same_length(pred=p, noisy=n, clean=c)
    corrupted = n != c
    if not corrupted.any():
        return math.nan, math.nan
    p, n, c = p[corrupted], n[corrupted], c[corrupted]
    return float(np.mean(p == n)), float(np.mean(p == c))


def noise_auroc(per_sample_loss: ArrayLike, is_noisy: ArrayLike) -> float:
    """Area under the ROC curve for detecting corrupted labels by their training loss.

    The loss is the score (high loss = flagged noisy), so the value is P(loss of a random corrupted
    sample > loss of a random clean one) + 0.5 P(tie), via ``sklearn.metrics.roc_auc_score``.
    0.5 = no separation; nan when only one of the two kinds is present.
    """
    loss = _as_numpy(per_sample_loss, "per_sample_loss").astype(np.float64)
    noisy = _as_numpy(is_noisy, "is_noisy").astype(bool)
    _same_length(per_sample_loss=loss, is_noisy=noisy)
    if noisy.all() or not noisy.any():
        return math.nan
    if not np.isfinite(loss).all():
        raise ValueError("per_sample_loss must be finite, got nan or inf")
    return float(roc_auc_score(noisy, loss))
