"""Plots a user would rather look at than read: a run's learning curves, runs compared epoch by epoch, a table's
accuracy vs noise rate and against cost, a sweep's accuracy against each swept parameter.

matplotlib is an optional extra (``pip install 'noisysam[plot]'``); it is imported inside the functions,
which raise ImportError when it is missing (the CLI turns that into a one-line note). Figures are built
as ``matplotlib.figure.Figure`` objects without pyplot, so no display or global figure registry is
involved; the ``*_figure`` functions return them (to inspect or restyle), the ``plot_*`` ones write them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

from noisysam.core.files import save_figure
from noisysam.noise.labels import RATED_KINDS, label as noise_label
from noisysam.grid.paper import PAPER_RATES, PAPER_TABLE4
from noisysam.run.rundir import RunDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pct(value):
    return None if value is None else 100.0 * value


def plot_run(run_dir: Union[str, Path], filename: str = "curves.png") -> Path:
    """``run_dir/curves.png``: the learning curves of :func:`run_figure`."""
    return save_figure(run_figure(run_dir), Path(run_dir) / filename)


def run_figure(run_dir: Union[str, Path]) -> Figure:
    """Clean-test accuracy, noisy-validation accuracy and memorisation (share of corrupted training
    samples predicted as their wrong label) in % per epoch, from ``run_dir/metrics.jsonl``.
    For relabel-and-retrain the two stages follow each other, split by a dotted line."""
    from matplotlib.figure import Figure

    run = RunDir(run_dir)
    records = run.metrics()
    x = list(range(1, len(records) + 1))
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    series = (("test_accuracy", "clean test accuracy", "-"), ("val_accuracy", "noisy-val accuracy", "--"),
              ("memorisation", "memorisation (wrong labels fitted)", ":"))
    for key, label, style in series:
        ys = [_pct(r.get(key)) for r in records]
        if any(y is not None for y in ys):
            ax.plot(x, [float("nan") if y is None else y for y in ys], style, marker="o", markersize=3, label=label)
    stage_starts = [i + 1 for i in range(1, len(records)) if records[i]["stage"] != records[i - 1]["stage"]]
    for s in stage_starts:
        ax.axvline(s - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.text(s - 0.4, 2, "retrain on relabels", fontsize=8, color="grey")
    config = run.config().settings if run.config_path.exists() else {}
    title = ", ".join(str(config[k]) for k in ("method", "model", "dataset") if k in config)
    if config:
        title += f"; {noise_label(str(config.get('noise')), config.get('noise_rate', 0))} noise, seed {config.get('seed')}"
    ax.set(xlabel="epoch" + (" (both stages)" if stage_starts else ""), ylabel="%", ylim=(0, 100), title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def plot_compare(out: Union[str, Path], run_dirs: Sequence[Union[str, Path]], filename: str = "compare.png") -> Path:
    """``out/compare.png``: the runs of :func:`compare_figure` side by side."""
    return save_figure(compare_figure(run_dirs), Path(out) / filename)


def compare_figure(run_dirs: Sequence[Union[str, Path]]) -> Figure:
    """Several runs on the same labels, one colour each: clean-test accuracy (left) and the share of wrong training
    labels memorised (right) per epoch, from each ``metrics.jsonl``: where SGD fits the wrong labels and SAM
    resists them (the SAM paper's point, Foret et al., arXiv 2010.01412, Section 4.3)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    acc_ax, mem_ax = fig.subplots(1, 2)
    for run_dir in map(Path, run_dirs):
        run = RunDir(run_dir)
        records, config = run.metrics(), run.config().settings
        x = list(range(1, len(records) + 1))
        for ax, key in ((acc_ax, "test_accuracy"), (mem_ax, "memorisation")):
            ax.plot(x, [_pct(r[key]) for r in records], marker="o", markersize=2, label=config["method"])
    # the runs share their data and labels (noisysam compare trains them so): the last one's config names them
    title = f"{config['dataset']}, {noise_label(str(config['noise']), config['noise_rate'])} noise, seed {config['seed']}"
    for ax, what in ((acc_ax, "clean test accuracy"), (mem_ax, "wrong labels memorised")):
        ax.set(xlabel="epoch", ylabel="%", ylim=(0, 100), title=what)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return fig


def plot_table(table_dir: Union[str, Path], rows: list[dict], filename: str = "table.png") -> Path:
    """``table_dir/table.png``: the accuracy-vs-noise plot of :func:`table_figure`."""
    return save_figure(table_figure(rows), Path(table_dir) / filename)


def table_figure(rows: list[dict]) -> Figure:
    """Clean-test accuracy at the last epoch vs noise rate (%), one colour per method (mean ``last_mean``,
    error bars ``last_std`` over seeds), with the paper's Table 4 values dashed in the same colour for the methods
    run under its symmetric noise. A kind without a rate (CIFAR-10N) sits at its realised rate."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks = {100 * r for r in PAPER_RATES}
    for i, method in enumerate(methods):
        colour = colours[i % len(colours)]
        mine = sorted((r for r in rows if r["method"] == method and r["last_mean"] is not None), key=lambda r: r["rate"])
        x = [100 * r["rate"] if r["noise"] in RATED_KINDS else r["realised_noise_rate_mean"] for r in mine]
        ticks.update(x)
        ax.errorbar(x, [r["last_mean"] for r in mine],
                    yerr=[r["last_std"] or 0.0 for r in mine], color=colour, marker="o", capsize=3, label=method)
        if method in PAPER_TABLE4 and any(r["noise"] == "symmetric" for r in mine):
            ax.plot([100 * r for r in PAPER_RATES], PAPER_TABLE4[method], "--", color=colour, marker="x", alpha=0.7)
    ax.plot([], [], "--", color="grey", marker="x", label="paper (Table 4)")
    ax.set(xlabel="noise rate (%)", ylabel="clean test accuracy, last epoch (%)",
           ylim=(0, 100), title="Accuracy under label noise: this run (solid) vs the SAM paper (dashed)")
    ax.set_xticks(sorted(ticks))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_cost(table_dir: Union[str, Path], rows: list[dict], filename: str = "cost.png") -> Path:
    """``table_dir/cost.png``: accuracy against cost, :func:`cost_figure`."""
    return save_figure(cost_figure(rows), Path(table_dir) / filename)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points that no other point beats, i.e. none is at most as costly and more accurate,
    nor cheaper and as accurate; sorted by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def cost_figure(rows: list[dict], cost: str = "wall") -> Figure:
    """Accuracy against cost, one panel per noise rate: clean-test accuracy at the last epoch (%, ``last_mean``,
    error bars ``last_std`` over seeds) against wall time relative to sgd at that rate (``wall_vs_sgd`` of
    :func:`noisysam.grid.table.aggregate`), one labelled point per method in the same colour in every panel, and the
    frontier (:func:`pareto_front`) dotted. Wall time by default: it is what a user pays, and it includes what
    passes miss (a variant's extra vector work, evaluation); ``cost="passes"`` puts the counted training passes
    relative to sgd (``passes_vs_sgd``) on the x axis instead, exact where the runs' wall times are not (runs
    that shared a machine or were paused). Rows lacking either value are left out; ValueError if no row has both
    (a grid without sgd, or only runs from before cost was counted)."""
    import matplotlib
    from matplotlib.figure import Figure

    axes_of = {"wall": ("wall_vs_sgd", "wall time"), "passes": ("passes_vs_sgd", "training passes")}
    if cost not in axes_of:
        raise ValueError(f"cost must be one of {sorted(axes_of)}, got {cost!r}")
    key, words = axes_of[cost]
    drawn = [r for r in rows if r["last_mean"] is not None and r[key] is not None]
    if not drawn:
        raise ValueError(f"rows: none has both a last-epoch accuracy and a {words} relative to sgd; accuracy "
                         "against cost needs sgd in the grid at the same rates")
    rates = sorted({r["rate"] for r in drawn})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    fig = Figure(figsize=(1.5 + 4 * len(rates), 4.5))
    axes = fig.subplots(1, len(rates), sharey=True, squeeze=False)[0]
    for ax, rate in zip(axes, rates):
        mine = [r for r in drawn if r["rate"] == rate]
        for r in mine:
            colour = colours[methods.index(r["method"]) % len(colours)]
            x, y = r[key], r["last_mean"]
            ax.errorbar([x], [y], yerr=[r["last_std"] or 0.0], color=colour, marker="o", capsize=3, label=r["method"])
            ax.annotate(r["method"], (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, color=colour)
        front = pareto_front([(r[key], r["last_mean"]) for r in mine])
        ax.plot(*zip(*front), ":", color="grey", zorder=0, label="frontier")
        heading = mine[0]["column"]  # "40%", or a rateless kind's name and realised rate
        ax.set(title=f"{heading} noise" if mine[0]["noise"] in RATED_KINDS else heading,
               xlabel=f"{words} relative to sgd (×)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("clean test accuracy, last epoch (%)")
    fig.suptitle("Accuracy against cost (mean ± std over seeds; dotted: no method is cheaper and more accurate)",
                 fontsize=10)
    return fig


def plot_sweep(sweep_dir: Union[str, Path], content: dict, filename: str = "sweep.png") -> Path:
    """``sweep_dir/sweep.png``: the accuracy-vs-parameter plot of :func:`sweep_figure`."""
    return save_figure(sweep_figure(content), Path(sweep_dir) / filename)


def sweep_figure(content: dict) -> Figure:
    """A hyperparameter sweep (``sweep.json`` content, :mod:`noisysam.grid.sweep`; Foret et al., arXiv 2010.01412,
    Section 3.3): one row of axes per noise rate, one column per swept parameter; in each, the mean validation
    (solid, o) and test (dashed, x) accuracy at the last epoch against that parameter's values (evenly spaced, in
    the order swept), one colour per combination of the other parameters. A star marks the rate's choice."""
    import matplotlib
    from matplotlib.figure import Figure

    names, rows = list(content["params"]), content["rows"]
    rates = list(dict.fromkeys(r["rate"] for r in rows))
    chosen = {c["rate"]: c["params"] for c in content["choices"]}
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    fig = Figure(figsize=(4.5 * len(names), 3.4 * len(rates)))
    axes = fig.subplots(len(rates), len(names), squeeze=False)
    for ax_row, rate in zip(axes, rates):
        mine = [r for r in rows if r["rate"] == rate]
        for ax, name in zip(ax_row, names):
            values = content["params"][name]
            others = [n for n in names if n != name]
            for i, key in enumerate(dict.fromkeys(tuple(r["params"][n] for n in others) for r in mine)):
                line = [next(r for r in mine if r["params"][name] == v and tuple(r["params"][n] for n in others) == key)
                        for v in values]
                label = ", ".join(f"{n}={k}" for n, k in zip(others, key)) or None
                colour = colours[i % len(colours)]
                ax.plot(range(len(values)), [r["val_mean"] for r in line], "-o", color=colour, label=label)
                ax.plot(range(len(values)), [r["test_mean"] for r in line], "--x", color=colour)
                best = chosen.get(rate)
                if best is not None and all(best[n] == k for n, k in zip(others, key)):
                    at = values.index(best[name])
                    ax.plot([at], [line[at]["val_mean"]], "*", color=colour, markersize=14)
            ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.set(xlabel=name, ylabel="accuracy, last epoch (%)", title=f"{content['method']}, noise {rate:.0%}")
            ax.grid(alpha=0.3)
            ax.plot([], [], "-o", color="grey", label=f"validation ({content['select']} labels)")
            ax.plot([], [], "--x", color="grey", label="test")
            ax.legend(fontsize=7, loc="best")
    return fig
