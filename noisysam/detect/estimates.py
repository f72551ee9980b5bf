"""Estimates of a run's noise that need no training, and what detection reads of a run's model: its training rows and
final weights (:func:`_run_model`) and its probabilities on any images (:func:`predict_probabilities`).

The validation estimate (Chen et al., arXiv 1905.05040): the rate of symmetric noise at which the run's final model,
of clean accuracy A, scores V against the noisy labels of the validation split it held out (:func:`symmetric_rate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from noisysam.core.files import NpzArrays
from noisysam.data.datasets import ImageDataset
from noisysam.data.loader import Loader
from noisysam.detect.record import _check
from noisysam.models.networks import get_model
from noisysam.run.config import TrainConfig
from noisysam.run.rundir import RunDir, dynamics_path


def _run_model(run_dir: Path, cfg: TrainConfig, data: ImageDataset) -> tuple[np.ndarray, torch.nn.Module]:
    """A run's training rows and its model as its checkpoint.pt holds it (the last finished epoch), on the CPU."""
    with NpzArrays(dynamics_path(run_dir, 0, 0), "dynamics rows") as npz:
        rows = npz.read("rows").astype(np.int64)
    model = get_model(cfg.model, data.num_classes, in_channels=data.x_train.shape[-1], **cfg.model_params)
    model.load_state_dict(RunDir(run_dir).checkpoint()["model"])
    return rows, model


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, train_x: np.ndarray, x: np.ndarray,
                          config: TrainConfig) -> np.ndarray:
    """Softmax of ``model`` on images ``x``, normalised as training on ``train_x`` normalised them (fp32)."""
    device = next(model.parameters()).device
    common = dict(batch_size=config.eval_batch_size, augment=False, device=device, channels_last=config.channels_last)
    norm = Loader(train_x, np.zeros(len(train_x), dtype=np.int64), **common)  # the training split's statistics
    loader = Loader(x, np.zeros(len(x), dtype=np.int64), shuffle=False, mean=norm.mean, std=norm.std, **common)
    model.eval()
    return torch.cat([torch.softmax(model(b).float(), 1) for b, _, _ in loader]).cpu().double().numpy()


def symmetric_rate(clean_accuracy: float, noisy_accuracy: float, num_classes: int) -> Optional[float]:
    """The symmetric noise rate r at which a model of accuracy A = ``clean_accuracy`` against the clean labels scores
    V = ``noisy_accuracy`` against noisy labels it never trained on: V = A (1 - r) + (1 - A) r / (K - 1) (Chen et al.,
    arXiv 1905.05040, Sec. 3), so r = (A - V) / (A - (1 - A) / (K - 1)), clipped to [0, 1]; None for a model no
    better than chance (A <= 1/K), whose noisy accuracy says nothing of r."""
    a, v, k = clean_accuracy, noisy_accuracy, num_classes
    slope = a - (1.0 - a) / (k - 1)
    return None if slope <= 0 else float(np.clip((a - v) / slope, 0.0, 1.0))


def symmetric_rate_error(clean_accuracy: float, noisy_accuracy: float, clean_se: float, noisy_se: float,
                         num_classes: int) -> Optional[float]:
    """The standard error of :func:`symmetric_rate` by the delta method, from the standard errors of its two
    accuracies (measured on disjoint rows, so independent): with s = A - (1 - A)/(K - 1), dr/dV = -1/s and
    dr/dA = (1 - r K/(K - 1))/s; None where the rate is."""
    rate = symmetric_rate(clean_accuracy, noisy_accuracy, num_classes)
    if rate is None:
        return None
    k = num_classes
    slope = clean_accuracy - (1.0 - clean_accuracy) / (k - 1)
    d_clean = (1.0 - (clean_accuracy - noisy_accuracy) / slope * k / (k - 1)) / slope
    return float(np.hypot(noisy_se / slope, d_clean * clean_se))


def validation_estimate(run_dir: Union[str, Path], dataset: Optional[ImageDataset] = None) -> dict:
    """The noise rate of a run's labels without training: :func:`symmetric_rate` of its final model's mean
    probability of the clean label on the test split (A; noisysam's test labels are clean) and of the given label on
    the validation split the run held out (V; never trained on). Mean probabilities, not argmax accuracies: the
    same relation holds for them in expectation, with less variance. ``standard_error``: its spread over the rows
    (:func:`symmetric_rate_error`); the correction magnifies the accuracies' noise by 1/(A - (1 - A)/(K - 1)).
    Raises ValueError where the run has no validation split or its inputs cannot be reloaded."""
    run_dir = Path(run_dir)
    cfg, data, labels = RunDir(run_dir).inputs(dataset)
    rows, model = _run_model(run_dir, cfg, data)
    val = np.setdiff1d(np.arange(len(labels)), rows)
    _check(val.size > 0, f"run directory {str(run_dir)!r} holds out no validation split (val_fraction 0)")
    val_probs = predict_probabilities(model, data.x_train[rows], data.x_train[val], cfg)
    test_probs = predict_probabilities(model, data.x_train[rows], data.x_test, cfg)
    noisy, clean = val_probs[np.arange(val.size), labels.noisy[val]], test_probs[np.arange(len(data.y_test)), data.y_test]
    v, a, k = float(noisy.mean()), float(clean.mean()), labels.num_classes
    se_v, se_a = (float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0 for x in (noisy, clean))
    return dict(rate=symmetric_rate(a, v, k), standard_error=symmetric_rate_error(a, v, se_a, se_v, k),
                clean_test_accuracy=a, noisy_validation_accuracy=v, validation_rows=int(val.size),
                test_rows=int(len(data.y_test)))


def other_estimates(run_dir: Union[str, Path], dataset: Optional[ImageDataset]) -> dict:
    """The estimates of a run's noise that need no training beside a detection's own: :func:`validation_estimate`,
    or why it has none."""
    try:
        return {"validation": validation_estimate(run_dir, dataset)}
    except (ValueError, OSError) as e:  # no validation split or checkpoint, a dataset passed as an object, ...
        return {"validation": dict(rate=None, unavailable=str(e))}

