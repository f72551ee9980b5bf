"""TensorBoard logging, checked by reading the event files back with TensorBoard's own reader and comparing
every scalar with the run's metrics.jsonl, config.json and result.json (float32: TensorBoard's precision)."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import noisysam
from noisysam.cli.commands import cli
from noisysam.data.datasets import ImageDataset
from noisysam.run.loop import chain, train

N_TRAIN, N_TEST = 128, 64
RUN = dict(model="cnn", model_params={"width": 4}, batch_size=64, amp="none", noise_rate=0.4, seed=0)
TINY = ["--epochs", "1", "--model-param", "width=4", "--batch-size", "32", "--amp", "none", "--no-plot"]

# The tag each metrics.jsonl field is expected under, written out here rather than read from the module.
EXPECTED_TAGS = {
    "stage": "run/stage", "lr": "optim/lr", "train_loss": "train/loss", "test_accuracy": "test/accuracy",
    "train_noisy_accuracy": "train/noisy_accuracy", "train_clean_accuracy": "train/clean_accuracy",
    "memorisation": "train/memorisation", "recovery": "train/recovery", "noise_auroc": "train/noise_auroc",
    "val_accuracy": "val/accuracy", "seconds": "time/seconds",
    "forward_passes": "cost/forward_passes", "backward_passes": "cost/backward_passes", "steps": "cost/steps",
}


@pytest.fixture(scope="module")
def tiny():
    d = noisysam.load_dataset("cifar10-mini")
    return ImageDataset("tiny", d.x_train[:N_TRAIN], d.y_train[:N_TRAIN], d.x_test[:N_TEST], d.y_test[:N_TEST],
                        d.classes)


@pytest.fixture
def events():
    """Read a log directory as TensorBoard does (purge markers applied): {tag: [(step, value), ...]}, hparams."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    plugin_data = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")

    def read(log_dir):
        acc = accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
        acc.Reload()
        scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
        try:
            start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        except KeyError:  # no hparams: the run has not ended
            return scalars, {}
        values = plugin_data.HParamsPluginData.FromString(start).session_start_info.hparams
        return scalars, {name: getattr(v, v.WhichOneof("kind")) for name, v in values.items()}

    return read


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_scalars_match_metrics(scalars, run_dir, epochs):
    """Every non-null number of every metrics.jsonl record, at step (stage - 1) * epochs + epoch, exactly once."""
    records = metrics(run_dir)
    steps = [(r["stage"] - 1) * epochs + r["epoch"] for r in records]
    for field, tag in EXPECTED_TAGS.items():
        expected = [(s, np.float32(r[field])) for s, r in zip(steps, records) if r[field] is not None]
        assert [(s, np.float32(v)) for s, v in scalars[tag]] == expected, tag
    per_epoch = {t for t in scalars if not t.startswith("final/")}
    assert per_epoch == set(EXPECTED_TAGS.values())  # nothing else per epoch: metrics.jsonl has no other numbers
    assert set(records[0]) == set(EXPECTED_TAGS) | {"epoch"}


def test_every_epoch_metric_hyperparameter_and_final_metric_is_logged(tiny, tmp_path, events):
    from noisysam.run.tensorboard import TensorBoardLogger

    out = tmp_path / "run"
    with TensorBoardLogger() as logger:  # relabel-and-retrain: two stages of two epochs, steps 1..4
        train(dataset=tiny, method="bootstrap-sam", epochs=2, out=str(out), callback=logger, **RUN)
    scalars, hparams = events(out / "tensorboard")
    assert_scalars_match_metrics(scalars, out, epochs=2)
    assert [v for _, v in scalars["run/stage"]] == [1, 1, 2, 2]

    result = json.loads((out / "result.json").read_text())
    acc = result["test_accuracy"]
    final = {"final/test_accuracy_last": acc["last"], "final/test_accuracy_selected": acc["selected"],
             "final/test_accuracy_best": acc["best"], "final/val_accuracy": result["val_accuracy_last"],
             "final/memorisation": result["memorisation_last"], "final/recovery": result["recovery_last"],
             "final/noise_auroc": result["noise_auroc_last"]}
    assert {t: s for t, s in scalars.items() if t.startswith("final/")} == \
        {t: [(4, np.float32(v))] for t, v in final.items()}

    config = json.loads((out / "config.json").read_text())["config"]
    expected = {}
    for name, value in config.items():
        if name in ("out", "resume", "device", "download", "data_root", "eval_batch_size") or value is None:
            continue  # where and how the run was started or evaluated: not a hyperparameter to compare runs by
        items = {f"{name}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value}
        expected.update({k: json.dumps(v) if isinstance(v, bool) else v for k, v in items.items()})
    assert hparams == expected
    assert hparams["model_params.width"] == 4 and hparams["method"] == "bootstrap-sam" and hparams["augment"] == "true"  # the cpu profile augments


@pytest.mark.parametrize("killed", ["before logging the epoch", "after logging the epoch"])
def test_a_resumed_run_continues_its_log_with_each_epoch_once(tiny, tmp_path, events, killed):
    """Killed after epoch 2 of 3, before or after the logger wrote that epoch: once resumed, TensorBoard shows
    epochs 1, 2, 3 exactly once each, with the values metrics.jsonl holds."""
    from noisysam.run.tensorboard import TensorBoardLogger

    out = tmp_path / "run"

    def kill(event, info):
        if event == "epoch" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), TensorBoardLogger() as logger:
        order = (kill, logger) if killed.startswith("before") else (logger, kill)
        train(dataset=tiny, method="sgd", epochs=3, out=str(out), callback=chain(*order), **RUN)
    scalars, _ = events(out / "tensorboard")
    assert [s for s, _ in scalars["test/accuracy"]] == ([1] if killed.startswith("before") else [1, 2])

    with TensorBoardLogger() as logger:
        train(dataset=tiny, method="sgd", epochs=3, out=str(out), callback=logger, resume=True, **RUN)
    assert len(metrics(out)) == 3
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per session
    scalars, hparams = events(out / "tensorboard")
    assert_scalars_match_metrics(scalars, out, epochs=3)
    assert hparams["epochs"] == 3


def test_chain_calls_each_callback_in_order_and_skips_none():
    calls = []
    chained = chain(lambda e, i: calls.append(("a", e, i)), None, lambda e, i: calls.append(("b", e, i)))
    chained("epoch", {"epoch": 1})
    assert calls == [("a", "epoch", {"epoch": 1}), ("b", "epoch", {"epoch": 1})]


def test_logger_without_a_directory_says_what_it_needs(tiny):
    pytest.importorskip("torch.utils.tensorboard")
    from noisysam.run.tensorboard import TensorBoardLogger

    with pytest.raises(ValueError, match="needs log_dir, or a run with out"):
        train(dataset=tiny, method="sgd", epochs=1, callback=TensorBoardLogger(), **RUN)


def test_table_logs_each_cell_into_its_run_directory(tiny_npz, tmp_path, events):
    """`tensorboard --logdir GRID` sees one run per cell, each holding that cell's metrics: the cells trained
    with --tensorboard and those finished earlier without it (logged from their files)."""
    multiplexer = pytest.importorskip("tensorboard.backend.event_processing.event_multiplexer")
    root = tmp_path / "grid"
    for methods, logged in (("sgd", []), ("sgd,sam", ["--tensorboard"])):
        r = CliRunner().invoke(cli, ["table", "--dataset", tiny_npz, "--methods", methods, "--rates", "0.4",
                                     "--seeds", "0", "--out", str(root), *logged, *TINY], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    assert "sgd 40% seed 0: last" in r.stdout and "(already finished)" in r.stdout
    mux = multiplexer.EventMultiplexer().AddRunsFromDirectory(str(root))
    assert set(mux.Runs()) == {"sgd/rate0.4/seed0/tensorboard", "sam/rate0.4/seed0/tensorboard"}
    for method in ("sgd", "sam"):
        cell = root / method / "rate0.4" / "seed0"
        scalars, hparams = events(cell / "tensorboard")
        assert_scalars_match_metrics(scalars, cell, epochs=1)
        assert (hparams["method"], hparams["noise_rate"]) == (method, 0.4)


def test_train_cli_writes_the_log_and_ends_saying_where_it_and_the_picture_are(tiny_npz, tmp_path, events):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--dataset", tiny_npz, "--method", "sgd", "--out", str(out),
                                 "--tensorboard", *TINY[:-1]], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    scalars, _ = events(out / "tensorboard")
    assert_scalars_match_metrics(scalars, out, epochs=1)
    log = out / "tensorboard"
    assert r.stdout.splitlines()[-2:] == [f"plot: {out / 'curves.png'}",
                                          f"tensorboard log: {log} (view: tensorboard --logdir {log})"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--out", "{out}"], "TensorBoard logging needs the tensorboard package"),
    ([], "--tensorboard needs --out DIR"),
])
def test_tensorboard_option_errors_exit_2_with_one_line_and_write_nothing(tiny_npz, tmp_path, monkeypatch, args,
                                                                          message):
    """Without the tensorboard package (or without --out): one line, exit 2, no run directory."""
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorboard"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--dataset", tiny_npz, "--tensorboard", *TINY,
                                 *[a.format(out=out) for a in args]])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert message in lines[0]
    assert "pip install 'noisysam[tensorboard]'" in lines[0] or not args
    assert not out.exists()


def test_the_cli_does_not_import_tensorboard_until_asked():
    code = "import sys, noisysam.cli.commands; assert not {'tensorboard', 'torch.utils.tensorboard'} & set(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_resumed_session_file_sorts_after_the_files_it_supersedes(tmp_path):
    """TensorBoard reads event files in name order (creation second first): a session resumed within the same
    second as an existing file waits for the next second, so its purge marker is read last."""
    from noisysam.run.tensorboard import _wait_for_a_later_second

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now:010d}.host.1.0").write_bytes(b"")
    _wait_for_a_later_second(tmp_path)
    assert int(time.time()) > now
    later = f"events.out.tfevents.{int(time.time()):010d}.host.1.10"  # a higher counter sorts lower: "10" < "9"
    assert sorted([later, f"events.out.tfevents.{now:010d}.host.1.9"])[-1] == later
