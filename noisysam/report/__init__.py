"""What a person reads: figures of runs, grids, sweeps and detections (:mod:`.plots`, matplotlib) and the
console's tables and progress bars (:mod:`.console`, rich).

Imports every layer below except the CLI.
"""
