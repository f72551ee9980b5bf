"""The table of a grid (Foret et al., arXiv 2010.01412, Table 4, is the one it reproduces): the finished cells under a
grid's directory (:func:`collect`), their aggregation over seeds (:func:`aggregate`) and table.json, table.csv and
table.md written beside them (:func:`write_table`)::

    ROOT/<method>/rate<r>/seed<s>/      config.json, noisy_labels.npz, metrics.jsonl, result.json, ...
    ROOT/table.json, table.csv, table.md   (written by :func:`write_table`)

The grid's other jobs are modules of their own: the paper's numbers (:mod:`.paper`), the cells and running them
(:mod:`.cells`, :func:`~noisysam.grid.cells.run_grid`), the text of the table (:mod:`.render`). A finished cell
whose result.json is unreadable is skipped with a :class:`SkippedCellWarning` when tabulating. Accuracies in tables
are percentages (the paper's unit); ``result.json`` holds fractions.

Cost sits beside accuracy: per (method, rate) the mean over seeds of the training passes (forward + backward, in
batch equivalents, as :class:`noisysam.run.loop.PassCounter` counts them into result.json) and of the wall seconds,
and both relative to SGD's at the same rate in the same grid, so SAM's two passes per step read 2.0x.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from noisysam.core.deprecation import moved_names
from noisysam.core.files import FileFormatError, atomic_write, schema_problem, write_json
from noisysam.grid import cells as _cells, paper as _paper, render as _render
from noisysam.noise.labels import RATED_KINDS
from noisysam.methods.registry import METHODS
from noisysam.run.rundir import RESULT, RunDir, check_own

TABLE_FILES = ("table.json", "table.csv", "table.md")
#: The figures `noisysam table` and `noisysam compare` draw beside their cells (noisysam.report.plots).
GRID_FIGURES = ("table.png", "cost.png", "compare.png")


def check_grid_out(root: Union[str, Path]) -> None:
    """ValueError unless ``root`` is missing or holds only what a table or a comparison writes there: a folder per
    method (its cells), the table's files and figures and its tuning record. A run directory, a sweep's or a
    detection's folder, or a folder of the user's is refused in one line, before any cell trains: a grid's files
    among theirs would mix two outputs, and their command would then refuse its own folder."""
    check_own(root, "a grid of runs", (*TABLE_FILES, *GRID_FIGURES, _cells.PARAMS_FROM, *METHODS))


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
    for method in _paper._method_order(c["method"] for c in cells):
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
            paper = _paper.paper_value(method, rate) if noise == "symmetric" else None
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
    table = dict(unit="percent", std="sample std over seeds (ddof=1); null with one seed", cost=_render.COST_NOTE,
                 paper="Foret et al. 2021 (arXiv 2010.01412), Table 4", settings=info, rows=rows,
                 literature={k: dict(zip(map(str, _paper.PAPER_RATES), v)) for k, v in _paper.LITERATURE_TABLE4.items()},
                 skipped=skipped)
    tuning = _cells.read_tuning(root)
    if tuning:
        table["params_from"] = tuning
    write_json(root / "table.json", table)
    atomic_write(root / "table.csv", lambda f: f.write(_render.render_csv(rows)), mode="w")
    atomic_write(root / "table.md", lambda f: f.write(_render.render_markdown(rows, info, tuning)), mode="w")
    return table


# Where this module's other names live now (it held the paper's numbers, the grid runner and the table's text until
# they became modules of their own): deprecated aliases until noisysam 0.3.0, as every moved name
# (noisysam.core.deprecation).
__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("PAPER_RATES", "PAPER_METHODS", "PAPER_TABLE4", "LITERATURE_TABLE4", "paper_value"),
                    "noisysam.grid.paper"),
    **dict.fromkeys(("PARAMS_FROM", "TUNING_SCHEMA", "Cell", "params_name", "cell_dir", "grid", "cell_config",
                     "run_grid", "read_tuning"), "noisysam.grid.cells"),
    **dict.fromkeys(("fmt", "fmt_diff", "fmt_ratio", "COST_NOTE", "render_markdown", "CSV_COLUMNS", "render_csv"),
                    "noisysam.grid.render"),
})
