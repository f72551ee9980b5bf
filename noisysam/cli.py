"""The ``noisysam`` command line: parses options and calls the Python API (``noisysam.train``,
``noisysam.table``, ``noisysam.noise``); rich progress and tables, no training logic of its own.

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
import sys
import warnings
from contextlib import contextmanager, nullcontext
from functools import reduce
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import click
import numpy as np
import torch
from click.core import ParameterSource
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from noisysam import __version__, config_file, distributed, executors
from noisysam import sweep as sweeps
from noisysam import table as grid
from noisysam.data import find_data_file, load_dataset
from noisysam.detect import CLEAN_MODES, DYNAMICS_SCORES, cleaned, default_out, find_label_issues
from noisysam.files import to_jsonable
from noisysam.learner import LearnerMethod
from noisysam.methods import METHODS, SAM_RADIUS_METHODS, default_param
from noisysam.models import MODELS
from noisysam.noise import KINDS, NoisyLabels, label as noise_label, make as make_noise
from noisysam.params import Interval, InvalidParameterError, Options
from noisysam.tensorboard import LOG_DIR as TENSORBOARD_DIR, TensorBoardLogger, log_finished_run
from noisysam.train import (CONFIG_PARAMS, PROFILES, TrainConfig, TrainingDiverged, build_method, chain,
                            resolve_amp, resolve_device, saved_config, train)

_DEFAULT = TrainConfig()
_PROFILE = "[default: from --profile]"
# The --rho help's defaults, read from where they are declared (the profiles and each method's factory).
_PROFILE_RHO = ", ".join(f"{name} {profile['rho']}" for name, profile in PROFILES.items())
_OWN_RHO = ", ".join(f"{name} {default_param(name, 'rho')}" for name in sorted(METHODS)
                     if name not in SAM_RADIUS_METHODS and default_param(name, "rho") is not None)


def _json_value(text: str) -> Any:
    """A parameter value: JSON where it parses (3, 0.5, true, null, [1, 2]), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        out[key] = _json_value(value)
    return out


def _click_type(field: str) -> Optional[click.ParamType]:
    """The click type of TrainConfig field ``field``, made from its constraint in ``CONFIG_PARAMS`` so that
    --help and the check agree (the table, applied by the API, has the last word: e.g. it refuses inf)."""
    for c in CONFIG_PARAMS.constraints[field]:
        if isinstance(c, Interval):
            kind = click.IntRange if c.kind is int else click.FloatRange
            return kind(c.low, c.high, min_open=c.low is not None and not c.closed_low,
                        max_open=c.high is not None and not c.closed_high)
        if isinstance(c, Options):
            return click.Choice(sorted(c.values) if isinstance(c.values, dict) else list(c.values))
    return None


def _list_of(kind: Callable[[str], Any], field: str):
    """A click callback turning "a,b c" into a list of ``kind`` values, each checked as TrainConfig's ``field``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> list:
        items = [v for v in value.replace(",", " ").split() if v]
        try:
            parsed = [kind(v) for v in items]
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list of {kind.__name__} values, got {value!r}",
                                     ctx=ctx, param=param) from None
        if not parsed:
            raise click.BadParameter(f"expected at least one value, got {value!r}", ctx=ctx, param=param)
        try:
            for v in parsed:
                CONFIG_PARAMS.check({field: v})
        except InvalidParameterError as e:
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
        return list(dict.fromkeys(parsed))  # a value given twice is one cell, not two

    return parse


# Every option that maps to a TrainConfig field, defined once; commands pick theirs by field name.
_OPTIONS: dict[str, Callable] = {
    "dataset": click.option("--dataset", default=_DEFAULT.dataset, show_default=True,
                            help="cifar10-mini (embedded), cifar10, cifar100, a dataset .npz or an image folder."),
    "data_root": click.option("--data-root", type=click.Path(file_okay=False),
                              help="Where cifar10/cifar100 live [default: ~/.cache/noisysam]."),
    "download": click.option("--download", is_flag=True, help="Download cifar10/cifar100 into --data-root."),
    "noise": click.option("--noise", default=_DEFAULT.noise, show_default=True,
                          help=f"One of {', '.join(KINDS)}, or a labels file (.npz) from `noisysam noise`."),
    "noise_rate": click.option("--noise-rate", type=_click_type("noise_rate"), default=_DEFAULT.noise_rate,
                               show_default=True, help="Share of training labels to corrupt."),
    "noise_mode": click.option("--noise-mode", type=_click_type("noise_mode"), default=_DEFAULT.noise_mode,
                               show_default=True,
                               help="Symmetric noise: replace = redraw from all classes (may hit the true one), "
                                    "flip = always a different class."),
    "noise_exact": click.option("--noise-exact", "--exact", "noise_exact", is_flag=True,
                                help="Corrupt exactly round(rate*n) labels instead of each with probability rate."),
    "method": click.option("--method", type=_click_type("method"), default=_DEFAULT.method,
                           show_default=True, help="Training method."),
    "method_params": click.option("--method-param", "method_params", multiple=True, callback=_key_values,
                                  metavar="KEY=VALUE",
                                  help="Method parameter, repeatable; VALUE read as JSON where possible "
                                       "(e.g. mode=soft, p=3, m=32)."),
    "rho": click.option("--rho", type=_click_type("rho"),
                        help=f"SAM radius, for methods that have one [default: {', '.join(sorted(SAM_RADIUS_METHODS))}: "
                             f"from --profile ({_PROFILE_RHO}), halved when the labels' noise rate is 80% or more, "
                             f"as in the paper; the others their own ({_OWN_RHO})]. An error for a method without a "
                             "radius."),
    "mixup_alpha": click.option("--mixup-alpha", type=_click_type("mixup_alpha"),
                                help="Mixup Beta(alpha, alpha), for methods with mixup [default: the method's, 1.0]. "
                                     "An error for a method without mixup."),
    "model": click.option("--model", type=_click_type("model"), help=f"Network. {_PROFILE}"),
    "model_params": click.option("--model-param", "model_params", multiple=True, callback=_key_values,
                                 metavar="KEY=VALUE", help="Model option, repeatable (e.g. width=16 for cnn)."),
    "epochs": click.option("--epochs", type=_click_type("epochs"), help=f"Training epochs (per stage). {_PROFILE}"),
    "batch_size": click.option("--batch-size", type=_click_type("batch_size"), help=f"Batch size. {_PROFILE}"),
    "lr": click.option("--lr", type=_click_type("lr"), help=f"Peak learning rate. {_PROFILE}"),
    "momentum": click.option("--momentum", type=_click_type("momentum"), default=_DEFAULT.momentum,
                             show_default=True, help="SGD momentum."),
    "weight_decay": click.option("--weight-decay", type=_click_type("weight_decay"), help=f"Weight decay. {_PROFILE}"),
    "schedule": click.option("--schedule", type=_click_type("schedule"), help=f"Learning-rate schedule. {_PROFILE}"),
    "warmup_epochs": click.option("--warmup-epochs", type=_click_type("warmup_epochs"),
                                  help=f"Epochs of linear learning-rate warm-up. {_PROFILE}"),
    "augment": click.option("--augment/--no-augment", default=None,
                            help=f"Random crop + horizontal flip. {_PROFILE}"),
    "cutout": click.option("--cutout", type=_click_type("cutout"), default=_DEFAULT.cutout, show_default=True,
                           help="Cutout square size in pixels (0: off)."),
    "val_fraction": click.option("--val-fraction", type=_click_type("val_fraction"),
                                 default=_DEFAULT.val_fraction, show_default=True,
                                 help="Share of the training set held out to select an epoch."),
    "val_labels": click.option("--val-labels", type=_click_type("val_labels"), default=_DEFAULT.val_labels,
                               show_default=True, help="Labels of the held-out split (noisy: honest selection)."),
    "seed": click.option("--seed", type=_click_type("seed"), default=_DEFAULT.seed, show_default=True,
                         help="Seed of the noise, split, initialisation and batches."),
    "device": click.option("--device", default=_DEFAULT.device, show_default=True, help="auto, cpu or cuda[:N]."),
    "amp": click.option("--amp", type=_click_type("amp"), default=_DEFAULT.amp, show_default=True,
                        help="Mixed precision (auto: bf16 where the hardware has it)."),
    "profile": click.option("--profile", type=_click_type("profile"), default=_DEFAULT.profile,
                            show_default=True,
                            help="Fills model, epochs, batch size, lr, weight decay, schedule, augmentation, rho."),
    "sam_sync": click.option("--sam-sync", type=_click_type("sam_sync"), default=_DEFAULT.sam_sync,
                             show_default=True,
                             help="Several processes (--nproc, torchrun): none = each climbs with its own gradient "
                                  "(m = per-process batch); grad = all-reduce it first (plain SAM on the whole "
                                  "batch)."),
    "sync_bn": click.option("--sync-bn", is_flag=True,
                            help="Several processes on CUDA: BatchNorm statistics over the whole batch "
                                 "(SyncBatchNorm)."),
}

_threads_option = click.option("--threads", type=click.IntRange(min=1),
                               help="CPU threads for torch [default: torch's choice]; on a busy machine fewer "
                                    "threads than cores can be much faster.")


_tensorboard_option = click.option(
    "--tensorboard", is_flag=True,
    help="Log every epoch's metrics and the run's hyperparameters for TensorBoard into <run dir>/tensorboard "
         "(needs pip install 'noisysam[tensorboard]'; view with tensorboard --logdir DIR).")


def _tensorboard(enabled: bool) -> Any:
    """The --tensorboard logger (a context manager), or a no-op context."""
    if not enabled:
        return nullcontext()
    try:
        return TensorBoardLogger()
    except ImportError as e:
        raise click.UsageError(str(e)) from None


def _config_option(*lists: str) -> Callable:
    """--config FILE: the command's options from a TOML file (noisysam.config_file), under the command line's.
    ``lists``: the command's comma-separated list options."""

    def read(ctx: click.Context, param: click.Parameter, path: Optional[str]) -> None:
        if path:
            ctx.default_map = {**(ctx.default_map or {}), **config_file.default_map(ctx, path, lists)}

    return click.option("--config", type=click.Path(exists=True, dir_okay=False), is_eager=True, expose_value=False,
                        callback=read, help="TOML file of options (keys: the option names with underscores, e.g. "
                                            "noise_rate = 0.6); options given here override it.")


def _set_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)


#: The training options shared by `train` and `table` (`table` sets method, noise rate and seed per cell).
_TRAINING = ("dataset", "data_root", "download", "noise", "noise_mode", "noise_exact", "method_params", "rho",
             "mixup_alpha", "model", "model_params", "epochs", "batch_size", "lr", "momentum", "weight_decay",
             "schedule", "warmup_epochs", "augment", "cutout", "val_fraction", "val_labels", "device", "amp",
             "profile")


def _options(*names: str) -> Callable:
    """Apply the shared option definitions ``names`` to a command, listed in that order in --help."""
    return lambda f: reduce(lambda g, name: _OPTIONS[name](g), reversed(names), f)


def _given(ctx: click.Context, names: tuple[str, ...]) -> dict[str, Any]:
    """The options the user actually gave (command line or environment): only those override a config."""
    unset = (ParameterSource.DEFAULT, None)  # DEFAULT_MAP: set by --config, so given
    return {n: ctx.params[n] for n in names if ctx.get_parameter_source(n) not in unset}


def _fail(message: str, code: int) -> None:
    """One line on stderr and exit ``code``; of several processes of one run, rank 0 alone reports bad input
    (every rank finds the same) and the others prefix their runtime errors with their rank."""
    rank = distributed.env_rank()
    if rank == 0 or code != 2:
        click.echo(f"error: {'' if rank == 0 else f'rank {rank}: '}{' '.join(str(message).split())}", err=True)
    raise SystemExit(code)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.strerror}: {e.filename}"
    return str(e)


@contextmanager
def _user_errors(on_interrupt: str) -> Iterator[None]:
    """API errors -> one line on stderr and an exit code (see the module docstring). --method-param and
    --model-param values are checked by the method's and model's parameter tables (noisysam.params)."""
    try:
        yield
    except KeyboardInterrupt:
        if distributed.env_rank() == 0:
            click.echo(f"\n{on_interrupt}", err=True)
        raise SystemExit(130) from None
    except TrainingDiverged as e:
        _fail(str(e), 1)
    except EOFError as e:  # a file ended early; click would report it as an interrupt (exit 130)
        _fail(f"unexpected end of a file ({e or 'no more data'})", 2)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
            NotADirectoryError) as e:  # bad names, values or paths (an --out that cannot be created)
        _fail(_message(e), 2)
    except (RuntimeError, OSError) as e:
        _fail(_message(e), 1)


def _progress(console: Console) -> Progress:
    """Progress lines: description, bar, done/total, elapsed, ETA, status. The speed behind the ETA is
    averaged over the last hour, so epochs of minutes still give one."""
    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    console=console, speed_estimate_period=3600)


def _status(record: dict) -> str:
    mem = record.get("memorisation")
    return f"test {record['test_accuracy']:.1%}" + ("" if mem is None else f"  memorised {mem:.1%}")


class _Live:
    """A rich progress display, stopped when the ``with`` block ends if it started (it starts with the
    first run: not for a bad option or a finished run, which then print nothing)."""

    def __init__(self, console: Console):
        self.progress = _progress(console)

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress.live.is_started:
            self.progress.stop()


class RunProgress(_Live):
    """A :func:`noisysam.train.train` callback drawing live progress: epochs over all stages, batches of
    the current epoch with ETA, the loss (read every ``every`` batches: each read is a device sync),
    clean test accuracy and memorisation after each epoch. Use as a context manager."""

    def __init__(self, console: Console, every: int = 10):
        super().__init__(console)
        self.every = every
        self.tasks: tuple = ()

    def __call__(self, event: str, info: dict) -> None:
        p = self.progress
        if event == "start":
            p.start()
            for task in self.tasks:
                p.remove_task(task)
            cfg = info["config"]
            self.stages, self.epochs = info["stages"], info["epochs"]
            done = (info["stage"] - 1) * self.epochs + info["epoch"]
            history = info["history"]
            label = f"{cfg.method} {noise_label(cfg.noise, cfg.noise_rate)} seed {cfg.seed}"
            self.tasks = (p.add_task(label, total=self.stages * self.epochs, completed=done,
                                     status=_status(history[-1]) if history else ""),
                          p.add_task("  batches", total=info["batches"], status=""))
        elif event == "batch":
            b, stage = info["batch"], info["stage"]
            where = f"  epoch {info['epoch']}/{self.epochs}" + (f" stage {stage}/{self.stages}" if self.stages > 1 else "")
            fields = dict(description=where, completed=b, total=info["batches"])
            if b % self.every == 0 or b == info["batches"]:
                fields["status"] = f"loss {float(info['loss']):.3f}"
            p.update(self.tasks[1], **fields)
        elif event == "epoch":
            p.update(self.tasks[0], advance=1, status=_status(info))
            p.reset(self.tasks[1])
        elif event == "end":
            p.update(self.tasks[1], visible=False)


class GridProgress(_Live):
    """A :class:`noisysam.executors.Watch` drawing a grid: one line per running cell (epochs over all its
    stages, elapsed, ETA, its last test accuracy) under one line for the whole grid (epochs of the cells
    to run, ETA), and a line per finished, skipped or failed cell above them. Use as a context manager."""

    def __init__(self, console: Console, cells: int):
        super().__init__(console)
        self.cells, self.reported = cells, 0
        self.done: dict[Path, int] = {}  # epochs done per cell to run
        self.tasks: dict[Path, Any] = {}  # progress line per running cell
        self.ended = self.failed = 0

    def report(self, label: str, text: str) -> None:
        """``[i/n] label: text`` above the live lines."""
        self.reported += 1
        self.progress.console.print(f"[{self.reported}/{self.cells}] {escape(label)}: {text}", soft_wrap=True)

    def begin(self, jobs: Sequence[executors.Job]) -> None:
        if not jobs:
            return
        self.done = {job.dir: executors.epochs_done(job.dir)[0] for job in jobs}
        self.total = sum(job.epochs for job in jobs)
        self.progress.start()
        self.grid = self.progress.add_task(f"grid: {len(jobs)} cells to run", total=self.total,
                                           completed=sum(self.done.values()), status="")

    def _update_grid(self) -> None:
        waiting = len(self.done) - len(self.tasks) - self.ended
        status = f"{len(self.tasks)} running, {waiting} waiting" + (f", {self.failed} failed" if self.failed else "")
        self.progress.update(self.grid, completed=sum(self.done.values()), total=self.total, status=status)

    def started(self, job: executors.Job, done: int) -> None:
        self.done[job.dir] = done
        self.tasks[job.dir] = self.progress.add_task(f"  {escape(job.label)}", total=job.epochs, completed=done,
                                                     status="starting")
        self._update_grid()

    def advanced(self, job: executors.Job, done: int, last: Optional[dict]) -> None:
        self.done[job.dir] = done
        self.progress.update(self.tasks[job.dir], completed=done, status=_status(last) if last else "")
        self._update_grid()

    def finished(self, outcome: executors.Outcome) -> None:
        job = outcome.job
        self.progress.remove_task(self.tasks.pop(job.dir))
        self.ended += 1
        if outcome.error is None:
            self._update_grid()
            return
        self.failed += 1
        self.total -= job.epochs - self.done[job.dir]  # its epochs left are no longer part of the grid's work
        self._update_grid()
        self.report(job.label, f"[red]failed[/]: {escape(outcome.error)}")


class _Group(click.Group):
    """click's usage errors (unknown option, value out of range, bad choice) as one line on stderr, exit 2,
    like the API's errors; ``standalone_mode=False`` keeps click's plain behaviour for embedding."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name or "noisysam", complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            code = 0
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            code = 130
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
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
        return TrainConfig(**saved_config(out))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot resume {out!r}: its config.json is unreadable or from another version ({e})") from None


_no_matplotlib_noted = False


def _plot(console: Console, make: Callable[..., Path], *args: Any) -> None:
    """Write a plot; without matplotlib, a one-line note instead, once per process (plots are optional)."""
    global _no_matplotlib_noted
    try:
        path = make(*args)
    except ImportError:
        if not _no_matplotlib_noted:
            _no_matplotlib_noted = True
            console.print(escape("note: matplotlib is not installed, no plots written (pip install 'noisysam[plot]')"),
                          style="dim", soft_wrap=True)
        return
    except Exception as e:  # a plot is an extra: its failure must not turn a finished run into an error
        console.print(escape(f"note: no plot written ({type(e).__name__}: {e})"), style="dim", soft_wrap=True)
        return
    console.print(escape(f"plot: {path}"), style="dim", soft_wrap=True)


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.1%}"


def _summary_table(s: dict, run_dir: Optional[Path]) -> Table:
    acc = s["test_accuracy"]
    t = Table(title=f"{s['method']} on {escape(str(s['dataset']))}, {s['noise']['type']} noise {_pct(s['noise']['rate'])} "
                    f"(realised {_pct(s['noise']['realised_rate'])}), seed {s['seed']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("clean test accuracy, last epoch", _pct(acc["last"]))
    if acc["selected"] is not None:
        t.add_row("  at the epoch selected by validation", f"{_pct(acc['selected'])} (epoch {acc['selected_epoch']}, "
                                                            f"{acc['selected_by']})")
    t.add_row("  best epoch (peeks at the test set)", f"{_pct(acc['best'])} (epoch {acc['best_epoch']})")
    if s.get("networks", 1) > 1:  # which prediction the accuracies are (two-network methods)
        t.add_row("  prediction", f"{s['prediction']} ({s['networks']} networks trained)")
    if s.get("stage1"):
        t.add_row("  first model (before relabelling)", f"{_pct(s['stage1']['test_accuracy'])}; relabels correct: "
                                                         f"{_pct(s['stage1']['relabel_accuracy'])}")
    t.add_row("memorised wrong labels (last)", _pct(s["memorisation_last"]))
    t.add_row("recovered true labels (last)", _pct(s["recovery_last"]))
    auroc = s["noise_auroc_last"]
    t.add_row("noise detection AUROC (loss)", "–" if auroc is None or auroc != auroc else f"{auroc:.3f}")
    t.add_row("model / epochs / profile", f"{s['model']} / {s['epochs']} / {s['profile']}")
    t.add_row("time / device", f"{s['wall_seconds']:.0f} s on {s['device']} ({s['amp']})")
    if s.get("forward_passes") is not None:  # counted since the cheaper SAM variants; older runs lack it
        steps = s["train_steps"]
        t.add_row("training passes (counted)", f"{s['forward_passes']:g} forward, {s['backward_passes']:g} backward "
                                               f"in {steps} steps ({s['forward_passes'] / steps:.2f} + "
                                               f"{s['backward_passes'] / steps:.2f} per step)")
    t.add_row("run directory", escape(str(run_dir)) if run_dir else "not saved (pass --out DIR)")
    return t


@cli.command("train")
@_options("method", "noise_rate", "seed", *_TRAINING, "sam_sync", "sync_bn")
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
@_threads_option
@_tensorboard_option
@_config_option()
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
    _set_threads(threads)
    if resume and not out:
        raise click.UsageError("--resume needs --out DIR (the run directory to continue)")
    if tensorboard and not out and not print_config:
        raise click.UsageError("--tensorboard needs --out DIR (the log goes to DIR/tensorboard)")
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)  # a config file may hold them: it is read too
    if labels_from and any(ctx.get_parameter_source(n) in typed for n in ("noise", "noise_rate")):
        raise click.UsageError("--labels-from gives the labels: it takes no --noise or --noise-rate")
    if labels_from and nproc and nproc > 1:
        raise click.UsageError("--labels-from trains in one process: it does not take --nproc")
    console = Console(stderr=as_json)
    again = (f" --nproc {nproc}" if nproc and nproc > 1 else "") + (
        f" --labels-from {labels_from} --mode {clean_mode}" if labels_from else "")
    hint = (f"interrupted; continue with: noisysam train --out {out} --resume{again}" if out
            else "interrupted; nothing was saved (pass --out DIR to make a run resumable)")
    with _user_errors(hint):
        base = _saved(out) if resume and (Path(out) / "config.json").is_file() else _DEFAULT
        config = dataclasses.replace(base, **_given(ctx, ("method", "noise_rate", "seed", "sam_sync", "sync_bn")
                                                      + _TRAINING), out=out, resume=resume)
        if print_config:
            header = "noisysam train --config FILE reads this; options given on the command line override it."
            click.echo(config_file.dumps(config_file.resolved_values(ctx, config), header), nl=False)
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
            with RunProgress(console) as progress, _tensorboard(tensorboard) as logger:
                result = train(config, callback=chain(progress, logger), **data)
            summary, run_dir = result.summary, result.run_dir
        if distributed.env_rank() != 0:  # torchrun: rank 0 reports and writes
            return
        if tensorboard and not Path(out, TENSORBOARD_DIR).exists():  # resumed a run finished without the logger
            log_finished_run(out)
    if as_json:
        click.echo(Path(out, "result.json").read_text().rstrip() if out else json.dumps(to_jsonable(summary), indent=2))
    else:
        console.print(_summary_table(summary, run_dir))
    if out and plot:  # after the table: the last line a new user sees names the picture
        _plot(console, _plot_run, out)
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
            _fail(f"rank {rank}: {message['message'] if isinstance(message, dict) else message}", 1)
        raise SystemExit(failure.exitcode) from None
    except SignalException:  # Ctrl-C reached the launcher: the ranks stop after their last checkpoint
        raise KeyboardInterrupt from None


def _rank(config: dict, threads: Optional[int], tensorboard: bool) -> tuple[dict, Optional[Path]]:
    """One process of ``noisysam train --nproc N`` (a spawned process: bad input and interruptions end it with
    the CLI's exit codes); rank 0 shows the progress and logs to TensorBoard (train() calls back on rank 0 only)."""
    _set_threads(threads)
    with _user_errors("interrupted"), RunProgress(Console()) as progress, \
            _tensorboard(tensorboard) as logger:
        result = train(TrainConfig(**config), callback=chain(progress, logger))
    return result.summary, result.run_dir


def _plot_run(run_dir: str) -> Path:
    from noisysam.plot import plot_run

    return plot_run(run_dir)


def _plot_table(root: Path, rows: list[dict]) -> Path:
    from noisysam.plot import plot_table

    return plot_table(root, rows)


def _plot_sweep(root: Path, content: dict) -> Path:
    from noisysam.plot import plot_sweep

    return plot_sweep(root, content)


def _rich_table(table: dict, root: Path) -> Table:
    """Per method: the paper's value, then mean ± std at the last epoch and at the selected epoch, each
    followed by its difference to the paper (Δ), then the cost relative to SGD at that rate (training passes and
    wall time) where the grid has it. Narrow enough for 80 columns with the paper's 5 x 4 grid."""
    rows = table["rows"]
    costed = any(r["passes_vs_sgd"] is not None or r["wall_vs_sgd"] is not None for r in rows)
    rates = sorted({r["rate"] for r in rows})
    by_key = {(r["method"], r["rate"]): r for r in rows}
    column = {r["rate"]: r["column"] for r in rows}
    beside = any(r["paper"] is not None for r in rows)  # Table 4 is symmetric noise only
    t = Table(title=f"Clean-test accuracy (%), mean ± std over seeds{', beside the SAM paper' + chr(39) + 's Table 4' if beside else ''}"
                    f"\n{escape(str(root))}",
              box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False, padding=(0, 1, 0, 0))
    t.add_column("method", style="bold", no_wrap=True)
    t.add_column("", no_wrap=True)
    for rate in rates:
        t.add_column(escape(column[rate]), justify="right", no_wrap=True)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [by_key.get((method, rate)) for rate in rates]
        has_paper = any(r is not None and r["paper"] is not None for r in mine)
        what = ["paper"] if has_paper else []
        for name in ("last", "selected"):
            what += [name] + (["  Δ"] if has_paper else [])
        what += ["passes ×", "wall ×"] if costed else []
        cells = []
        for r in mine:
            if r is None:
                cells.append("")
                continue
            lines = [f"[dim]{'–' if r['paper'] is None else format(r['paper'], '.1f')}[/]"] if has_paper else []
            for key in ("last", "selected"):
                lines.append(grid.fmt(r[f"{key}_mean"], r[f"{key}_std"]))
                if has_paper:
                    lines.append(f"[dim]{grid.fmt_diff(r[f'{key}_minus_paper'])}[/]")
            lines += [grid.fmt_ratio(r["passes_vs_sgd"]), grid.fmt_ratio(r["wall_vs_sgd"])] if costed else []
            cells.append("\n".join(lines))
        t.add_row(method, "[dim]" + "\n".join(what) + "[/]", *cells)
    s = table["settings"]
    t.caption = escape(f"{', '.join(map(str, s['dataset']))}, {', '.join(map(str, s['model']))}, "
                       f"{', '.join(map(str, s['epochs']))} epochs, profile {', '.join(map(str, s['profile']))}; "
                       f"seeds per cell: {', '.join(sorted({str(len(r['seeds'])) for r in rows}))}; "
                       "last: final epoch; selected: epoch of best noisy-validation accuracy"
                       + ("; Δ: minus the paper" if beside else "")
                       + ("; passes ×, wall ×: training passes (forward + backward) and wall time relative to sgd at "
                          "that rate" if costed else ""))
    return t


def _plot_cost(root: Path, rows: list[dict]) -> Path:
    from noisysam.plot import plot_cost

    return plot_cost(root, rows)


def _render(console: Console, root: Path, plot: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grid.SkippedCellWarning)  # reported below, one line each
        table = grid.write_table(root)
    for problem in table["skipped"]:
        click.echo(f"warning: a cell was skipped: {problem}", err=True)
    console.print(_rich_table(table, root))
    console.print(escape(f"wrote {', '.join(str(root / f) for f in grid.TABLE_FILES)}"), style="dim", soft_wrap=True)
    if plot:
        _plot(console, _plot_table, root, table["rows"])
        _plot(console, _plot_cost, root, table["rows"])


#: How a grid command's cells run (noisysam.executors); shared by every grid command.
_EXECUTION: tuple[Callable, ...] = (
    click.option("--executor", "executor_name", type=click.Choice(["local", "ray"]), default="local",
                 show_default=True, help="local: this machine (--jobs); ray: tasks on a Ray cluster (--address)."),
    click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Cells trained at once on this machine: 1 in this process, N > 1 in N worker processes."),
    click.option("--threads", type=click.IntRange(min=1),
                 help="CPU threads per cell [default: cores // --jobs; ray: 1]; on a busy machine fewer threads "
                      "than cores can be much faster."),
    click.option("--cells-per-gpu", type=click.IntRange(min=1), default=1, show_default=True,
                 help="On CUDA: cells sharing one GPU (local: --jobs at most GPUs x this; ray: each cell asks "
                      "for 1/this of a GPU)."),
    click.option("--address", help="Ray cluster to submit to (e.g. HOST:6379) [default: RAY_ADDRESS, a running "
                                   "local cluster, or a new local instance]."),
)


def _execution_options(f: Callable) -> Callable:
    return reduce(lambda g, option: option(g), reversed(_EXECUTION), f)


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
            _fail(str(e), 2)
    if address:
        raise click.UsageError("--address is for --executor ray")
    return executors.InProcess(threads) if jobs == 1 else executors.LocalProcesses(jobs, threads, cells_per_gpu)


def _train_grid(console: Console, cells: list[grid.Cell], config: TrainConfig, executor: executors.Executor,
                plot: bool, tensorboard: bool) -> Optional[executors.CellsFailed]:
    """Train a grid command's cells (grid.run_grid) with live progress, a line per finished cell, its curves.png
    (``plot``) and TensorBoard logs; the failed cells (the others finished), or None."""
    progress = GridProgress(console, len(cells))

    def finished(cell: grid.Cell, summary: dict, skipped: bool) -> None:
        acc = summary["test_accuracy"]
        how = "already finished" if skipped else f"{summary['wall_seconds']:.0f} s"
        progress.report(cell.label(config.noise), f"last {_pct(acc['last'])}, selected {_pct(acc['selected'])} ({how})")
        if plot and not skipped:
            _plot(progress.progress.console, _plot_run, str(cell.dir))
        if tensorboard and skipped and not (cell.dir / TENSORBOARD_DIR).exists():  # finished without the logger
            log_finished_run(cell.dir)

    try:
        with progress, _tensorboard(tensorboard) as logger:
            grid.run_grid(cells, config, executor=executor, callback=logger, on_cell=finished, watch=progress)
    except executors.CellsFailed as e:
        return e
    return None


def _interrupted(root: Path) -> str:
    return (f"interrupted; every worker stopped. Continue with the same command: finished runs in {root} are kept, "
            "the others resume from their last epoch")


@cli.command("table")
@click.option("--methods", default=",".join(grid.PAPER_METHODS), show_default=True, callback=_list_of(str, "method"),
              help="Comma-separated methods.")
@click.option("--rates", default=",".join(map(str, grid.PAPER_RATES)), show_default=True,
              callback=_list_of(float, "noise_rate"), help="Comma-separated noise rates.")
@click.option("--seeds", default="0,1", show_default=True, callback=_list_of(int, "seed"), help="Comma-separated seeds.")
@click.option("--out", type=click.Path(file_okay=False), help="Table directory [default: results/table-<profile>].")
@click.option("--report", type=click.Path(exists=True, file_okay=False),
              help="Only re-render the table of the finished runs in this directory (no training).")
@click.option("--plot/--no-plot", default=True, show_default=True,
              help="Write curves.png per run, table.png and cost.png (accuracy against wall time relative to sgd).")
@click.option("--params-from", "params_from", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A `noisysam sweep` directory, repeatable (one per method): that method's cells at each rate use "
                   "the sweep's choice for the rate (tuned per rate, as the paper's mixup).")
@_execution_options
@_options(*_TRAINING)
@_tensorboard_option
@_config_option("methods", "rates", "seeds")
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
        with _user_errors("interrupted"):
            _render(console, Path(report), plot)
        return
    executor = _executor(ctx, executor_name, jobs, threads, cells_per_gpu, address)
    config = dataclasses.replace(_DEFAULT, **_given(ctx, _TRAINING))
    root = Path(out or f"results/table-{config.profile}")
    with _user_errors(_interrupted(root)):
        cells, tuning = sweeps.tuned(grid.grid(root, methods, rates, seeds), params_from, config)
        grid.read_tuning(root)  # the table reads it once trained: a damaged one is refused before any cell trains
        failed = _train_grid(console, cells, config, executor, plot, tensorboard)
        if tuning:
            sweeps.record_tuning(root, tuning)
        if failed is None or grid.collect(root):
            _render(console, root, plot)
        if failed is not None:
            raise failed  # exit 1 with the failed cells named, after the table of the others


def _param_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, list]:
    """--param NAME=V1,V2,...: name -> values (each read as JSON where it parses; a JSON array, as a --config
    file's ``param = {rho = [0.05, 0.1]}`` gives, is the list); a name given twice is refused."""
    out: dict[str, list] = {}
    for item in values:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=V1,V2,..., got {item!r}", ctx=ctx, param=param)
        if name in out:
            raise click.BadParameter(f"{name} is given twice; list all its values in one --param", ctx=ctx,
                                     param=param)
        whole = _json_value(text)
        out[name] = whole if isinstance(whole, list) else [_json_value(v) for v in text.replace(",", " ").split()]
    return out


#: The training options of `sweep`: `table`'s but the validation labels, which --select sets.
_SWEEP_TRAINING = tuple(name for name in _TRAINING if name != "val_labels")


@cli.command("sweep")
@_options("method")
@click.option("--param", "params", multiple=True, required=True, callback=_param_values, metavar="NAME=V1,V2,...",
              help="A parameter to sweep and its values, repeatable: rho or mixup_alpha, or a parameter of the method "
                   "(e.g. m for sam); every combination is trained.")
@click.option("--rates", required=True, callback=_list_of(float, "noise_rate"), help="Comma-separated noise rates.")
@click.option("--seeds", default="0,1", show_default=True, callback=_list_of(int, "seed"), help="Comma-separated seeds.")
@click.option("--select", type=click.Choice(sweeps.SELECT), default="clean", show_default=True,
              help="Labels of the held-out validation split the choice is made on: clean (the paper's protocol) or "
                   "noisy (no clean labels needed).")
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory [default: results/sweep-<method>].")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write curves.png per run and sweep.png.")
@_execution_options
@_options(*_SWEEP_TRAINING)
@_tensorboard_option
@_config_option("rates", "seeds")
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
    config = dataclasses.replace(_DEFAULT, **_given(ctx, _SWEEP_TRAINING))
    root = Path(out or f"results/sweep-{method}")
    with _user_errors(_interrupted(root)):
        spec = sweeps.Sweep(method, params, rates, seeds, select, fixed=config.method_params)
        cells = spec.cells(root)
        failed = _train_grid(console, cells, spec.config(config), executor, plot, tensorboard)
        if failed is not None:
            raise failed  # the choice needs every cell: nothing is selected from part of the grid
        content = sweeps.write_sweep(root, spec, cells)
    console.print(_sweep_table(content, root))
    console.print(escape(f"wrote {', '.join(str(root / f) for f in sweeps.SWEEP_FILES)}"), style="dim", soft_wrap=True)
    if plot:
        _plot(console, _plot_sweep, root, content)


def _sweep_table(content: dict, root: Path) -> Table:
    """The choice per rate with its validation and test accuracy."""
    t = Table(title=f"{content['method']}: parameters chosen per noise rate on {content['select']}-label validation "
                    f"(mean ± std over seeds, %)\n{escape(str(root))}", box=box.SIMPLE_HEAD)
    for column in ("rate", "chosen", "validation", "test"):
        t.add_column(column, justify="left" if column == "chosen" else "right")
    for c in content["choices"]:
        t.add_row(f"{c['rate']:.0%}", escape(c["name"]), grid.fmt(c["val_mean"], c["val_std"]),
                  grid.fmt(c["test_mean"], c["test_std"]))
    t.caption = "chosen: highest mean validation accuracy at the last epoch; the test set is not used to choose"
    return t


@cli.command("noise")
@_options("dataset", "data_root", "download", "noise", "noise_rate", "noise_mode", "noise_exact", "seed")
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
    with _user_errors("interrupted"):
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
            made = make_noise(noise, data.y_train, noise_rate, seed=seed, mode=noise_mode,
                              num_classes=data.num_classes, exact=noise_exact, dataset=data)
            labels = NoisyLabels(made.noisy, made.clean, made.num_classes,
                                 {**made.provenance, "dataset": dataset, "classes": data.classes})
            classes = data.classes
            if output:
                labels.save(output)
    _show_labels(console, labels, classes, inspect or output)


def _show_labels(console: Console, labels: NoisyLabels, classes: Optional[list], path: Optional[str]) -> None:
    k = labels.num_classes
    names = [str(c) for c in classes] if classes and len(classes) == k else [str(i) for i in range(k)]
    p = labels.provenance
    console.print(f"realised noise rate: {labels.rate:.4f} ({int(labels.is_noisy.sum())} of {len(labels)} labels "
                  f"wrong); kind {p.get('kind')}, nominal rate {p.get('nominal_rate')}, mode {p.get('mode')}, "
                  f"seed {p.get('seed')}")
    # Compact enough for 80 columns with 10 classes: headers are the first 4 letters of the class names.
    t = Table(title="realised transition matrix T\\[clean, noisy] = P(noisy label | clean class)",
              box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    t.add_column("clean", style="bold", no_wrap=True)
    for name in names:
        t.add_column(name[:4], justify="right", no_wrap=True, min_width=4)
    t.add_column("wrong", justify="right", style="bold", no_wrap=True)
    for i, name in enumerate(names):
        row = [("[bold]" if i == j else "") + (f"{v:.2f}" if v else "[dim]·[/]") + ("[/]" if i == j else "")
               for j, v in enumerate(labels.transition[i])]
        t.add_row(name, *row, f"{1 - labels.transition[i, i]:.1%}")
    console.print(t)
    if path:
        console.print(escape(f"labels file: {path}"), style="dim", soft_wrap=True)


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
@_options("method", "noise_rate", "seed", *_TRAINING)
@click.option("--out", type=click.Path(file_okay=False),
              help="Detection directory [--from-run: RUN_DIR/detect-<score>, with --aum-threshold-samples "
                   "RUN_DIR/detect-aum-threshold-samples, with --annotators RUN_DIR/detect-annotators; --kfold: "
                   "required].")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout and nothing else.")
@_threads_option
@click.pass_context
def detect_command(ctx: click.Context, from_run: Optional[str], score: Optional[str], threshold_samples: bool,
                   annotators: bool, kfold: Optional[int], out: Optional[str], as_json: bool, threads: Optional[int],
                   **_: Any) -> None:
    """Rank the training labels by how likely they are wrong (issues.csv/json, higher score = more likely wrong),
    estimate the noise rate and transition matrix (summary.json, beside the realised ones where the clean labels
    are known), and plot the scores (scores.png)."""
    _set_threads(threads)
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
    with _user_errors(hint):
        if threshold_samples:
            with RunProgress(console) as progress:
                detection = find_label_issues(from_run, threshold_samples=True, out=out, callback=progress)
        elif from_run is not None:
            detection = find_label_issues(from_run, score=score, annotators=annotators, out=out)
        else:
            config = dataclasses.replace(_DEFAULT, **_given(ctx, ("method", "noise_rate", "seed") + _TRAINING))
            with RunProgress(console) as progress:
                detection = find_label_issues(kfold=kfold, config=config, out=out, callback=progress)
    summary = detection.summary()
    if as_json:
        click.echo(json.dumps(to_jsonable(summary), indent=2))
        return
    console.print(_detection_table(detection))
    console.print(escape(f"ranked table: {Path(target) / 'issues.csv'}; summary: {Path(target) / 'summary.json'}"),
                  soft_wrap=True)


def _detection_table(detection: Any) -> Table:
    s = detection.summary()
    t = Table(title=f"label issues ({s['score']}, {s['n']} labels)", show_header=False, box=box.SIMPLE)
    t.add_row("flagged", f"{s['flagged']} ({_pct(s['flagged'] / s['n'])})")
    t.add_row("estimated noise rate", f"{_pct(s['estimated_rate'])} by {s['estimator']}")
    detail = {k: v for k, v in s["estimator_detail"].items() if k != "annotators"}
    t.add_row(f"  {s['estimator']}", escape(s["estimator_means"] + "".join(
        f"; {k} {v:.4g}" if isinstance(v, float) else f"; {k} {v}" for k, v in detail.items())))
    for name, other in s["other_estimates"].items():
        t.add_row(f"  also by {name}", f"{_pct(other['rate'])} ± {_pct(other['standard_error'])} (standard error)"
                  if other["rate"] is not None else
                  escape(f"none: {other.get('unavailable', 'a model no better than chance')}"))
    for a in s["estimator_detail"].get("annotators", []):
        t.add_row(f"  annotator {a['name']}", f"quality {a['quality']:.3f}, agrees with the consensus "
                                               f"{_pct(a['agreement_with_consensus'])}, accuracy {_pct(a['accuracy'])}")
    truth = s["truth"]
    if truth is None:
        t.add_row("realised noise rate", "unknown (no clean labels)")
    else:
        t.add_row("realised noise rate", _pct(truth["realised_rate"]))
        t.add_row("AUROC", f"{truth['auroc']:.3f}")
        t.add_row("precision / recall at the realised rate",
                  f"{_pct(truth['precision_at_realised'])} / {_pct(truth['recall_at_realised'])}")
    top = ", ".join(f"{r['index']} ({r['given']}->{r['suggested']})" for r in detection.ranked()[:5])
    t.add_row("most likely wrong (given->suggested)", top)
    return t


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
    amp = resolve_amp("auto", device)
    gpu = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CUDA: not available"
    t.add_row("device", f"{device} ({gpu}); mixed precision (--amp auto): "
                        f"{str(amp).replace('torch.', '') if amp else 'off (fp32)'}; torch threads: {torch.get_num_threads()}")
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
    t.add_row("models", ", ".join(MODELS))
    t.add_row("noise", ", ".join(KINDS))
    t.add_row("profiles", "; ".join(f"{k}: " + ", ".join(f"{f}={v}" for f, v in p.items()) for k, p in PROFILES.items()))
    console.print(t)


if __name__ == "__main__":
    main()
