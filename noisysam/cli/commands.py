"""The ``noisysam`` subcommands (train, compare, table, sweep, noise, detect, info): each parses its options
(:mod:`noisysam.cli.options`), calls the Python API (``noisysam.train``, ``noisysam.grid``, ``noisysam.noise``) and
shows the result through :mod:`noisysam.report.console`; failures go through :mod:`noisysam.cli.errors`. No
training logic of its own.

Exit codes: 0 done; 2 bad input (unknown name, value out of range, missing or wrong file, an existing
run directory without ``--resume``, a run directory in use by another run, a ``--resume`` whose dataset,
labels or noisysam version changed; a garbage, empty, truncated, pickle-carrying or oversized dataset,
labels file, checkpoint or run file, named in the message), reported as one line on stderr before anything is written;
1 training diverged or another runtime failure; 130 interrupted (the run resumes with ``--resume``).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import warnings
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np
import torch
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from noisysam.core.version import __version__
from noisysam.cli import config_file
from noisysam.run import distributed
from noisysam.grid import executors
from noisysam.grid import sweep as sweeps
from noisysam.grid import cells as grid_cells
from noisysam.grid import table as grid
from noisysam.grid.paper import PAPER_METHODS, PAPER_RATES
from noisysam.core.assets import find_data_file
from noisysam.data.datasets import load_dataset
from noisysam.detect.cleaning import CLEAN_MODES, cleaned
from noisysam.detect.detection import find_label_issues
from noisysam.detect.record import DYNAMICS_SCORES, default_out
from noisysam.core.files import to_jsonable
from noisysam.methods.learner import LearnerMethod
from noisysam.methods.registry import METHODS
from noisysam.models.networks import MODELS
from noisysam.noise.labels import KINDS, NoisyLabels
from noisysam.run.tensorboard import LOG_DIR as TENSORBOARD_DIR, log_finished_run
from noisysam.run.config import PROFILES, TrainConfig, amp_choice, build_method, resolve_device
from noisysam.run.loop import chain, train
from noisysam.run.rundir import RunDir, noise_labels
from noisysam.cli.errors import Group, fail, user_errors
from noisysam.cli.options import (DEFAULT, SWEEP_TRAINING, TRAINING, config_option, execution_options, given_options,
                                  list_of, options, param_values, set_threads, tensorboard_logger,
                                  tensorboard_option, threads_option)
from noisysam.report import plots
from noisysam.report.console import (GridProgress, RunProgress, detection_table, grid_table, pct, show_labels,
                                     show_plot, summary_table, sweep_table)


@click.group(cls=Group, context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
@click.version_option(__version__, prog_name="noisysam")
def cli() -> None:
    """Train image classifiers on noisy labels with Sharpness-Aware Minimization (SAM), and reproduce
    the label-noise table of the SAM paper (Foret et al. 2021, Table 4)."""


def main() -> None:
    """Console entry point (``noisysam``)."""
    cli.main()


def _saved(out: str) -> TrainConfig:
    """The config saved in run directory ``out`` (what ``--resume`` continues)."""
    try:
        return RunDir(out).config().train_config()
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot resume {out!r}: its config.json is unreadable or from another version ({e})") from None


@cli.command("train")
@options("method", "noise_rate", "seed", *TRAINING, "sam_sync", "sync_bn")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (config, labels, metrics, result, "
                                                                "checkpoint). Without it nothing is saved.")
@click.option("--nproc", type=click.IntRange(min=1),
              help="Train this one run data-parallel (DDP) on N local processes, one GPU each on CUDA, started by "
                   "torch's elastic launcher (as torchrun --nproc_per_node N -m noisysam train does).")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its saved settings (options given "
                                             "now must agree with them; its dataset, labels and noisysam version "
                                             "must be those it started with).")
@click.option("--json", "as_json", is_flag=True, help="Print result.json to stdout and nothing else.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write curves.png into --out.")
@threads_option
@tensorboard_option
@config_option()
@click.option("--print-config", is_flag=True, help="Print the resolved options as TOML for --config, and exit.")
@click.option("--labels-from", "labels_from", type=click.Path(file_okay=False),
              help="Retrain on the labels of a `noisysam detect` directory, cleaned as --mode says (instead of "
                   "--noise); config.json records the detection, its score and how many labels changed.")
@click.option("--mode", "clean_mode", type=click.Choice(CLEAN_MODES), default="relabel", show_default=True,
              help="With --labels-from: drop the flagged samples from the training set, or relabel them with the "
                   "suggested label.")
@click.pass_context
def train_command(ctx: click.Context, out: Optional[str], nproc: Optional[int], resume: bool, as_json: bool,
                  plot: bool, threads: Optional[int], tensorboard: bool, print_config: bool, labels_from: Optional[str],
                  clean_mode: str, **_: Any) -> None:
    """Train one run on noisy labels and report clean-test accuracy (last, selected, best epoch)."""
    set_threads(threads)
    if resume and not out:
        raise click.UsageError("--resume needs --out DIR (the run directory to continue)")
    if tensorboard and not out and not print_config:
        raise click.UsageError("--tensorboard needs --out DIR (the log goes to DIR/tensorboard)")
    # One contract for the command line and a --config file: labels from a detection take no noise settings.
    if labels_from and any(ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)
                           for n in ("noise", "noise_rate")):
        raise click.UsageError("--labels-from gives the labels: it takes no --noise or --noise-rate (on the command "
                               "line or in a --config file)")
    if labels_from and nproc and nproc > 1:
        raise click.UsageError("--labels-from trains in one process: it does not take --nproc")
    console = Console(stderr=as_json)
    again = (f" --nproc {nproc}" if nproc and nproc > 1 else "") + (
        f" --labels-from {labels_from} --mode {clean_mode}" if labels_from else "")
    hint = (f"interrupted; continue with: noisysam train --out {out} --resume{again}" if out
            else "interrupted; nothing was saved (pass --out DIR to make a run resumable)")
    with user_errors(hint):
        base = _saved(out) if resume and RunDir(out).config_path.is_file() else DEFAULT
        config = dataclasses.replace(base, **given_options(ctx, ("method", "noise_rate", "seed", "sam_sync", "sync_bn")
                                                      + TRAINING), out=out, resume=resume)
        if print_config:
            header = "noisysam train --config FILE reads this; options given on the command line override it."
            values = config_file.resolved_values(ctx, config)
            if labels_from:  # the detection gives the labels: no noise settings, so that the file reads back
                values.update(noise=None, noise_rate=None)
            click.echo(config_file.dumps(values, header), nl=False)
            return
        data = {}
        if labels_from:
            given = load_dataset(ctx.params["dataset"], root=ctx.params["data_root"], download=ctx.params["download"])
            data = dict(zip(("dataset", "noise"), cleaned(labels_from, clean_mode, given)))
        if nproc and nproc > 1:
            # bad settings are refused here, at once, rather than by each process once started
            if isinstance(build_method(config.resolved()), LearnerMethod):
                raise click.UsageError(f"method {config.method!r} keeps per-sample state or trains several networks: "
                                       "it trains in one process, without --nproc")
            summary, run_dir = _launch(nproc, config, threads, tensorboard)
        else:
            with RunProgress(console) as progress, tensorboard_logger(tensorboard) as logger:
                result = train(config, callback=chain(progress, logger), **data)
            summary, run_dir = result.summary, result.run_dir
        if distributed.env_rank() != 0:  # torchrun: rank 0 reports and writes
            return
        if tensorboard and not Path(out, TENSORBOARD_DIR).exists():  # resumed a run finished without the logger
            log_finished_run(out)
    if as_json:
        click.echo(RunDir(out).result_path.read_text().rstrip() if out else json.dumps(to_jsonable(summary), indent=2))
    else:
        console.print(summary_table(summary, run_dir))
    if out and plot:  # after the table: the last line a new user sees names the picture
        show_plot(console, plots.plot_run, out)
    if tensorboard:
        log = Path(out, TENSORBOARD_DIR)
        console.print(escape(f"tensorboard log: {log} (view: tensorboard --logdir {log})"), style="dim", soft_wrap=True)


def _launch(nproc: int, config: TrainConfig, threads: Optional[int],
            tensorboard: bool) -> tuple[dict, Optional[Path]]:
    """``--nproc``: run :func:`_rank` in ``nproc`` processes under torch's elastic launcher; rank 0's
    (summary, run directory). A failed rank has reported itself: exit with its code."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in ("torch.distributed.elastic", "torch.multiprocessing"):  # the ranks report for themselves
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return distributed.launch(nproc, _rank, dataclasses.asdict(config), threads, tensorboard)
    except ChildFailedError as e:
        rank = min(e.failures)
        failure = e.failures[rank]
        if Path(failure.error_file).is_file():  # an exception the rank did not report itself: name it
            message = failure.message
            fail(f"rank {rank}: {message['message'] if isinstance(message, dict) else message}", 1)
        raise SystemExit(failure.exitcode) from None
    except SignalException:  # Ctrl-C reached the launcher: the ranks stop after their last checkpoint
        raise KeyboardInterrupt from None


def _rank(config: dict, threads: Optional[int], tensorboard: bool) -> tuple[dict, Optional[Path]]:
    """One process of ``noisysam train --nproc N`` (a spawned process: bad input and interruptions end it with
    the CLI's exit codes); rank 0 shows the progress and logs to TensorBoard (train() calls back on rank 0 only)."""
    set_threads(threads)
    with user_errors("interrupted"), RunProgress(Console()) as progress, \
            tensorboard_logger(tensorboard) as logger:
        result = train(TrainConfig(**config), callback=chain(progress, logger))
    return result.summary, result.run_dir


def _render(console: Console, root: Path, plot: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grid.SkippedCellWarning)  # reported below, one line each
        table = grid.write_table(root)
    for problem in table["skipped"]:
        click.echo(f"warning: a cell was skipped: {problem}", err=True)
    console.print(grid_table(table, root))
    console.print(escape(f"wrote {', '.join(str(root / f) for f in grid.TABLE_FILES)}"), style="dim", soft_wrap=True)
    if plot:
        show_plot(console, plots.plot_table, root, table["rows"])
        show_plot(console, plots.plot_cost, root, table["rows"])


def _executor(ctx: click.Context, executor_name: str, jobs: int, threads: Optional[int], cells_per_gpu: int,
              address: Optional[str]) -> executors.Executor:
    """The executor the --executor/--jobs/--threads/--cells-per-gpu/--address options ask for."""
    given = lambda name: ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    if executor_name == "ray":
        if given("jobs"):
            raise click.UsageError("--jobs is for --executor local; Ray runs as many cells at once as the cluster "
                                   "has resources for (--threads CPUs and 1/--cells-per-gpu GPU each)")
        try:
            return executors.RayExecutor(address, threads or 1, cells_per_gpu)
        except (ImportError, ValueError) as e:  # no ray, or nothing answers at the address
            fail(str(e), 2)
    if address:
        raise click.UsageError("--address is for --executor ray")
    return executors.InProcess(threads) if jobs == 1 else executors.LocalProcesses(jobs, threads, cells_per_gpu)


def _train_grid(console: Console, cells: list[grid_cells.Cell], config: TrainConfig,
                executor: executors.Executor, plot: bool, tensorboard: bool) -> Optional[executors.CellsFailed]:
    """Train a grid command's cells (cells.run_grid) with live progress, a line per finished cell, its curves.png
    (``plot``) and TensorBoard logs; the failed cells (the others finished), or None."""
    progress = GridProgress(console, len(cells))

    def finished(cell: grid_cells.Cell, summary: dict, skipped: bool) -> None:
        acc = summary["test_accuracy"]
        how = "already finished" if skipped else f"{summary['wall_seconds']:.0f} s"
        progress.report(cell.label(config.noise), f"last {pct(acc['last'])}, selected {pct(acc['selected'])} ({how})")
        if plot and not skipped:
            show_plot(progress.progress.console, plots.plot_run, str(cell.dir))
        if tensorboard and skipped and not (cell.dir / TENSORBOARD_DIR).exists():  # finished without the logger
            log_finished_run(cell.dir)

    try:
        with progress, tensorboard_logger(tensorboard) as logger:
            grid_cells.run_grid(cells, config, executor=executor, callback=logger, on_cell=finished, watch=progress)
    except executors.CellsFailed as e:
        return e
    return None


def _interrupted(root: Path) -> str:
    return (f"interrupted; every worker stopped. Continue with the same command: finished runs in {root} are kept, "
            "the others resume from their last epoch")


@cli.command("compare")
@click.option("--methods", default="sgd,sam", show_default=True, callback=list_of(str, "method"),
              help="Comma-separated methods, trained at once on the same noisy labels (one process each).")
@options("noise_rate", "seed", *TRAINING)
@click.option("--out", type=click.Path(file_okay=False), default="runs/compare", show_default=True,
              help="Directory of the runs (OUT/<method>/rate<r>/seed<s>) and compare.png; re-running resumes.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write OUT/compare.png.")
@threads_option
@config_option("methods")
@click.pass_context
def compare_command(ctx: click.Context, methods: list[str], noise_rate: float, seed: int, out: str, plot: bool,
                    threads: Optional[int], **_: Any) -> None:
    """Train a few methods side by side on the same noisy labels (default: SGD and SAM at the given --noise-rate),
    print each one's summary and draw clean test accuracy and wrong labels memorised per epoch, one line per
    method (OUT/compare.png)."""
    console = Console()
    # one process per method, each with cores // methods threads unless --threads: the grids' local executor
    executor = _executor(ctx, "local", len(methods), threads, cells_per_gpu=1, address=None)
    config = dataclasses.replace(DEFAULT, **given_options(ctx, ("noise_rate", "seed") + TRAINING))
    root = Path(out)
    with user_errors(_interrupted(root)):
        grid.check_grid_out(root)
        cells = grid_cells.grid(root, methods, [config.noise_rate], [config.seed])
        failed = _train_grid(console, cells, config, executor, plot=False, tensorboard=False)
        finished = [c.dir for c in cells if c.finished]
        for run_dir in finished:
            console.print(summary_table(RunDir(run_dir).result(), run_dir))
        if plot and finished:
            show_plot(console, plots.plot_compare, root, finished)
        if failed is not None:
            raise failed


@cli.command("table")
@click.option("--methods", default=",".join(PAPER_METHODS), show_default=True, callback=list_of(str, "method"),
              help="Comma-separated methods.")
@click.option("--rates", default=",".join(map(str, PAPER_RATES)), show_default=True,
              callback=list_of(float, "noise_rate"), help="Comma-separated noise rates.")
@click.option("--seeds", default="0,1", show_default=True, callback=list_of(int, "seed"), help="Comma-separated seeds.")
@click.option("--out", type=click.Path(file_okay=False), help="Table directory [default: results/table-<profile>].")
@click.option("--report", type=click.Path(exists=True, file_okay=False),
              help="Only re-render the table of the finished runs in this directory (no training).")
@click.option("--plot/--no-plot", default=True, show_default=True,
              help="Write curves.png per run, table.png and cost.png (accuracy against wall time relative to sgd).")
@click.option("--params-from", "params_from", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A `noisysam sweep` directory, repeatable (one per method): that method's cells at each rate use "
                   "the sweep's choice for the rate (tuned per rate, as the paper's mixup).")
@execution_options
@options(*TRAINING)
@tensorboard_option
@config_option("methods", "rates", "seeds")
@click.pass_context
def table_command(ctx: click.Context, methods: list[str], rates: list[float], seeds: list[int], out: Optional[str],
                  report: Optional[str], plot: bool, params_from: tuple[str, ...], executor_name: str, jobs: int,
                  threads: Optional[int], cells_per_gpu: int, address: Optional[str], tensorboard: bool,
                  **_: Any) -> None:
    """Reproduce the SAM paper's noise table: train methods x rates x seeds into one directory (--jobs N
    at once, or on a Ray cluster; re-running skips finished runs and resumes stopped ones), then tabulate
    mean ± std beside the paper's numbers, and the cost relative to sgd, into table.csv, table.md, table.json (and
    table.png, cost.png)."""
    console = Console()
    if report:
        if out:
            raise click.UsageError("give either --report DIR (render only) or --out DIR (train), not both")
        if params_from:
            raise click.UsageError("--report DIR renders the finished runs: it takes no --params-from")
        with user_errors("interrupted"):
            _render(console, Path(report), plot)
        return
    executor = _executor(ctx, executor_name, jobs, threads, cells_per_gpu, address)
    config = dataclasses.replace(DEFAULT, **given_options(ctx, TRAINING))
    root = Path(out or f"results/table-{config.profile}")
    with user_errors(_interrupted(root)):
        grid.check_grid_out(root)
        cells, tuning = sweeps.tuned(grid_cells.grid(root, methods, rates, seeds), params_from, config)
        grid_cells.read_tuning(root)  # the table reads it once trained: a damaged one is refused before a cell trains
        failed = _train_grid(console, cells, config, executor, plot, tensorboard)
        if tuning:
            sweeps.record_tuning(root, tuning)
        if failed is None or grid.collect(root):
            _render(console, root, plot)
        if failed is not None:
            raise failed  # exit 1 with the failed cells named, after the table of the others


@cli.command("sweep")
@options("method")
@click.option("--param", "params", multiple=True, required=True, callback=param_values, metavar="NAME=V1,V2,...",
              help="A parameter to sweep and its values, repeatable: rho or mixup_alpha, or a parameter of the method "
                   "(e.g. m for sam); every combination is trained.")
@click.option("--rates", required=True, callback=list_of(float, "noise_rate"), help="Comma-separated noise rates.")
@click.option("--seeds", default="0,1", show_default=True, callback=list_of(int, "seed"), help="Comma-separated seeds.")
@click.option("--select", type=click.Choice(sweeps.SELECT), default="clean", show_default=True,
              help="Labels of the held-out validation split the choice is made on: clean (the paper's protocol) or "
                   "noisy (no clean labels needed).")
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory [default: results/sweep-<method>].")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write curves.png per run and sweep.png.")
@execution_options
@options(*SWEEP_TRAINING)
@tensorboard_option
@config_option("rates", "seeds")
@click.pass_context
def sweep_command(ctx: click.Context, method: str, params: dict[str, list], rates: list[float], seeds: list[int],
                  select: str, out: Optional[str], plot: bool, executor_name: str, jobs: int, threads: Optional[int],
                  cells_per_gpu: int, address: Optional[str], tensorboard: bool, **_: Any) -> None:
    """The SAM paper's hyperparameter search (Foret et al. 2021, Section 3.3): train every combination of the
    --param values x rates x seeds (resumable like `table`), pick per rate the combination with the best mean
    last-epoch validation accuracy (never the test set), and write sweep.json, sweep.md (and sweep.png); feed
    the choice to `noisysam table --params-from DIR`."""
    console = Console()
    executor = _executor(ctx, executor_name, jobs, threads, cells_per_gpu, address)
    config = dataclasses.replace(DEFAULT, **given_options(ctx, SWEEP_TRAINING))
    root = Path(out or f"results/sweep-{method}")
    with user_errors(_interrupted(root)):
        spec = sweeps.Sweep(method, params, rates, seeds, select, fixed=config.method_params)
        cells = spec.cells(root)
        failed = _train_grid(console, cells, spec.config(config), executor, plot, tensorboard)
        if failed is not None:
            raise failed  # the choice needs every cell: nothing is selected from part of the grid
        content = sweeps.write_sweep(root, spec, cells)
    console.print(sweep_table(content, root))
    console.print(escape(f"wrote {', '.join(str(root / f) for f in sweeps.SWEEP_FILES)}"), style="dim", soft_wrap=True)
    if plot:
        show_plot(console, plots.plot_sweep, root, content)


@cli.command("noise")
@options("dataset", "data_root", "download", "noise", "noise_rate", "noise_mode", "noise_exact", "seed")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the labels to this .npz file.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--inspect", type=click.Path(dir_okay=False),
              help="Show an existing labels file instead (class names from the file, or from --dataset if given).")
@click.pass_context
def noise_command(ctx: click.Context, dataset: str, data_root: Optional[str], download: bool, noise: str,
                  noise_rate: float, noise_mode: str, noise_exact: bool, seed: int, output: Optional[str],
                  force: bool, inspect: Optional[str]) -> None:
    """Make a noisy labels file for a dataset's training labels (for `train --noise FILE`), or inspect
    one: realised noise rate and transition matrix T[clean, noisy]."""
    console = Console()
    with user_errors("interrupted"):
        if inspect:
            if output:
                raise click.UsageError("--inspect shows a file; it does not take --output")
            labels = NoisyLabels.load(inspect)
            given = ctx.get_parameter_source("dataset") == ParameterSource.COMMANDLINE
            classes = (load_dataset(dataset, root=data_root, download=download).classes if given
                       else labels.provenance.get("classes"))
        else:
            if output:
                if not output.endswith(".npz"):
                    raise click.BadParameter(f"{output!r} must end in .npz (the name `train --noise FILE` takes)",
                                             ctx=ctx, param_hint="'-o' / '--output'")
                if Path(output).exists() and not force:
                    raise FileExistsError(f"{output} exists; pass --force to overwrite it")
                if not Path(output).resolve().parent.is_dir():
                    raise FileNotFoundError(f"cannot write {output}: its directory does not exist")
            data = load_dataset(dataset, root=data_root, download=download)
            made = noise_labels(TrainConfig(noise=noise, noise_rate=noise_rate, noise_mode=noise_mode,
                                            noise_exact=noise_exact, seed=seed), data)
            labels = NoisyLabels(made.noisy, made.clean, made.num_classes,
                                 {**made.provenance, "dataset": dataset, "classes": data.classes})
            classes = data.classes
            if output:
                labels.save(output)
    show_labels(console, labels, classes, inspect or output)


@cli.command("detect")
@click.option("--from-run", "from_run", type=click.Path(file_okay=False),
              help="Score the labels from this run directory's training dynamics (its dynamics/ files).")
@click.option("--score", type=click.Choice(DYNAMICS_SCORES),
              help="With --from-run: aum (minus the area under the margin, Pleiss et al. 2020) or loss (mean "
                   "training loss) [default: aum].")
@click.option("--aum-threshold-samples", "threshold_samples", is_flag=True,
              help="With --from-run: train the run's settings once more with N/(c+1) training rows relabelled to a "
                   "fake class (threshold samples, Pleiss et al. 2020, Sec. 3; run directory OUT/threshold_run, "
                   "resumed by the same command) and flag a row whose AUM is below the 99th percentile of theirs; "
                   "the noise rate is then estimated this way.")
@click.option("--annotators", is_flag=True,
              help="With --from-run on CIFAR-10 images (cifar10-mini, cifar10): the majority vote of CIFAR-10N's three "
                   "annotators (random1/2/3) by cleanlab.multiannotator, its and each annotator's quality by CROWDLAB "
                   "with the run's model, and the given labels that differ from it.")
@click.option("--kfold", type=int, help="Train K models, each on all folds but one (the training options below), "
                                        "and hand their out-of-fold probabilities to cleanlab (confident learning).")
@options("method", "noise_rate", "seed", *TRAINING)
@click.option("--out", type=click.Path(file_okay=False),
              help="Detection directory [--from-run: RUN_DIR/detect-<score>, with --aum-threshold-samples "
                   "RUN_DIR/detect-aum-threshold-samples, with --annotators RUN_DIR/detect-annotators; --kfold: "
                   "required].")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout and nothing else.")
@threads_option
@click.pass_context
def detect_command(ctx: click.Context, from_run: Optional[str], score: Optional[str], threshold_samples: bool,
                   annotators: bool, kfold: Optional[int], out: Optional[str], as_json: bool, threads: Optional[int],
                   **_: Any) -> None:
    """Rank the training labels by how likely they are wrong (issues.csv/json, higher score = more likely wrong),
    estimate the noise rate and transition matrix (summary.json, beside the realised ones where the clean labels
    are known), and plot the scores (scores.png)."""
    set_threads(threads)
    if threshold_samples and (from_run is None or score not in (None, "aum")):
        raise click.UsageError("--aum-threshold-samples needs --from-run RUN_DIR (the run whose settings it trains "
                               "again) and takes no --score but aum")
    if annotators and (from_run is None or score is not None or threshold_samples):
        raise click.UsageError("--annotators needs --from-run RUN_DIR (the run whose labels and model it reads) and "
                               "takes no --score or --aum-threshold-samples")
    if (from_run is None) == (kfold is None):
        raise click.UsageError("give either --from-run RUN_DIR (training dynamics) or --kfold K (cleanlab)")
    if kfold is not None and (score is not None or out is None):
        raise click.UsageError("--kfold needs --out DIR and takes no --score (its score is cleanlab's)")
    console = Console(stderr=as_json)
    name = "aum-threshold-samples" if threshold_samples else "annotators" if annotators else score or "aum"
    target = Path(out) if out else from_run and default_out(from_run, name)
    hint = ("interrupted; continue with the same command (the finished folds in {} are kept)" if kfold else
            "interrupted; continue with the same command (the threshold run in {} resumes)" if threshold_samples
            else "interrupted").format(target)
    with user_errors(hint):
        if threshold_samples:
            with RunProgress(console) as progress:
                detection = find_label_issues(from_run, threshold_samples=True, out=target, callback=progress)
        elif from_run is not None:  # the command writes its files (the API only where asked)
            detection = find_label_issues(from_run, score=score, annotators=annotators, out=target)
        else:
            config = dataclasses.replace(DEFAULT, **given_options(ctx, ("method", "noise_rate", "seed") + TRAINING))
            with RunProgress(console) as progress:
                detection = find_label_issues(kfold=kfold, config=config, out=out, callback=progress)
    summary = detection.summary()
    if as_json:
        click.echo(json.dumps(to_jsonable(summary), indent=2))
        return
    console.print(detection_table(detection))
    console.print(escape(f"ranked table: {Path(target) / 'issues.csv'}; summary: {Path(target) / 'summary.json'}"),
                  soft_wrap=True)


@cli.command("info")
def info_command() -> None:
    """Versions, compute device, where the embedded data was found, available methods and models."""
    import sklearn
    import torchvision

    console = Console()
    t = Table(show_header=False, title="noisysam")
    t.add_column(style="bold")
    t.add_column()
    versions = dict(noisysam=__version__, python=platform.python_version(), torch=torch.__version__,
                    torchvision=torchvision.__version__, numpy=np.__version__, **{"scikit-learn": sklearn.__version__})
    t.add_row("versions", ", ".join(f"{k} {v}" for k, v in versions.items()))
    device = resolve_device("auto")
    gpu = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CUDA: not available"
    t.add_row("device", f"{device} ({gpu}); mixed precision: {amp_choice('auto', device)[1]}; "
                        f"torch threads: {torch.get_num_threads()}")
    for name in ("cifar10-mini.npz", "cifar10n.npz"):
        try:
            path = find_data_file(name)
        except FileNotFoundError as e:
            t.add_row(name, f"[red]{e}[/]")
            continue
        detail = f"{path} ({path.stat().st_size / 2**20:.1f} MiB)"
        if name == "cifar10-mini.npz":
            d = load_dataset("cifar10-mini")
            detail += (f": {len(d.y_train)} train / {len(d.y_test)} test images {'x'.join(map(str, d.x_train.shape[1:]))}, "
                       f"{d.num_classes} classes")
        t.add_row(name, detail)
    t.add_row("methods", ", ".join(METHODS))
    t.add_row("models", ", ".join(MODELS) + ", timm:<name> (any timm model, with the timm extra)")
    t.add_row("noise", ", ".join(KINDS))
    t.add_row("profiles", "; ".join(f"{k}: " + ", ".join(f"{f}={v}" for f, v in p.items()) for k, p in PROFILES.items()))
    console.print(t)


if __name__ == "__main__":
    main()
