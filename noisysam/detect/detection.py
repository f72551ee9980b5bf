"""Find the wrong labels of a training set and estimate its noise, from noisysam's own training: one entry point per
way of detecting, each in its module, and :func:`find_label_issues`, the one function that picks among them by its
arguments (the API's and ``noisysam detect``'s). Each ranks the labels "higher = more likely wrong":

- from a run's training dynamics, AUM or loss (:func:`noisysam.detect.dynamics.detect_dynamics`);
- with threshold samples, which train the run's settings once more
  (:func:`noisysam.detect.threshold.detect_threshold_samples`);
- from CIFAR-10N's three annotators (:func:`noisysam.detect.annotators.detect_annotators`);
- by confident learning on K-fold out-of-fold probabilities (:func:`noisysam.detect.kfold.detect_kfold`).

Each detection (:class:`noisysam.detect.record.Detection`) names the estimator of its noise rate
(:data:`noisysam.detect.record.ESTIMATORS`): the threshold samples, the cut at 0, cleanlab's joint or the annotators'
consensus; a run-based detection adds, under ``other_estimates``, the rate estimated without training from the run's
held-out validation split (:func:`noisysam.detect.estimates.validation_estimate`, Chen et al., arXiv 1905.05040). The
numbers of different estimators are never mixed in one field. :func:`noisysam.detect.cleaning.cleaned` acts on a
detection: the labels to retrain on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from noisysam.core.deprecation import moved_names
from noisysam.detect.annotators import detect_annotators
from noisysam.detect.dynamics import detect_dynamics
from noisysam.detect.kfold import detect_kfold
from noisysam.detect.record import _check
from noisysam.detect.threshold import detect_threshold_samples

if TYPE_CHECKING:  # annotations only: Detection at this path is one of the moved names below, and warns
    from noisysam.data.datasets import ImageDataset
    from noisysam.detect.record import Detection
    from noisysam.noise.labels import NoisyLabels
    from noisysam.run.config import TrainConfig
    from noisysam.run.loop import Callback


def find_label_issues(run_dir: Union[str, Path, None] = None, *, kfold: Optional[int] = None,
                      score: Optional[str] = None, threshold_samples: bool = False, annotators: bool = False,
                      config: Optional[TrainConfig] = None, dataset: Union[str, ImageDataset, None] = None,
                      noise: Union[str, NoisyLabels, None] = None, out: Union[str, Path, None] = None,
                      callback: Optional[Callback] = None, **overrides: Any) -> Detection:
    """Rank the training labels by how likely they are wrong and estimate the noise: the entry point of one way of
    detecting, chosen by the arguments.

    Either ``run_dir`` (a finished or running run directory): scores from its dynamics, ``score`` "aum" (default) or
    "loss" (:func:`~noisysam.detect.dynamics.detect_dynamics`); with ``threshold_samples``, which trains once more
    (:func:`~noisysam.detect.threshold.detect_threshold_samples`); with ``annotators``
    (:func:`~noisysam.detect.annotators.detect_annotators`); for these two ``dataset`` is the run's own where it was
    passed as an object. Or ``kfold`` K (:func:`~noisysam.detect.kfold.detect_kfold`): K-fold training with ``config``
    (``overrides`` of its fields; SAM by default), ``dataset``/``noise`` as :func:`noisysam.run.loop.train` takes
    them, out-of-fold probabilities to cleanlab; fold run directories go under ``out`` (required for K-fold and
    threshold samples, which train). The table, summary and plot are written to ``out`` where it is given, and nowhere
    else (``noisysam detect`` passes :func:`~noisysam.detect.record.default_out`; :meth:`Detection.save` writes them
    later). ``callback``: training events, see :func:`~noisysam.detect.kfold.kfold_probabilities`. Raises ValueError
    for bad input before writing anything; ``config``, ``noise`` and ``overrides`` are K-fold's and go unread with
    ``run_dir``."""
    _check((run_dir is None) != (kfold is None), "pass either run_dir (dynamics) or kfold (cleanlab), not both "
                                                 "or neither")
    _check(not (threshold_samples and annotators), "pass threshold_samples or annotators, not both")
    if threshold_samples or annotators:
        name = "threshold samples" if threshold_samples else "annotators"
        _check(run_dir is not None, f"{name} need run_dir (the run to read)")
        _check(score in (None, "aum") if threshold_samples else score is None,
               f"{name} take no score but their own, got {score!r}")
        if threshold_samples:
            return detect_threshold_samples(run_dir, out=out, dataset=dataset, callback=callback)
        return detect_annotators(run_dir, dataset=dataset, out=out)
    if run_dir is not None:
        return detect_dynamics(run_dir, "aum" if score is None else score, dataset=dataset, out=out)
    _check(score in (None, "cleanlab"), f"score must be 'cleanlab' for kfold detection, got {score!r}")
    return detect_kfold(kfold, config=config, dataset=dataset, noise=noise, out=out, callback=callback, **overrides)


# Where this module's other names live now (it held every way of detecting until they became modules of their own):
# deprecated aliases until noisysam 0.3.0, as every moved name (noisysam.core.deprecation).
__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("Detection", "DYNAMICS_SCORES", "SCORES", "OUTPUT_FILES", "ESTIMATORS", "THRESHOLD_RUN",
                     "check_out", "default_out", "ISSUES_COLUMNS", "SUMMARY_SCHEMA", "read_detection"),
                    "noisysam.detect.record"),
    **dict.fromkeys(("DYNAMICS_ARRAYS", "read_dynamics", "dynamics_scores"), "noisysam.detect.dynamics"),
    **dict.fromkeys(("THRESHOLD_PERCENTILE", "FAKE_CLASS", "threshold_sample_rows", "threshold_flags",
                     "threshold_scores"), "noisysam.detect.threshold"),
    **dict.fromkeys(("symmetric_rate", "symmetric_rate_error", "validation_estimate", "predict_probabilities"),
                    "noisysam.detect.estimates"),
    **dict.fromkeys(("annotator_scores", "crowdlab"), "noisysam.detect.annotators"),
    **dict.fromkeys(("check_kfold", "kfold_probabilities", "cleanlab_scores"), "noisysam.detect.kfold"),
    **dict.fromkeys(("CLEAN_MODES", "cleaned"), "noisysam.detect.cleaning"),
})
