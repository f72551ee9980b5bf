"""The run directory: one run writes it at a time (:func:`noisysam.core.files.run_lock`, held from the first read
to the last write); ``config.json`` records the noisysam version, the precision ``amp`` resolved when the run
started, and :func:`fingerprints` of the dataset and labels, which a resume must match; a resume continues only
the same run (:func:`prepare_out`, :func:`check_resume`); per-epoch training dynamics go under ``dynamics/``."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch

from noisysam.core.version import __version__
from noisysam.run import distributed
from noisysam.data.datasets import ImageDataset
from noisysam.data.streaming import DatasetPair
from noisysam.core.files import (CONFIG_SCHEMA, LOCK_NAME, atomic_write, load_checkpoint, read_json, run_lock)
from noisysam.noise.labels import NoisyLabels
from noisysam.run.config import AMP_MODES, TrainConfig, require, resolve_amp, resolve_device

RUN_FILES = ("config.json", "noisy_labels.npz", "metrics.jsonl", "result.json", "checkpoint.pt")


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


def prepare_out(cfg: TrainConfig, out: Optional[Path]) -> tuple[Optional[dict], Optional[dict]]:
    """Check the (locked) run directory before anything is written; return its config.json and a checkpoint
    to resume from (each None for a new run)."""
    if out is None or not out.exists() or not any(p.name != LOCK_NAME for p in out.iterdir()):
        return None, None
    require(cfg.resume, f"run directory {str(out)!r} is not empty: pass resume=True (--resume) to continue it, "
                       "or choose another out")
    ckpt = out / "checkpoint.pt"
    if not (out / "config.json").exists():
        require(not ckpt.exists(), f"cannot resume {str(out)!r}: it has a checkpoint.pt but no config.json, so what "
                                  "the checkpoint was trained with is unknown; start a new run in another out")
        other = next((p.name for p in sorted(out.iterdir()) if p.name != LOCK_NAME and not p.name.startswith(".")), None)
        require(other is None, f"cannot resume {str(out)!r}: it holds no config.json but {other!r}, so it is not a run "
                              "directory (a table, sweep or detection?); choose another out")
        return None, None
    saved = read_json(out / "config.json", CONFIG_SCHEMA, "run config")
    version = saved.get("noisysam_version")
    require(version == __version__, f"cannot resume {str(out)!r}: it was written by noisysam {version} and this is "
                                   f"noisysam {__version__}; finish it with noisysam {version} or start a new run")
    diff = config_diff(saved["config"], cfg.to_dict())
    require(not diff, f"cannot resume {str(out)!r}: its config differs in {diff}")
    return saved, (load_checkpoint(ckpt) if ckpt.exists() else None)


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


def fingerprints(data: Union[ImageDataset, DatasetPair], labels: NoisyLabels) -> dict:
    """Content hashes of what a run depends on beyond its config, saved in config.json and checked on resume:
    the dataset (arrays: its images, labels and class names; torch datasets: their labels and class names, since
    reading every image to hash it could take longer than the run) and the labels it trains on (noisy and clean)."""
    arrays = ((data.x_train, data.y_train, data.x_test, data.y_test) if isinstance(data, ImageDataset)
              else (data.y_train, data.y_test))
    return dict(dataset_sha256=_sha256(*arrays, np.array(data.classes, dtype=str)),
                labels_sha256=_sha256(labels.noisy, labels.clean))


def check_resume(out: Path, saved: dict, inputs: dict, ckpt: Optional[dict], stages: int, epochs: int) -> None:
    """A resume continues the same run: the same data and labels, a checkpoint within this run's stages and epochs."""
    recorded = saved.get("inputs") or {}
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
    """The config dict saved in a run directory (to resume it with the same settings)."""
    return read_json(Path(out) / "config.json", CONFIG_SCHEMA, "run config")["config"]


def amp_of_run(cfg: TrainConfig, saved: Optional[dict]) -> str:
    """The run's precision as an AMP_MODES value: resolved from ``cfg.amp`` on this machine when the run starts,
    the one saved in config.json when it resumes (so "auto" never switches precision mid-run)."""
    if saved is None:
        dtype = resolve_amp(cfg.amp, resolve_device(cfg.device))
        return {None: "none", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    amp, device = saved.get("amp"), resolve_device(cfg.device)
    require(amp in AMP_MODES[1:], f"cannot resume {str(cfg.out)!r}: its config.json records no precision (amp), got {amp!r}")
    require(amp != "bf16" or device.type != "cuda" or torch.cuda.is_bf16_supported(),
           f"cannot resume {str(cfg.out)!r} on {device}: the run trains in bf16 (--amp {cfg.amp} when it started) and "
           "this GPU has no bf16; resume it on a machine that has")
    return amp


#: Per-epoch training dynamics of a run directory (see :func:`save_dynamics`).
DYNAMICS_DIR = "dynamics"


def dynamics_path(out: Union[str, Path], stage: int, epoch: int) -> Path:
    """Where :func:`save_dynamics` puts ``stage``/``epoch`` (stage 0: the training split's row indices)."""
    name = "rows.npz" if stage == 0 else f"stage{stage}_epoch_{epoch:03d}.npz"
    return Path(out) / DYNAMICS_DIR / name


def save_dynamics(out: Path, stage: int, epoch: int, arrays: dict) -> None:
    """One small .npz per epoch: each training-split sample's margin and loss against its given (noisy) label
    (float16) and predicted class, in the order of ``rows.npz`` (the split's rows in the training set), for
    label-issue scores such as the area under the margin (Pleiss et al., arXiv 2001.10528). Atomic; a resumed
    epoch overwrites its file, so there is one per finished epoch."""
    cast = {k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    atomic_write(dynamics_path(out, stage, epoch), lambda f: np.savez(f, **cast))
