"""One training run: its configuration and profiles (:mod:`.config`), the run directory with its files, lock,
fingerprints and resume checks and the run's inputs (:mod:`.rundir`: :class:`~.rundir.RunDir`, :func:`~.rundir.inputs`),
the loop (:mod:`.loop`), the metrics it reports (:mod:`.metrics`), several processes (:mod:`.distributed`) and the
TensorBoard logger (:mod:`.tensorboard`).

Imports every layer below: core, noise, data, models, optim, methods.
"""

from noisysam.run.rundir import RunConfig, RunDir, inputs

__all__ = ["RunConfig", "RunDir", "inputs"]
