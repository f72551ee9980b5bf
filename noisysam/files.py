"""Atomic file writes for run directories: a killed run never leaves a half-written file.

Every writer goes through :func:`atomic_write`: write to a temporary file in the same folder, flush
and fsync it, then ``os.replace`` it over the target (atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import torch

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_jsonable(obj: Any) -> Any:
    """NaN/inf floats become null: strict JSON has no NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (non-finite floats as null)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
    """Atomically (re)write a JSON-lines file, one object per line."""
    text = "".join(json.dumps(to_jsonable(r)) + "\n" for r in rows)
    atomic_write(path, lambda f: f.write(text), mode="w")


def read_json(path: PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def save_checkpoint(path: PathLike, state: dict) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain Python values."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)
