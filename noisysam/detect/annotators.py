"""CIFAR-10N's three annotators (CIFAR-10 images only): their consensus by ``cleanlab.multiannotator`` (CROWDLAB, Goh
et al., arXiv 2210.06812) against the given labels of a run, and each annotator's quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from noisysam.core.files import run_lock
from noisysam.data.datasets import ImageDataset
from noisysam.detect.estimates import _run_model, other_estimates, predict_probabilities
from noisysam.detect.record import Detection, _check, _cleanlab, _transition, check_out
from noisysam.noise.labels import CIFAR10N_ANNOTATORS, cifar10n_annotators, consensus
from noisysam.run.rundir import RunDir


def annotator_scores(run_dir: Union[str, Path], dataset: Optional[ImageDataset] = None) -> Detection:
    """CIFAR-10N's three annotators (:data:`noisysam.noise.labels.CIFAR10N_ANNOTATORS`) against the given labels of run
    ``run_dir``, on every training-set row. CROWDLAB (``cleanlab.multiannotator.get_label_quality_multiannotator``,
    Goh et al., arXiv 2210.06812), with the probabilities of the run's final model (in-sample on its training
    split), gives each image's consensus label (:func:`crowdlab`: the annotators' majority vote) a quality q in
    [0, 1], and each annotator a quality. A given label other than the consensus is flagged (the estimated rate is their share)
    and the consensus suggested; score: q where flagged, 1 - q where not (higher = more likely wrong).
    ``estimator_detail`` holds each annotator's quality and agreement with the consensus beside its accuracy
    against the dataset's own labels, and the consensus's accuracy."""
    _cleanlab()  # before the model is loaded
    run_dir = Path(run_dir)
    cfg, data, labels = RunDir(run_dir).inputs(dataset)
    annotations = cifar10n_annotators(data)
    rows, model = _run_model(run_dir, cfg, data)
    agreed, quality, stats = crowdlab(annotations, predict_probabilities(model, data.x_train[rows], data.x_train, cfg))
    given, clean = labels.noisy, labels.clean
    flagged = given != agreed
    detail = dict(consensus_accuracy=float(np.mean(agreed == clean)), annotators=[
        dict(name=name, quality=float(stats["annotator_quality"].iloc[i]),
             agreement_with_consensus=float(np.mean(annotations[:, i] == agreed)),
             accuracy=float(np.mean(annotations[:, i] == clean))) for i, name in enumerate(CIFAR10N_ANNOTATORS)])
    return Detection("annotators", np.arange(len(labels)), given, agreed, np.where(flagged, quality, 1.0 - quality),
                     flagged, float(flagged.mean()), _transition(agreed, given, labels.num_classes), labels,
                     dict(kind="annotators", run_dir=str(run_dir)), "annotator consensus", detail)


def crowdlab(annotations: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """CROWDLAB (Goh et al., arXiv 2210.06812) by ``cleanlab.multiannotator.get_label_quality_multiannotator`` on
    ``annotations`` (n x M) and a model's ``probs`` (n x K): the consensus labels, their quality q and the annotators'
    statistics (a DataFrame, one row per annotator column, in column order). The consensus is the annotators'
    majority vote without the model (:func:`noisysam.noise.labels.consensus`, the ``cifar10n-consensus`` labels): a model
    trained on the given labels has memorised them, and cleanlab's default consensus (best_quality) follows it
    (62% right on CIFAR-10N worse with an SGD run's model), its majority vote breaks ties by it (89%, against 91%
    without). q is CROWDLAB's quality of that label, as it scores the label of an annotator who gave it."""
    agreed = consensus(annotations, probs.shape[1])
    result = _cleanlab().multiannotator.get_label_quality_multiannotator(
        annotations, probs, consensus_method="majority_vote", verbose=False)
    detailed = result["detailed_label_quality"].to_numpy(np.float64)
    quality = np.where(annotations == agreed[:, None], detailed, -np.inf).max(axis=1)
    return agreed, quality, result["annotator_stats"].sort_index()


def detect_annotators(run_dir: Union[str, Path], *, dataset: Optional[ImageDataset] = None,
                      out: Union[str, Path, None] = None) -> Detection:
    """Detection of run ``run_dir``'s wrong labels by CIFAR-10N's annotators (:func:`annotator_scores`), with the
    estimates that need no training, written to ``out`` where it is given (refused before anything is written unless
    ``out`` is new or holds this detection, :func:`~noisysam.detect.record.check_out`). ``dataset``: the run's
    ImageDataset where it was passed as an object (None: its own, by name)."""
    _check(dataset is None or isinstance(dataset, ImageDataset),
           f"dataset must be the run's ImageDataset or None (its own, by name), got {dataset!r}")
    if out is not None:
        check_out(out, "annotators", "annotators")
    detection = annotator_scores(run_dir, dataset)
    detection.other_estimates = other_estimates(run_dir, dataset)
    if out is not None:
        with run_lock(Path(out)):
            detection.save(out)
    return detection
