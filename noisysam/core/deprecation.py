"""Names that moved, served at their old path by one mechanism: a module ``__getattr__`` (PEP 562) that looks the
name up where it lives now, warns with :class:`RemovedInNoisysam03Warning` and returns the object itself.

Two kinds of old path use it: a module of noisysam 0.2 that is gone (``noisysam.sam``: a :class:`MovedModule`
stand-in placed in ``sys.modules`` by :mod:`noisysam._compat`, whose every name moved), and a module that is
still there but lost some names (``noisysam.methods.BOOTSTRAP_BETA``: the module's ``__getattr__`` is
:func:`moved_names`). Both are removed in noisysam :data:`REMOVED_IN`.

A leaf: it imports nothing of noisysam; the new places are imported by name when an old name is first used.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["REMOVED_IN", "RemovedInNoisysam03Warning", "warn_moved", "moved_names", "MovedModule"]

#: The version that removes every old path served here (noisysam 0.2's module paths and names): the next minor
#: version after 0.2.x, in which the aliases were added. A 0.x minor version may break an API (semantic versioning).
REMOVED_IN = "0.3.0"


class RemovedInNoisysam03Warning(DeprecationWarning):
    """An old path of noisysam was used; it is removed in noisysam 0.3.0 (:data:`REMOVED_IN`). The message names the
    new path. A DeprecationWarning: ``-W error::DeprecationWarning`` and pytest's filters catch it too."""

    removed_in = REMOVED_IN


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` (a dotted path) is ``new`` now; ``stacklevel`` 3 points at the caller of a ``__getattr__``."""
    warnings.warn(f"{old} moved to {new}; the old path will be removed", RemovedInNoisysam03Warning,
                  stacklevel=stacklevel)


def _resolve(where: str) -> tuple[str, str | None]:
    """``"package.module"`` or ``"package.module:new_name"`` as (module, new name or None)."""
    module, _, name = where.partition(":")
    return module, name or None


def moved_names(module: str, moved: Mapping[str, str], stacklevel: int = 3) -> Callable[[str], Any]:
    """The ``__getattr__`` of module ``module`` for its names that moved: ``moved[name]`` is the module that holds it
    now, ``"noisysam.x.y"``, or ``"noisysam.x.y:new_name"`` where it was renamed. Every lookup warns
    (:func:`warn_moved`, pointing ``stacklevel`` frames up); a name not in ``moved`` is an AttributeError, as for any
    module."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, new_name = _resolve(moved[name])
        warn_moved(f"{module}.{name}", f"{target}.{new_name or name}", stacklevel)
        return getattr(importlib.import_module(target), new_name or name)

    return __getattr__


class MovedModule(ModuleType):
    """A module path that is gone, every name of which moved: a stand-in whose names are looked up, in order, in the
    modules ``new`` (dotted paths) or, for a name in ``renamed``, at ``renamed[name]`` (``"module:new_name"``); each
    lookup warns as :func:`moved_names` does."""

    def __init__(self, old: str, new: tuple[str, ...], renamed: Mapping[str, str] | None = None) -> None:
        super().__init__(old, f"Deprecated alias of {', '.join(new)}; removed in noisysam {REMOVED_IN}.")
        self._new, self._renamed = tuple(new), dict(renamed or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._renamed:
            return moved_names(self.__name__, self._renamed, 4)(name)
        for path in self._new:
            if hasattr(importlib.import_module(path), name):
                return moved_names(self.__name__, {name: path}, 4)(name)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self._new)}) has no attribute {name!r}")
