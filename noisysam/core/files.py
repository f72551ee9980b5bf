"""Files: atomic writes that honour the umask, the one-writer lock, and readers that treat every file as possibly
hostile. What a run directory holds, and the schemas of its files, are the run layer's
(:mod:`noisysam.run.rundir`).

Every writer goes through :func:`atomic_write`: write to a temporary file in the same folder, flush
and fsync it, then ``os.replace`` it over the target (atomic on POSIX and Windows). A run directory
has one writer at a time: :func:`run_lock` holds an exclusive ``flock`` on a lock file inside it.

Every reader (:func:`read_json`, :func:`read_jsonl`, :func:`read_table`, :func:`load_checkpoint`,
:class:`NpzArrays`) raises :class:`FileFormatError`, a ValueError naming the file and the problem, for a file that
is garbage, empty, truncated, pickle-carrying, lacks what noisysam needs, or declares more data than it holds;
sizes are checked before anything is allocated. What a reader needs of each array (dtype, shape, range, no
repeats, finite) it declares once as an :class:`ArraySpec`, checked from the header before the array is read and
on its values after. Missing or unreadable files raise the usual OSError.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import secrets
import socket
import sys
import time
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional, Union

import numpy as np

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


def read_json(path: PathLike, schema: Optional[Mapping[str, Any]] = None, what: str = "JSON file") -> Any:
    """The JSON value in ``path``; with ``schema`` (see :func:`schema_problem`) an object holding its keys.
    Raises :class:`FileFormatError` for a file that is not UTF-8 JSON, too large or nested too deeply."""
    try:
        value = json.loads(_read_text(path, what))
    except json.JSONDecodeError as e:
        raise FileFormatError(path, f"not valid JSON ({e})", what) from None
    except RecursionError:
        raise FileFormatError(path, "JSON nested too deeply", what) from None
    problem = schema_problem(value, schema or {})
    if problem:
        raise FileFormatError(path, problem, what)
    return value


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure to ``path`` atomically, in the format its suffix names; return ``path``."""
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight"))
    return path


def save_checkpoint(path: PathLike, state: dict) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain Python values."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: PathLike, map_location: Any = "cpu", schema: Optional[Mapping[str, Any]] = None) -> Any:
    """Load a checkpoint written by :func:`save_checkpoint` and, with ``schema``, check that it is an object holding
    ``schema``'s keys and types (:func:`schema_problem`; a run's checkpoint is read by
    :func:`noisysam.run.rundir.read_checkpoint`). Never unpickles arbitrary objects: torch's weights-only unpickler
    refuses them, and so does this function, with :class:`FileFormatError`, as it does for an empty, truncated or
    garbage file."""
    what = "checkpoint"
    with open(path, "rb") as f:  # missing or unreadable: the OSError as it is
        if os.fstat(f.fileno()).st_size == 0:
            raise FileFormatError(path, "the file is empty", what)
        try:
            with warnings.catch_warnings():  # torch warns about odd pickle protocols: the error says enough
                warnings.simplefilter("ignore")
                state = torch.load(f, map_location=map_location, weights_only=True)
        except MemoryError:
            raise
        except pickle.UnpicklingError as e:
            detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "")
            raise FileFormatError(path, "it holds objects other than tensors and plain values, or corrupt pickle "
                                        f"data; refused unread (loading it could run code) {detail}", what) from None
        except Exception as e:  # torch.load raises anything on a damaged file (KeyError, RuntimeError, OSError, ...)
            raise FileFormatError(path, f"not a torch checkpoint, or truncated ({type(e).__name__}: "
                                        f"{_first_line(e)})", what) from None
    problem = schema_problem(state, schema or {})
    if problem:
        raise FileFormatError(path, problem, what)
    return state


# -------------------------------------------------------------------------------------------- readers

#: The largest JSON file read (run files are far smaller: config.json with a 1000-class matrix is ~25 MB).
MAX_JSON_BYTES = 256 * 2**20

_NONE = type(None)


class FileFormatError(ValueError):
    """A file noisysam reads is unreadable as what it should be: garbage, empty, truncated, pickle-carrying,
    lacking keys, or declaring more data than it holds. A ValueError (bad input; the CLI exits 2) whose
    message names the file (``path``) and the ``problem``."""

    def __init__(self, path: PathLike, problem: str, what: str = "file") -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"cannot read {what} {path}: {problem}")


def schema_problem(value: Any, schema: Mapping[str, Any], optional: bool = False) -> Optional[str]:
    """What is wrong with ``value`` against ``schema`` (None: nothing). ``schema`` maps keys, dotted for nested
    objects (``"noise.rate"``: ``value["noise"]["rate"]``), to a type or tuple of types; bool passes only where
    bool is listed (JSON ``true`` is not a number). ``optional``: absent keys are fine, present ones are checked."""
    if schema and not isinstance(value, dict):
        return f"expected an object with keys {sorted(schema)}, got {type(value).__name__}"
    for key, types in schema.items():
        inner = value
        for depth, part in enumerate(key.split(".")):
            if not isinstance(inner, dict):
                return f"{'.'.join(key.split('.')[:depth])!r} must be an object, got {type(inner).__name__}"
            if part not in inner:
                inner = _ABSENT
                break
            inner = inner[part]
        if inner is _ABSENT:
            if optional:
                continue
            return f"lacks {key!r}"
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(inner, allowed) or (isinstance(inner, bool) and bool not in allowed):
            names = " or ".join("null" if t is _NONE else t.__name__ for t in allowed)
            return f"{key!r} must be {names}, got {type(inner).__name__}"
    return None


_ABSENT = object()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _read_text(path: PathLike, what: str) -> str:
    """The UTF-8 text of ``path``, refused above :data:`MAX_JSON_BYTES` before it is read."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise FileFormatError(path, f"{size} bytes, more than the {MAX_JSON_BYTES} a run file can hold", what)
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError(path, f"not UTF-8 text ({e.reason} at byte {e.start})", what) from None


def read_jsonl(path: PathLike, what: str = "JSON-lines file") -> list[dict]:
    """The objects of a JSON-lines file, one per non-blank line (e.g. metrics.jsonl); :class:`FileFormatError`
    names the file and the line that is not a JSON object."""
    rows = []
    for number, line in enumerate(_read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise FileFormatError(path, f"line {number} is not valid JSON ({_first_line(e)})", what) from None
        if not isinstance(row, dict):
            raise FileFormatError(path, f"line {number} is not a JSON object", what)
        rows.append(row)
    return rows


class NpyHeader(NamedTuple):
    """An array's declared shape and dtype, as its .npy header states them."""

    shape: tuple[int, ...]
    dtype: np.dtype


class NpzArrays:
    """An ``.npz`` opened for checked reading (a context manager). ``headers`` maps each array's name to its
    :class:`NpyHeader`, read from the .npy headers alone: nothing is decompressed, so callers check shapes,
    dtypes and sizes before :meth:`read` allocates anything. On opening, every header is checked against its
    member: it must declare exactly the bytes the member stores (a forged shape cannot make a reader allocate
    more than the file holds) and no Python objects (pickles, refused). Errors are :class:`FileFormatError`
    naming the file; ``error(problem)`` makes one for the caller's own checks."""

    def __init__(self, path: PathLike, what: str = ".npz file") -> None:
        self.path, self.what = path, what
        self._file = open(path, "rb")  # missing or unreadable: the OSError as it is
        try:
            self._zip = zipfile.ZipFile(self._file)
            self._members = {info.filename.removesuffix(".npy"): info for info in self._zip.infolist()
                             if info.filename.endswith(".npy")}
            self.headers = {name: self._header(info) for name, info in self._members.items()}
        except BaseException as e:
            self.close()
            if isinstance(e, (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)) and \
                    not isinstance(e, FileFormatError):
                raise self.error(f"not an .npz (zip) file, or damaged ({_first_line(e) or type(e).__name__})") from None
            raise

    def _header(self, info: zipfile.ZipInfo) -> NpyHeader:
        name = info.filename.removesuffix(".npy")
        with self._zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise self.error(f"member {name!r} has .npy format version {version}, not 1.0 or 2.0")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            stored = info.file_size - f.tell()
        if dtype.hasobject:
            raise self.error(f"member {name!r} holds Python objects (pickled data), which noisysam never loads")
        declared = math.prod(shape) * dtype.itemsize
        if declared != stored:
            raise self.error(f"member {name!r} declares shape {shape} of {dtype} ({declared} bytes) but stores "
                             f"{stored} bytes: truncated or forged")
        return NpyHeader(tuple(shape), dtype)

    def error(self, problem: str) -> FileFormatError:
        return FileFormatError(self.path, problem, self.what)

    def read(self, name: str, spec: Optional["ArraySpec"] = None) -> np.ndarray:
        """The array ``name`` (whose header was checked on opening); with ``spec``, its dtype and shape are checked
        from the header before it is read and its values after (:class:`ArraySpec`). A missing member is refused."""
        if name not in self._members:
            raise self.error(f"lacks member {name!r} (it holds {sorted(self._members)})")
        if spec is not None:
            problem = spec.layout_problem(name, *self.headers[name])
            if problem:
                raise self.error(problem)
        try:
            with self._zip.open(self._members[name]) as f:
                array = np.lib.format.read_array(f, allow_pickle=False)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            raise self.error(f"member {name!r} is damaged ({_first_line(e) or type(e).__name__})") from None
        problem = None if spec is None else spec.value_problem(name, array)
        if problem:
            raise self.error(problem)
        return array

    def close(self) -> None:
        if hasattr(self, "_zip"):
            self._zip.close()
        self._file.close()

    def __enter__(self) -> "NpzArrays":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_KIND_WORDS = {"i": "integers", "u": "integers", "f": "floats", "b": "booleans"}


class ArraySpec(NamedTuple):
    """What an array read back from a file noisysam wrote must be, declared once by its reader: numpy dtype
    ``kinds`` ("iu": integers, "f": floats, "b": booleans), ``shape`` (a length per axis, None: any), values in
    ``[low, high)`` (None: unbounded), ``unique`` values, ``finite`` floats. A row index is
    ``ArraySpec("iu", (None,), 0, n, unique=True)``: integral (so no fractions), in range, no repeats."""

    kinds: str
    shape: tuple[Optional[int], ...] = (None,)
    low: Optional[float] = None
    high: Optional[float] = None
    unique: bool = False
    finite: bool = False

    def layout_problem(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Optional[str]:
        """What is wrong with an array's dtype and ``shape`` (checkable from an .npy header alone), or None."""
        fits = len(shape) == len(self.shape) and all(want in (None, got) for want, got in zip(self.shape, shape))
        if dtype.kind in self.kinds and fits:
            return None
        words = " or ".join(dict.fromkeys(_KIND_WORDS[k] for k in self.kinds))
        wanted = (f"a {len(self.shape)}-D array of {words}" if all(s is None for s in self.shape)
                  else f"{words} of shape {tuple(s if s is not None else 'any' for s in self.shape)}")
        return f"{name} must be {wanted}, got {dtype} {tuple(shape)}"

    def value_problem(self, name: str, a: np.ndarray) -> Optional[str]:
        """What is wrong with the values of ``a`` (whose layout fits), naming the first offending position, or None."""
        flat = a.reshape(-1)
        where = lambda i: tuple(map(int, np.unravel_index(int(i), a.shape))) if a.ndim > 1 else int(i)
        if self.finite and a.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(flat))
            if bad.size:
                return f"{name} holds {flat[bad[0]]} at position {where(bad[0])}; it must be finite"
        if self.low is not None or self.high is not None:
            outside = np.zeros(flat.shape, dtype=bool)
            if self.low is not None:
                outside |= flat < self.low
            if self.high is not None:
                outside |= flat >= self.high
            bad = np.flatnonzero(outside)
            if bad.size:
                low = "-inf" if self.low is None else self.low
                high = "inf" if self.high is None else self.high
                return f"{name} holds {flat[bad[0]]} at position {where(bad[0])}, outside [{low}, {high})"
        if self.unique and flat.size:
            order = np.argsort(flat, kind="stable")
            repeated = np.flatnonzero(flat[order][1:] == flat[order][:-1])
            if repeated.size:
                first, second = sorted(order[repeated[0]:repeated[0] + 2])
                return f"{name} holds {flat[first]} twice (positions {where(first)} and {where(second)}); it must not repeat"
        return None

    def problem(self, name: str, a: np.ndarray) -> Optional[str]:
        return self.layout_problem(name, a.shape, a.dtype) or self.value_problem(name, a)


#: The dtype a JSON column of each type becomes in :func:`read_table`.
_COLUMN_DTYPES = {int: np.int64, bool: np.bool_, float: np.float64}


def read_table(path: PathLike, columns: Mapping[str, Any], what: str = "JSON table") -> dict[str, np.ndarray]:
    """A JSON list of objects, one per row (e.g. a detection's issues.json), as one array per column of ``columns``
    (name -> type as in :func:`schema_problem`: int, bool, or ``(int, float)`` for a number). Every row must hold
    every column with its type, and int columns fit in 64 bits; :class:`FileFormatError` names the first bad row."""
    rows = read_json(path, None, what)
    if not isinstance(rows, list):
        raise FileFormatError(path, f"expected a list of rows (objects), got {type(rows).__name__}", what)
    for number, row in enumerate(rows, 1):
        problem = schema_problem(row, columns)
        if problem:
            raise FileFormatError(path, f"row {number}: {problem}", what)
    out = {}
    for name, types in columns.items():
        dtype = _COLUMN_DTYPES[types if isinstance(types, type) else float]
        try:
            out[name] = np.array([row[name] for row in rows], dtype=dtype)
        except OverflowError:
            raise FileFormatError(path, f"{name!r} holds an integer beyond 64 bits", what) from None
    return out
