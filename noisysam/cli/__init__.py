"""The ``noisysam`` command: parses options and calls the API; rendering lives in :mod:`noisysam.report`.

The top layer: it may import everything, and nothing imports it.
"""

from noisysam.cli.commands import cli, main
# noisysam 0.2's names, outside __all__
from noisysam.cli.commands import (detect_command, info_command, noise_command, sweep_command, table_command,
                                    train_command)
from noisysam.report.console import GridProgress, RunProgress

__all__ = ["cli", "main"]
