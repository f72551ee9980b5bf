"""Update rules as optimizers: SAM (Foret et al., arXiv 2010.01412; ASAM, m-sharpness) in :mod:`.sam` and the
cheaper SAM variants in :mod:`.variants`.

Imports only :mod:`noisysam.core`.
"""

from noisysam.optim.sam import METHOD_RHO, P_NORM, RHO, SAM_PARAMS, SAM, disable_running_stats, sam_step
from noisysam.optim import variants

__all__ = ["RHO", "METHOD_RHO", "P_NORM", "SAM_PARAMS", "SAM", "disable_running_stats", "sam_step", "variants"]
