"""The command line end to end on a tiny budget: run directories, resume, noise files, bad input."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from noisysam.cli import commands as cli_module
from noisysam.report import console as console_module
from noisysam.cli.commands import cli
from noisysam.noise.labels import NoisyLabels
from noisysam.run.config import PROFILES
from noisysam.run.rundir import RUN_FILES

TINY = ["--epochs", "2", "--model-param", "width=4", "--batch-size", "32", "--amp", "none"]



def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def tree(path):
    return {p.relative_to(path): p.stat().st_mtime_ns for p in path.rglob("*")} if path.exists() else None


def test_train_writes_a_complete_run_directory_and_json(tiny_npz, tmp_path):
    out = tmp_path / "run"
    r = run("train", "--dataset", tiny_npz, "--method", "sgd", "--noise-rate", 0.4, "--out", out, "--json", *TINY)
    assert r.exit_code == 0, r.output
    assert all((out / f).is_file() for f in RUN_FILES)
    result = json.loads((out / "result.json").read_text())
    assert json.loads(r.stdout) == result  # nothing but result.json on stdout
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert {"method", "test_accuracy", "memorisation_last", "noise", "wall_seconds"} <= set(result)
    assert {"last", "best", "selected"} <= set(result["test_accuracy"])
    assert result["test_accuracy"]["last"] == json.loads(lines[-1])["test_accuracy"]
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["method"], config["epochs"], config["model_params"], config["dataset"]) == \
        ("sgd", 2, {**PROFILES["cpu"]["model_params"], "width": 4}, tiny_npz)
    labels = NoisyLabels.load(out / "noisy_labels.npz")
    assert result["noise"]["realised_rate"] == labels.rate
    assert np.array_equal(labels.clean, np.arange(200) % 10)

    # --resume on a finished run: its saved settings, no retraining, the same result.
    before = tree(out)
    r = run("train", "--out", out, "--resume", "--json", "--no-plot")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == result
    assert tree(out) == before

    # Options given with --resume must agree with the saved run.
    r = run("train", "--out", out, "--resume", "--epochs", 3)
    assert r.exit_code == 2 and "differs in ['epochs']" in r.stderr
    assert tree(out) == before


def test_train_summary_and_curves_plot(tiny_npz, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgb
    from PIL import Image

    from noisysam.report.plots import run_figure

    out = tmp_path / "run"
    r = run("train", "--dataset", tiny_npz, "--method", "bootstrap-sam", "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "result.json").read_text())
    assert f"{result['test_accuracy']['last']:.1%}" in r.stdout
    assert "first model (before relabelling)" in r.stdout  # relabel-and-retrain reports its first stage
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(rec["stage"], rec["epoch"]) for rec in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    # The curves drawn are metrics.jsonl's values in %, epoch after epoch over both stages, and the
    # stage change is marked between the 2nd and 3rd point.
    [ax] = run_figure(out).axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for key, label in (("test_accuracy", "clean test accuracy"), ("val_accuracy", "noisy-val accuracy"),
                       ("memorisation", "memorisation (wrong labels fitted)")):
        np.testing.assert_array_equal(lines[label].get_xdata(), [1, 2, 3, 4])
        np.testing.assert_allclose(lines[label].get_ydata(), [100 * rec[key] for rec in records], rtol=1e-12)
    assert [list(line.get_xdata()) for line in ax.get_lines() if line.get_label().startswith("_")] == [[2.5, 2.5]]
    # curves.png is that figure rendered: a PNG of its size (7 x 4.2 in at 120 dpi, cropped to what is
    # drawn, widened by a long title) in which each curve's colour appears.
    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 400 and pixels.shape[1] > 600
    drawn = {tuple(p) for p in pixels.reshape(-1, 3).tolist()}
    for line in lines.values():
        assert tuple(round(255 * c) for c in to_rgb(line.get_color())) in drawn, line.get_label()


def test_noise_writes_and_inspects_a_labels_file(tiny_npz, tmp_path):
    path = tmp_path / "labels.npz"
    r = run("noise", "--dataset", tiny_npz, "--noise", "symmetric", "--noise-rate", 0.5, "--noise-mode", "flip",
            "--seed", 3, "--exact", "-o", path)
    assert r.exit_code == 0, r.output
    labels = NoisyLabels.load(path)
    assert labels.rate == 0.5  # flip mode, exact count: round(0.5 * 200) labels changed
    assert re.search(r"realised noise rate: (\S+)", r.stdout).group(1) == f"{labels.rate:.4f}"
    assert labels.provenance["classes"] == [f"c{i}" for i in range(10)]
    assert "c0" in r.stdout and "c9" in r.stdout
    inspected = run("noise", "--inspect", path)
    assert inspected.exit_code == 0
    assert f"realised noise rate: {labels.rate:.4f}" in inspected.stdout
    # The file is usable for training, and refuses to be overwritten silently.
    before = path.read_bytes()
    r = run("noise", "--dataset", tiny_npz, "-o", path)
    assert r.exit_code == 2 and "exists; pass --force" in r.stderr and path.read_bytes() == before
    r = run("noise", "--dataset", tiny_npz, "-o", tmp_path / "labels")  # train --noise only takes .npz names
    assert r.exit_code == 2 and "must end in .npz" in r.stderr and not (tmp_path / "labels").exists()
    for bad, message in ((tmp_path / "missing.npz", "No such file"), (tiny_npz, "is not a NoisyLabels file")):
        r = run("noise", "--inspect", bad)
        assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1
    r = run("train", "--dataset", tiny_npz, "--noise", path, "--epochs", 1, "--model-param", "width=4", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["noise"]["realised_rate"] == 0.5


def npz_of(path, classes, n=1000):
    """A random-image dataset of ``classes`` classes (8x8 images, ``n`` training labels cycling through them)."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), y_train=np.arange(n) % classes,
             x_test=rng.integers(0, 256, (classes, 8, 8, 3), dtype=np.uint8), y_test=np.arange(classes))
    return path


def test_noise_on_100_classes_uses_cifar100s_maps_and_refuses_what_does_not_fit(tiny_npz, tmp_path):
    hundred = npz_of(tmp_path / "c100.npz", 100)
    for kind, convention in (("asymmetric", "cifar100-groups"), ("asymmetric-superclass", "cifar100-superclass")):
        path = tmp_path / f"{kind}.npz"
        r = run("noise", "--dataset", hundred, "--noise", kind, "--noise-rate", 0.4, "--seed", 1, "-o", path)
        assert r.exit_code == 0, r.output
        labels = NoisyLabels.load(path)
        assert labels.provenance["convention"] == convention and labels.num_classes == 100
        # each of the 1000 labels has a target and flips with probability 0.4: Binomial(1000, 0.4), 5 sd = 77.5
        assert abs(int(labels.is_noisy.sum()) - 400) <= 5 * (1000 * 0.4 * 0.6) ** 0.5
    twenty = npz_of(tmp_path / "c20.npz", 20)
    for data, kind, message in (
            (hundred, "cifar10n-aggre", "CIFAR-10N is human labels for CIFAR-10's 10 classes; this data has 100 classes"),
            (tiny_npz, "asymmetric-superclass", "CIFAR-100's superclass map is for 100 classes; these labels have 10"),
            (twenty, "asymmetric", "asymmetric noise has conventions for 10 classes (CIFAR-10) and 100 (CIFAR-100), "
                                   "not 20: pass a mapping, or use pairflip")):
        r = run("noise", "--dataset", data, "--noise", kind, "--noise-rate", 0.4, "-o", tmp_path / "refused.npz")
        assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.output
        assert not (tmp_path / "refused.npz").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "Invalid value for '--method'"),
    (["--model", "nope"], "model must be one of"),
    (["--noise", "nope"], "noise must be one of"),
    (["--noise-rate", "1.5"], "'--noise-rate': 1.5 is not in the range 0<=x<=1"),
    (["--noise-rate", "-0.1"], "'--noise-rate': -0.1 is not in the range"),
    (["--dataset", "missing.npz"], "got 'missing.npz' (no such path)"),
    (["--dataset", "BAD_NPZ"], "cannot read"),
    (["--dataset", "WRONG_NPZ"], "lacks ['x_test', 'y_test']"),
    (["--noise", "missing-labels.npz"], "No such file or directory: missing-labels.npz"),
    (["--noise", "BAD_NPZ"], "cannot read noisy labels"),
    (["--noise", "WRONG_NPZ"], "is not a NoisyLabels file"),
    (["--method-param", "rho"], "expected KEY=VALUE"),
    (["--method-param", "nope=1"], "accepts parameters"),
    (["--model-param", "width=abc"], "width must be an integer >= 1, got 'abc' (str)"),
    (["--out", "A_FILE/run"], "Not a directory"),
    (["--method", "sgd", "--rho", "0.1"], "rho is given (0.1) but method 'sgd' takes no rho"),
    (["--method", "sam", "--mixup-alpha", "8"], "mixup_alpha is given (8.0) but method 'sam' takes no alpha"),
    (["--method", "sam", "--model-param", "in_channels=1"], "model_params may not set in_channels"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_npz, tmp_path, args, message):
    (tmp_path / "bad.npz").write_text("not a zip file")
    np.savez(tmp_path / "wrong.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8), y_train=np.zeros(2, int))
    (tmp_path / "a_file").write_text("")
    places = {"BAD_NPZ": str(tmp_path / "bad.npz"), "WRONG_NPZ": str(tmp_path / "wrong.npz"),
              "A_FILE/run": str(tmp_path / "a_file" / "run")}
    args = [places.get(a, a) for a in args]
    out = tmp_path / "run"
    r = run("train", "--dataset", tiny_npz, "--out", out, *TINY, *args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1  # one line, no traceback
    assert r.stdout == ""
    assert not out.exists()


def test_existing_run_directory_without_resume_is_left_untouched(tiny_npz, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    r = run("train", "--dataset", tiny_npz, "--out", out, *TINY)
    assert r.exit_code == 2 and "is not empty" in r.stderr and "--resume" in r.stderr
    assert r.stderr.count("\n") == 1
    assert tree(out) == before and (out / "notes.txt").read_text() == "mine"
    assert run("train", "--resume").exit_code == 2  # --resume needs --out


def test_interrupt_and_divergence_exit_codes(tiny_npz, tmp_path, monkeypatch):
    from noisysam.run.loop import TrainingDiverged

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "train", interrupted)
    r = run("train", "--dataset", tiny_npz, "--out", tmp_path / "run")
    assert r.exit_code == 130
    assert f"continue with: noisysam train --out {tmp_path / 'run'} --resume" in r.stderr

    def diverged(*a, **k):
        raise TrainingDiverged("training loss became nan in epoch 1 of stage 1; stopped")

    monkeypatch.setattr(cli_module, "train", diverged)
    r = run("train", "--dataset", tiny_npz)
    assert r.exit_code == 1 and r.stderr == "error: training loss became nan in epoch 1 of stage 1; stopped\n"


def test_ctrl_c_leaves_a_resumable_run(tiny_npz, tmp_path, monkeypatch):
    """A KeyboardInterrupt in the middle of epoch 2: exit 130 with the command to continue, no traceback;
    --resume then finishes the run on top of the saved first epoch."""
    out = tmp_path / "run"

    class CtrlC(console_module.RunProgress):
        def __call__(self, event, info):
            super().__call__(event, info)
            if event == "batch" and info["epoch"] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "RunProgress", CtrlC)
    r = run("train", "--dataset", tiny_npz, "--method", "sam", "--out", out, "--no-plot", *TINY)
    assert r.exit_code == 130
    assert r.stderr.strip() == f"interrupted; continue with: noisysam train --out {out} --resume"
    first = (out / "metrics.jsonl").read_text().splitlines()
    assert len(first) == 1 and not (out / "result.json").exists()

    monkeypatch.undo()
    r = run("train", "--out", out, "--resume", "--json", "--no-plot")
    assert r.exit_code == 0, r.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first[0]
    assert json.loads(r.stdout) == json.loads((out / "result.json").read_text())


def test_plots_are_optional_without_matplotlib(tiny_npz, tmp_path, monkeypatch):
    """The core never imports matplotlib; without it a run finishes normally with a one-line note."""
    code = "import sys, noisysam.cli.commands, noisysam.grid.table; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setattr(console_module, "_no_matplotlib_noted", False)
    out = tmp_path / "run"
    r = run("train", "--dataset", tiny_npz, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    assert "matplotlib is not installed" in r.stdout and "pip install 'noisysam[plot]'" in r.stdout
    assert all((out / f).is_file() for f in RUN_FILES) and not (out / "curves.png").exists()


def test_info_lists_versions_data_methods_and_models():
    r = run("info")
    assert r.exit_code == 0, r.output
    for word in ("torch", "numpy", "scikit-learn", "cifar10-mini.npz", "bootstrap-sam", "resnet32"):
        assert word in r.stdout


@pytest.mark.parametrize("native", [True, False])
def test_info_says_what_amp_auto_picks_here_and_why(monkeypatch, native):
    """`--amp auto` on a CPU: bf16 only with native bf16; info names the choice and the reason, as config.json does."""
    import noisysam.run.config as config_module
    monkeypatch.setattr(config_module, "native_bf16_cpu", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = run("info")
    assert r.exit_code == 0, r.output
    said = " ".join(r.stdout.replace("│", " ").split())
    expected = "auto: bf16, this CPU has native bf16" if native else "auto: fp32, this CPU has no native bf16"
    assert expected in said


def test_compare_trains_sgd_and_sam_at_once_on_the_same_labels_and_draws_both(tiny_npz, tmp_path):
    """`noisysam compare`: both runs as `train` would make them (same seed: same labels), both summaries printed,
    and compare.png's lines are each run's metrics.jsonl in %."""
    pytest.importorskip("matplotlib")
    from noisysam.report.plots import compare_figure

    out = tmp_path / "cmp"
    r = run("compare", "--dataset", tiny_npz, "--noise-rate", "0.6", "--out", out, "--threads", "1", *TINY)
    assert r.exit_code == 0, r.output
    dirs = [out / m / "rate0.6" / "seed0" for m in ("sgd", "sam")]
    results = [json.loads((d / "result.json").read_text()) for d in dirs]
    assert [res["method"] for res in results] == ["sgd", "sam"]
    assert r.stdout.count("clean test accuracy, last epoch") == 2
    assert all(f"{res['test_accuracy']['last']:.1%}" in r.stdout for res in results)
    configs = [json.loads((d / "config.json").read_text()) for d in dirs]
    assert configs[0]["inputs"]["labels_sha256"] == configs[1]["inputs"]["labels_sha256"]  # the same noisy labels
    alone = tmp_path / "alone"
    assert run("train", "--dataset", tiny_npz, "--method", "sam", "--noise-rate", "0.6", "--out", alone, "--no-plot",
               "--threads", "1", *TINY).exit_code == 0
    assert json.loads((alone / "result.json").read_text())["test_accuracy"] == results[1]["test_accuracy"]
    assert (out / "compare.png").stat().st_size > 0
    acc_ax, mem_ax = compare_figure(dirs).axes
    for ax, key in ((acc_ax, "test_accuracy"), (mem_ax, "memorisation")):
        for line, d in zip(ax.get_lines(), dirs):
            records = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            assert list(line.get_ydata()) == [100 * rec[key] for rec in records]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "sam"]
