"""The run-directory contract on the command line: one writer at a time, and a resume that continues only the
run it vouches for (same dataset content, same labels, same noisysam version, a checkpoint with its config and
within its epochs). Each refusal exits 2 with one line on stderr, no traceback, and leaves every file of the
run directory as it was (bytes and modification times)."""

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from noisysam import __version__
from noisysam.cli.commands import cli
from noisysam.core.files import LOCK_NAME, read_json, write_json
from noisysam.run.rundir import DYNAMICS_DIR, RUN_FILES
from noisysam.run.loop import train

TINY = ["--method", "sgd", "--epochs", "2", "--model-param", "width=4", "--batch-size", "32", "--amp", "none",
        "--no-plot"]

def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_refused(r, *fragments):
    """Exit 2, one line on stderr naming the problem, nothing on stdout."""
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""
    for fragment in fragments:
        assert fragment in r.stderr


def make_labels(data, path, seed):
    r = run("noise", "--dataset", data, "--noise-rate", 0.4, "--seed", seed, "-o", path, "--force")
    assert r.exit_code == 0, r.output


@pytest.fixture
def killed(tiny_npz, tmp_path):
    """A run of TINY's settings on its own copies of the dataset and of a labels file, interrupted in epoch 2
    (through the API, which the command calls): its checkpoint holds epoch 1. Returns (run directory, dataset
    file, labels file)."""
    data, labels, out = tmp_path / "data.npz", tmp_path / "labels.npz", tmp_path / "run"
    shutil.copy(tiny_npz, data)
    make_labels(data, labels, seed=3)

    def ctrl_c(event, info):
        if event == "batch" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(dataset=str(data), noise=str(labels), out=str(out), method="sgd", epochs=2, model_params={"width": 4},
              batch_size=32, amp="none", callback=ctrl_c)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and not (out / "result.json").exists()
    return out, data, labels


@pytest.fixture(scope="module")
def finished(tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    r = run("train", "--dataset", tiny_npz, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def finished_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def edit_config(out, **changes):
    saved = read_json(out / "config.json")
    for key, value in changes.items():
        (saved["config"] if key in saved["config"] else saved)[key] = value
    write_json(out / "config.json", saved)


# ---------------------------------------------------------------------------------------- one writer

def test_a_second_writer_exits_2_naming_the_holder_and_a_killed_holder_frees_the_run(killed, lock_holder,
                                                                                       snapshot):
    out, data, labels = killed
    holder = lock_holder(out)
    before = snapshot(out)
    assert_refused(run("train", "--out", out, "--resume", "--no-plot"), f"pid {holder.pid} on ", "is in use")
    assert_refused(run("train", "--dataset", data, "--noise", labels, "--out", out, *TINY),
                   f"pid {holder.pid} on ")  # without --resume: the lock is checked first
    assert snapshot(out) == before
    holder.kill()  # SIGKILL: its lock file stays behind, its flock dies with it
    holder.wait()
    assert (out / LOCK_NAME).exists()
    r = run("train", "--out", out, "--resume", "--json", "--no-plot")
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(os.listdir(out)) == sorted((*RUN_FILES, DYNAMICS_DIR))


# ----------------------------------------------------------------------------- what a resume checks

def test_a_labels_file_regenerated_between_kill_and_resume_is_refused(killed, snapshot):
    out, data, labels = killed
    make_labels(data, labels, seed=4)  # same file name, same options, other draws
    before = snapshot(out)
    assert_refused(run("train", "--out", out, "--resume", "--no-plot"),
                   f"cannot resume '{out}'", "the training labels (noisy and clean)", "changed since the run started")
    assert snapshot(out) == before
    make_labels(data, labels, seed=3)  # the labels it started with: it resumes
    r = run("train", "--out", out, "--resume", "--no-plot")
    assert r.exit_code == 0, r.output
    assert (out / "result.json").is_file()


def test_a_changed_dataset_file_is_refused(killed, snapshot):
    out, data, _ = killed
    with np.load(data) as f:
        arrays = dict(f)
    arrays["x_test"][0, 0, 0, 0] ^= 1  # one bit of one test pixel
    np.savez(data, **arrays)
    before = snapshot(out)
    assert_refused(run("train", "--out", out, "--resume", "--no-plot"),
                   "the dataset (its train/test images, labels and class names)", "changed since the run started")
    assert snapshot(out) == before


def test_a_checkpoint_without_config_is_refused(finished_copy, snapshot):
    out = finished_copy
    (out / "config.json").unlink()
    before = snapshot(out)
    assert_refused(run("train", "--out", out, "--resume", "--no-plot"), "has a checkpoint.pt but no config.json")
    assert snapshot(out) == before


def test_a_checkpoint_beyond_the_runs_epochs_is_refused(finished_copy, snapshot):
    out = finished_copy
    edit_config(out, epochs=1)  # the checkpoint holds epoch 2
    before = snapshot(out)
    assert_refused(run("train", "--out", out, "--resume", "--no-plot"),
                   "checkpoint.pt is at stage 1, epoch 2, beyond this run's 1 stage(s) of 1 epochs")
    assert snapshot(out) == before


def test_a_run_of_another_noisysam_version_is_refused(finished_copy, snapshot):
    out = finished_copy
    edit_config(out, noisysam_version="0.1.0")
    before = snapshot(out)
    assert_refused(run("train", "--out", out, "--resume", "--no-plot"),
                   f"written by noisysam 0.1.0 and this is noisysam {__version__}")
    assert snapshot(out) == before


def test_a_table_cell_in_use_stops_the_table_with_exit_2(tiny_npz, tmp_path, lock_holder, snapshot):
    root = tmp_path / "table"
    cell = root / "sgd" / "rate0.4" / "seed0"
    holder = lock_holder(cell)
    before = snapshot(root)
    r = run("table", "--methods", "sgd", "--rates", 0.4, "--seeds", 0, "--out", root, "--dataset", tiny_npz,
            *TINY[2:])
    assert_refused(r, f"run directory '{cell}' is in use", f"pid {holder.pid} on ")
    assert snapshot(root) == before
