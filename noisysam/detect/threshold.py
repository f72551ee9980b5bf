"""Threshold samples (Pleiss et al., arXiv 2001.10528, Sec. 3): the run's settings are trained once more with
N/(c+1) of its training rows relabelled to an extra, fake class c; a row is flagged when its AUM is below the 99th
percentile of the threshold samples' AUMs. The threshold samples themselves are left out of the table (the paper's
second run with disjoint threshold samples would score them; noisysam trains once more, not twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from noisysam.core.files import NpzArrays, run_lock
from noisysam.data.datasets import ImageDataset
from noisysam.detect.dynamics import _dynamics_detection, read_dynamics
from noisysam.detect.estimates import other_estimates
from noisysam.detect.record import THRESHOLD_RUN, Detection, _check, check_out, default_out
from noisysam.noise.labels import NoisyLabels
from noisysam.run.config import labels_rate
from noisysam.run.loop import Callback, train
from noisysam.run.rundir import RunDir, dynamics_path
from noisysam.run.seeds import THRESHOLD_SAMPLES, derive_seed

#: The percentile of the threshold samples' AUMs below which a row is flagged (Pleiss et al., Sec. 3).
THRESHOLD_PERCENTILE = 99.0
#: The name of the threshold samples' fake class (their run's directory is :data:`THRESHOLD_RUN`).
FAKE_CLASS = "threshold samples (fake class)"


def threshold_sample_rows(rows: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """The threshold samples of a run: ``len(rows) // (num_classes + 1)`` of its training ``rows`` (as many as one
    more class of the average size would hold, Pleiss et al., arXiv 2001.10528, Sec. 3), drawn without
    replacement from ``derive_seed(seed, THRESHOLD_SAMPLES)`` (:mod:`noisysam.run.seeds`), sorted."""
    rng = np.random.default_rng(derive_seed(seed, THRESHOLD_SAMPLES))
    return np.sort(rng.choice(np.asarray(rows), size=len(rows) // (num_classes + 1), replace=False))


def threshold_flags(aum: np.ndarray, threshold_aum: np.ndarray,
                    percentile: float = THRESHOLD_PERCENTILE) -> tuple[np.ndarray, float]:
    """``aum < t`` and ``t``, the ``percentile`` of the threshold samples' AUMs ``threshold_aum`` (numpy's linear
    interpolation): a row whose margin stays below that of nearly all samples of a class that does not exist is
    as likely as they are to be mislabelled (Pleiss et al., arXiv 2001.10528, Sec. 3)."""
    _check(threshold_aum.size > 0, "no threshold samples: the run has fewer training rows than classes + 1")
    t = float(np.percentile(threshold_aum, percentile))
    return aum < t, t


def threshold_scores(run_dir: Union[str, Path], out: Union[str, Path], dataset: Optional[ImageDataset] = None,
                     callback: Optional[Callback] = None) -> Detection:
    """The paper's procedure on run ``run_dir``: train its settings once more through :func:`noisysam.run.loop.train`
    with its threshold samples (:func:`threshold_sample_rows`) relabelled to a fake class c, in the run directory
    ``out/threshold_run`` (resumed if it is there; its noisy_labels.npz and config.json record the relabelled rows),
    and flag every other training row whose AUM in that run is below the 99th percentile of the threshold samples'
    AUMs (:func:`threshold_flags`). The scores are that run's -AUM; the given labels those of ``run_dir``."""
    run_dir, out = Path(run_dir), Path(out)
    cfg, data, labels = RunDir(run_dir).inputs(dataset)
    with NpzArrays(dynamics_path(run_dir, 0, 0), "dynamics rows") as npz:
        rows = npz.read("rows").astype(np.int64)
    k = labels.num_classes
    chosen = threshold_sample_rows(rows, k, cfg.seed)
    _check(chosen.size > 0, f"run directory {str(run_dir)!r} has {rows.size} training rows: too few for threshold "
                            f"samples (at least {k + 1})")
    fake = ImageDataset(f"{data.name}+threshold-samples", data.x_train, data.y_train, data.x_test, data.y_test,
                        [*data.classes, FAKE_CLASS])
    noisy = labels.noisy.copy()
    noisy[chosen] = k
    provenance = {key: v for key, v in labels.provenance.items() if key != "clean_sha256"}
    provenance.update(kind="aum-threshold-samples", nominal_rate=labels_rate(labels)[0], base_run=str(run_dir),
                      base_kind=labels.provenance.get("kind"), fake_class=k, threshold_rows=chosen.tolist())
    marked = NoisyLabels(noisy, labels.clean, k + 1, provenance)  # the radius follows the run's own rate
    result = train(cfg, dataset=fake, noise=marked, out=str(out / THRESHOLD_RUN), resume=True, callback=callback)
    dyn = read_dynamics(result.run_dir)
    _check(np.array_equal(dyn["rows"], rows), f"{str(out / THRESHOLD_RUN)!r} trained on other rows than "
                                               f"{str(run_dir)!r}")
    aum = dyn["margin"].mean(axis=0)
    is_threshold = np.isin(rows, chosen)
    flagged, t = threshold_flags(aum[~is_threshold], aum[is_threshold])
    source = dict(kind="threshold samples", run_dir=str(run_dir), threshold_run=str(result.run_dir),
                  epochs=int(dyn["margin"].shape[0]))
    detail = dict(percentile=THRESHOLD_PERCENTILE, threshold=t, threshold_samples=int(chosen.size), fake_class=k)
    return _dynamics_detection("aum", dyn, labels, ~is_threshold, flagged, source, "threshold samples", detail)


def detect_threshold_samples(run_dir: Union[str, Path], *, out: Union[str, Path, None] = None,
                             dataset: Optional[ImageDataset] = None, callback: Optional[Callback] = None) -> Detection:
    """Detection of run ``run_dir``'s wrong labels with threshold samples (:func:`threshold_scores`, which trains once
    more, into ``out``: required), with the estimates that need no training, written to ``out``. ``dataset``: the
    run's ImageDataset where it was passed as an object (None: its own, by name). Refused before anything is written
    unless ``out`` is new or holds this detection (:func:`~noisysam.detect.record.check_out`); the run lock covers
    ``out`` while it trains."""
    _check(dataset is None or isinstance(dataset, ImageDataset),
           f"dataset must be the run's ImageDataset or None (its own, by name), got {dataset!r}")
    _check(out is not None, "threshold samples train a run: pass out (a directory for it and "
                            f"the results; the command line's default is {default_out(run_dir, 'aum-threshold-samples')})")
    target = Path(out)
    check_out(target, "aum", "threshold samples")
    with run_lock(target):
        detection = threshold_scores(run_dir, target, dataset, callback)
        detection.other_estimates = other_estimates(run_dir, dataset)
        detection.save(target)
    return detection
