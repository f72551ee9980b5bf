"""The SAM paper's hyperparameter search (Foret et al., arXiv 2010.01412, Section 3.3): train a grid of a
method's parameter values x noise rates x seeds, and per noise rate pick the combination with the best
validation accuracy on a split held out of the training set (the paper chose rho on a clean 10% split and
tuned mixup's alpha per rate over {1, 8, 16, 32}).

A sweep lives in one directory, one run directory per cell (:func:`noisysam.grid.cells.run_grid`, so it resumes
and skips finished cells like the table)::

    ROOT/<method>/<name>=<value>,.../rate<r>/seed<s>/    e.g. ROOT/sam/rho=0.05,m=16/rate0.6/seed0/
    ROOT/sweep.json, sweep.md (and sweep.png)             written by :func:`write_sweep`

Selection rule (:data:`RULE`): per rate, the combination whose validation accuracy at the last epoch,
averaged over seeds, is highest; ties (equal to 1e-9) go to the combination listed first. Last epoch,
because the paper's table reports the last epoch's model: the value chosen is the one whose final model
does best. The test set is never read to choose; its accuracy is only reported beside. ``select="clean"``
labels the validation split with the clean labels (the paper's protocol); ``"noisy"`` keeps its noisy labels
(no clean labels needed, honest for real noisy data).

``noisysam table --params-from ROOT`` trains that method's cells at each rate with the choice for that rate
(:func:`tuned`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from noisysam.core.files import FileFormatError, atomic_write, read_json, write_json
from noisysam.methods.registry import get_method, method_info, takes_param
from noisysam.grid.cells import PARAMS_FROM, Cell, cell_config, cell_dir, grid, params_name, read_tuning, run_grid
from noisysam.grid.render import fmt
from noisysam.grid.table import mean_std, settings
from noisysam.run.config import CONFIG_PARAMS, METHOD_FIELDS, TrainConfig
from noisysam.run.rundir import RESULT_SCHEMA, check_not_a_run, check_own, config_diff, saved_config

SWEEP_FILES = ("sweep.json", "sweep.md")

#: How validation labels are chosen (``--select``): the TrainConfig ``val_labels`` each gives.
SELECT = ("clean", "noisy")

RULE = ("per noise rate, the parameter combination with the highest validation accuracy at the last epoch, "
        "averaged over seeds (ties, equal to 1e-9: the combination listed first); the test set is not read")

#: What the selection reads from a cell's result.json, beside what the table reads.
SWEEP_RESULT_SCHEMA: dict[str, Any] = {**RESULT_SCHEMA, "val_accuracy_last": (int, float)}

#: What ``table --params-from`` reads from a sweep.json.
SWEEP_SCHEMA: dict[str, Any] = {"method": str, "seeds": list, "choices": list}

_SCALAR = (bool, int, float, str, type(None))
_NAME_SAFE = re.compile(r"[A-Za-z0-9_.+-]+")


def _method_param(name: str) -> str:
    """The method parameter a swept name fills: a METHOD_FIELDS field's (``mixup_alpha`` -> ``alpha``), else itself."""
    return METHOD_FIELDS.get(name, name)


def check_params(method: str, params: Mapping[str, Sequence[Any]],
                 fixed: Optional[Mapping[str, Any]] = None) -> dict[str, list]:
    """``params`` (name -> values to try) checked for ``method``: each name a TrainConfig field that goes to the
    method (:data:`~noisysam.run.config.METHOD_FIELDS`: rho, mixup_alpha) or a parameter of the method (e.g. sam's m),
    no two names for one parameter, each value list non-empty, without repeats, and every combination, with the
    method parameters held ``fixed``, allowed by the method's constraints (:mod:`noisysam.core.params`; values may
    depend on each other, as bootstrap's beta on its mode). Raises ValueError naming the first problem."""
    CONFIG_PARAMS.check({"method": method})
    if not params:
        raise ValueError(f"params must name at least one parameter of method {method!r} to sweep, got none")
    taken = list(method_info(method).params)
    out: dict[str, list] = {}
    for name, values in params.items():
        if not takes_param(method, _method_param(name)):
            raise ValueError(f"method {method!r} takes no parameter {name!r}; it takes {taken} (rho and mixup_alpha "
                             "as the TrainConfig fields of those names)")
        same = [other for other in out if _method_param(other) == _method_param(name)]
        if same:
            raise ValueError(f"{name} and {same[0]} are one parameter of method {method!r}; sweep it once")
        values = list(values)
        if not values:
            raise ValueError(f"{name} needs at least one value to try, got none")
        for i, value in enumerate(values):
            if not isinstance(value, _SCALAR) or (isinstance(value, str) and not _NAME_SAFE.fullmatch(value)):
                raise ValueError(f"{name} values must be numbers, booleans, null or plain words (letters, digits, "
                                 f"._+-), got {value!r}")
            if any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in values[:i]):  # 1 is not true
                raise ValueError(f"{name} has the value {value!r} twice")
            if name in METHOD_FIELDS:
                CONFIG_PARAMS.check({name: value})
        out[name] = values
    own = [name for name in out if name not in METHOD_FIELDS]
    for values in itertools.product(*(out[name] for name in own)):
        get_method(method, **{**(fixed or {}), **dict(zip(own, values))})  # the method's own constraint table
    return out


@dataclass(frozen=True)
class Sweep:
    """What a sweep tries: ``method`` with every combination of ``params`` (name -> values, in the order given)
    at each noise rate of ``rates`` for each seed of ``seeds``, validated on ``select`` labels ("clean" or
    "noisy"), with the method parameters ``fixed`` (the grid's ``method_params``) held the same in every cell.
    Checked when made (ValueError: :func:`check_params`, empty rates or seeds, an unknown select)."""

    method: str
    params: dict[str, list]
    rates: tuple[float, ...]
    seeds: tuple[int, ...]
    select: str = "clean"
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", check_params(self.method, self.params, self.fixed))
        object.__setattr__(self, "rates", tuple(self.rates))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        for name in ("rates", "seeds"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        for name, values in (("noise_rate", self.rates), ("seed", self.seeds)):
            for value in values:
                CONFIG_PARAMS.check({name: value})
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {list(SELECT)}, got {self.select!r}")

    def combos(self) -> list[dict[str, Any]]:
        """Every combination of the values, the first parameter varying slowest (itertools.product order)."""
        return [dict(zip(self.params, values)) for values in itertools.product(*self.params.values())]

    def cells(self, root: Union[str, Path]) -> list[Cell]:
        """The grid's cells under ``root``: combination, then rate, then seed. A ``root`` that holds anything but
        a sweep of this method (another method's sweep, a table, a run, a folder of yours) is refused (ValueError)."""
        check_out(root, self.method)
        return grid(root, [self.method], self.rates, self.seeds, self.combos())

    def config(self, config: TrainConfig) -> TrainConfig:
        """The grid's options: ``config`` with the validation labels ``select`` asks for; a config without a
        validation split (``val_fraction`` 0) gives nothing to select on and is refused."""
        if config.val_fraction == 0:
            raise ValueError("val_fraction must be > 0 for a sweep: the choice is made on the validation split")
        return dataclasses.replace(config, val_labels=self.select)


def check_out(root: Union[str, Path], method: str) -> None:
    """ValueError unless ``root`` is new or holds a sweep of ``method`` (its sweep.json, files and cells) or what is
    left of one: a sweep directory has one writer's kind of content, so a sweep of another method never replaces its
    sweep.json."""
    root, what = Path(root), f"a sweep of {method}"
    check_not_a_run(root, "a grid of runs")
    path = root / "sweep.json"
    if path.is_file():
        theirs = read_json(path, SWEEP_SCHEMA, "sweep result")["method"]
        if theirs != method:
            raise ValueError(f"{str(root)!r} holds a sweep of {theirs} (its sweep.json), not a place for {what}; "
                             "choose another out")
    check_own(root, what, (*SWEEP_FILES, "sweep.png", method))


def run_sweep(root: Union[str, Path], sweep: Sweep, config: TrainConfig, **run: Any) -> dict:
    """Train the sweep's unfinished cells into ``root`` (:func:`noisysam.grid.cells.run_grid`; ``run``: its executor,
    callback, on_cell, watch), then write and return sweep.json (:func:`write_sweep`)."""
    cells = sweep.cells(root)
    run_grid(cells, sweep.config(config), **run)
    return write_sweep(root, sweep, cells)


def _results(cells: Sequence[Cell]) -> dict[Cell, dict]:
    """Each cell's result.json with what the selection reads; ValueError naming the first cell not finished."""
    for cell in cells:
        if not cell.finished:
            raise ValueError(f"cell {str(cell.dir)!r} has not finished; run the sweep again to train it")
    return {cell: cell.result(SWEEP_RESULT_SCHEMA) for cell in cells}


def summarise(cells: Sequence[Cell], results: Mapping[Cell, dict]) -> list[dict]:
    """One row per (rate, combination), in the cells' order: mean +- std over seeds (%, sample std, None for one
    seed) of the last epoch's validation and test accuracy, from each cell's ``results``."""
    rows = []
    for rate in dict.fromkeys(c.rate for c in cells):
        for combo in dict.fromkeys(c.params for c in cells):
            group = [c for c in cells if c.rate == rate and c.params == combo]
            val, val_std = mean_std([100.0 * results[c]["val_accuracy_last"] for c in group])
            test, test_std = mean_std([100.0 * results[c]["test_accuracy"]["last"] for c in group])
            rows.append(dict(rate=rate, params=dict(combo), name=params_name(combo), seeds=[c.seed for c in group],
                             val_mean=val, val_std=val_std, test_mean=test, test_std=test_std))
    return rows


def choose(rows: Sequence[dict]) -> list[dict]:
    """Per rate (in row order) the row with the highest ``val_mean``; of rows within 1e-9 of it, the first.
    Reads nothing but ``rate`` and ``val_mean``: the test accuracy plays no part."""
    choices = []
    for rate in dict.fromkeys(r["rate"] for r in rows):
        group = [r for r in rows if r["rate"] == rate]
        best = max(r["val_mean"] for r in group)
        choices.append(next(r for r in group if math.isclose(r["val_mean"], best, rel_tol=0, abs_tol=1e-9)))
    return choices


def write_sweep(root: Union[str, Path], sweep: Sweep, cells: Sequence[Cell]) -> dict:
    """Summarise the sweep's finished ``cells`` and write sweep.json and sweep.md into ``root`` atomically;
    return the sweep.json content (the grid, the rule, every row, the choice per rate, the cells' settings)."""
    root = Path(root)
    results = _results(cells)
    rows = summarise(cells, results)
    choices = choose(rows)
    found = [dict(result=result) for result in results.values()]
    content = dict(method=sweep.method, params=sweep.params, rates=list(sweep.rates), seeds=list(sweep.seeds),
                   select=sweep.select, rule=RULE, unit="percent",
                   std="sample std over seeds (ddof=1); null with one seed",
                   paper="Foret et al. 2021 (arXiv 2010.01412), Section 3.3: rho chosen on a held-out 10% split",
                   settings=settings(found), rows=rows, choices=choices)
    write_json(root / "sweep.json", content)
    atomic_write(root / "sweep.md", lambda f: f.write(render_markdown(content)), mode="w")
    return content


def render_markdown(content: dict) -> str:
    """sweep.md: per rate, every combination's validation and test accuracy, the chosen one in bold."""
    names = list(content["params"])
    lines = [f"# noisysam sweep: {content['method']} over {', '.join(names)}\n",
             f"Accuracy (%) at the last epoch, mean ± std over seeds {content['seeds']}; validation on the held-out "
             f"split with {content['select']} labels. Choice: {content['rule']}.\n",
             "Settings: " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in content["settings"].items()) + "\n"]
    chosen_keys = {(c["rate"], c["name"]) for c in content["choices"]}
    for rate in dict.fromkeys(r["rate"] for r in content["rows"]):
        lines.append(f"## noise rate {rate:.0%}\n")
        body = "| " + " | ".join(names) + " | validation | test |\n|" + "---|" * (len(names) + 2) + "\n"
        for r in (r for r in content["rows"] if r["rate"] == rate):
            mark = "**" if (rate, r["name"]) in chosen_keys else ""
            values = [f"{mark}{r['params'][n]}{mark}" for n in names]
            body += (f"| {' | '.join(values)} | {mark}{fmt(r['val_mean'], r['val_std'])}{mark} "
                     f"| {fmt(r['test_mean'], r['test_std'])} |\n")
        lines.append(body)
    return "\n".join(lines)


def read_choices(sweep_dir: Union[str, Path]) -> dict:
    """The sweep in ``sweep_dir`` as ``table --params-from`` uses it: ``method``, ``dir``, ``choices``
    (rate -> parameters) and ``seed`` (its first, whose chosen run the table checks its settings against).
    FileFormatError for a sweep.json that is unreadable or lacks them."""
    path = Path(sweep_dir) / "sweep.json"
    content = read_json(path, SWEEP_SCHEMA, "sweep result")
    choices = {}
    for choice in content["choices"]:
        if not (isinstance(choice, dict) and isinstance(choice.get("rate"), (int, float))
                and isinstance(choice.get("params"), dict)):
            raise FileFormatError(path, "each of 'choices' must be an object with a number 'rate' and "
                                        "an object 'params'", "sweep result")
        choices[float(choice["rate"])] = choice["params"]
    seeds = content["seeds"]
    if not (seeds and all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds)):
        raise FileFormatError(path, "'seeds' must be a non-empty list of integers", "sweep result")
    return dict(method=content["method"], dir=str(sweep_dir), choices=choices, seed=seeds[0])


def tuned(cells: Sequence[Cell], sweep_dirs: Sequence[Union[str, Path]],
          config: Optional[TrainConfig] = None) -> tuple[list[Cell], dict]:
    """``cells`` of a table with each swept method's cells set to the sweep's choice at their rate ("tuned per
    rate", as the paper reports mixup), and what came from where: method -> {sweep, choices {rate: params}}.
    ValueError for two sweeps of one method, a sweep of a method the cells lack, or a rate a sweep has no
    choice for; the cells' directories stay the table's. With the table's ``config``, also for a tuned cell
    whose settings differ from those the choice was made under (the chosen run's config.json, seed and
    validation labels aside): a choice is only carried over to the settings it was chosen for."""
    sweeps: dict[str, dict] = {}
    for sweep_dir in sweep_dirs:
        sweep = read_choices(sweep_dir)
        first = sweeps.setdefault(sweep["method"], sweep)
        if first is not sweep:
            raise ValueError(f"two sweeps of method {sweep['method']!r} ({first['dir']!r} and {sweep['dir']!r}); "
                             "give one per method")
    methods = sorted({c.method for c in cells})
    for method, sweep in sweeps.items():
        if method not in methods:
            raise ValueError(f"the sweep in {sweep['dir']!r} tunes method {method!r}, which the table does not "
                             f"train (methods {methods})")
    out, used = [], {}
    for cell in cells:
        sweep = sweeps.get(cell.method)
        if sweep is None:
            out.append(cell)
            continue
        rate = next((r for r in sweep["choices"] if math.isclose(r, cell.rate)), None)
        if rate is None:
            raise ValueError(f"the sweep of {cell.method!r} in {sweep['dir']!r} has no choice for noise rate "
                             f"{cell.rate:g} (it has {sorted(sweep['choices'])}); sweep that rate too")
        params = sweep["choices"][rate]
        used.setdefault(cell.method, dict(sweep=sweep["dir"], choices={}))["choices"][f"{cell.rate:g}"] = params
        out.append(dataclasses.replace(cell, params=tuple(params.items())))
        if config is not None:
            _check_chosen_under(config, out[-1], sweep, rate)
    return out, used


def _check_chosen_under(config: TrainConfig, cell: Cell, sweep: dict, rate: float) -> None:
    """ValueError naming the settings in which the table's tuned ``cell`` differs from the sweep's chosen run at
    ``rate`` (e.g. a rho held fixed in the sweep, epochs, model), or when that run's config.json is missing."""
    mine = cell_config(config, cell).resolved().to_dict()
    chosen = cell_dir(sweep["dir"], cell.method, rate, sweep["seed"], cell.params)
    try:
        theirs = saved_config(chosen)
    except (OSError, ValueError) as e:
        raise ValueError(f"the sweep of {cell.method!r} in {sweep['dir']!r} has no readable run for its choice at "
                         f"noise rate {rate:g} ({e}); the table needs it to check that the settings match") from None
    # each table seed uses the choice; the table validates on its own labels
    diff = config_diff(theirs, mine, ignore=("seed", "val_labels"))
    if diff:
        what = ", ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in diff)
        raise ValueError(f"the sweep of {cell.method!r} in {sweep['dir']!r} chose its values under other settings "
                         f"than this table's: {what}; give the table the sweep's options")


def record_tuning(root: Union[str, Path], used: Mapping[str, dict]) -> None:
    """Write ``root``/params_from.json: per tuned method the sweep directory and the parameters taken at each rate
    (``used`` from :func:`tuned`), merged into what an earlier run recorded for other methods. A cell's config.json
    holds the values (its rho, method_params) but has no field for their origin; the table records it here."""
    write_json(Path(root) / PARAMS_FROM, {**read_tuning(root), **used})
