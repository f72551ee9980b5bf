"""Label-noise models: symmetric, asymmetric, pair-flip, any transition matrix, CIFAR-10N's human labels, as
:class:`NoisyLabels` (noisy and clean labels, the realised rate, a record of how they were made).

A leaf: it reads label arrays, never a dataset loader; imports only :mod:`noisysam.core`.
"""

from noisysam.core.deprecation import moved_names
from noisysam.noise.labels import (CIFAR10_ASYMMETRIC, CIFAR10N_ANNOTATORS, CIFAR10N_KINDS, CIFAR100_ASYMMETRIC,
                                   CIFAR100_COARSE, CIFAR100_SUPERCLASS_ASYMMETRIC, KINDS, MAX_CLASSES, RATED_KINDS,
                                   NoisyLabels, asymmetric, cifar10n, cifar10n_annotators, cleanlab_module, consensus,
                                   from_transition, label, make, pairflip, symmetric)

# noisysam 0.2's names that live in a module of this package now: deprecated aliases until 0.3.0
__getattr__ = moved_names(__name__, {"Seed": "noisysam.noise.labels"})

__all__ = ["CIFAR10_ASYMMETRIC", "CIFAR10N_ANNOTATORS", "CIFAR10N_KINDS", "CIFAR100_ASYMMETRIC", "CIFAR100_COARSE",
           "CIFAR100_SUPERCLASS_ASYMMETRIC", "KINDS", "MAX_CLASSES", "RATED_KINDS", "NoisyLabels", "asymmetric",
           "cifar10n", "cifar10n_annotators", "cleanlab_module", "consensus", "from_transition", "label", "make",
           "pairflip", "symmetric"]
