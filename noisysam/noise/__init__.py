"""Label-noise models: symmetric, asymmetric, pair-flip, any transition matrix, CIFAR-10N's human labels, as
:class:`NoisyLabels` (noisy and clean labels, the realised rate, a record of how they were made).

A leaf: it reads label arrays, never a dataset loader; imports only :mod:`noisysam.core`.
"""

from noisysam.noise.labels import (CIFAR10_ASYMMETRIC, CIFAR10N_ANNOTATORS, CIFAR10N_KINDS, CIFAR100_ASYMMETRIC,
                                   CIFAR100_COARSE, CIFAR100_SUPERCLASS_ASYMMETRIC, KINDS, MAX_CLASSES, RATED_KINDS,
                                   NoisyLabels, asymmetric, cifar10n, cifar10n_annotators, cleanlab_module, consensus,
                                   from_transition, label, make, pairflip, symmetric)

# noisysam 0.2's names, kept outside __all__
from noisysam.noise.labels import Seed

__all__ = ["CIFAR10_ASYMMETRIC", "CIFAR10N_ANNOTATORS", "CIFAR10N_KINDS", "CIFAR100_ASYMMETRIC", "CIFAR100_COARSE",
           "CIFAR100_SUPERCLASS_ASYMMETRIC", "KINDS", "MAX_CLASSES", "RATED_KINDS", "NoisyLabels", "asymmetric",
           "cifar10n", "cifar10n_annotators", "cleanlab_module", "consensus", "from_transition", "label", "make",
           "pairflip", "symmetric"]
