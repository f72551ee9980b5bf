"""Image classifiers by name (ResNet-32, PreAct ResNet-18, WRN-28-10, the CPU profile's 5-conv CNN, Nakkiran et al.'s CNN).

Imports only :mod:`noisysam.core`.
"""

from noisysam.core.deprecation import moved_names
from noisysam.models.networks import MODELS, get_model, ResNet32, PreActResNet18, WideResNet, SimpleCNN, PlainCNN

# noisysam 0.2's names that live in a module of this package now: deprecated aliases until 0.3.0
__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("MODEL_PARAMS", "wrn28_10"), "noisysam.models.networks"),
})

__all__ = ["MODELS", "get_model", "ResNet32", "PreActResNet18", "WideResNet", "SimpleCNN", "PlainCNN"]
