"""How a grid's cells run: in this process, in N local worker processes, or as Ray tasks on a cluster.

A cell is one call of :func:`noisysam.run.loop.train` with its config (run directory set, ``resume=True``),
so an executor knows nothing of methods or models, and a cell stopped anywhere (Ctrl-C, a killed worker)
continues from its last per-epoch checkpoint when it runs again. The driver watches every running cell
through its run directory (``metrics.jsonl`` has one line per finished epoch) instead of receiving
callbacks from the workers, so progress looks the same for every executor, Ray workers on other
machines that share the filesystem included.

- :class:`InProcess`: one cell after another in this process (the default; ``--jobs 1``).
- :class:`LocalProcesses`: N cells at once in spawned worker processes, ``threads`` torch threads each,
  on CUDA placed round-robin over the visible GPUs, at most ``cells_per_gpu`` per GPU.
- :class:`RayExecutor`: each cell a Ray task with ``num_cpus=threads`` and ``num_gpus=1/cells_per_gpu``;
  Ray schedules them over the cluster and retries a task whose worker died (its cell resumes).

A cell that fails (diverged, unreadable checkpoint, ...) is reported with its error line and does not
stop the others; a result never depends on how many cells ran beside it (same seed, same threads).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import torch

from noisysam.run.loop import Callback, train
from noisysam.run.config import TrainConfig, resolve_device
from noisysam.run.rundir import RunDir

#: Seconds between two looks at the running cells' run directories.
POLL_SECONDS = 1.0
#: How often a worker process checks that the driver that started it is still alive.
ORPHAN_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Job:
    """One cell to run: ``train(config)``, its run directory ``config.out``; ``epochs``: the lines its
    metrics.jsonl has when it is done (epochs over all stages); ``callback`` goes to ``train`` in the
    worker (it must pickle for worker processes and Ray: a module-level function or a closure for Ray)."""

    config: TrainConfig
    epochs: int
    label: str
    callback: Optional[Callback] = None

    @property
    def dir(self) -> Path:
        assert self.config.out is not None, "a grid cell always has a run directory"
        return Path(self.config.out)


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``summary`` (result.json) or ``error`` (one line: exception type and message)."""

    job: Job
    summary: Optional[dict] = None
    error: Optional[str] = None


class Watch(Protocol):
    """What the driver tells about the jobs while they run (the CLI draws it)."""

    def begin(self, jobs: Sequence[Job]) -> None: ...

    def started(self, job: Job, done: int) -> None: ...

    def advanced(self, job: Job, done: int, last: Optional[dict]) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...


class CellsFailed(RuntimeError):
    """Some cells failed; the others ran to the end. ``failures``: their outcomes."""

    def __init__(self, failures: Sequence[Outcome], total: int):
        self.failures = list(failures)
        lines = "; ".join(f"{o.job.label} ({o.error})" for o in self.failures)
        super().__init__(f"{len(self.failures)} of {total} cells failed: {lines}; the others finished, and "
                         "re-running the same command retries the failed ones")


def epochs_done(run_dir: Path) -> tuple[int, Optional[dict]]:
    """Finished epochs of a run (lines of its metrics.jsonl, written atomically per epoch) and the last one;
    FileFormatError for a damaged metrics.jsonl (the grid's progress reads it before any cell trains)."""
    try:
        records = RunDir(run_dir).metrics()
    except FileNotFoundError:
        return 0, None
    return len(records), (records[-1] if records else None)


def error_line(e: BaseException) -> str:
    """``Type: message`` on one line (a cell's failure as the driver reports it)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def run_cell(config: TrainConfig, threads: Optional[int] = None, callback: Optional[Callback] = None) -> dict:
    """The work of one cell in a worker: ``threads`` torch threads, then ``train(config)``; returns
    ``{"summary": result.json}`` or ``{"error": line}`` so that any failure crosses process boundaries
    as plain data (exceptions of the cell's own code need not unpickle in the driver)."""
    if threads:
        torch.set_num_threads(threads)
    try:
        return {"summary": train(config, callback=callback).summary}
    except Exception as e:  # a failing cell is reported, it does not stop the others
        return {"error": error_line(e)}


def default_threads(jobs: int) -> int:
    """CPU threads per cell when ``jobs`` cells share this machine: its usable cores // jobs (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


def _positive(name: str, value: Any) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class Executor(ABC):
    """Runs jobs and returns their outcomes in job order, telling ``watch`` how they go."""

    @abstractmethod
    def run(self, jobs: Sequence[Job], watch: Optional[Watch] = None) -> list[Outcome]: ...


class InProcess(Executor):
    """One job after another in this process (today's sequential grid); ``threads``: torch threads
    while it runs (None: leave torch's setting alone). Progress is read after each epoch."""

    def __init__(self, threads: Optional[int] = None):
        if threads is not None:
            _positive("threads", threads)
        self.threads = threads

    def run(self, jobs: Sequence[Job], watch: Optional[Watch] = None) -> list[Outcome]:
        before = torch.get_num_threads()
        outcomes = []
        if watch:
            watch.begin(jobs)
        try:
            for job in jobs:
                outcome = self._one(job, watch)
                outcomes.append(outcome)
                if watch:
                    watch.finished(outcome)
        finally:
            torch.set_num_threads(before)
        return outcomes

    def _one(self, job: Job, watch: Optional[Watch]) -> Outcome:
        def on_event(event: str, info: dict) -> None:
            if job.callback:
                job.callback(event, info)
            if watch and event == "epoch":
                watch.advanced(job, *epochs_done(job.dir))

        if watch:
            watch.started(job, epochs_done(job.dir)[0])
        return Outcome(job, **run_cell(job.config, self.threads, on_event))


class _Polling(Executor):
    """The driver shared by the executors whose cells run elsewhere: keep up to :meth:`_free` jobs in
    flight, poll their run directories for progress, collect each outcome as it comes, and on any
    exception in the driver (Ctrl-C) stop every worker before re-raising."""

    queues = False  # True: a submitted job may wait for resources; it counts as started once it writes

    def run(self, jobs: Sequence[Job], watch: Optional[Watch] = None) -> list[Outcome]:
        if watch:
            watch.begin(jobs)
        outcomes: dict[int, Outcome] = {}
        pending = list(range(len(jobs)))[::-1]
        running: dict[Any, tuple[int, float]] = {}  # handle -> (job index, submission time)
        active: dict[int, int] = {}  # job index -> epochs done, once started
        self._open(jobs)
        try:
            while pending or running:
                while pending and self._free(len(running)):
                    i = pending.pop()
                    running[self._submit(jobs[i])] = (i, time.time())
                for handle, (i, since) in list(running.items()):
                    self._look(jobs[i], i, since, active, watch)
                for handle in self._wait(list(running), POLL_SECONDS):
                    i, since = running.pop(handle)
                    self._look(jobs[i], i, since, active, watch, force=True)
                    outcomes[i] = self._outcome(jobs[i], handle)
                    if watch:
                        watch.finished(outcomes[i])
        except BaseException:
            self._stop(list(running))
            raise
        finally:
            self._close()
        return [outcomes[i] for i in range(len(jobs))]

    def _look(self, job: Job, i: int, since: float, active: dict[int, int], watch: Optional[Watch],
              force: bool = False) -> None:
        """Tell ``watch`` that job ``i`` started (at once, or for queueing executors once its run
        directory changed after submission, or ``force``) and how many epochs it has done."""
        if i not in active:
            if self.queues and not force and not _changed_since(job.dir, since):
                return
            active[i], _ = epochs_done(job.dir)
            if watch:
                watch.started(job, active[i])
        done, last = epochs_done(job.dir)
        if done != active[i]:
            active[i] = done
            if watch:
                watch.advanced(job, done, last)

    def _outcome(self, job: Job, handle: Any) -> Outcome:
        try:
            return Outcome(job, **self._result(handle))
        except Exception as e:  # the worker died, or the task could not run at all
            return Outcome(job, error=error_line(e))

    # What each executor provides: set-up, whether another job may start, submission (-> a handle),
    # waiting (-> the handles done), a done handle's run_cell dict, stopping the workers, tear-down.
    @abstractmethod
    def _open(self, jobs: Sequence[Job]) -> None: ...

    @abstractmethod
    def _free(self, running: int) -> bool: ...

    @abstractmethod
    def _submit(self, job: Job) -> Any: ...

    @abstractmethod
    def _wait(self, handles: list, timeout: float) -> list: ...

    @abstractmethod
    def _result(self, handle: Any) -> dict: ...

    @abstractmethod
    def _stop(self, handles: list) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...


def _changed_since(run_dir: Path, since: float) -> bool:
    """Whether anything was written into ``run_dir`` since ``since`` (files are renamed into place, so
    the directory's own mtime moves with every write)."""
    try:
        return run_dir.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def _worker_init(driver: int) -> None:
    """Worker initialiser. Ctrl-C in a terminal reaches the whole process group; only the driver acts on
    it (it stops the workers), so a worker never dies half-way through reporting. A driver that dies
    without stopping them (SIGKILL, SIGTERM from a scheduler) orphans its workers: each exits once its
    parent is no longer ``driver``, so no cell trains on unwatched; its run resumes from the last epoch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch_driver() -> None:
        while os.getppid() == driver:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os._exit(1)  # files are written atomically and the kernel releases the run lock

    threading.Thread(target=watch_driver, name="noisysam-driver-watch", daemon=True).start()


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes now (Python 3.14 has ``terminate_workers``; before it, the pool's
    process table is the only handle). Files stay whole: every run file is written atomically."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


class LocalProcesses(_Polling):
    """``jobs`` cells at once on this machine, each in a spawned worker process with ``threads`` torch
    threads (default: cores // jobs). Each slot is a one-worker ``ProcessPoolExecutor`` reused from cell
    to cell, so a worker that dies takes only its own cell down (reported; the slot gets a new worker).

    On CUDA (the config's device is ``auto`` with a GPU, ``cuda`` or ``cuda:N``) slot ``s`` trains on the
    ``s mod G``-th visible GPU (or only on ``cuda:N`` when given), so at most ``cells_per_gpu`` cells share
    one GPU; ``jobs`` may not exceed GPUs x ``cells_per_gpu``."""

    def __init__(self, jobs: int, threads: Optional[int] = None, cells_per_gpu: int = 1):
        for name, value in (("jobs", jobs), ("cells_per_gpu", cells_per_gpu)):
            _positive(name, value)
        if threads is not None:
            _positive("threads", threads)
        self.jobs, self.cells_per_gpu = jobs, cells_per_gpu
        self.threads = threads or default_threads(jobs)

    def devices(self, config: TrainConfig) -> list[Optional[str]]:
        """The device of each slot: None (the config's own) off CUDA, else ``cuda:i`` round-robin."""
        if resolve_device(config.device).type != "cuda":
            return [None] * self.jobs
        given = config.device.partition(":")[2]
        gpus = [int(given)] if given else list(range(torch.cuda.device_count()))
        if self.jobs > len(gpus) * self.cells_per_gpu:
            raise ValueError(f"jobs must be <= visible GPUs x cells_per_gpu ({len(gpus)} x {self.cells_per_gpu}), "
                             f"got {self.jobs}")
        return [f"cuda:{gpus[s % len(gpus)]}" for s in range(self.jobs)]

    def _open(self, jobs: Sequence[Job]) -> None:
        self._devices = self.devices(jobs[0].config) if jobs else []
        self._pools: list[Optional[ProcessPoolExecutor]] = [None] * self.jobs
        self._slot: dict[Future, int] = {}

    def _pool(self, slot: int) -> ProcessPoolExecutor:
        if self._pools[slot] is None:
            self._pools[slot] = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_worker_init,
                                                     initargs=(os.getpid(),))
        return self._pools[slot]

    def _free(self, running: int) -> bool:
        return running < self.jobs

    def _submit(self, job: Job) -> Future:
        slot = next(s for s in range(self.jobs) if s not in self._slot.values())
        device = self._devices[slot]
        config = job.config if device is None else dataclasses.replace(job.config, device=device)
        future = self._pool(slot).submit(run_cell, config, self.threads, job.callback)
        self._slot[future] = slot
        return future

    def _wait(self, handles: list, timeout: float) -> list:
        return list(wait(handles, timeout=timeout, return_when=FIRST_COMPLETED).done)

    def _result(self, handle: Future) -> dict:
        slot = self._slot.pop(handle)
        try:
            return handle.result()
        except BrokenProcessPool:
            self._pools[slot] = None  # that worker died; the slot's next cell gets a fresh one
            raise RuntimeError(f"the worker process of this cell died (killed or crashed); re-running resumes the "
                               f"cell from its last checkpoint") from None

    def _stop(self, handles: list) -> None:
        for pool in self._pools:
            if pool is not None:
                _terminate(pool)

    def _close(self) -> None:
        for pool in self._pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pools = [None] * self.jobs
        self._slot = {}


#: Seconds to wait for a TCP connection to a Ray cluster's address before refusing it.
PROBE_SECONDS = 5.0


def probe_ray_address(address: Optional[str]) -> None:
    """ValueError unless something accepts a TCP connection at Ray cluster ``address`` (``HOST:PORT`` or
    ``ray://HOST:PORT``; None: ``RAY_ADDRESS``) within :data:`PROBE_SECONDS`: ``ray.init`` waits minutes for an
    address where nothing listens, this refuses it at once. Other forms (``auto``, ``local``, no port) and no
    address at all are left to ray.init's own rule; a port that is not a number in 1..65535 is refused here too."""
    given = address if address is not None else os.environ.get("RAY_ADDRESS")
    host, sep, port = (given or "").removeprefix("ray://").rpartition(":")
    if not sep or port.endswith("]"):  # no port (auto, local, a bare [IPv6] host)
        return
    if not (host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"address must be HOST:PORT with PORT a number in 1..65535 (or ray://HOST:PORT, auto, "
                         f"local), got {given!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as e:
        raise ValueError(f"no Ray cluster answers at {given} ({e.strerror or e}); start one there (ray start --head) "
                         "or give the address of a running one") from None


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class RayExecutor(_Polling):
    """Each cell a Ray task (``num_cpus=threads``; on a cluster with GPUs, unless the device is ``cpu``,
    ``num_gpus=1/cells_per_gpu`` so that several small cells share a GPU). Connects to the cluster at
    ``address`` (None: ``ray.init()``'s own rule: RAY_ADDRESS, a local running cluster, or a new local
    instance; an address where nothing listens is refused at once, :func:`probe_ray_address`), or uses the Ray
    connection this process already has. A task whose worker dies is
    retried up to ``max_retries`` times and resumes its cell from the checkpoint; a cell's own error is
    not retried. Every worker must import noisysam and see the run directories (a shared filesystem)."""

    queues = True

    def __init__(self, address: Optional[str] = None, threads: int = 1, cells_per_gpu: int = 1,
                 max_retries: int = 3):
        if not ray_available():
            raise ImportError("--executor ray needs the ray package: pip install 'noisysam[ray]'")
        import ray

        if not ray.is_initialized():  # a connection this process has is used as it is
            probe_ray_address(address)
        for name, value in (("threads", threads), ("cells_per_gpu", cells_per_gpu)):
            _positive(name, value)
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.address, self.threads, self.cells_per_gpu, self.max_retries = address, threads, cells_per_gpu, max_retries

    def _open(self, jobs: Sequence[Job]) -> None:
        import ray

        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            ray.init(address=self.address)
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        self._gpu = gpus and bool(jobs) and jobs[0].config.device != "cpu"
        self._task = ray.remote(run_cell).options(num_cpus=self.threads,
                                                  num_gpus=1 / self.cells_per_gpu if self._gpu else 0,
                                                  max_retries=self.max_retries, retry_exceptions=False)

    def _free(self, running: int) -> bool:
        return True  # Ray queues tasks until the cluster has their resources

    def _submit(self, job: Job) -> Any:
        # Ray makes the task's GPU the only visible one (CUDA_VISIBLE_DEVICES): "cuda" is that GPU.
        config = dataclasses.replace(job.config, device="cuda") if self._gpu else job.config
        return self._task.remote(config, self.threads, job.callback)

    def _wait(self, handles: list, timeout: float) -> list:
        import ray

        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:  # collect every other one that is ready too
            ready, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
        return ready

    def _result(self, handle: Any) -> dict:
        import ray

        return ray.get(handle)

    def _stop(self, handles: list) -> None:
        import ray

        for handle in handles:
            ray.cancel(handle, force=True)  # kills the worker process; the cell resumes from its checkpoint

    def _close(self) -> None:
        import ray

        if self._started_ray:
            ray.shutdown()
