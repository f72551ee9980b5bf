"""One training run: its configuration and profiles (:mod:`.config`), the run directory with its lock,
fingerprints and resume checks (:mod:`.rundir`), the loop (:mod:`.loop`), the metrics it reports
(:mod:`.metrics`), several processes (:mod:`.distributed`) and the TensorBoard logger (:mod:`.tensorboard`).

Imports every layer below: core, noise, data, models, optim, methods.
"""
