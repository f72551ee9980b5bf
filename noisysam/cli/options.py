"""The command line's options, declared once and shared by the commands: each training option's click type comes
from :data:`noisysam.run.config.CONFIG_PARAMS` (one contract for the API and the CLI), ``--config`` reads a TOML
file under the command line, and the grid commands share their execution options."""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext
from functools import reduce
from collections.abc import Mapping
from typing import Any, Callable, Optional

import click
import torch
from click.core import ParameterSource

from noisysam.cli import config_file
from noisysam.methods.registry import REGISTRY
from noisysam.models.networks import MODELS
from noisysam.noise.labels import KINDS
from noisysam.core.params import Interval, InvalidParameterError, Options, Text
from noisysam.run.tensorboard import TensorBoardLogger
from noisysam.run.config import CONFIG_PARAMS, PROFILES, TrainConfig


DEFAULT = TrainConfig()
_PROFILE = "[default: from --profile]"
# The --rho help's defaults, read from where they are declared (the profiles and each method's factory).
_PROFILE_RHO = ", ".join(f"{name} {profile['rho']}" for name, profile in PROFILES.items())
_SAM_RHO = ", ".join(sorted(name for name, info in REGISTRY.items() if info.sam_radius))
_OWN_RHO = ", ".join(f"{name} {info.defaults['rho']}" for name, info in sorted(REGISTRY.items())
                     if info.radius == "own" and info.defaults.get("rho") is not None)


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


def click_type(field: str) -> Optional[click.ParamType]:
    """The click type of TrainConfig field ``field``, made from its constraint in ``CONFIG_PARAMS`` so that
    --help and the check agree (the table, applied by the API, has the last word: e.g. it refuses inf)."""
    constraints = CONFIG_PARAMS.constraints[field]
    if any(isinstance(c, Text) for c in constraints):  # free text beside the choices (timm:<name>): the API checks
        return None
    for c in constraints:
        if isinstance(c, Interval):
            kind = click.IntRange if c.kind is int else click.FloatRange
            return kind(c.low, c.high, min_open=c.low is not None and not c.closed_low,
                        max_open=c.high is not None and not c.closed_high)
        if isinstance(c, Options):
            return click.Choice(sorted(c.values) if isinstance(c.values, Mapping) else list(c.values))
    return None


def list_of(kind: Callable[[str], Any], field: str):
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
OPTIONS: dict[str, Callable] = {
    "dataset": click.option("--dataset", default=DEFAULT.dataset, show_default=True,
                            help="cifar10-mini (embedded), cifar10, cifar100, a dataset .npz or an image folder."),
    "data_root": click.option("--data-root", type=click.Path(file_okay=False),
                              help="Where cifar10/cifar100 live [default: ~/.cache/noisysam]."),
    "download": click.option("--download", is_flag=True, help="Download cifar10/cifar100 into --data-root."),
    "noise": click.option("--noise", default=DEFAULT.noise, show_default=True,
                          help=f"One of {', '.join(KINDS)}, or a labels file (.npz) from `noisysam noise`."),
    "noise_rate": click.option("--noise-rate", type=click_type("noise_rate"), default=DEFAULT.noise_rate,
                               show_default=True, help="Share of training labels to corrupt."),
    "noise_mode": click.option("--noise-mode", type=click_type("noise_mode"), default=DEFAULT.noise_mode,
                               show_default=True,
                               help="Symmetric noise: replace = redraw from all classes (may hit the true one), "
                                    "flip = always a different class."),
    "noise_exact": click.option("--noise-exact", "--exact", "noise_exact", is_flag=True,
                                help="Corrupt exactly round(rate*n) labels instead of each with probability rate."),
    "method": click.option("--method", type=click_type("method"), default=DEFAULT.method,
                           show_default=True, help="Training method."),
    "method_params": click.option("--method-param", "method_params", multiple=True, callback=_key_values,
                                  metavar="KEY=VALUE",
                                  help="Method parameter, repeatable; VALUE read as JSON where possible "
                                       "(e.g. mode=soft, p=3, m=32)."),
    "rho": click.option("--rho", type=click_type("rho"),
                        help=f"SAM radius, for methods that have one [default: {_SAM_RHO}: "
                             f"from --profile ({_PROFILE_RHO}), halved when the labels' noise rate is 80% or more, "
                             f"as in the paper; the others their own ({_OWN_RHO})]. An error for a method without a "
                             "radius."),
    "mixup_alpha": click.option("--mixup-alpha", type=click_type("mixup_alpha"),
                                help="Mixup Beta(alpha, alpha), for methods with mixup [default: the method's, 1.0]. "
                                     "An error for a method without mixup."),
    "model": click.option("--model", type=click_type("model"),
                          help=f"Network: {', '.join(MODELS)}, or timm:<name> for any of timm's (pip install "
                               f"'noisysam[timm]'; --model-param pretrained=true, checkpoint=FILE). {_PROFILE}"),
    "model_params": click.option("--model-param", "model_params", multiple=True, callback=_key_values,
                                 metavar="KEY=VALUE", help="Model option, repeatable (e.g. width=16 for cnn)."),
    "epochs": click.option("--epochs", type=click_type("epochs"), help=f"Training epochs (per stage). {_PROFILE}"),
    "batch_size": click.option("--batch-size", type=click_type("batch_size"), help=f"Batch size. {_PROFILE}"),
    "lr": click.option("--lr", type=click_type("lr"), help=f"Peak learning rate. {_PROFILE}"),
    "momentum": click.option("--momentum", type=click_type("momentum"), default=DEFAULT.momentum,
                             show_default=True, help="SGD momentum."),
    "nesterov": click.option("--nesterov/--no-nesterov", default=None, help=f"Nesterov momentum. {_PROFILE}"),
    "weight_decay": click.option("--weight-decay", type=click_type("weight_decay"), help=f"Weight decay. {_PROFILE}"),
    "schedule": click.option("--schedule", type=click_type("schedule"), help=f"Learning-rate schedule. {_PROFILE}"),
    "warmup_epochs": click.option("--warmup-epochs", type=click_type("warmup_epochs"),
                                  help=f"Epochs of linear learning-rate warm-up. {_PROFILE}"),
    "augment": click.option("--augment/--no-augment", default=None,
                            help=f"Random crop + horizontal flip. {_PROFILE}"),
    "padding_mode": click.option("--padding-mode", type=click_type("padding_mode"),
                                 help=f"How the random crop pads the image: constant (zeros) or reflect. {_PROFILE}"),
    "cutout": click.option("--cutout", type=click_type("cutout"), default=DEFAULT.cutout, show_default=True,
                           help="Cutout square size in pixels (0: off)."),
    "val_fraction": click.option("--val-fraction", type=click_type("val_fraction"),
                                 default=DEFAULT.val_fraction, show_default=True,
                                 help="Share of the training set held out to select an epoch."),
    "val_labels": click.option("--val-labels", type=click_type("val_labels"), default=DEFAULT.val_labels,
                               show_default=True, help="Labels of the held-out split (noisy: honest selection)."),
    "seed": click.option("--seed", type=click_type("seed"), default=DEFAULT.seed, show_default=True,
                         help="Seed of the noise, split, initialisation and batches."),
    "device": click.option("--device", default=DEFAULT.device, show_default=True, help="auto, cpu or cuda[:N]."),
    "amp": click.option("--amp", type=click_type("amp"), default=DEFAULT.amp, show_default=True,
                        help="Mixed precision (auto: bf16 where it is faster: a GPU with bf16, a CPU with native "
                             "bf16; fp32 elsewhere)."),
    "channels_last": click.option("--channels-last/--no-channels-last", default=DEFAULT.channels_last,
                                  show_default=True, help="Images and weights in channels_last memory layout (faster "
                                                          "convolutions on CPUs and recent GPUs)."),
    "eval_batch_size": click.option("--eval-batch-size", type=click_type("eval_batch_size"),
                                    default=DEFAULT.eval_batch_size, show_default=True,
                                    help="Batch size of the per-epoch evaluation passes (no effect on results)."),
    "workers": click.option("--workers", type=click_type("workers"), default=DEFAULT.workers, show_default=True,
                            help="DataLoader worker processes for torch datasets given through the Python API "
                                 "(arrays are batched on the device and ignore it)."),
    "profile": click.option("--profile", type=click_type("profile"), default=DEFAULT.profile,
                            show_default=True,
                            help="Fills model, epochs, batch size, lr, Nesterov, weight decay, schedule, "
                                 "augmentation and its padding, rho."),
    "sam_sync": click.option("--sam-sync", type=click_type("sam_sync"), default=DEFAULT.sam_sync,
                             show_default=True,
                             help="Several processes (--nproc, torchrun): none = each climbs with its own gradient "
                                  "(m = per-process batch); grad = all-reduce it first (plain SAM on the whole "
                                  "batch)."),
    "sync_bn": click.option("--sync-bn", is_flag=True,
                            help="Several processes on CUDA: BatchNorm statistics over the whole batch "
                                 "(SyncBatchNorm)."),
}

threads_option = click.option("--threads", type=click.IntRange(min=1),
                               help="CPU threads for torch [default: torch's choice]; on a busy machine fewer "
                                    "threads than cores can be much faster.")


tensorboard_option = click.option(
    "--tensorboard", is_flag=True,
    help="Log every epoch's metrics and the run's hyperparameters for TensorBoard into <run dir>/tensorboard "
         "(needs pip install 'noisysam[tensorboard]'; view with tensorboard --logdir DIR).")


def tensorboard_logger(enabled: bool) -> Any:
    """The --tensorboard logger (a context manager), or a no-op context."""
    if not enabled:
        return nullcontext()
    try:
        return TensorBoardLogger()
    except ImportError as e:
        raise click.UsageError(str(e)) from None


def config_option(*lists: str) -> Callable:
    """--config FILE: the command's options from a TOML file (noisysam.cli.config_file), under the command line's.
    ``lists``: the command's comma-separated list options."""

    def read(ctx: click.Context, param: click.Parameter, path: Optional[str]) -> None:
        if path:
            ctx.default_map = {**(ctx.default_map or {}), **config_file.default_map(ctx, path, lists)}

    return click.option("--config", type=click.Path(exists=True, dir_okay=False), is_eager=True, expose_value=False,
                        callback=read, help="TOML file of options (keys: the option names with underscores, e.g. "
                                            "noise_rate = 0.6); options given here override it.")


def set_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)


#: The fields a grid or a command sets per run itself (its cells' method, rate and seed; where it writes), and the
#: distributed settings that only `train` takes; every other TrainConfig field is a training option of every command
#: that trains (generated from the dataclass, so a new field without an option above fails at import).
PER_RUN = ("method", "noise_rate", "seed", "sam_sync", "sync_bn", "out", "resume")

#: The training options shared by `train` and `table` (`table` sets method, noise rate and seed per cell).
TRAINING = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in PER_RUN)
if set(TRAINING) - set(OPTIONS):
    raise TypeError(f"TrainConfig fields without a command-line option: {sorted(set(TRAINING) - set(OPTIONS))}")


def options(*names: str) -> Callable:
    """Apply the shared option definitions ``names`` to a command, listed in that order in --help."""
    return lambda f: reduce(lambda g, name: OPTIONS[name](g), reversed(names), f)


def given_options(ctx: click.Context, names: tuple[str, ...]) -> dict[str, Any]:
    """The options the user actually gave (command line or environment): only those override a config."""
    unset = (ParameterSource.DEFAULT, None)  # DEFAULT_MAP: set by --config, so given
    return {n: ctx.params[n] for n in names if ctx.get_parameter_source(n) not in unset}


#: How a grid command's cells run (noisysam.grid.executors); shared by every grid command.
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


def execution_options(f: Callable) -> Callable:
    return reduce(lambda g, option: option(g), reversed(_EXECUTION), f)


def param_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, list]:
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
SWEEP_TRAINING = tuple(name for name in TRAINING if name != "val_labels")
