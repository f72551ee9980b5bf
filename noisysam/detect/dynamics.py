"""Scores from the training dynamics of any run directory (its ``dynamics/`` files,
:func:`noisysam.run.rundir.save_dynamics`): ``aum``, minus the area under the margin, the mean over epochs of the logit
of the given label minus the largest other logit (Pleiss et al., arXiv 2001.10528, Eq. 1-2); ``loss``, the mean
cross-entropy against the given label over epochs. A sample is flagged when its mean margin is negative (the model, on
average over training, prefers another class); the suggested label is the class it predicted most often in the epochs
where it did not predict the given one (the last epoch's prediction would echo a memorised label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from noisysam.core.files import ArraySpec, FileFormatError, NpzArrays, run_lock
from noisysam.data.datasets import ImageDataset
from noisysam.detect.estimates import other_estimates
from noisysam.detect.record import DYNAMICS_SCORES, Detection, _check, _transition, check_out
from noisysam.noise.labels import NoisyLabels
from noisysam.run.rundir import DYNAMICS_DIR, RunDir, dynamics_path

#: What :func:`read_dynamics` requires of each array (rows.npz: ``rows``; each epoch's file: the others, one value
#: per row): row indices distinct training-set positions, predictions classes of the labels, margins and losses
#: finite. The bounds that depend on the run (its number of labels and classes) are filled in when read.
DYNAMICS_ARRAYS = dict(rows=ArraySpec("iu", (None,), low=0, unique=True), margin=ArraySpec("f", finite=True),
                       loss=ArraySpec("f", finite=True), pred=ArraySpec("iu", low=0))


def read_dynamics(run_dir: Union[str, Path], stage: int = 1) -> dict[str, np.ndarray]:
    """A run's recorded dynamics of ``stage`` (stage 1 trains on the given labels): ``rows`` (training-set
    positions), ``margin``, ``loss`` (float32, epochs x rows) and ``pred`` (epochs x rows), checked against the
    run's noisy_labels.npz as :data:`DYNAMICS_ARRAYS` declares; FileFormatError names the file and the array
    otherwise."""
    run_dir = Path(run_dir)
    rows_file = dynamics_path(run_dir, 0, 0)
    config = RunDir(run_dir).config_path
    _check(rows_file.is_file() or config.is_file(),
           f"{str(run_dir)!r} has no training dynamics: it holds no {config.name}, so it is not a run directory (a "
           "table, sweep or detection? give one of its runs)")
    _check(rows_file.is_file(), f"run directory {str(run_dir)!r} has no training dynamics ({DYNAMICS_DIR}/ "
                                "with rows.npz): train it with this noisysam version")
    epochs = sorted((run_dir / DYNAMICS_DIR).glob(f"stage{stage}_epoch_*.npz"))
    _check(bool(epochs), f"run directory {str(run_dir)!r} has no recorded epoch of stage {stage}")
    _check([p.name for p in epochs] == [dynamics_path(run_dir, stage, e).name for e in range(1, len(epochs) + 1)],
           f"run directory {str(run_dir)!r}: its {DYNAMICS_DIR}/ files are not epochs 1..{len(epochs)}")
    labels = RunDir(run_dir).labels()
    with NpzArrays(rows_file, "dynamics rows") as npz:
        rows = npz.read("rows", DYNAMICS_ARRAYS["rows"]._replace(high=len(labels)))
    if not rows.size:
        raise FileFormatError(rows_file, "rows is empty: the run recorded no training sample", "dynamics rows")
    per_epoch: dict[str, list] = dict(margin=[], loss=[], pred=[])
    specs = {k: DYNAMICS_ARRAYS[k]._replace(shape=rows.shape, high=labels.num_classes if k == "pred" else None)
             for k in per_epoch}
    for path in epochs:
        with NpzArrays(path, "dynamics") as npz:
            for key, values in per_epoch.items():
                values.append(npz.read(key, specs[key]))
    out = {k: np.stack(v).astype(np.float32 if k != "pred" else np.int64) for k, v in per_epoch.items()}
    return dict(rows=rows.astype(np.int64), **out)


def _most_predicted_other(pred: np.ndarray, given: np.ndarray, k: int) -> np.ndarray:
    """Per row, the class other than ``given`` predicted in most epochs (``pred``: epochs x rows; ties to the
    lower class). A row with negative mean margin was predicted as another class in at least one epoch. A
    prediction of a class >= ``k`` (a threshold run's fake class) is no vote."""
    n = given.size
    real = pred < k
    votes = np.bincount((np.arange(n) * k + np.where(real, pred, 0)).ravel(), weights=real.ravel(),
                        minlength=n * k).reshape(n, k)
    votes[np.arange(n), given] = -1
    return votes.argmax(axis=1)


def dynamics_scores(run_dir: Union[str, Path], score: str = "aum") -> Detection:
    """Scores from a run's dynamics (see the module docstring): ``aum`` = -mean margin, ``loss`` = mean loss;
    flagged (and so the estimated rate): the cut at 0, a mean margin below 0."""
    _check(score in DYNAMICS_SCORES, f"score must be one of {list(DYNAMICS_SCORES)} for a run's dynamics, got {score!r}")
    run_dir = Path(run_dir)
    _check(run_dir.is_dir(), f"run directory {str(run_dir)!r} does not exist")
    dyn = read_dynamics(run_dir)
    labels = RunDir(run_dir).labels()  # what read_dynamics checked the dynamics against
    rows = dyn["rows"]
    _check(rows.size and rows.max() < len(labels), f"run directory {str(run_dir)!r}: dynamics rows exceed its labels")
    keep = np.ones(rows.size, dtype=bool)
    return _dynamics_detection(score, dyn, labels, keep, dyn["margin"].mean(axis=0) < 0,
                               dict(kind="dynamics", run_dir=str(run_dir), epochs=int(dyn["margin"].shape[0])),
                               "cut at 0", {})


def _dynamics_detection(score: str, dyn: dict[str, np.ndarray], labels: NoisyLabels, keep: np.ndarray,
                        flagged: np.ndarray, source: dict, estimator: str, detail: dict) -> Detection:
    """The detection of the rows ``keep`` (a mask over ``dyn["rows"]``) of dynamics ``dyn`` with the verdict
    ``flagged`` (over the kept rows); their given labels are ``labels.noisy``."""
    rows = dyn["rows"][keep]
    values = -dyn["margin"][:, keep].mean(axis=0) if score == "aum" else dyn["loss"][:, keep].mean(axis=0)
    given = labels.noisy[rows]
    k = labels.num_classes
    suggested = np.where(flagged, _most_predicted_other(dyn["pred"][:, keep], given, k), given)
    return Detection(score, rows, given, suggested, values.astype(np.float64), flagged, float(flagged.mean()),
                     _transition(suggested, given, k), labels, source, estimator, detail)


def detect_dynamics(run_dir: Union[str, Path], score: str = "aum", *, dataset: Optional[ImageDataset] = None,
                    out: Union[str, Path, None] = None) -> Detection:
    """Detection from run ``run_dir``'s dynamics (:func:`dynamics_scores`, ``score`` "aum" or "loss"), with the
    estimates that need no training (:func:`noisysam.detect.estimates.other_estimates`; ``dataset``: the run's
    ImageDataset where it was passed as an object, else ignored), written to ``out`` where it is given (refused before
    anything is written unless ``out`` is new or holds this detection, :func:`~noisysam.detect.record.check_out`)."""
    if out is not None:
        check_out(out, score, "dynamics")
    detection = dynamics_scores(run_dir, score)
    detection.other_estimates = other_estimates(run_dir, dataset if isinstance(dataset, ImageDataset) else None)
    if out is not None:
        with run_lock(Path(out)):
            detection.save(out)
    return detection
