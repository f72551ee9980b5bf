"""Finding the wrong labels after (or instead of) training: training-dynamics scores (AUM), cleanlab's
confident learning, the noise-rate estimates, and cleaned label sets.

Imports :mod:`noisysam.run` and the layers below it.
"""

from noisysam.detect.detection import (DYNAMICS_SCORES, SCORES, OUTPUT_FILES, CLEAN_MODES, ESTIMATORS,
                                       THRESHOLD_PERCENTILE, THRESHOLD_RUN, FAKE_CLASS, Detection, DYNAMICS_ARRAYS,
                                       read_dynamics, dynamics_scores, threshold_sample_rows, threshold_flags,
                                       threshold_scores, symmetric_rate, symmetric_rate_error, validation_estimate,
                                       annotator_scores, crowdlab, check_kfold, kfold_probabilities,
                                       predict_probabilities, cleanlab_scores, default_out, find_label_issues,
                                       ISSUES_COLUMNS, SUMMARY_SCHEMA, read_detection, cleaned)

__all__ = ["DYNAMICS_SCORES", "SCORES", "OUTPUT_FILES", "CLEAN_MODES", "ESTIMATORS", "THRESHOLD_PERCENTILE",
           "THRESHOLD_RUN", "FAKE_CLASS", "Detection", "DYNAMICS_ARRAYS", "read_dynamics", "dynamics_scores",
           "threshold_sample_rows", "threshold_flags", "threshold_scores", "symmetric_rate", "symmetric_rate_error",
           "validation_estimate", "annotator_scores", "crowdlab", "check_kfold", "kfold_probabilities",
           "predict_probabilities", "cleanlab_scores", "default_out", "find_label_issues", "ISSUES_COLUMNS",
           "SUMMARY_SCHEMA", "read_detection", "cleaned"]
