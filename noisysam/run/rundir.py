"""The run directory and what a run depends on.

:class:`RunDir` owns a run directory: the names of its files (:data:`RUN_FILES`), the schemas of what noisysam reads
back from them (:data:`CONFIG_SCHEMA`, :data:`RESULT_SCHEMA`, :data:`CHECKPOINT_SCHEMA`), and reading its config.json
(:class:`RunConfig`), result.json, metrics.jsonl, labels and checkpoint as checked values. One run writes it at a time
(:func:`noisysam.core.files.run_lock`, held from the first read to the last write); ``config.json`` records the
noisysam version, the precision ``amp`` resolved when the run started, and :func:`fingerprints` of the dataset and
labels, which a resume must match; a resume continues only the same run (:func:`prepare_out`, :func:`check_resume`);
per-epoch training dynamics go under ``dynamics/``.

:func:`inputs` builds a run's inputs (its dataset, then its training labels) from a config, for :func:`noisysam.run.loop.train`,
detection and the command line alike, and checks once that the labels belong to the dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from noisysam.core.version import __version__
from noisysam.run import distributed
from noisysam.data.datasets import DATASET_NAMES, ImageDataset, load_dataset
from noisysam.data.streaming import DatasetPair
from noisysam.core.files import (LOCK_NAME, FileFormatError, PathLike, atomic_write, load_checkpoint, read_json,
                                 read_jsonl, run_lock, save_checkpoint, write_json, write_jsonl)
from noisysam.noise.labels import NoisyLabels, make as make_noise
from noisysam.run.config import AMP_MODES, TrainConfig, require, resolve_amp, resolve_device

#: The files of a run directory, by what they hold.
CONFIG, LABELS, METRICS, RESULT, CHECKPOINT = (
    "config.json", "noisy_labels.npz", "metrics.jsonl", "result.json", "checkpoint.pt")

#: Every file a finished run directory holds (beside its ``dynamics/`` folder).
RUN_FILES = (CONFIG, LABELS, METRICS, RESULT, CHECKPOINT)

#: What only a run directory holds at its top: :func:`noisysam.run.loop.train` writes config.json before anything
#: else of a run, and a checkpoint.pt without it is a run too (one that cannot be resumed). Other commands (a grid,
#: a detection) refuse such a directory as their out (:func:`check_not_a_run`).
RUN_MARKERS = (CONFIG, CHECKPOINT)

#: Per-epoch training dynamics of a run directory (see :func:`save_dynamics`).
DYNAMICS_DIR = "dynamics"

_NUMBER, _NONE = (int, float), type(None)

#: What :func:`noisysam.run.loop.train` reads from a checkpoint to resume (other keys may be present).
CHECKPOINT_SCHEMA: dict[str, Any] = {
    "stage": int, "epoch": int, "model": dict, "optimizer": dict, "history": list, "wall_seconds": _NUMBER,
    "relabels": (torch.Tensor, _NONE), "stage1": (dict, _NONE),
}

#: What resuming a run reads from its config.json.
CONFIG_SCHEMA: dict[str, Any] = {"config": dict}

#: What the CLI and the table read from a result.json (dotted keys are nested).
RESULT_SCHEMA: dict[str, Any] = {
    "method": str, "dataset": str, "model": str, "seed": int, "epochs": int, "profile": str,
    "noise.type": str, "noise.mode": (str, _NONE), "noise.rate": (*_NUMBER, _NONE), "noise.realised_rate": _NUMBER,
    "test_accuracy.last": (*_NUMBER, _NONE), "test_accuracy.best": (*_NUMBER, _NONE), "test_accuracy.best_epoch": int,
    "test_accuracy.selected": (*_NUMBER, _NONE), "test_accuracy.selected_epoch": (int, _NONE),
    "test_accuracy.selected_by": (str, _NONE), "memorisation_last": (*_NUMBER, _NONE),
    "recovery_last": (*_NUMBER, _NONE), "noise_auroc_last": (*_NUMBER, _NONE), "stage1": (dict, _NONE),
    "wall_seconds": _NUMBER, "device": str, "amp": str,
}


def read_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict:
    """A run's checkpoint (:func:`noisysam.core.files.load_checkpoint`, never unpickling anything but tensors and
    plain values), checked to hold what a resume reads: :data:`CHECKPOINT_SCHEMA`, the model's parameters as tensors,
    the history as per-epoch records, a stage of 1 or 2 and an epoch >= 0 (:class:`FileFormatError` otherwise)."""
    what = "checkpoint"
    state = load_checkpoint(path, map_location, CHECKPOINT_SCHEMA)
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise FileFormatError(path, "'model' must map parameter names to tensors", what)
    if not all(isinstance(r, dict) for r in state["history"]):
        raise FileFormatError(path, "'history' must be a list of per-epoch records (objects)", what)
    if state["stage"] not in (1, 2) or state["epoch"] < 0:
        raise FileFormatError(path, f"stage must be 1 or 2 and epoch >= 0, got stage {state['stage']}, "
                                    f"epoch {state['epoch']}", what)
    return state


@dataclass(frozen=True)
class RunConfig:
    """A run's config.json as typed values: ``settings``, its :class:`~noisysam.run.config.TrainConfig` fields as
    saved (the ``config`` object; :meth:`train_config` makes the TrainConfig); ``version``, the noisysam that
    started it; ``inputs``, the :func:`fingerprints` of its dataset and labels; ``amp``, the precision it trains in;
    ``record``, the whole file (the noise summary, method parameters, normalisation, ...); ``path``, the file."""

    settings: dict
    version: Optional[str]
    inputs: dict
    amp: Optional[str]
    record: dict
    path: Path

    def train_config(self) -> TrainConfig:
        """The saved settings as a TrainConfig; ValueError where they hold a field this version has not."""
        try:
            return TrainConfig(**self.settings)
        except TypeError as e:
            raise ValueError(f"its config.json is from another version ({e})") from None


class RunDir:
    """One run directory at ``path``: where each of its files lies, and its files read back as checked values
    (each reader raises :class:`~noisysam.core.files.FileFormatError` naming the file for one that is damaged,
    and the usual OSError for one that is missing). Writing goes through :func:`noisysam.run.loop.train`, under
    the directory's lock."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def labels_path(self) -> Path:
        return self.path / LABELS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def result_path(self) -> Path:
        return self.path / RESULT

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def dynamics_path(self, stage: int, epoch: int) -> Path:
        """Where :func:`save_dynamics` puts ``stage``/``epoch`` (stage 0: the training split's row indices)."""
        name = "rows.npz" if stage == 0 else f"stage{stage}_epoch_{epoch:03d}.npz"
        return self.path / DYNAMICS_DIR / name

    def is_run(self) -> Optional[str]:
        """The first of :data:`RUN_MARKERS` the directory holds (so it is a run directory), or None."""
        return next((name for name in RUN_MARKERS if (self.path / name).exists()), None)

    @property
    def finished(self) -> bool:
        """Whether the run finished: its result.json is written last."""
        return self.result_path.is_file()

    def config(self) -> RunConfig:
        """config.json (:data:`CONFIG_SCHEMA`) as a :class:`RunConfig`."""
        record = read_json(self.config_path, CONFIG_SCHEMA, "run config")
        return RunConfig(record["config"], record.get("noisysam_version"), record.get("inputs") or {},
                         record.get("amp"), record, self.config_path)

    def result(self, schema: dict[str, Any] = RESULT_SCHEMA) -> dict:
        """result.json, checked to hold what ``schema`` says (default :data:`RESULT_SCHEMA`, the keys the summary and
        the table read)."""
        return read_json(self.result_path, schema, "run result")

    def metrics(self) -> list[dict]:
        """metrics.jsonl: one record per finished epoch."""
        return read_jsonl(self.metrics_path, "run metrics")

    def labels(self, num_classes: Optional[int] = None, n: Optional[int] = None) -> NoisyLabels:
        """noisy_labels.npz (see :meth:`noisysam.noise.labels.NoisyLabels.load` for ``num_classes`` and ``n``)."""
        return NoisyLabels.load(self.labels_path, num_classes=num_classes, n=n)

    def checkpoint(self, map_location: Any = "cpu") -> dict:
        """checkpoint.pt, checked by :func:`read_checkpoint`."""
        return read_checkpoint(self.checkpoint_path, map_location)

    def inputs(self, dataset: Optional[ImageDataset] = None) -> tuple[TrainConfig, ImageDataset, NoisyLabels]:
        """The run's config, dataset (reloaded by name, or ``dataset`` for one given as an object) and noisy labels
        (its noisy_labels.npz), built by :func:`inputs` and checked against the fingerprints its config.json
        recorded."""
        require(self.path.is_dir(), f"run directory {str(self.path)!r} does not exist")
        require(self.config_path.is_file(), f"run directory {str(self.path)!r} has no config.json")
        saved = self.config()
        cfg = saved.train_config()
        require(not cfg.model.startswith("custom:"), f"run directory {str(self.path)!r} trained a model passed as an "
                                                     f"object ({cfg.model}); this detection needs a model noisysam "
                                                     "can build")
        require(dataset is not None or not cfg.dataset.startswith("custom:"),
                f"run directory {str(self.path)!r} trained on a dataset passed as an object ({cfg.dataset}): pass "
                "that dataset")
        data, labels = inputs(dataclasses.replace(cfg, noise=str(self.labels_path), download=False), dataset)
        require(fingerprints(data, labels) == saved.record.get("inputs"),
                f"run directory {str(self.path)!r}: its dataset or labels differ from the ones it was trained on "
                "(config.json's fingerprints)")
        return cfg, data, labels

    def write_config(self, record: dict) -> None:
        write_json(self.config_path, record)

    def write_metrics(self, history: list[dict]) -> None:
        write_jsonl(self.metrics_path, history)

    def write_result(self, summary: dict) -> None:
        write_json(self.result_path, summary)

    def save_labels(self, labels: NoisyLabels) -> None:
        labels.save(self.labels_path)

    def save_checkpoint(self, state: dict) -> None:
        save_checkpoint(self.checkpoint_path, state)


def check_not_a_run(directory: PathLike, what: str) -> None:
    """ValueError when ``directory`` is a run directory (it holds one of :data:`RUN_MARKERS`): ``what`` (a grid of
    runs, a detection) writes folders and files of its own, which must not land among a run's."""
    found = RunDir(directory).is_run()
    if found:
        raise ValueError(f"{str(directory)!r} is a run directory (it holds {found}), not a place for {what}; "
                         "choose another out")


def check_own(directory: PathLike, what: str, own: Iterable[str]) -> None:
    """ValueError unless ``directory`` is missing, or holds nothing but what ``what`` writes there: the names ``own``
    (a name ending in ``*``: any name that starts with the rest), the lock and hidden (temporary) files. A run
    directory is refused as by :func:`check_not_a_run`; a folder of the user's, or another command's output, names
    its first stranger."""
    directory = Path(directory)
    check_not_a_run(directory, what)
    if not directory.is_dir():
        return
    own = tuple(own)
    mine = lambda name: name.startswith(".") or any(name.startswith(o[:-1]) if o.endswith("*") else name == o
                                                     for o in own)
    stranger = next((p.name for p in sorted(directory.iterdir()) if not mine(p.name)), None)
    if stranger is not None:
        raise ValueError(f"{str(directory)!r} holds {stranger!r}, which {what} does not write: it is a folder of "
                         "yours or another command's output, not a place for " + what + "; choose another out")


@contextmanager
def locked(cfg: TrainConfig) -> Iterator[Optional[Path]]:
    """The run directory (None without ``out``), locked for this run while the block runs (files.run_lock); of
    several processes of one run, rank 0 holds the lock for all (noisysam.run.distributed)."""
    if cfg.out is None:
        yield None
        return
    out = Path(cfg.out)
    require(not out.exists() or out.is_dir(), f"out {str(out)!r} exists and is not a directory")
    with run_lock(out) if distributed.writer_process() else nullcontext(out):
        yield out


def prepare_out(cfg: TrainConfig, out: Optional[Path]) -> tuple[Optional[RunConfig], Optional[dict]]:
    """Check the (locked) run directory before anything is written; return its config.json and a checkpoint
    to resume from (each None for a new run). Where the run's dataset or labels file lies is no setting: a resume
    from another path compares their content instead (:func:`check_resume`)."""
    if out is None or not out.exists() or not any(p.name != LOCK_NAME for p in out.iterdir()):
        return None, None
    run = RunDir(out)
    ckpt, is_run = run.checkpoint_path, run.config_path.exists()
    if not is_run:  # not a run directory: say so before suggesting --resume
        require(not ckpt.exists(), f"cannot {'resume' if cfg.resume else 'train in'} {str(out)!r}: it has a "
                                   "checkpoint.pt but no config.json, so what the checkpoint was trained with is "
                                   "unknown; start a new run in another out")
        other = next((p.name for p in sorted(out.iterdir()) if p.name != LOCK_NAME and not p.name.startswith(".")), None)
        require(other is None, f"{str(out)!r} is not empty: it holds no config.json but {other!r}, so it is not a run "
                               "directory --resume could continue (a table, sweep or detection?); choose another out")
    require(cfg.resume, f"run directory {str(out)!r} is not empty: pass resume=True (--resume) to continue it, "
                       "or choose another out")
    if not is_run:  # only the lock or temporary files: a new run
        return None, None
    saved = run.config()
    require(saved.version == __version__, f"cannot resume {str(out)!r}: it was written by noisysam {saved.version} "
                                         f"and this is noisysam {__version__}; finish it with noisysam {saved.version} "
                                         "or start a new run")
    mine = cfg.to_dict()
    diff = config_diff(saved.settings, mine, ignore=moved_files(saved.settings, mine))
    require(not diff, f"cannot resume {str(out)!r}: its config differs in {diff}")
    return saved, (run.checkpoint() if ckpt.exists() else None)


def _is_file_setting(name: str, value: Any) -> bool:
    """Whether config field ``name`` holds the path of a file or folder (a dataset .npz or image folder, a labels
    .npz) rather than a name (a dataset noisysam knows, a noise kind, an object's ``custom:`` name)."""
    if not isinstance(value, str):
        return False
    if name == "dataset":
        return value not in DATASET_NAMES and not value.startswith("custom:")
    return name == "noise" and value.endswith(".npz")


def moved_files(saved: dict, mine: dict) -> list[str]:
    """The config fields (``dataset``, ``noise``) that name a file in both config dicts, ``saved`` and ``mine``:
    where a file lies is no setting of the run, its content is (:func:`fingerprints`)."""
    return [name for name in ("dataset", "noise")
            if _is_file_setting(name, saved.get(name)) and _is_file_setting(name, mine.get(name))]


def _sha256(*arrays: np.ndarray) -> str:
    """sha256 over arrays, each as its shape, dtype (little-endian) and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.asarray(a).dtype.newbyteorder("<"))
        h.update(f"{a.shape} {a.dtype.str};".encode())
        h.update(a.reshape(-1).view(np.uint8))  # the array's own memory, no copy
    return h.hexdigest()


#: What :func:`fingerprints` records, in words (for the message of a refused resume).
_INPUTS = {"dataset_sha256": "the dataset (its train/test images, labels and class names)",
           "labels_sha256": "the training labels (noisy and clean)"}

#: A run's data: arrays held in memory, or a pair of map-style torch datasets streamed through a DataLoader.
Data = Union[ImageDataset, DatasetPair]


def fingerprints(data: Data, labels: NoisyLabels) -> dict:
    """Content hashes of what a run depends on beyond its config, saved in config.json and checked on resume:
    the dataset (arrays: its images, labels and class names; torch datasets: their labels and class names, since
    reading every image to hash it could take longer than the run) and the labels it trains on (noisy and clean)."""
    arrays = ((data.x_train, data.y_train, data.x_test, data.y_test) if isinstance(data, ImageDataset)
              else (data.y_train, data.y_test))
    return dict(dataset_sha256=_sha256(*arrays, np.array(data.classes, dtype=str)),
                labels_sha256=_sha256(labels.noisy, labels.clean))


def check_resume(out: Path, saved: RunConfig, inputs: dict, ckpt: Optional[dict], stages: int, epochs: int) -> None:
    """A resume continues the same run: the same data and labels, a checkpoint within this run's stages and epochs."""
    recorded = saved.inputs
    differ = [f"{_INPUTS[k]} (sha256 {str(recorded.get(k))[:12]}... when it started, {v[:12]}... now)"
              for k, v in inputs.items() if recorded.get(k) != v]
    require(not differ, f"cannot resume {str(out)!r}: {'; '.join(differ)} changed since the run started; "
                       "resume with the inputs it started with, or start a new run in another out")
    if ckpt is not None:
        stage, epoch = ckpt["stage"], ckpt["epoch"]
        require(stage <= stages and epoch <= epochs,
               f"cannot resume {str(out)!r}: its checkpoint.pt is at stage {stage}, epoch {epoch}, beyond this run's "
               f"{stages} stage(s) of {epochs} epochs; it belongs to another run")


def comparable_config(d: dict) -> dict:
    """Config fields that must match to resume a run (not where it lives, how it was started or the batch size of
    its evaluation passes, which changes no result beyond float rounding)."""
    return {k: v for k, v in d.items() if k not in ("out", "resume", "device", "download", "data_root",
                                                    "eval_batch_size")}


def config_diff(saved: dict, mine: dict, ignore: Iterable[str] = ()) -> list[str]:
    """The fields of :func:`comparable_config` (but ``ignore``) in which config dict ``mine`` differs from the
    ``saved`` one, sorted; only fields ``saved`` has count, so a field added since it was written does not."""
    ignore, mine = set(ignore), comparable_config(mine)
    return sorted(k for k, v in comparable_config(saved).items() if k not in ignore and mine.get(k) != v)


def saved_config(out: Union[str, Path]) -> dict:
    """The config dict saved in a run directory (to resume it with the same settings): :meth:`RunDir.config`'s
    ``settings``."""
    return RunDir(out).config().settings


def amp_of_run(cfg: TrainConfig, saved: Optional[RunConfig]) -> str:
    """The run's precision as an AMP_MODES value: resolved from ``cfg.amp`` on this machine when the run starts,
    the one saved in config.json when it resumes (so "auto" never switches precision mid-run)."""
    if saved is None:
        dtype = resolve_amp(cfg.amp, resolve_device(cfg.device))
        return {None: "none", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    amp, device = saved.amp, resolve_device(cfg.device)
    require(amp in AMP_MODES[1:], f"cannot resume {str(cfg.out)!r}: its config.json records no precision (amp), got {amp!r}")
    require(amp != "bf16" or device.type != "cuda" or torch.cuda.is_bf16_supported(),
           f"cannot resume {str(cfg.out)!r} on {device}: the run trains in bf16 (--amp {cfg.amp} when it started) and "
           "this GPU has no bf16; resume it on a machine that has")
    return amp


def dynamics_path(out: Union[str, Path], stage: int, epoch: int) -> Path:
    """Where :func:`save_dynamics` puts ``stage``/``epoch`` (stage 0: the training split's row indices)."""
    return RunDir(out).dynamics_path(stage, epoch)


def save_dynamics(out: Path, stage: int, epoch: int, arrays: dict) -> None:
    """One small .npz per epoch: each training-split sample's margin and loss against its given (noisy) label
    (float16) and predicted class, in the order of ``rows.npz`` (the split's rows in the training set), for
    label-issue scores such as the area under the margin (Pleiss et al., arXiv 2001.10528). Atomic; a resumed
    epoch overwrites its file, so there is one per finished epoch."""
    cast = {k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    atomic_write(dynamics_path(out, stage, epoch), lambda f: np.savez(f, **cast))


# ------------------------------------------------------------------------------------- a run's inputs

def given_inputs(overrides: dict, dataset: Any = None, noise: Any = None,
                 model: Any = None) -> tuple[Optional[Data], Optional[NoisyLabels], Any]:
    """The inputs a caller passes beside a config, each a name or an object: a name (str) goes into ``overrides`` as
    the config field of the same name; the objects are returned (None where a name or nothing was given), torch
    datasets ``(train, test[, train_eval])`` as a :class:`~noisysam.data.streaming.DatasetPair`. ValueError for a
    dataset that is neither."""
    for name, value in (("dataset", dataset), ("noise", noise), ("model", model)):
        if isinstance(value, str):
            overrides[name] = value
    dataset, noise, model = (None if isinstance(v, str) else v for v in (dataset, noise, model))
    if isinstance(dataset, (tuple, list)):
        dataset = DatasetPair(*dataset)
    require(dataset is None or isinstance(dataset, (ImageDataset, DatasetPair)),
            f"dataset must be a name, an ImageDataset or torch datasets (train, test), got {type(dataset).__name__}")
    return dataset, noise, model


def noise_labels(cfg: TrainConfig, data: Data) -> NoisyLabels:
    """The training labels of ``data`` as ``cfg``'s noise model makes them: kind ``cfg.noise`` at ``cfg.noise_rate``
    (``noise_mode``, ``noise_exact``) from the run's ``seed`` (:func:`noisysam.noise.labels.make`)."""
    return make_noise(cfg.noise, data.y_train, cfg.noise_rate, seed=cfg.seed, mode=cfg.noise_mode,
                      num_classes=data.num_classes, exact=cfg.noise_exact, dataset=data)


def inputs(cfg: TrainConfig, dataset: Optional[Data] = None,
           noise: Optional[NoisyLabels] = None) -> tuple[Data, NoisyLabels]:
    """A run's inputs from its config: the dataset (``dataset``, or ``cfg.dataset`` loaded by name from
    ``cfg.data_root``), then its training labels (``noise``; else the labels file ``cfg.noise`` names (.npz), checked
    against the dataset's classes and size; else :func:`noise_labels`). Checked once, here: the labels belong to the
    dataset (their clean labels are its training labels) and have no more classes than it. The one way
    :func:`noisysam.run.loop.train`, detection and the command line build what a run trains on."""
    data = dataset if dataset is not None else load_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download)
    if noise is not None:
        labels = noise
    elif cfg.noise.endswith(".npz"):
        labels = NoisyLabels.load(cfg.noise, num_classes=data.num_classes, n=len(data.y_train))
    else:
        labels = noise_labels(cfg, data)
    require(len(labels) == len(data.y_train) and np.array_equal(labels.clean, data.y_train),
            f"noisy labels do not belong to this dataset: their clean labels differ from the dataset's "
            f"({len(labels)} vs {len(data.y_train)} samples)")
    require(labels.num_classes <= data.num_classes, f"noisy labels have {labels.num_classes} classes, more than the "
                                                    f"dataset's {data.num_classes}")
    return data, labels
