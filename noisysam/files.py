"""Run-directory files: atomic writes that honour the umask, and the one-writer lock.

Every writer goes through :func:`atomic_write`: write to a temporary file in the same folder, flush
and fsync it, then ``os.replace`` it over the target (atomic on POSIX and Windows). A run directory
has one writer at a time: :func:`run_lock` holds an exclusive ``flock`` on a lock file inside it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import torch

PathLike = Union[str, "os.PathLike[str]"]

#: The lock file inside a locked run directory (removed when the lock is released; not run output).
LOCK_NAME = ".noisysam.lock"


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it onto ``path``. The file gets
    the permissions of any newly created file (0o666 less the umask), not tempfile's private 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, opened for writing with mode 0o666, which the
    kernel reduces by the umask (reading the umask from Python would mean setting it, racing other threads)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 2**-48 per try: another writer drew the same name
            continue


class RunDirectoryBusy(ValueError):
    """Another process (or another run in this one) holds the run directory's lock."""


@contextmanager
def run_lock(directory: PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on run directory ``directory`` (created if missing) while the block runs.

    The lock is an ``fcntl.flock`` on ``directory/.noisysam.lock``, which records its holder (pid, host,
    start time, command). The kernel drops a flock when its process dies, so a killed run's lock is free
    again by construction; its stale file is taken over. Raises :class:`RunDirectoryBusy`, naming the
    holder, when another open lock holds it. On release the lock file is removed, and so are the folders
    this call created if they are still empty (a refused run leaves nothing behind).
    """
    directory = Path(directory)
    created = _make_dirs(directory)
    try:
        fd = _acquire(directory / LOCK_NAME)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield directory
    finally:
        # Unlink while still holding it: a process that opened the old file meanwhile sees it gone and retries.
        (directory / LOCK_NAME).unlink(missing_ok=True)
        os.close(fd)
        _remove_empty(created)


def _make_dirs(directory: Path) -> list[Path]:
    """``mkdir -p directory``; returns the folders it created, innermost first."""
    missing, parent = [], directory
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    directory.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): leave it and its parents
            return


def _acquire(path: Path) -> int:
    """Open and flock ``path``; the file descriptor that holds the lock."""
    import fcntl  # POSIX; imported here so that the rest of the module works everywhere

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # a releasing holder removed the folder it had created: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirectoryBusy(f"run directory {str(path.parent)!r} is in use by another run ({holder}); "
                                   "wait for it to finish or choose another out") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            info = dict(pid=os.getpid(), host=socket.gethostname(),
                        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=" ".join(sys.argv))
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            return fd
        os.close(fd)  # locked a file its holder removed on release: lock the current one instead


def _holder(fd: int) -> str:
    """The lock holder as recorded in the lock file, in words."""
    try:
        h = json.loads(os.pread(fd, 65536, 0))
        return f"pid {h['pid']} on {h['host']}, since {h['started']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is still writing its record
        return "holder not recorded yet"


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
