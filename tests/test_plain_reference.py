"""scripts/plain_reference.py, the plain PyTorch script the CPU profile's figures are measured against: it runs,
and it trains what noisysam trains (the same network, the same noisy labels by the same convention), written
independently of noisysam's code."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import noisysam
from noisysam.models.networks import get_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plain_reference.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("plain_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_its_noisy_labels_are_noisysams_symmetric_replace_labels(script, seed):
    clean = noisysam.load_dataset("cifar10-mini").y_train
    mine = noisysam.symmetric(clean, 0.6, seed=seed, mode="replace")
    assert np.array_equal(script.symmetric_noise(clean, 0.6, seed), mine.noisy)


def test_its_network_is_noisysams_cnn5(script):
    theirs, ours = script.net(32), get_model("cnn5", 10, width=32)
    assert [tuple(p.shape) for p in theirs.parameters()] == [tuple(p.shape) for p in ours.parameters()]
    with torch.no_grad():
        for a, b in zip(ours.parameters(), theirs.parameters()):
            a.copy_(b)
    x = torch.randn(4, 3, 32, 32)
    for mode in (True, False):  # batch statistics, then the running ones the train-mode pass just updated
        assert torch.allclose(ours.train(mode)(x), theirs.train(mode)(x), atol=1e-5)


@pytest.mark.parametrize("method", ["sgd", "sam", "elr", "co-teaching", "dividemix"])
def test_it_trains_every_method_and_reports_each_epoch(tiny_npz, tmp_path, method):
    out = tmp_path / "run.json"
    subprocess.run([sys.executable, str(SCRIPT), "--method", method, "--epochs", "2", "--warmup", "1", "--width", "4",
                    "--batch-size", "32", "--data", tiny_npz, "--threads", "1", "--out", str(out)], check=True,
                   capture_output=True)
    run = json.loads(out.read_text())
    history, summary = run["history"], run["summary"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert summary["last"] == history[-1]["test_accuracy"]
    assert summary["best"] == max(r["test_accuracy"] for r in history)
    assert all(0 <= r[k] <= 1 for r in history for k in ("test_accuracy", "val_accuracy", "memorisation"))
