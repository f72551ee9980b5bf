"""Image classifiers by name (ResNet-32, PreAct ResNet-18, WRN-28-10, the CPU profile's 5-conv CNN, Nakkiran et al.'s CNN).

Imports only :mod:`noisysam.core`.
"""

from noisysam.models.networks import MODELS, get_model, ResNet32, PreActResNet18, WideResNet, SimpleCNN, PlainCNN

# noisysam 0.2's names, kept outside __all__
from noisysam.models.networks import MODEL_PARAMS, wrn28_10

__all__ = ["MODELS", "get_model", "ResNet32", "PreActResNet18", "WideResNet", "SimpleCNN", "PlainCNN"]
