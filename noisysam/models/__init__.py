"""Image classifiers by name (ResNet-32, PreAct ResNet-18, WRN-28-10, the CPU profile's CNN).

Imports only :mod:`noisysam.core`.
"""

from noisysam.models.networks import MODELS, get_model, ResNet32, PreActResNet18, WideResNet, SimpleCNN

# noisysam 0.2's names, kept outside __all__
from noisysam.models.networks import MODEL_PARAMS, wrn28_10

__all__ = ["MODELS", "get_model", "ResNet32", "PreActResNet18", "WideResNet", "SimpleCNN"]
