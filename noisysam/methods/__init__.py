"""Training methods for noisy labels, by name: one-network methods composed of a loss, input and update rule
(:mod:`.rules`), the field's methods that keep per-sample state or train several networks (:mod:`.learner`,
:mod:`.elr`, :mod:`.coteaching`, :mod:`.dividemix`), and the registry that names them all (:mod:`.registry`).

Imports :mod:`noisysam.core`, :mod:`noisysam.data`, :mod:`noisysam.optim`.
"""

from noisysam.core.deprecation import moved_names
from noisysam.methods.rules import (Method, RelabelAndRetrain, CrossEntropy, LabelSmoothing, BootstrapLoss,
                                    GeneralizedCrossEntropy, PlainInputs, MixupInputs, SGDUpdate, SAMUpdate,
                                    METHOD_PARAMS, ASAM_NORMALISATIONS)
from noisysam.methods.registry import (MethodInfo, REGISTRY, method_info, METHODS, get_method, register_method,
                                       SAM_RADIUS_METHODS, NOISE_RATE_METHODS, SAM_UPDATES, takes_param, default_param)

# noisysam 0.2's names that live in a module of this package now: deprecated aliases until 0.3.0
__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("BOOTSTRAP_BETA", "AnyMethod", "MethodFactory"), "noisysam.methods.registry"),
    **dict.fromkeys(("InputRule", "LossRule", "UpdateRule"), "noisysam.methods.rules"),
})

__all__ = ["Method", "RelabelAndRetrain", "CrossEntropy", "LabelSmoothing", "BootstrapLoss",
           "GeneralizedCrossEntropy", "PlainInputs", "MixupInputs", "SGDUpdate", "SAMUpdate", "METHOD_PARAMS",
           "ASAM_NORMALISATIONS", "MethodInfo", "REGISTRY", "method_info", "METHODS", "get_method", "register_method",
           "SAM_RADIUS_METHODS", "NOISE_RATE_METHODS", "SAM_UPDATES", "takes_param", "default_param"]
