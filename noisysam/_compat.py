"""The module paths of noisysam 0.2 (flat modules), kept as deprecated aliases of where their contents live now,
until noisysam 0.3.0 (:data:`noisysam.core.deprecation.REMOVED_IN`).

``from noisysam.sam import SAM`` and ``noisysam.sam.SAM`` still work and warn
(:class:`~noisysam.core.deprecation.RemovedInNoisysam03Warning`, a DeprecationWarning) with the new path. Each old
module is a :class:`~noisysam.core.deprecation.MovedModule` stand-in placed in ``sys.modules`` and as an attribute of
the package when noisysam is imported; it looks names up in its new modules, imported on first use. One exception:
``noisysam.train`` is the function :func:`noisysam.train`, so ``noisysam.train.TrainConfig`` is an AttributeError;
``from noisysam.train import TrainConfig`` (the import system reads ``sys.modules``) works and warns. Old paths that
are packages now (noise, data, models, methods, detect, cli) need no stand-in: their names that moved are served by
the same mechanism, each package's ``__getattr__`` (:func:`~noisysam.core.deprecation.moved_names`).
"""

from __future__ import annotations

import sys

from noisysam.core.deprecation import MovedModule

#: Old module (under noisysam) -> the modules that hold its public names now, searched in order.
MOVED: dict[str, tuple[str, ...]] = {
    "params": ("core.params",), "files": ("core.files", "run.rundir"), "sam": ("optim.sam",), "variants": ("optim.variants",),
    "learner": ("methods.learner",), "elr": ("methods.elr",), "coteaching": ("methods.coteaching",),
    "dividemix": ("methods.dividemix",), "metrics": ("run.metrics",),
    "train": ("run.config", "run.rundir", "run.seeds", "run.loop"), "distributed": ("run.distributed",),
    "tensorboard": ("run.tensorboard",), "executors": ("grid.executors",),
    "table": ("grid.paper", "grid.cells", "grid.render", "grid.table"),
    "sweep": ("grid.sweep",), "plot": ("report.plots", "detect.figure"), "config_file": ("cli.config_file",),
}

#: Old names whose object has another name now: (old module, name) -> (new module, name). noisysam 0.2 had two
#: constants called RUN_FILES: files.RUN_FILES (what marks a run directory) is run.rundir.RUN_MARKERS now.
RENAMED: dict[tuple[str, str], tuple[str, str]] = {("files", "RUN_FILES"): ("run.rundir", "RUN_MARKERS")}

#: Old module paths that are not an attribute of the package: noisysam.train is the function.
NOT_ATTRIBUTES = ("train",)


def install() -> None:
    """Put every old module path in ``sys.modules`` and, but for :data:`NOT_ATTRIBUTES`, on the package (no import of
    the new modules happens here)."""
    package = sys.modules["noisysam"]
    for old, new in MOVED.items():
        renamed = {name: f"noisysam.{module}:{new_name}" for (o, name), (module, new_name) in RENAMED.items() if o == old}
        module = sys.modules.setdefault(f"noisysam.{old}", MovedModule(f"noisysam.{old}",
                                                                       tuple(f"noisysam.{n}" for n in new), renamed))
        if old not in NOT_ATTRIBUTES:
            setattr(package, old, module)
