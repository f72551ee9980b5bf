"""Shared test fixtures."""

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
