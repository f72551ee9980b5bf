"""Files shipped inside the package: the embedded CIFAR-10 subset and CIFAR-10N's labels (``noisysam/assets``).

They are package data read through :mod:`importlib.resources`, so every kind of install (a wheel, editable,
``--target``, ``--user``) finds them in the package itself; ``$NOISYSAM_DATA`` names a folder searched first.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["find_data_file"]


def find_data_file(name: str) -> Path:
    """Path of the shipped file ``name``: ``$NOISYSAM_DATA/name`` if that exists, else the package's own copy.
    Raises FileNotFoundError naming both places."""
    places = [Path(os.environ["NOISYSAM_DATA"])] if os.environ.get("NOISYSAM_DATA") else []
    for place in places:
        if (place / name).is_file():
            return place / name
    shipped = resources.files("noisysam") / "assets" / name
    if isinstance(shipped, Path) and shipped.is_file():  # a package on disk: the resource is the file itself
        return shipped
    where = ", ".join(map(str, [*places, shipped]))
    raise FileNotFoundError(f"data file {name!r} not found; looked in: {where} (set NOISYSAM_DATA to the folder "
                            "holding it)")
