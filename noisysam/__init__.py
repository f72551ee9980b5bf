"""noisysam: Sharpness-Aware Minimization (Foret et al., arXiv 2010.01412) for learning with noisy labels.

The public API: the SAM optimizer, label-noise models, datasets and loaders, models, methods, and
:func:`train` (the engine behind the command line, with its live progress where the output is a terminal).

Conventions (they differ between codebases; noisysam makes each an option and records which was used):

- Symmetric noise at rate r: ``mode="replace"`` (default) redraws a label from all K classes with
  probability r, so about r(K-1)/K of the labels end up wrong; ``mode="flip"`` moves it to a different
  class, so about r end up wrong. ``exact=True`` corrupts round(r * n) labels instead of Bernoulli(r)
  draws. Every result reports the realised rate (whole training set and training split) beside the
  nominal one.
- Accuracy is clean-test accuracy at the last epoch (what the SAM paper's Table 4 appears to report,
  Foret et al., arXiv 2010.01412), at the best epoch (peeks at the test set; ASAM's Table 6 reports
  it) and at the epoch selected on a held-out split of the noisy training labels (honest).
- "bootstrap" is the SAM paper's relabel-and-retrain in its table (``mode="relabel"``, the default);
  Reed et al.'s bootstrap losses (arXiv 1412.6596) are ``mode="soft"`` (Eq. 6: the gradient flows
  through the prediction in the target) and ``mode="hard"`` (Eq. 7).
- ASAM (Kwon et al., arXiv 2102.11600) scales the ball by T = |w| + 0.01 on weights and 1 on biases, as
  the authors' code (``asam``'s default); davda54/sam's |w| on every parameter is an option.
- ResNet-32 is He et al.'s CIFAR variant with option-A shortcuts (464,154 parameters).
"""

from noisysam import _compat
from noisysam.core.version import __version__

from noisysam.optim.sam import SAM, disable_running_stats, sam_step
from noisysam.noise.labels import (CIFAR10_ASYMMETRIC, NoisyLabels, asymmetric, cifar10n, from_transition,
                                   pairflip, symmetric)
from noisysam.data.datasets import ImageDataset, NoisyDataset, load_dataset
from noisysam.data.loader import Loader
from noisysam.models.networks import MODELS, get_model
from noisysam.methods.registry import METHODS, get_method, register_method
from noisysam.run.config import TrainConfig
from noisysam.run.loop import TrainResult, TrainingDiverged
from noisysam.data.streaming import DatasetPair
from noisysam.core.files import RunDirectoryBusy
from noisysam.core.deprecation import RemovedInNoisysam03Warning
from noisysam.detect import Detection, find_label_issues
from noisysam.report.live import train

__all__ = [
    "SAM", "disable_running_stats", "sam_step",
    "NoisyLabels", "symmetric", "asymmetric", "pairflip", "from_transition", "cifar10n", "CIFAR10_ASYMMETRIC",
    "ImageDataset", "DatasetPair", "Loader", "NoisyDataset", "load_dataset",
    "MODELS", "get_model", "METHODS", "get_method", "register_method",
    "TrainConfig", "TrainResult", "TrainingDiverged", "train",
    "RunDirectoryBusy", "RemovedInNoisysam03Warning",
    "Detection", "find_label_issues",
]

_compat.install()  # noisysam.sam and the other module paths of noisysam 0.2, as deprecated aliases
