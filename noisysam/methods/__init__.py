"""Training methods for noisy labels, by name: one-network methods composed of a loss, input and update rule
(:mod:`.rules`), the field's methods that keep per-sample state or train several networks (:mod:`.learner`,
:mod:`.elr`, :mod:`.coteaching`, :mod:`.dividemix`), and the registry that names them all (:mod:`.registry`).

Imports :mod:`noisysam.core`, :mod:`noisysam.data`, :mod:`noisysam.optim`.
"""

from noisysam.methods.rules import (Method, RelabelAndRetrain, CrossEntropy, LabelSmoothing, BootstrapLoss,
                                    GeneralizedCrossEntropy, PlainInputs, MixupInputs, SGDUpdate, SAMUpdate,
                                    METHOD_PARAMS, ASAM_NORMALISATIONS)
from noisysam.methods.registry import (METHODS, get_method, register_method, SAM_RADIUS_METHODS, NOISE_RATE_METHODS,
                                       SAM_UPDATES, takes_param, default_param)

# noisysam 0.2's names, kept outside __all__
from noisysam.methods.registry import BOOTSTRAP_BETA, AnyMethod, MethodFactory
from noisysam.methods.rules import InputRule, LossRule, UpdateRule

__all__ = ["Method", "RelabelAndRetrain", "CrossEntropy", "LabelSmoothing", "BootstrapLoss",
           "GeneralizedCrossEntropy", "PlainInputs", "MixupInputs", "SGDUpdate", "SAMUpdate", "METHOD_PARAMS",
           "ASAM_NORMALISATIONS", "METHODS", "get_method", "register_method", "SAM_RADIUS_METHODS",
           "NOISE_RATE_METHODS", "SAM_UPDATES", "takes_param", "default_param"]
