"""The grid of runs and running it: a :class:`Cell` per method x parameters x noise rate x seed, its run directory
(:func:`cell_dir`) and run (:func:`cell_config`), :func:`run_grid`, which checks every cell before the first trains
and trains the unfinished ones with an executor (:mod:`.executors`), and the record of the parameters a sweep chose
for a table's cells (:func:`read_tuning`).

A grid lives in one directory, one run directory per cell::

    ROOT/<method>/rate<r>/seed<s>/      config.json, noisy_labels.npz, metrics.jsonl, result.json, ...

A cell may set parameters of its own (:attr:`Cell.params`): a hyperparameter sweep's combination, named in its
directory (``ROOT/sam/rho=0.05,m=16/rate0.6/seed0``, :mod:`noisysam.grid.sweep`), or a sweep's choice applied to a
table cell, whose directory stays the table's (``table --params-from``, recorded in ``ROOT/params_from.json``).

A cell is finished when its ``result.json`` exists; :func:`run_grid` skips finished cells and resumes
the others from their last per-epoch checkpoint, so re-running the same command continues a killed grid.
A finished cell whose result.json is unreadable stops :func:`run_grid` before anything trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch

from noisysam.core.files import FileFormatError, read_json, run_lock, schema_problem
from noisysam.grid.executors import CellsFailed, Executor, InProcess, Job, Outcome, Watch
from noisysam.grid.paper import PAPER_METHODS, PAPER_RATES
from noisysam.methods.registry import takes_param
from noisysam.models.networks import get_model
from noisysam.noise.labels import RATED_KINDS, label as noise_label
from noisysam.run.config import METHOD_FIELDS, TrainConfig, build_method, method_stages
from noisysam.run.loop import Callback
from noisysam.run.rundir import RESULT_SCHEMA, RunDir, check_not_a_run, config_diff, inputs

#: Where a table trained with swept parameters records their origin (written by noisysam.grid.sweep.record_tuning).
PARAMS_FROM = "params_from.json"

#: What params_from.json holds per tuned method: the sweep directory and, per noise rate (a number as text), the
#: parameters taken.
TUNING_SCHEMA: dict[str, Any] = {"sweep": str, "choices": dict}


@dataclass(frozen=True)
class Cell:
    """One run of the grid: ``method`` at noise ``rate`` with ``seed``, trained into ``dir``; ``params``: the
    ``(name, value)`` parameters this cell sets on top of the grid's options (see :func:`cell_config`), e.g. one
    combination of a hyperparameter sweep (:mod:`noisysam.grid.sweep`)."""

    method: str
    rate: float
    seed: int
    dir: Path
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def run(self) -> RunDir:
        """The cell's run directory."""
        return RunDir(self.dir)

    @property
    def finished(self) -> bool:
        return self.run.finished

    def result(self, schema: dict[str, Any] = RESULT_SCHEMA) -> dict:
        """The finished cell's result.json, checked to hold what ``schema`` says (the table's keys; FileFormatError if not)."""
        return self.run.result(schema)

    def label(self, noise: str = "symmetric") -> str:
        """``sam rho=0.05 60% seed 0``; under a ``noise`` kind that takes no rate its name instead of the rate."""
        params = f" {params_name(self.params)}" if self.params else ""
        where = f"{self.rate:.0%}" if noise in RATED_KINDS else noise_label(noise, self.rate)
        return f"{self.method}{params} {where} seed {self.seed}"


def params_name(params: Iterable[tuple[str, Any]]) -> str:
    """``rho=0.05,m=16``: parameters as one directory name; floats by ``repr``, so two values never share a name."""
    return ",".join(f"{name}={value!r}" if isinstance(value, float) else f"{name}={value}" for name, value in params)


def cell_dir(root: Union[str, Path], method: str, rate: float, seed: int,
             params: Iterable[tuple[str, Any]] = ()) -> Path:
    """``root/<method>/rate<r>/seed<s>``, the rate written with ``%g`` (0.2 -> ``rate0.2``); with ``params``
    ``root/<method>/<params_name>/rate<r>/seed<s>`` (e.g. ``sam/rho=0.05,m=16/rate0.6/seed0``)."""
    base, named = Path(root) / method, params_name(params)
    return (base / named if named else base) / f"rate{rate:g}" / f"seed{seed}"


def grid(root: Union[str, Path], methods: Sequence[str] = PAPER_METHODS, rates: Sequence[float] = PAPER_RATES,
         seeds: Sequence[int] = (0, 1), combos: Sequence[Mapping[str, Any]] = ({},)) -> list[Cell]:
    """The cells of methods x combos x rates x seeds in running order (method, then combo, then rate, then
    seed); ``combos``: parameter combinations (dicts), each named in its cells' directories (:func:`cell_dir`).
    A ``root`` that is a run directory is refused (ValueError): its cells would be written among the run's files."""
    for name, values in (("methods", methods), ("rates", rates), ("seeds", seeds), ("combos", combos)):
        if not values:
            raise ValueError(f"{name} must not be empty")
    check_not_a_run(root, "a grid of runs")
    methods, rates, seeds = (list(dict.fromkeys(v)) for v in (methods, [float(r) for r in rates], [int(s) for s in seeds]))
    combos = list(dict.fromkeys(tuple(c.items()) for c in combos))
    return [Cell(m, r, s, cell_dir(root, m, r, s, p), p) for m in methods for p in combos for r in rates for s in seeds]


def cell_config(config: TrainConfig, cell: Cell) -> TrainConfig:
    """The run of one cell: ``config`` with the cell's method, noise rate, seed, directory and ``params``.
    ``rho``, ``mixup_alpha`` and each of ``method_params`` go to the cells whose method takes them (None, the rule,
    elsewhere): one option set serves a grid of methods (``sgd,sam`` with ``m=16``). ``rho`` None: the profile's radius for plain SAM's ball (e.g. the paper's 0.1 /
    0.05 at 80%), asam its own. A cell's parameter named in METHOD_FIELDS sets that field, any other goes into
    ``method_params``; one that ``config`` sets too is refused (ValueError), so no value silently wins."""
    unused = {name: None for name, param in METHOD_FIELDS.items() if not takes_param(cell.method, param)}
    taken = {name: value for name, value in config.method_params.items() if takes_param(cell.method, name)}
    config = dataclasses.replace(config, method=cell.method, noise_rate=cell.rate, seed=cell.seed,
                                 out=str(cell.dir), resume=True, method_params=taken, **unused)
    params = dict(cell.params)
    twice = sorted(name for name in params if (getattr(config, name) if name in METHOD_FIELDS
                                                else config.method_params.get(name)) is not None)
    if twice:
        raise ValueError(f"{', '.join(twice)} given for the whole grid and for cell {cell.label()!r}; give each "
                         "parameter one way")
    fields = {name: value for name, value in params.items() if name in METHOD_FIELDS}
    method_params = {name: value for name, value in params.items() if name not in METHOD_FIELDS}
    return dataclasses.replace(config, **fields, method_params={**config.method_params, **method_params})


def _check_grid_takes_options(config: TrainConfig, cells: list[Cell]) -> None:
    """A ``rho`` / ``mixup_alpha`` / method parameter that no method of the grid takes is refused (cell_config
    drops it per cell)."""
    methods = sorted({cell.method for cell in cells})
    given = {**{name: (param, getattr(config, name)) for name, param in METHOD_FIELDS.items()},
             **{name: (name, value) for name, value in config.method_params.items()}}
    for name, (param, value) in given.items():
        if value is not None and not any(takes_param(m, param) for m in methods):
            raise ValueError(f"{name} is given ({value}) but no method of the grid {methods} takes {param}")


def _check_same_config(cell: Cell, config: TrainConfig) -> None:
    """A started or finished cell is only continued or reused if it was trained with the settings asked for now."""
    if not cell.run.config_path.is_file():
        return
    try:
        saved = cell.run.config().settings
    except (OSError, ValueError) as e:
        raise ValueError(f"cell {str(cell.dir)!r} has an unreadable config.json ({e}); delete that directory "
                         "to train the cell again") from None
    diff = config_diff(saved, config.resolved().to_dict())
    if diff:
        state = "finished" if cell.finished else "started"
        raise ValueError(f"{state} cell {str(cell.dir)!r} was trained with different settings ({diff}); "
                         "use the same options or another table directory")


class _OnCell:
    """A :class:`~noisysam.grid.executors.Watch` that forwards to ``watch`` (if any) and calls
    ``on_cell(cell, summary, False)`` for each cell that finished."""

    def __init__(self, watch: Optional[Watch], on_cell: Optional[Callable[[Cell, dict, bool], None]],
                 cells: dict[Path, Cell]):
        self.watch, self.on_cell, self.cells = watch, on_cell, cells

    def begin(self, jobs: Sequence[Job]) -> None:
        if self.watch:
            self.watch.begin(jobs)

    def started(self, job: Job, done: int) -> None:
        if self.watch:
            self.watch.started(job, done)

    def advanced(self, job: Job, done: int, last: Optional[dict]) -> None:
        if self.watch:
            self.watch.advanced(job, done, last)

    def finished(self, outcome: Outcome) -> None:
        if self.watch:
            self.watch.finished(outcome)
        if self.on_cell and outcome.summary is not None:
            self.on_cell(self.cells[outcome.job.dir], outcome.summary, False)


def run_grid(cells: Iterable[Cell], config: TrainConfig, *, executor: Optional[Executor] = None,
             callback: Optional[Callback] = None, on_cell: Optional[Callable[[Cell, dict, bool], None]] = None,
             watch: Optional[Watch] = None) -> list[dict]:
    """Train every unfinished cell (resuming a killed one) with ``executor`` (default: one after another
    in this process); return the summaries in cell order.

    Before the first cell trains, every cell's config and method parameters are validated, its inputs built once
    (:func:`noisysam.run.rundir.inputs`: a damaged dataset or labels file is refused here, not by the cells), every
    cell already on disk is checked against the settings asked for and, unfinished, for another process
    holding its lock (:class:`~noisysam.core.files.RunDirectoryBusy`), so a bad option (e.g. a method
    parameter only some of the methods take) fails before anything is written. ``callback`` goes to
    each :func:`~noisysam.run.loop.train` call (in the worker); ``on_cell(cell, summary, skipped)`` is called
    after each finished cell (``skipped``: it was already finished); ``watch`` follows the running cells.
    A failing cell does not stop the others: :class:`~noisysam.grid.executors.CellsFailed` is raised once
    they have all run.
    """
    cells = list(cells)
    _check_grid_takes_options(config, cells)
    jobs, checked = {}, set()
    for cell in cells:
        c = cell_config(config, cell)
        resolved = c.resolved()
        data = (resolved.dataset, resolved.data_root, resolved.download, resolved.noise)
        if data not in checked:  # the dataset and labels (a file, or the noise model's), once, before any cell trains
            checked.add(data)
            inputs(resolved)
        method = build_method(resolved)
        with torch.device("meta"):  # the model's options too (no memory), before any cell trains
            get_model(resolved.model, 2, **resolved.model_params)
        _check_same_config(cell, c)
        if cell.dir.is_dir() and not cell.finished:  # another process training this cell: refuse the grid now
            with run_lock(cell.dir):
                pass
        jobs[cell] = Job(c, resolved.epochs * method_stages(method), cell.label(c.noise), callback)
    summaries = {}
    for cell in cells:  # a finished cell's result is checked before anything trains
        if cell.finished:
            try:
                summaries[cell] = cell.result()
            except FileFormatError as e:
                raise ValueError(f"{e}; delete {str(cell.dir)!r} to train the cell again") from None
    for cell, summary in summaries.items():
        if on_cell:
            on_cell(cell, summary, True)
    todo = [cell for cell in cells if cell not in summaries]
    outcomes = (executor or InProcess()).run([jobs[cell] for cell in todo], _OnCell(
        watch, on_cell, {cell.dir: cell for cell in todo})) if todo else []
    summaries.update((cell, o.summary) for cell, o in zip(todo, outcomes) if o.summary is not None)
    failures = [o for o in outcomes if o.error is not None]
    if failures:
        raise CellsFailed(failures, len(cells))
    return [summaries[cell] for cell in cells]


def read_tuning(root: Union[str, Path]) -> dict:
    """The table directory's params_from.json ({} where there is none), checked as :data:`TUNING_SCHEMA` says:
    FileFormatError naming the file otherwise. The table reads it before any cell trains, so that a damaged record
    is refused before anything is written rather than after the grid has trained."""
    path, what = Path(root) / PARAMS_FROM, "tuning record"
    if not path.is_file():
        return {}
    record = read_json(path, None, what)
    if not isinstance(record, dict):
        raise FileFormatError(path, f"expected an object of methods, got {type(record).__name__}", what)
    for method, entry in record.items():
        problem = schema_problem(entry, TUNING_SCHEMA)
        if problem is None:
            bad = next((rate for rate, params in entry["choices"].items()
                        if not _is_number(rate) or not isinstance(params, dict)), None)
            problem = None if bad is None else f"choice {bad!r} must be a noise rate mapped to an object of parameters"
        if problem:
            raise FileFormatError(path, f"method {method!r}: {problem}", what)
    return record


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
