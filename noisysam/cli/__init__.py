"""The ``noisysam`` command: parses options and calls the API; rendering lives in :mod:`noisysam.report`.

The top layer: it may import everything, and nothing imports it.
"""

from noisysam.core.deprecation import moved_names
from noisysam.cli.commands import cli, main
# noisysam 0.2's names that live in a module of this package now: deprecated aliases until 0.3.0
__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("detect_command", "info_command", "noise_command",
                     "sweep_command", "table_command", "train_command"), "noisysam.cli.commands"),
    **dict.fromkeys(("GridProgress", "RunProgress"), "noisysam.report.console"),
})

__all__ = ["cli", "main"]
