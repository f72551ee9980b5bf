"""Many runs: the method x rate x seed grid and its table (:mod:`.table`), hyperparameter sweeps (:mod:`.sweep`)
and the executors that run cells locally or on Ray (:mod:`.executors`), which know nothing of methods.

Imports :mod:`noisysam.run` and the layers below it.
"""
