"""noisysam: Sharpness-Aware Minimization (Foret et al., arXiv 2010.01412) for learning with noisy labels.

The public API: the SAM optimizer, label-noise models, datasets and loaders, models, methods, and
:func:`train`, the engine behind the command line.
"""

__version__ = "0.2.0"

from noisysam.sam import SAM, disable_running_stats, sam_step
from noisysam.noise import (CIFAR10_ASYMMETRIC, NoisyLabels, asymmetric, cifar10n, from_transition, pairflip,
                            symmetric)
from noisysam.data import ImageDataset, Loader, NoisyDataset, load_dataset
from noisysam.models import MODELS, get_model
from noisysam.methods import METHODS, get_method, register_method
from noisysam.train import TrainConfig, TrainResult, TrainingDiverged, train
from noisysam.files import RunDirectoryBusy

__all__ = [
    "SAM", "disable_running_stats", "sam_step",
    "NoisyLabels", "symmetric", "asymmetric", "pairflip", "from_transition", "cifar10n", "CIFAR10_ASYMMETRIC",
    "ImageDataset", "Loader", "NoisyDataset", "load_dataset",
    "MODELS", "get_model", "METHODS", "get_method", "register_method",
    "TrainConfig", "TrainResult", "TrainingDiverged", "train",
    "RunDirectoryBusy",
]
