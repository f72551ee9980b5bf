"""The module paths of noisysam 0.2 (flat modules), kept as deprecated aliases of where their contents live now.

``from noisysam.sam import SAM`` and ``noisysam.train.TrainConfig`` still work and warn (DeprecationWarning)
with the new path. Each old module is a stand-in placed in ``sys.modules`` when noisysam is
imported; it looks names up in its new modules, imported on first use. Old paths that are packages now (noise,
data, models, methods, detect, cli) need no alias: the packages export the same public names.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType
from typing import Any

#: Old module (under noisysam) -> the modules that hold its public names now, searched in order.
MOVED: dict[str, tuple[str, ...]] = {
    "params": ("core.params",), "files": ("core.files", "run.rundir"), "sam": ("optim.sam",), "variants": ("optim.variants",),
    "learner": ("methods.learner",), "elr": ("methods.elr",), "coteaching": ("methods.coteaching",),
    "dividemix": ("methods.dividemix",), "metrics": ("run.metrics",),
    "train": ("run.config", "run.rundir", "run.loop"), "distributed": ("run.distributed",),
    "tensorboard": ("run.tensorboard",), "executors": ("grid.executors",), "table": ("grid.table",),
    "sweep": ("grid.sweep",), "plot": ("report.plots", "detect.figure"), "config_file": ("cli.config_file",),
}

#: Old names whose object has another name now: (old module, name) -> (new module, name). noisysam 0.2 had two
#: constants called RUN_FILES: files.RUN_FILES (what marks a run directory) is run.rundir.RUN_MARKERS now.
RENAMED: dict[tuple[str, str], tuple[str, str]] = {("files", "RUN_FILES"): ("run.rundir", "RUN_MARKERS")}


class MovedModule(ModuleType):
    """An old module path: attribute lookups go to the new modules, with a DeprecationWarning naming the new path."""

    def __init__(self, old: str, new: tuple[str, ...]) -> None:
        super().__init__(f"noisysam.{old}", f"Deprecated alias of {', '.join('noisysam.' + n for n in new)}.")
        self._old, self._new = old, tuple(f"noisysam.{n}" for n in new)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if (self._old, name) in RENAMED:
            module, new_name = RENAMED[self._old, name]
            warnings.warn(f"{self.__name__}.{name} moved to noisysam.{module}.{new_name}; the old path will be removed",
                          DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(f"noisysam.{module}"), new_name)
        for path in self._new:
            module = importlib.import_module(path)
            if hasattr(module, name):
                warnings.warn(f"{self.__name__}.{name} moved to {path}.{name}; the old path will be removed",
                              DeprecationWarning, stacklevel=2)
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self._new)}) has no attribute {name!r}")


def install() -> None:
    """Put every old module path in ``sys.modules`` (no import of the new modules happens here)."""
    for old, new in MOVED.items():
        sys.modules.setdefault(f"noisysam.{old}", MovedModule(old, new))


def old_module(name: str) -> ModuleType:
    """``noisysam.<name>`` for an old module name (the package's ``__getattr__``); AttributeError otherwise."""
    if name not in MOVED:
        raise AttributeError(f"module 'noisysam' has no attribute {name!r}")
    return sys.modules[f"noisysam.{name}"]
