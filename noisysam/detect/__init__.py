"""Finding the wrong labels after (or instead of) training, one module per way: training-dynamics scores (AUM, loss:
:mod:`.dynamics`), threshold samples (:mod:`.threshold`), CIFAR-10N's annotators (:mod:`.annotators`), cleanlab's
confident learning on K folds (:mod:`.kfold`); the noise-rate estimates that need no training (:mod:`.estimates`); a
detection and its directory (:mod:`.record`); cleaned label sets (:mod:`.cleaning`); the dispatcher
:func:`find_label_issues` (:mod:`.detection`).

Imports :mod:`noisysam.run` and the layers below it.
"""

from noisysam.detect.record import (DYNAMICS_SCORES, SCORES, OUTPUT_FILES, ESTIMATORS, THRESHOLD_RUN, Detection,
                                    check_out, default_out, ISSUES_COLUMNS, SUMMARY_SCHEMA, read_detection)
from noisysam.detect.dynamics import DYNAMICS_ARRAYS, read_dynamics, dynamics_scores, detect_dynamics
from noisysam.detect.threshold import (THRESHOLD_PERCENTILE, FAKE_CLASS, threshold_sample_rows, threshold_flags,
                                       threshold_scores, detect_threshold_samples)
from noisysam.detect.estimates import (symmetric_rate, symmetric_rate_error, validation_estimate, other_estimates,
                                       predict_probabilities)
from noisysam.detect.annotators import annotator_scores, crowdlab, detect_annotators
from noisysam.detect.kfold import check_kfold, kfold_probabilities, cleanlab_scores, detect_kfold
from noisysam.detect.cleaning import CLEAN_MODES, cleaned
from noisysam.detect.detection import find_label_issues

__all__ = ["DYNAMICS_SCORES", "SCORES", "OUTPUT_FILES", "CLEAN_MODES", "ESTIMATORS", "THRESHOLD_PERCENTILE",
           "THRESHOLD_RUN", "FAKE_CLASS", "Detection", "DYNAMICS_ARRAYS", "read_dynamics", "dynamics_scores",
           "threshold_sample_rows", "threshold_flags", "threshold_scores", "symmetric_rate", "symmetric_rate_error",
           "validation_estimate", "annotator_scores", "crowdlab", "check_kfold", "kfold_probabilities",
           "predict_probabilities", "cleanlab_scores", "default_out", "find_label_issues", "ISSUES_COLUMNS",
           "SUMMARY_SCHEMA", "read_detection", "cleaned", "check_out", "other_estimates", "detect_dynamics",
           "detect_threshold_samples", "detect_annotators", "detect_kfold"]
