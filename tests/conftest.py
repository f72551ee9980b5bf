"""Shared test fixtures."""

import subprocess
import sys

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads can be 100x slower (OpenMP spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """A 16x16 random-image dataset (200 train, 100 test, 10 classes) as an .npz, for end-to-end CLI runs."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8), y_train=np.arange(200) % 10,
             x_test=rng.integers(0, 256, (100, 16, 16, 3), dtype=np.uint8), y_test=np.arange(100) % 10,
             classes=np.array([f"c{i}" for i in range(10)]))
    return str(path)


_HOLD_LOCK = ("import sys\nfrom noisysam.core.files import run_lock\nwith run_lock(sys.argv[1]):\n"
              "    print('locked', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture
def lock_holder():
    """``lock_holder(path)``: another process that holds run directory ``path``'s lock until its stdin closes or
    it is killed; returned (a Popen) once it holds it. Killed at the end of the test if still running."""
    procs = []

    def start(path):
        proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


@pytest.fixture
def snapshot():
    """``snapshot(path)``: every file under ``path`` with its bytes and modification time, and every folder (None),
    to show that a refused command changed, created and removed nothing."""
    return lambda path: {str(f.relative_to(path)): (f.read_bytes(), f.stat().st_mtime_ns) if f.is_file() else None
                         for f in sorted(path.rglob("*"))}
