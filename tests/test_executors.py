"""Executors: a grid's cells in worker processes or Ray tasks give the same runs as one after another in
this process; Ctrl-C stops every worker and leaves the cells resumable; a failing cell is reported and
the others finish; a Ray worker killed mid-run is retried and its cell resumes to the same result.

The reference for every comparison is the same grid trained sequentially in this process with one
thread (``--jobs 1 --threads 1``); runs are compared line by line on metrics.jsonl and result.json,
timing fields left out. Tiny data (conftest's 16x16 set), a width-4 CNN, 2-3 epochs.
"""

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from noisysam.grid import cells as grid_cells, executors
from noisysam.cli.commands import cli
from noisysam.core.files import RunDirectoryBusy, run_lock
from noisysam.run.config import TrainConfig
from noisysam.run.loop import train

CELLS = ["--methods", "sgd,sam", "--rates", "0.2,0.6", "--seeds", "0"]
TINY = ["--model-param", "width=4", "--batch-size", "50", "--amp", "none", "--no-plot"]
EPOCHS = 2


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def base_config(dataset, epochs=EPOCHS):
    """The TrainConfig the CLI builds from TINY (for API-level grids that must match the CLI's cells)."""
    return TrainConfig(dataset=dataset, epochs=epochs, model_params={"width": 4}, batch_size=50, amp="none")


def without_timing(obj):
    """JSON text of obj without its timing fields (a run's, and a table row's wall time and its ratio to sgd's)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items()
                    if k not in ("seconds", "wall_seconds", "wall_seconds_mean", "wall_vs_sgd")}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return json.dumps(strip(obj), sort_keys=True)


def run_files(run_dir):
    """(metrics.jsonl records, result.json) of a finished run, timing left out."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return without_timing(lines), without_timing(json.loads((run_dir / "result.json").read_text()))


def assert_same_grid(root, reference):
    cells = grid_cells.grid(root, ["sgd", "sam"], [0.2, 0.6], [0])
    for cell in cells:
        mine, ref = run_files(cell.dir), run_files(grid_cells.cell_dir(reference, cell.method, cell.rate, cell.seed))
        assert mine == ref, cell.label()
    rows = lambda r: json.loads((r / "table.json").read_text())["rows"]
    assert without_timing(rows(root)) == without_timing(rows(reference))


@pytest.fixture(scope="module")
def reference(tiny_npz, tmp_path_factory):
    """The 2x2 grid trained one cell after another in this process, one thread (today's behaviour)."""
    root = tmp_path_factory.mktemp("reference") / "grid"
    r = run("table", "--dataset", tiny_npz, *CELLS, "--out", root, "--epochs", EPOCHS, *TINY, "--jobs", 1,
            "--threads", 1)
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["epoch"] for line in
            (root / "sam" / "rate0.2" / "seed0" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    return root


@pytest.fixture
def fast_polling(monkeypatch):
    monkeypatch.setattr(executors, "POLL_SECONDS", 0.1)


def test_two_jobs_give_the_same_runs_and_table_as_one_job(tiny_npz, tmp_path, reference, fast_polling):
    root = tmp_path / "grid"
    r = run("table", "--dataset", tiny_npz, *CELLS, "--out", root, "--epochs", EPOCHS, *TINY, "--jobs", 2,
            "--threads", 1)
    assert r.exit_code == 0, r.output
    assert sorted(line.split("] ")[1].split(":")[0] for line in r.stdout.splitlines() if line.startswith("[")) == \
        sorted(cell.label() for cell in grid_cells.grid(root, ["sgd", "sam"], [0.2, 0.6], [0]))
    assert_same_grid(root, reference)
    assert multiprocessing.active_children() == []  # the worker processes are gone


def test_ctrl_c_stops_every_worker_and_the_cells_resume_to_the_same_runs(tiny_npz, tmp_path, reference,
                                                                          fast_polling):
    root = tmp_path / "grid"
    cells = grid_cells.grid(root, ["sgd", "sam"], [0.2, 0.6], [0])

    class CtrlC:
        """Ctrl-C in the driver as soon as any cell has finished its first epoch."""
        begin = started = finished = lambda self, *a: None

        def advanced(self, job, done, last):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grid_cells.run_grid(cells, base_config(tiny_npz), executor=executors.LocalProcesses(2, threads=1),
                       watch=CtrlC())
    assert multiprocessing.active_children() == []
    assert not all(c.finished for c in cells)

    r = run("table", "--dataset", tiny_npz, *CELLS, "--out", root, "--epochs", EPOCHS, *TINY, "--jobs", 2,
            "--threads", 1)
    assert r.exit_code == 0, r.output
    assert_same_grid(root, reference)


def _lock_holder(run_dir, timeout=120.0):
    """The pid recorded in run_dir's lock file once a process holds it (None if none did within timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads((run_dir / ".noisysam.lock").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    return None


def _alive(pid):
    """Whether process pid still runs (an exited one not yet reaped by its new parent, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] != "Z"
    except OSError:  # no /proc (macOS): the kill above is the answer
        return True


def test_workers_of_a_killed_driver_stop_and_free_their_cells(tiny_npz, tmp_path):
    """SIGKILL of the driver (as a scheduler's kill would) leaves no worker training on: each notices its
    parent is gone and exits, the kernel frees its run lock, and the cell can be taken up again."""
    root = tmp_path / "grid"
    cells = grid_cells.grid(root, ["sgd"], [0.2, 0.6], [0])
    driver = subprocess.Popen([sys.executable, "-m", "noisysam.cli.commands", "table", "--dataset", tiny_npz, "--methods", "sgd",
                               "--rates", "0.2,0.6", "--seeds", "0", "--out", str(root), "--epochs", "5000", *TINY,
                               "--jobs", "2", "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = [_lock_holder(cell.dir) for cell in cells]
    finally:
        driver.kill()
        driver.wait()
    assert None not in workers and driver.pid not in workers
    deadline = time.monotonic() + 30
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_alive, workers))
    for cell in cells:
        assert not cell.finished
        assert _lock_frees(cell.dir)


def _lock_frees(run_dir, timeout=10.0):
    """Whether run_dir's lock can be taken within timeout: a dying process's main thread shows as a zombie while
    its other threads (torch's) still close the files, so the kernel may free the flock a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with run_lock(run_dir):
                return True
        except RunDirectoryBusy:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_cell_is_reported_and_the_others_finish(tiny_npz, tmp_path, reference, fast_polling, jobs):
    root = tmp_path / "grid"
    [bad] = grid_cells.grid(root, ["sam"], [0.2], [0])

    def stop_after_first_epoch(event, info):
        if event == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a started cell ...
        train(grid_cells.cell_config(base_config(tiny_npz), bad), callback=stop_after_first_epoch)
    (bad.dir / "checkpoint.pt").write_bytes(b"not a checkpoint")  # ... whose checkpoint is unreadable

    r = run("table", "--dataset", tiny_npz, *CELLS, "--out", root, "--epochs", EPOCHS, *TINY, "--jobs", jobs,
            "--threads", 1)
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: 1 of 4 cells failed: sam 20% seed 0 (")
    assert "sam 20% seed 0: failed: " in r.stdout
    others = [c for c in grid_cells.grid(root, ["sgd", "sam"], [0.2, 0.6], [0]) if c != bad]
    for cell in others:
        assert run_files(cell.dir) == run_files(grid_cells.cell_dir(reference, cell.method, cell.rate, cell.seed))
    rows = json.loads((root / "table.json").read_text())["rows"]  # the table of the cells that finished
    assert sorted((row["method"], row["rate"]) for row in rows) == [("sam", 0.6), ("sgd", 0.2), ("sgd", 0.6)]
    assert not bad.finished


def test_gpu_slots_round_robin_and_threads_split_the_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda = TrainConfig(device="cuda")
    assert executors.LocalProcesses(3, cells_per_gpu=2).devices(cuda) == ["cuda:0", "cuda:1", "cuda:0"]
    assert executors.LocalProcesses(2, cells_per_gpu=2).devices(TrainConfig(device="cuda:1")) == ["cuda:1"] * 2
    assert executors.LocalProcesses(2).devices(TrainConfig(device="cpu")) == [None, None]
    with pytest.raises(ValueError, match=r"jobs must be <= visible GPUs x cells_per_gpu \(2 x 2\), got 5"):
        executors.LocalProcesses(5, cells_per_gpu=2).devices(cuda)
    cores = len(os.sched_getaffinity(0))
    assert executors.LocalProcesses(2).threads == max(1, cores // 2)
    assert executors.LocalProcesses(2, threads=3).threads == 3
    with pytest.raises(ValueError, match="jobs must be an integer >= 1, got 0"):
        executors.LocalProcesses(0)


def test_executor_options_that_do_not_fit_exit_2(tiny_npz, tmp_path, monkeypatch):
    root = tmp_path / "grid"
    for bad, message in ((["--executor", "ray", "--jobs", "2"], "--jobs is for --executor local"),
                         (["--address", "localhost:6379"], "--address is for --executor ray")):
        r = run("table", "--dataset", tiny_npz, *CELLS, "--out", root, *TINY, *bad)
        assert r.exit_code == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.output
        assert r.stderr.count("\n") == 1 and not root.exists()
    monkeypatch.setattr(executors, "ray_available", lambda: False)
    r = run("table", "--dataset", tiny_npz, *CELLS, "--out", root, *TINY, "--executor", "ray")
    assert r.exit_code == 2
    assert r.stderr == "error: --executor ray needs the ray package: pip install 'noisysam[ray]'\n"
    assert not root.exists()


# ------------------------------------------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_ray_grid_gives_the_same_table_as_the_local_executor(ray_cluster, tiny_npz, tmp_path, reference,
                                                              fast_polling):
    root = tmp_path / "grid"
    r = run("table", "--dataset", tiny_npz, *CELLS, "--out", root, "--epochs", EPOCHS, *TINY, "--executor", "ray",
            "--threads", 1)
    assert r.exit_code == 0, r.output
    assert_same_grid(root, reference)
    assert ray_cluster.is_initialized()  # the executor used this process's connection and left it open


def test_a_killed_ray_worker_is_retried_and_its_cell_resumes_to_the_same_run(ray_cluster, tiny_npz, tmp_path,
                                                                              fast_polling):
    config = dataclasses.replace(base_config(tiny_npz, epochs=3), method="sam", resume=True)
    uninterrupted = train(config, out=str(tmp_path / "uninterrupted"))
    marker = tmp_path / "killed"

    def kill_once(event, info):
        """In the worker: SIGKILL itself once, right after the first epoch's checkpoint was written."""
        if event == "epoch" and info["epoch"] == 1 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / "killed-run"
    job = executors.Job(dataclasses.replace(config, out=str(out)), 3, "sam killed once", kill_once)
    [outcome] = executors.RayExecutor(threads=1, max_retries=2).run([job])
    assert outcome.error is None, outcome.error
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker process did die
    assert run_files(out) == run_files(uninterrupted.run_dir)
    assert without_timing(outcome.summary) == without_timing(uninterrupted.summary)
