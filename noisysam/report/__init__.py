"""What a person reads: figures of runs, compared runs, grids and sweeps (:mod:`.plots`, matplotlib; a detection's
figure is :mod:`noisysam.detect.figure`) and the console's tables and progress bars (:mod:`.console`, rich).

Imports every layer below except the CLI.
"""
