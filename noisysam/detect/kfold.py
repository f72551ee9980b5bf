"""Confident learning (Northcutt et al., arXiv 1911.00068) on out-of-fold predicted probabilities: K-fold training
with :func:`noisysam.run.loop.train` (each fold a resumable run directory), handed to cleanlab
(``cleanlab.filter.find_label_issues`` flags, ``cleanlab.rank.get_label_quality_scores`` ranks with score =
1 - self-confidence, ``cleanlab.count.estimate_joint`` estimates the noise).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from sklearn.model_selection import StratifiedKFold

from noisysam.core.files import atomic_write, read_json, run_lock, write_json
from noisysam.data.datasets import ImageDataset
from noisysam.detect.estimates import predict_probabilities
from noisysam.detect.record import Detection, _check, _cleanlab, check_out
from noisysam.noise.labels import NoisyLabels
from noisysam.run.config import TrainConfig
from noisysam.run.loop import Callback, train
from noisysam.run.rundir import fingerprints, given_inputs, inputs


def check_kfold(k: Any, given: np.ndarray, num_classes: int) -> None:
    """K-fold detection needs K >= 2, at least 2 classes among the given labels and K samples of each."""
    _check(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 2,
           f"kfold must be an integer >= 2, got {k!r}")
    counts = np.bincount(given, minlength=num_classes)
    present = counts[counts > 0]
    _check(present.size >= 2, f"detection needs at least 2 classes among the labels, got {present.size}")
    _check(present.min() >= k, f"kfold {k} needs at least {k} samples of every class, but class "
                               f"{int(np.flatnonzero(counts == present.min())[0])} has {int(present.min())}")


def kfold_probabilities(labels: NoisyLabels, dataset: ImageDataset, k: int, config: TrainConfig, out: Path,
                        callback: Optional[Callback] = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predicted probabilities (n x K) over the whole training set and each row's fold: fold f's
    rows are predicted by the model trained (``config``, no validation split) on the other folds, in the run
    directory ``out/fold_f`` (resumed if it is there); ``callback`` gets each fold's training events (as
    :func:`noisysam.run.loop.train`'s) with ``info["fold"]`` added."""
    folds = np.empty(len(labels), dtype=np.int64)
    split = StratifiedKFold(n_splits=k, shuffle=True, random_state=config.seed)
    for f, (_, held) in enumerate(split.split(np.zeros(len(labels)), labels.noisy)):
        folds[held] = f
    probs = np.zeros((len(labels), dataset.num_classes), dtype=np.float64)
    for f in range(k):
        rest, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        sub = ImageDataset(f"{dataset.name}-fold{f + 1}of{k}", dataset.x_train[rest], labels.clean[rest],
                           dataset.x_test, dataset.y_test, dataset.classes)
        provenance = {key: v for key, v in labels.provenance.items() if key != "clean_sha256"}
        sub_labels = NoisyLabels(labels.noisy[rest], labels.clean[rest], labels.num_classes,
                                 {**provenance, "fold": f + 1, "folds": k})
        tagged = None if callback is None else (lambda event, info, f=f: callback(event, {**info, "fold": f + 1}))
        result = train(config, dataset=sub, noise=sub_labels, out=str(out / f"fold_{f + 1}"), resume=True,
                       val_fraction=0.0, callback=tagged)
        probs[held] = predict_probabilities(result.model, dataset.x_train[rest], dataset.x_train[held], config)
    return probs, folds


def cleanlab_scores(labels: NoisyLabels, probs: np.ndarray, source: dict) -> Detection:
    """Confident learning on out-of-fold ``probs`` for ``labels.noisy`` over the whole training set."""
    cl = _cleanlab()
    given = labels.noisy
    flagged = cl.filter.find_label_issues(given, probs)
    quality = cl.rank.get_label_quality_scores(given, probs, method="self_confidence")
    joint = cl.count.estimate_joint(given, probs)  # joint[given, true]
    true_mass = joint.sum(axis=0, keepdims=True)
    k = probs.shape[1]
    transition = np.where(true_mass.T > 0, (joint / np.maximum(true_mass, 1e-300)).T, np.eye(k))
    return Detection("cleanlab", np.arange(len(labels)), given, probs.argmax(1), 1.0 - quality, np.asarray(flagged),
                     float(1.0 - np.trace(joint)), transition, labels, source, "cleanlab")


def detect_kfold(kfold: int, *, config: Optional[TrainConfig] = None, dataset: Union[str, ImageDataset, None] = None,
                 noise: Union[str, NoisyLabels, None] = None, out: Union[str, Path, None] = None,
                 callback: Optional[Callback] = None, **overrides: Any) -> Detection:
    """Detection by confident learning on K-fold out-of-fold probabilities: ``kfold`` K folds trained with ``config``
    (``overrides`` of its fields; SAM by default), ``dataset``/``noise`` as :func:`noisysam.run.loop.train` takes them
    (arrays: a name or an ImageDataset), the fold run directories, detect.json (the settings and inputs, so a second
    call resumes only the same detection), oof_probs.npz and the detection's files under ``out`` (required); a
    ``callback`` gets each fold's training events (:func:`kfold_probabilities`). Refused before anything is written
    unless ``out`` is new or holds this detection (:func:`~noisysam.detect.record.check_out`)."""
    _check(out is not None, "kfold detection needs out (a directory for its fold runs and results)")
    check_out(out, "cleanlab", "kfold")
    _cleanlab()  # before any fold trains
    dataset, noise, _ = given_inputs(overrides, dataset, noise)  # names are config fields, as train() takes them
    _check(dataset is None or isinstance(dataset, ImageDataset),
           f"kfold detection needs arrays: dataset must be a name or an ImageDataset, got {type(dataset).__name__}")
    cfg = (config or TrainConfig()).with_settings(**overrides).resolved()
    data, labels = inputs(cfg, dataset, noise)
    check_kfold(kfold, labels.noisy, data.num_classes)
    out = Path(out)
    with run_lock(out):
        record = dict(kfold=int(kfold), config={k: v for k, v in cfg.to_dict().items() if k not in ("out", "resume")},
                      inputs=fingerprints(data, labels))
        if (out / "detect.json").exists():
            saved = read_json(out / "detect.json")
            _check(saved == record, f"detection directory {str(out)!r} holds another detection ({out / 'detect.json'} "
                                    "records other settings or inputs); choose another out")
        else:
            write_json(out / "detect.json", record)
        probs, folds = kfold_probabilities(labels, data, int(kfold), dataclasses.replace(cfg, out=None), out, callback)
        atomic_write(out / "oof_probs.npz", lambda f: np.savez(f, probs=probs, folds=folds))
        detection = cleanlab_scores(labels, probs, dict(kind="kfold", kfold=int(kfold), method=cfg.method,
                                                        out=str(out)))
        detection.save(out)
    return detection

