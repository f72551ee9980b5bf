"""The SAM paper's label-noise table (Foret et al., arXiv 2010.01412, Table 4): its numbers, the grid
runner that reproduces it with :func:`noisysam.run.loop.train`, and the aggregation over seeds.

A grid lives in one directory, one run directory per cell::

    ROOT/<method>/rate<r>/seed<s>/      config.json, noisy_labels.npz, metrics.jsonl, result.json, ...
    ROOT/table.json, table.csv, table.md   (written by :func:`write_table`)

A cell may set parameters of its own (:attr:`Cell.params`): a hyperparameter sweep's combination, named in its
directory (``ROOT/sam/rho=0.05,m=16/rate0.6/seed0``, :mod:`noisysam.grid.sweep`), or a sweep's choice applied to a
table cell, whose directory stays the table's (``table --params-from``, recorded in ``ROOT/params_from.json``).

A cell is finished when its ``result.json`` exists; :func:`run_grid` skips finished cells and resumes
the others from their last per-epoch checkpoint, so re-running the same command continues a killed grid.
A finished cell whose result.json is unreadable stops :func:`run_grid` before anything trains; when only
tabulating (:func:`collect`, :func:`write_table`) it is skipped with a :class:`SkippedCellWarning`.
Accuracies in tables are percentages (the paper's unit); ``result.json`` holds fractions.

Cost sits beside accuracy: per (method, rate) the mean over seeds of the training passes (forward + backward, in
batch equivalents, as :class:`noisysam.run.loop.PassCounter` counts them into result.json) and of the wall seconds,
and both relative to SGD's at the same rate in the same grid, so SAM's two passes per step read 2.0x.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from noisysam.grid.executors import CellsFailed, Executor, InProcess, Job, Outcome, Watch
from noisysam.core.files import FileFormatError, atomic_write, read_json, run_lock, schema_problem, write_json
from noisysam.methods.registry import takes_param
from noisysam.models.networks import get_model
from noisysam.noise.labels import RATED_KINDS, label as noise_label
from noisysam.run.config import METHOD_FIELDS, TrainConfig, build_method, method_stages
from noisysam.run.loop import Callback
from noisysam.run.rundir import RESULT, RESULT_SCHEMA, RunDir, check_not_a_run, config_diff, inputs

#: Noise rates of the paper's table.
PAPER_RATES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

#: The paper's five methods, in its row order (noisysam method names).
PAPER_METHODS: tuple[str, ...] = ("sgd", "mixup", "bootstrap-mixup", "sam", "bootstrap-sam")

#: Table 4 of the SAM paper: clean-test accuracy (%) of ResNet-32 on CIFAR-10 at 20/40/60/80% symmetric
#: noise, 200 epochs. The paper does not say which epoch it reports; SGD's 26.2 at 80% (far below the best-epoch
#: figures of ASAM's Table 6, Kwon et al., arXiv 2102.11600) points to the last one.
PAPER_TABLE4: dict[str, tuple[float, ...]] = {
    "sgd": (84.8, 68.8, 48.2, 26.2),
    "mixup": (93.0, 90.0, 83.8, 70.2),
    "bootstrap-mixup": (93.3, 92.0, 87.6, 72.0),
    "sam": (95.1, 93.4, 90.5, 77.9),
    "bootstrap-sam": (95.4, 94.2, 91.8, 79.9),
}

#: Rows of the same table that the paper quotes from the literature (not reproduced here).
LITERATURE_TABLE4: dict[str, tuple[float, ...]] = {
    "MentorMix (Jiang et al. 2020)": (95.6, 94.2, 91.3, 81.0),
    "Arazo et al. 2019": (94.0, 92.8, 90.3, 74.1),
    "GCE (Zhang & Sabuncu 2018)": (89.7, 87.6, 82.7, 67.9),
    "MentorNet (Jiang et al. 2018)": (92.0, 91.2, 74.2, 60.0),
    "Mixup (literature)": (94.0, 91.5, 86.8, 76.9),
}

TABLE_FILES = ("table.json", "table.csv", "table.md")

#: Where a table trained with swept parameters records their origin (written by noisysam.grid.sweep.record_tuning).
PARAMS_FROM = "params_from.json"

#: What params_from.json holds per tuned method: the sweep directory and, per noise rate (a number as text), the
#: parameters taken.
TUNING_SCHEMA: dict[str, Any] = {"sweep": str, "choices": dict}


def paper_value(method: str, rate: float) -> Optional[float]:
    """The paper's Table 4 accuracy (%) for ``method`` at noise ``rate``, or None where it has none."""
    row = PAPER_TABLE4.get(method)
    for r, value in zip(PAPER_RATES, row or ()):
        if math.isclose(r, rate):
            return value
    return None


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


class SkippedCellWarning(UserWarning):
    """A finished cell was left out of a table: its result.json is unreadable or lacks what the table needs."""


def _scan(root: Union[str, Path]) -> tuple[list[dict], list[str]]:
    """The finished cells under ``root`` (``<method>/rate<r>/seed<s>/``) whose result.json is usable, and one problem
    (naming the file) per other. What a cell is (method, noise rate, seed) is read from its run's files, not from
    the folder names (:func:`cell_key`)."""
    found, problems = [], []
    for result in sorted(Path(root).glob(f"*/rate*/seed*/{RESULT}")):
        run = RunDir(result.parent)
        try:
            summary = run.result()
            method, rate, seed = cell_key(run, summary)
        except (FileFormatError, OSError) as e:
            problems.append(str(e))
            continue
        found.append(dict(method=method, rate=rate, seed=seed, dir=str(run.path), result=summary))
    return found, problems


def cell_key(run: RunDir, result: dict) -> tuple[str, float, int]:
    """A finished run's place in a grid: its method, noise rate and seed as its ``result`` (its result.json) records
    them. The rate is the labels' nominal rate; where they have none (CIFAR-10N's human labels), the ``noise_rate``
    the grid set in its config.json."""
    rate = result["noise"]["rate"]
    if rate is None:
        rate = run.config().settings.get("noise_rate")
        problem = schema_problem({"noise_rate": rate}, {"noise_rate": (int, float)})
        if problem:
            raise FileFormatError(run.config_path, f"config {problem}", "run config")
    return result["method"], float(rate), result["seed"]


def collect(root: Union[str, Path]) -> list[dict]:
    """The finished cells under ``root``: dicts with method, rate, seed, dir and the run's ``result``. A cell whose
    result.json is unreadable or lacks keys is skipped with a :class:`SkippedCellWarning` naming the file."""
    found, problems = _scan(root)
    for problem in problems:
        warnings.warn(problem, SkippedCellWarning, stacklevel=2)
    return found


def mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof=1; None for one value) of percentages; None if empty."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else None)


def _diff(value: Optional[float], paper: Optional[float]) -> Optional[float]:
    return None if value is None or paper is None else value - paper


def _method_order(methods: Iterable[str]) -> list[str]:
    methods = set(methods)
    return [m for m in PAPER_METHODS if m in methods] + sorted(methods - set(PAPER_METHODS))


def _passes(result: dict) -> Optional[float]:
    """A run's training passes, forward + backward (batch equivalents); None where result.json predates counting."""
    forward, backward = result.get("forward_passes"), result.get("backward_passes")
    return None if forward is None or backward is None else forward + backward


def _mean_of_all(values: list[Optional[float]]) -> Optional[float]:
    """The mean, or None if any value is missing: a cost over only some of a row's seeds would compare unlike runs."""
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def column_label(noise: str, rate: float, realised: Optional[float]) -> str:
    """A column's heading: the rate where the noise kind takes one ("40%"); otherwise the kind, which fixes its
    own labels, and the share of them that is wrong ("cifar10n-worse, 41% wrong"), as a rate of 0 would mislead."""
    if all(kind in RATED_KINDS for kind in noise.split(", ")):
        return f"{rate:.0%}"
    return noise if realised is None else f"{noise}, {realised:.0f}% wrong"


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return None if value is None or not base else value / base


def aggregate(cells: list[dict]) -> list[dict]:
    """One row per (method, rate): mean +- std over seeds of clean-test accuracy (%) at the last epoch
    and at the noisy-validation-selected epoch, the paper's value and the differences to it (only under symmetric
    noise, the paper's: its numbers say nothing of asymmetric or CIFAR-10N labels); ``noise``, the cells' noise
    kind, and ``column``, the rate's heading (:func:`column_label`); and the cost:
    ``passes_mean`` (training passes, forward + backward, batch equivalents) and ``wall_seconds_mean`` over the
    seeds, and ``passes_vs_sgd`` / ``wall_vs_sgd``, those means divided by the sgd row's at the same rate (a ratio
    of means). ``passes_mean`` is None where a seed's result.json predates pass counting; a ratio is None where
    either mean is, or where the cells have no sgd row at that rate."""
    kind = lambda group: ", ".join(sorted({c["result"]["noise"]["type"] for c in group}))
    columns = {}
    for rate in {c["rate"] for c in cells}:
        at_rate = [c for c in cells if c["rate"] == rate]
        columns[rate] = column_label(kind(at_rate), rate, mean_std([100.0 * c["result"]["noise"]["realised_rate"]
                                                                   for c in at_rate])[0])
    rows = []
    for method in _method_order(c["method"] for c in cells):
        for rate in sorted({c["rate"] for c in cells if c["method"] == method}):
            group = sorted((c for c in cells if c["method"] == method and c["rate"] == rate), key=lambda c: c["seed"])
            pct = lambda key: [None if c["result"]["test_accuracy"][key] is None
                               else 100.0 * c["result"]["test_accuracy"][key] for c in group]
            last, last_std = mean_std(pct("last"))
            selected, selected_std = mean_std(pct("selected"))
            best, best_std = mean_std(pct("best"))
            memorisation, _ = mean_std([100.0 * c["result"]["memorisation_last"] if c["result"]["memorisation_last"]
                                        is not None else None for c in group])
            realised, _ = mean_std([100.0 * c["result"]["noise"]["realised_rate"] for c in group])
            noise = kind(group)
            paper = paper_value(method, rate) if noise == "symmetric" else None
            rows.append(dict(method=method, rate=rate, noise=noise, column=columns[rate], seeds=[c["seed"] for c in group],
                             last_mean=last, last_std=last_std, selected_mean=selected, selected_std=selected_std,
                             best_mean=best, best_std=best_std, paper=paper,
                             last_minus_paper=_diff(last, paper), selected_minus_paper=_diff(selected, paper),
                             memorisation_last_mean=memorisation, realised_noise_rate_mean=realised,
                             networks=max(c["result"].get("networks", 1) for c in group),
                             passes_mean=_mean_of_all([_passes(c["result"]) for c in group]),
                             wall_seconds_mean=_mean_of_all([c["result"].get("wall_seconds") for c in group])))
    sgd = {r["rate"]: r for r in rows if r["method"] == "sgd"}
    for r in rows:
        base = sgd.get(r["rate"], {})
        r["passes_vs_sgd"] = _ratio(r["passes_mean"], base.get("passes_mean"))
        r["wall_vs_sgd"] = _ratio(r["wall_seconds_mean"], base.get("wall_seconds_mean"))
    return rows


def settings(cells: list[dict]) -> dict[str, list]:
    """What the cells were trained with (dataset, model, epochs, profile, noise kind/mode), each as the
    sorted list of distinct values found, so a mixed directory shows up as such."""
    keys = {"dataset": lambda r: r["dataset"], "model": lambda r: r["model"], "epochs": lambda r: r["epochs"],
            "profile": lambda r: r["profile"], "noise": lambda r: r["noise"]["type"],
            "noise_mode": lambda r: r["noise"]["mode"], "device": lambda r: r["device"], "amp": lambda r: r["amp"]}
    return {k: sorted({f(c["result"]) for c in cells}, key=str) for k, f in keys.items()}


def fmt(mean: Optional[float], std: Optional[float] = None) -> str:
    """``83.1 ± 0.4``; ``83.1`` without a std; ``–`` for no value."""
    if mean is None:
        return "–"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def fmt_diff(diff: Optional[float]) -> str:
    return "–" if diff is None else f"{diff:+.1f}"


def fmt_ratio(ratio: Optional[float]) -> str:
    """``1.27×``; ``–`` for no value."""
    return "–" if ratio is None else f"{ratio:.2f}×"


#: What the cost columns mean (table.md's Cost section and table.json).
COST_NOTE = ("Training passes: forward + backward passes of the model in batch equivalents (a step on one batch "
             "costs SGD 1 + 1, SAM 2 + 2; a method training several networks counts every network's, so it costs at "
             "least networks x SGD; a method's own per-epoch passes over the training set, such as DivideMix's "
             "co-divide, count; the run's evaluation does not); wall: seconds of the whole run (training, per-epoch "
             "evaluation, checkpoints); both the mean over seeds, and relative to sgd's at the same noise rate in the "
             "same grid (a ratio of means); missing (–, null) where the grid has no sgd at that rate or a run "
             "predates pass counting")


def _cost_section(rows: list[dict]) -> str:
    """table.md's Cost section: per noise rate, each method's last-epoch accuracy beside its cost relative to SGD."""
    value = lambda v, spec: "–" if v is None else format(v, spec)
    body = "".join(f"| {r['column']} | {r['method']} | {r['networks']} | {fmt(r['last_mean'], r['last_std'])} | "
                   f"{fmt_ratio(r['passes_vs_sgd'])} | {fmt_ratio(r['wall_vs_sgd'])} | "
                   f"{value(r['passes_mean'], '.0f')} | {value(r['wall_seconds_mean'], '.1f')} |\n"
                   for r in sorted(rows, key=lambda r: r["rate"]))  # stable: methods stay in table order
    return ("## Cost: training passes and wall time relative to SGD\n\n" + COST_NOTE + ".\n\n"
            "| noise | method | networks | last epoch (%) | passes ×SGD | wall ×SGD | passes | wall (s) |\n"
            "|---|---|---|---|---|---|---|---|\n" + body)


def render_markdown(rows: list[dict], info: dict[str, list], tuning: Optional[dict] = None) -> str:
    """table.md: last-epoch and selected-epoch accuracy tables beside the paper's, the cost relative to SGD beside
    last-epoch accuracy, then the paper's literature rows; ``tuning`` (params_from.json): the methods whose
    parameters a sweep chose per rate, and their values."""
    rates = sorted({r["rate"] for r in rows})
    methods = _method_order(r["method"] for r in rows)
    by_key = {(r["method"], r["rate"]): r for r in rows}
    column = {r["rate"]: r["column"] for r in rows}
    header = "| method | " + " | ".join(column[rate] for rate in rates) + " |\n"
    rule = "|---|" + "---|" * len(rates) + "\n"
    n_seeds = sorted({len(r["seeds"]) for r in rows})
    lines = ["# noisysam: the SAM paper's label-noise table (Foret et al. 2021, Table 4)\n",
             "Clean-test accuracy (%), mean ± std over seeds (seeds per cell: "
             f"{', '.join(map(str, n_seeds))})"
             + ("; in brackets the paper's value and the difference to it.\n" if any(r["paper"] is not None for r in rows)
                else ". The paper's Table 4 is symmetric noise: no value of it stands beside these.\n"),
             "Settings: " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in info.items()) + "\n"]
    for method, record in (tuning or {}).items():
        values = "; ".join(f"{float(rate):.0%}: {params_name(params.items())}" for rate, params in record["choices"].items())
        lines.append(f"Tuned per rate by the sweep in {record['sweep']}: {method} ({values}).\n")
    for key, title in (("last", "Last epoch (the paper's convention)"),
                       ("selected", "Epoch selected by accuracy on a held-out noisy-label validation split")):
        lines.append(f"## {title}\n")
        body = ""
        # In the last-epoch table, SGD stopped early by its noisy validation split stands under SGD: the baseline a
        # label-noise method has to beat (anyone can stop SGD early).
        rows_of = [(m, m, key) for m in methods]
        if key == "last" and "sgd" in methods:
            rows_of.insert(methods.index("sgd") + 1, ("sgd", "sgd, early-stopped (its selected epoch)", "selected"))
        for m, name, value in rows_of:
            cells = []
            for rate in rates:
                r = by_key.get((m, rate))
                if r is None:
                    cells.append("")
                    continue
                text = fmt(r[f"{value}_mean"], r[f"{value}_std"])
                if r["paper"] is not None:
                    text += f" ({r['paper']:.1f}, {fmt_diff(r[f'{value}_minus_paper'])})"
                cells.append(text)
            body += f"| {name} | " + " | ".join(cells) + " |\n"
        lines.append(header + rule + body)
    lines.append(_cost_section(rows))
    if not any(r["noise"] == "symmetric" for r in rows):
        return "\n".join(lines)
    lines.append("## Rows the paper quotes from the literature\n")
    lit_header = "| method | " + " | ".join(f"{rate:.0%}" for rate in PAPER_RATES) + " |\n"
    lines.append(lit_header + "|---|" + "---|" * len(PAPER_RATES) + "\n" +
                 "".join(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |\n"
                         for name, values in LITERATURE_TABLE4.items()))
    return "\n".join(lines)


CSV_COLUMNS = ("method", "noise", "rate", "n_seeds", "last_mean", "last_std", "selected_mean", "selected_std", "best_mean",
               "best_std", "paper", "last_minus_paper", "selected_minus_paper", "memorisation_last_mean",
               "realised_noise_rate_mean", "passes_mean", "wall_seconds_mean", "passes_vs_sgd", "wall_vs_sgd", "networks")


def render_csv(rows: list[dict]) -> str:
    """table.csv: one line per (method, rate); empty fields where a value is undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        values = {**r, "n_seeds": len(r["seeds"])}
        writer.writerow(["" if values[c] is None else round(values[c], 3) if isinstance(values[c], float)
                         else values[c] for c in CSV_COLUMNS])
    return out.getvalue()


def write_table(root: Union[str, Path], cells: Optional[list[dict]] = None) -> dict[str, Any]:
    """Aggregate the finished cells under ``root`` (or the given ``cells``) and write table.json,
    table.csv and table.md there atomically; return the table.json content. Cells with an unreadable
    result.json are left out (``skipped`` in table.json, and a :class:`SkippedCellWarning` each); if no
    cell is usable, ValueError (FileNotFoundError if there are none at all) and nothing is written."""
    root = Path(root)
    cells, skipped = _scan(root) if cells is None else (cells, [])
    if not cells and skipped:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise ValueError(f"no usable finished runs under {str(root)!r}: {skipped[0]}{more}")
    if not cells:
        raise FileNotFoundError(f"no finished runs under {str(root)!r} (expected <method>/rate<r>/seed<s>/result.json)")
    for problem in skipped:
        warnings.warn(problem, SkippedCellWarning, stacklevel=2)
    rows = aggregate(cells)
    info = settings(cells)
    table = dict(unit="percent", std="sample std over seeds (ddof=1); null with one seed", cost=COST_NOTE,
                 paper="Foret et al. 2021 (arXiv 2010.01412), Table 4", settings=info, rows=rows,
                 literature={k: dict(zip(map(str, PAPER_RATES), v)) for k, v in LITERATURE_TABLE4.items()},
                 skipped=skipped)
    tuning = read_tuning(root)
    if tuning:
        table["params_from"] = tuning
    write_json(root / "table.json", table)
    atomic_write(root / "table.csv", lambda f: f.write(render_csv(rows)), mode="w")
    atomic_write(root / "table.md", lambda f: f.write(render_markdown(rows, info, tuning)), mode="w")
    return table
