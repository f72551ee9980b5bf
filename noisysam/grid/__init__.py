"""Many runs: the method x rate x seed grid and running it (:mod:`.cells`), its table (:mod:`.table`, aggregated over
seeds; :mod:`.render`, its text), the SAM paper's numbers it reproduces (:mod:`.paper`), hyperparameter sweeps
(:mod:`.sweep`) and the executors that run cells locally or on Ray (:mod:`.executors`), which know nothing of
methods.

Imports :mod:`noisysam.run` and the layers below it.
"""
