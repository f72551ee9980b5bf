"""The ``noisysam`` command: parses options and calls the API; rendering lives in :mod:`noisysam.report`.

The top layer: it may import everything, and nothing imports it.
"""

from noisysam.cli.commands import cli, main

__all__ = ["cli", "main"]
