"""The trainer: run directory, resume, determinism, atomic writes, NaN handling, validation split,
metrics and relabel-and-retrain, each checked against values recomputed here from the run's own
outputs (its model's predictions, metrics.jsonl, the split) rather than read back from the trainer.

Every run uses a tiny slice of the embedded data (256 train / 128 test images) and a width-4 CNN, so
the whole file takes seconds; ``amp="none"`` wherever bitwise equality is asserted.
"""

import json
import math
import os
import shutil
import socket
import stat

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

import noisysam
from noisysam.data.datasets import ImageDataset
from noisysam.data.loader import Loader
from noisysam.core.files import LOCK_NAME, RunDirectoryBusy, atomic_write, read_json, write_json
from noisysam.methods.registry import METHODS, get_method, register_method
from noisysam.methods.rules import RelabelAndRetrain
from noisysam.noise.labels import NoisyLabels, symmetric
from noisysam.run.rundir import DYNAMICS_DIR, RUN_FILES
from noisysam.run.config import PROFILES, TrainConfig, build_method, method_radius
from noisysam.run.loop import TrainingDiverged, _split, lr_at, predict, train

N_TRAIN, N_TEST, VAL_FRACTION = 256, 128, 0.1
# 230 training rows at batch 64: 4 batches per epoch, the last one short (38).
RUN = dict(model="cnn", model_params={"width": 4}, epochs=3, batch_size=64, amp="none", noise_rate=0.4,
           augment=True, val_fraction=VAL_FRACTION, seed=0)


@pytest.fixture(scope="module")
def tiny():
    d = noisysam.load_dataset("cifar10-mini")
    return ImageDataset("tiny", d.x_train[:N_TRAIN], d.y_train[:N_TRAIN], d.x_test[:N_TEST], d.y_test[:N_TEST],
                        d.classes)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """Uninterrupted 3-epoch runs with a run directory, one per method, built once and shared."""
    runs = {}

    def get(method):
        if method not in runs:
            out = tmp_path_factory.mktemp(method) / "run"
            runs[method] = train(dataset=tiny, method=method, out=str(out), **RUN)
        return runs[method]

    return get


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def canonical(obj, drop=("seconds", "wall_seconds")):
    """JSON text of obj without timing fields (NaN-safe equality)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in drop}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return json.dumps(strip(obj), sort_keys=True)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def train_rows(n=N_TRAIN, fraction=VAL_FRACTION, seed=0):
    return _split(n, fraction, seed)[0]


def train_split_predictions(result, dataset, seed=0):
    """(pred, per-sample loss) of the run's model on its training split, through a loader built here
    (normalisation from the training-split images, as the trainer's)."""
    rows = train_rows(seed=seed)
    loader = Loader(dataset.x_train[rows], result.noisy_labels.noisy[rows], batch_size=100, shuffle=False,
                    augment=False, channels_last=True)
    return predict(result.model, loader, None)


# ------------------------------------------------------------------------------------- run directory

@pytest.mark.parametrize("method, stages", [("sam", 1), ("bootstrap-sam", 2)])
def test_run_directory_is_complete_and_result_agrees_with_metrics(reference, tiny, method, stages):
    result = reference(method)
    out = result.run_dir
    assert sorted(os.listdir(out)) == sorted((*RUN_FILES, DYNAMICS_DIR))  # and no temp files left behind

    config = read_json(out / "config.json")["config"]
    assert config["method"] == method and config["epochs"] == 3 and config["seed"] == 0
    labels = NoisyLabels.load(out / "noisy_labels.npz")
    assert np.array_equal(labels.noisy, result.noisy_labels.noisy)
    assert np.array_equal(labels.clean, tiny.y_train)

    lines = read_jsonl(out / "metrics.jsonl")
    assert [(r["stage"], r["epoch"]) for r in lines] == [(s, e) for s in range(1, stages + 1) for e in (1, 2, 3)]
    final = [r for r in lines if r["stage"] == stages]

    summary = read_json(out / "result.json")
    assert summary == json.loads(json.dumps(result.summary))
    for key in ("method", "model", "dataset", "seed", "epochs", "noise", "test_accuracy", "memorisation_last",
                "noise_auroc_last", "wall_seconds"):
        assert key in summary, key
    assert (summary["method"], summary["model"], summary["dataset"], summary["seed"], summary["epochs"]) == \
        (method, "cnn", "custom:tiny", 0, 3)
    realised = float(np.mean(labels.noisy != tiny.y_train))
    rows = train_rows()
    realised_train = float(np.mean(labels.noisy[rows] != tiny.y_train[rows]))
    noise = summary["noise"]
    assert (noise["type"], noise["mode"], noise["rate"], noise["realised_rate"], noise["realised_rate_train"]) == \
        ("symmetric", "replace", 0.4, realised, realised_train)
    assert realised_train != realised  # the training split's rate is not the whole set's
    acc = summary["test_accuracy"]
    assert all(0.0 <= acc[k] <= 1.0 for k in ("last", "best", "selected"))
    assert acc["last"] == lines[-1]["test_accuracy"]
    assert acc["best"] == max(r["test_accuracy"] for r in final)
    by_val = max(final, key=lambda r: r["val_accuracy"])  # first of equal maxima: the earliest epoch
    assert acc["selected"] == by_val["test_accuracy"]
    assert summary["memorisation_last"] == lines[-1]["memorisation"]
    assert summary["noise_auroc_last"] == lines[-1]["noise_auroc"]
    assert summary["wall_seconds"] > 0
    # Test accuracy is a share of the 128 test images.
    assert all((r["test_accuracy"] * N_TEST).is_integer() for r in lines)


def test_checkpoint_loads_with_weights_only_and_holds_the_final_model(reference):
    result = reference("sgd")
    ckpt = torch.load(result.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert (ckpt["stage"], ckpt["epoch"]) == (1, 3)
    assert same_weights(ckpt["model"], weights(result.model))
    assert canonical(ckpt["history"]) == canonical(result.history)


# ------------------------------------------------------------------------------------------- resume

# (stage, epoch) at whose first batch the run is killed: the checkpoint then holds the epoch before.
# For relabel-and-retrain: mid stage 1, right at the stage boundary, and mid stage 2, in one chain.
INTERRUPTS = {"sgd": [(1, 2)], "sam": [(1, 3)], "bootstrap-sam": [(1, 2), (2, 1), (2, 2)]}


@pytest.mark.parametrize("method", list(INTERRUPTS))
def test_resume_after_interruption_gives_the_same_weights_and_history(reference, tiny, tmp_path, method):
    expected = reference(method)
    points = list(INTERRUPTS[method])

    def kill(event, info):
        if event == "batch" and points and info["batch"] == 1 and (info["stage"], info["epoch"]) == points[0]:
            points.pop(0)
            raise KeyboardInterrupt

    out = tmp_path / "run"
    for i, (stage, epoch) in enumerate(INTERRUPTS[method]):
        with pytest.raises(KeyboardInterrupt):
            train(dataset=tiny, method=method, out=str(out), callback=kill, resume=i > 0, **RUN)
        ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
        assert (ckpt["stage"], ckpt["epoch"]) == (stage, epoch - 1)
        assert not (out / "result.json").exists()
        if stage == 2:  # the boundary checkpoint carries stage 2's labels: the stage-1 (= sam) model's predictions
            first = train_split_predictions(reference("sam"), tiny)[0].numpy()
            assert np.array_equal(ckpt["relabels"].numpy(), first)
    result = train(dataset=tiny, method=method, out=str(out), callback=kill, resume=True, **RUN)

    assert same_weights(weights(result.model), weights(expected.model))
    assert canonical(result.history) == canonical(expected.history)
    assert canonical(read_jsonl(out / "metrics.jsonl")) == canonical(read_jsonl(expected.run_dir / "metrics.jsonl"))
    assert canonical(result.summary) == canonical(expected.summary)
    assert sorted(os.listdir(out)) == sorted((*RUN_FILES, DYNAMICS_DIR))
    # One dynamics file per epoch (a re-run epoch overwrote its own), each as in the uninterrupted run.
    files = sorted(os.listdir(out / DYNAMICS_DIR))
    assert files == sorted(os.listdir(expected.run_dir / DYNAMICS_DIR))
    for name in files:
        with np.load(out / DYNAMICS_DIR / name) as got, np.load(expected.run_dir / DYNAMICS_DIR / name) as want:
            assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in got)

    # A finished run resumed again trains nothing and returns the same model.
    batches = []
    again = train(dataset=tiny, method=method, out=str(out), resume=True,
                  callback=lambda event, info: batches.append(event) if event == "batch" else None, **RUN)
    assert batches == [] and same_weights(weights(again.model), weights(expected.model))


# ------------------------------------------------------------------------------------- determinism

def test_same_seed_same_weights_other_seed_different_and_global_rng_untouched(reference, tiny):
    expected = reference("sam")
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)  # the caller's global state must not matter either
        again = train(dataset=tiny, method="sam", **RUN)  # and no run directory this time
    assert torch.equal(torch.get_rng_state(), torch_state)
    again_state = torch.get_rng_state()
    other = train(dataset=tiny, method="sam", **{**RUN, "seed": 1})
    assert torch.equal(torch.get_rng_state(), again_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()

    assert same_weights(weights(again.model), weights(expected.model))
    assert canonical(again.history) == canonical(expected.history)
    w0, w1 = weights(expected.model), weights(other.model)
    assert not torch.equal(w0["fc.weight"], w1["fc.weight"])
    assert not np.array_equal(other.noisy_labels.noisy, expected.noisy_labels.noisy)


# ------------------------------------------------------------------------------------ atomic writes

@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path, error):
    target = tmp_path / "result.json"
    write_json(target, {"a": 1})
    before = target.read_bytes()

    def half_then_fail(f):
        f.write(b'{"a": 2, "trunc')
        raise error("disk full")

    with pytest.raises(error):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == before and read_json(target) == {"a": 1}
    assert os.listdir(tmp_path) == ["result.json"]

    fresh = tmp_path / "new.bin"
    with pytest.raises(error):
        atomic_write(fresh, half_then_fail)
    assert os.listdir(tmp_path) == ["result.json"]


def test_atomic_write_replaces_the_whole_file(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, lambda f: f.write("a long first version\n"), mode="w")
    atomic_write(target, lambda f: f.write("short\n"), mode="w")
    assert target.read_text() == "short\n" and os.listdir(tmp_path) == ["f.txt"]


# ------------------------------------------------------------------------------------ NaN handling

class SmallNet(nn.Module):
    """conv-BN-ReLU-pool-linear; with ``nan_after`` set, its training forward passes after that many
    return NaN logits (a model that breaks down mid-run)."""

    def __init__(self, nan_after=None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 10)
        self.nan_after, self.calls = nan_after, 0

    def forward(self, x):
        logits = self.fc(self.body(x))
        if self.training:
            self.calls += 1
            if self.nan_after is not None and self.calls > self.nan_after:
                return logits * float("nan")
        return logits


def _diverge(tiny, out, **overrides):
    with pytest.raises(TrainingDiverged) as info:
        train(dataset=tiny, method="sgd", out=str(out), **{**RUN, **overrides})
    return str(info.value)


def _assert_last_good_kept(out, good_epochs):
    lines = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == list(range(1, good_epochs + 1))
    assert all(math.isfinite(r["train_loss"]) and r["noise_auroc"] is not None for r in lines)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (ckpt["stage"], ckpt["epoch"]) == (1, good_epochs)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / "result.json").exists()


def test_nan_loss_after_epoch_1_stops_with_a_clear_message_and_keeps_epoch_1(tiny, tmp_path):
    out = tmp_path / "run"
    message = _diverge(tiny, out, model=SmallNet(nan_after=4))  # sgd: 4 training passes = epoch 1
    assert "nan" in message and "epoch 2" in message and "checkpoint.pt" in message and "lr" in message
    _assert_last_good_kept(out, good_epochs=1)


def test_absurd_lr_stops_with_training_diverged(tiny, tmp_path, registered):
    # One batch per epoch; epoch 2's step is taken at lr 1e30. Its loss is measured before that step, so
    # it is finite; the weights after it are ~1e30 * gradient, whose products overflow float32 in any
    # forward pass: epoch 2's evaluation sees non-finite outputs, whatever the rounding of the machine.
    class AbsurdLrInEpoch2(Recorder):
        def train_step(self, model, optimizer, x, y, idx, *, generator, scaler=None):
            if len(self.batches) == 1:  # the second step (the trainer sets the lr again before each step)
                for group in optimizer.param_groups:
                    group["lr"] = 1e30
            return super().train_step(model, optimizer, x, y, idx, generator=generator, scaler=scaler)

    registered("absurd-lr", AbsurdLrInEpoch2)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        train(dataset=tiny, out=str(out), **{**RUN, "method": "absurd-lr", "batch_size": N_TRAIN})
    message = str(info.value)  # the loss stayed finite: what diverged is the model (outputs or weights)
    assert "in epoch 2 of stage 1" in message and "the training loss" not in message and "lr" in message
    _assert_last_good_kept(out, good_epochs=1)


def test_nan_in_the_first_epoch_does_not_claim_a_checkpoint(tiny, tmp_path):
    out = tmp_path / "run"
    message = _diverge(tiny, out, model=SmallNet(nan_after=0))
    assert not (out / "checkpoint.pt").exists()
    assert "checkpoint.pt" not in message


class InfVarianceNet(SmallNet):
    """SmallNet whose BatchNorm running variance becomes inf after ``after`` training passes. Its training loss
    stays finite (training mode normalises with batch statistics) and so do its eval outputs (x / sqrt(inf) = 0)."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def forward(self, x):
        if self.training and self.calls >= self.after:  # before the pass: autograd's saved tensors stay as they were
            self.body[1].running_var.fill_(math.inf)
        return super().forward(x)


class InfMomentum:
    """sam whose base optimizer's momentum of fc.weight becomes inf after its ``after``-th step; the weights
    only follow in the step after that."""

    name, relabel, params = "inf-momentum", False, {}

    def __init__(self, after):
        self.base, self.after, self.steps = get_method("sam"), after, 0

    def make_optimizer(self, params, **kwargs):
        return self.base.make_optimizer(params, **kwargs)

    def train_step(self, model, optimizer, x, y, idx, *, generator, scaler=None):
        loss = self.base.train_step(model, optimizer, x, y, idx, generator=generator, scaler=scaler)
        self.steps += 1
        if self.steps == self.after:
            optimizer.base_optimizer.state[model.fc.weight]["momentum_buffer"].fill_(math.inf)
        return loss


def _all_finite(checkpoint):
    tensors = list(checkpoint["model"].values())
    tensors += [v for state in checkpoint["optimizer"]["state"].values() for v in state.values()]
    return all(torch.isfinite(v).all() for v in tensors if torch.is_tensor(v) and v.is_floating_point())


@pytest.mark.parametrize("method, model, broken", [
    ("sgd", InfVarianceNet(after=4), "body.1.running_var"),  # inf from epoch 2's first batch
    ("inf-momentum", "cnn", "momentum_buffer of fc.weight"),  # inf after epoch 2's last step (4 per epoch)
])
def test_non_finite_buffers_or_optimizer_state_stop_the_run_and_are_never_checkpointed(tiny, tmp_path, registered,
                                                                                       method, model, broken):
    registered("inf-momentum", lambda: InfMomentum(after=8))
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        train(dataset=tiny, out=str(out), **{**RUN, "method": method, "model": model})
    message = str(info.value)
    assert broken in message and "epoch 2 of stage 1" in message and "(stage 1, epoch 1)" in message
    assert "loss" not in message.split("became")[0]  # the loss stayed finite: the state is what broke
    _assert_last_good_kept(out, good_epochs=1)
    assert _all_finite(torch.load(out / "checkpoint.pt", weights_only=True))


# ------------------------------------------------------------------------------- validation split

@pytest.mark.parametrize("n, fraction", [(256, 0.1), (1000, 0.25), (7, 0.5), (50, 0.0)])
def test_split_is_disjoint_covers_everything_and_has_the_asked_size(n, fraction):
    train_idx, val_idx = _split(n, fraction, seed=3)
    assert len(val_idx) == round(fraction * n)
    assert np.intersect1d(train_idx, val_idx).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(n))
    assert np.array_equal(_split(n, fraction, seed=3)[1], val_idx)


@pytest.mark.parametrize("n, fraction", [(256, 0.1), (1000, 0.25), (7, 0.5)])
def test_split_depends_on_the_seed(n, fraction):
    # Sizes where another validation set exists (0 < size < n): another seed draws another set.
    assert not np.array_equal(np.sort(_split(n, fraction, seed=4)[1]), np.sort(_split(n, fraction, seed=3)[1]))


class Recorder:
    """sgd that records each batch the trainer feeds it: (inputs, labels, rows)."""

    name, relabel, params = "recorder", False, {}

    def __init__(self):
        self.base, self.batches = get_method("sgd"), []

    def make_optimizer(self, params, **kwargs):
        return self.base.make_optimizer(params, **kwargs)

    def train_step(self, model, optimizer, x, y, idx, *, generator, scaler=None):
        self.batches.append((x.detach().clone(), y.clone(), idx.clone()))
        return self.base.train_step(model, optimizer, x, y, idx, generator=generator, scaler=scaler)


@pytest.fixture
def registered():
    """Register methods for one test and remove them afterwards."""
    names = []

    def add(name, factory):
        register_method(name, factory)
        names.append(name)

    yield add
    for name in names:
        METHODS.pop(name, None)


def test_training_only_ever_sees_the_training_split(tiny, tmp_path, registered):
    recorder = Recorder()
    registered("recorder", lambda: recorder)
    result = train(dataset=tiny, method="recorder", out=str(tmp_path / "run"),
                   **{**RUN, "epochs": 1, "augment": False, "val_fraction": 0.25})
    config = read_json(result.run_dir / "config.json")
    assert (config["train_rows"], config["val_rows"]) == (192, 64)
    rows, val_rows = _split(N_TRAIN, 0.25, 0)
    # Undo the normalisation and find each seen image among the dataset's rows.
    loader = Loader(tiny.x_train[rows], tiny.y_train[rows], batch_size=64)
    mean, std = torch.tensor(loader.mean).view(1, 3, 1, 1), torch.tensor(loader.std).view(1, 3, 1, 1)
    where = {tiny.x_train[i].tobytes(): i for i in range(N_TRAIN)}
    seen = []
    for x, y, idx in recorder.batches:
        images = ((x * std + mean) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        seen += [where[img.tobytes()] for img in images]
        assert np.array_equal(y.numpy(), result.noisy_labels.noisy[rows][idx.numpy()])
    assert sorted(seen) == sorted(rows.tolist())  # every training row once per epoch, no validation row
    assert not set(seen) & set(val_rows.tolist())


def test_val_fraction_zero_selects_nothing(tiny):
    result = train(dataset=tiny, method="sgd", **{**RUN, "epochs": 1, "val_fraction": 0.0})
    assert result.test_accuracy["selected"] is None
    assert result.summary["test_accuracy"]["last"] == result.history[-1]["test_accuracy"]
    assert all(r["val_accuracy"] is None for r in result.history)


# ------------------------------------------------------------------------------------------ metrics

def test_last_epoch_metrics_equal_those_recomputed_from_the_model(reference, tiny):
    result = reference("sam")
    last = result.history[-1]
    rows, val_rows = _split(N_TRAIN, VAL_FRACTION, 0)
    noisy, clean = result.noisy_labels.noisy[rows], tiny.y_train[rows]
    pred, loss = train_split_predictions(result, tiny)
    pred, loss = pred.numpy(), loss.double().numpy()
    corrupted = noisy != clean
    assert 0 < corrupted.sum() < len(rows)
    assert last["memorisation"] == pytest.approx(np.mean(pred[corrupted] == noisy[corrupted]), abs=1e-12)
    assert last["recovery"] == pytest.approx(np.mean(pred[corrupted] == clean[corrupted]), abs=1e-12)
    assert last["train_noisy_accuracy"] == pytest.approx(np.mean(pred == noisy), abs=1e-12)
    assert last["train_clean_accuracy"] == pytest.approx(np.mean(pred == clean), abs=1e-12)
    # AUROC as the Mann-Whitney statistic: P(loss of a corrupted > loss of a clean) + P(tie) / 2.
    ln, lc = loss[corrupted][:, None], loss[~corrupted][None, :]
    mann_whitney = np.mean(ln > lc) + 0.5 * np.mean(ln == lc)
    assert last["noise_auroc"] == pytest.approx(mann_whitney, abs=1e-9)
    assert last["noise_auroc"] == pytest.approx(roc_auc_score(corrupted, loss), abs=1e-12)

    norm = dict(batch_size=100, shuffle=False, augment=False, channels_last=True)
    probe = Loader(tiny.x_train[rows], noisy, **norm)
    stats = dict(mean=probe.mean, std=probe.std)
    test_pred, _ = predict(result.model, Loader(tiny.x_test, tiny.y_test, **norm, **stats), None)
    assert last["test_accuracy"] == np.mean(test_pred.numpy() == tiny.y_test)
    val_pred, _ = predict(result.model, Loader(tiny.x_train[val_rows], result.noisy_labels.noisy[val_rows],
                                               **norm, **stats), None)
    assert last["val_accuracy"] == np.mean(val_pred.numpy() == result.noisy_labels.noisy[val_rows])


# ---------------------------------------------------------------------------- relabel-and-retrain

def test_relabel_and_retrain_trains_a_second_model_on_the_first_models_predictions(reference, tiny, registered):
    recorder = Recorder()
    registered("relabel-recorder", lambda: RelabelAndRetrain("relabel-recorder", recorder))
    stages = []
    result = train(dataset=tiny, method="relabel-recorder",
                   callback=lambda event, info: stages.append(info["stage"]) if event == "batch" else None, **RUN)
    assert [(r["stage"], r["epoch"]) for r in result.history] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert len(stages) == len(recorder.batches) == 2 * 3 * 4

    # Stage 1 is a plain sgd run (same seeds): its model's predictions are stage 2's training labels.
    first = reference("sgd")
    assert canonical(result.history[:3]) == canonical(first.history)
    rows = train_rows()
    relabels = train_split_predictions(first, tiny)[0].numpy()
    noisy = result.noisy_labels.noisy[rows]
    assert (relabels != noisy).any()
    for stage, (_, y, idx) in zip(stages, recorder.batches):
        assert np.array_equal(y.numpy(), (noisy if stage == 1 else relabels)[idx.numpy()])

    stage1 = result.summary["stage1"]
    assert stage1["relabel_accuracy"] == pytest.approx(np.mean(relabels == tiny.y_train[rows]), abs=1e-12)
    assert stage1["test_accuracy"] == first.test_accuracy["last"]
    assert stage1["memorisation"] == first.summary["memorisation_last"]
    # Stage 2 is a second model trained from a fresh start, not the first model fine-tuned.
    assert not torch.equal(result.model.fc.weight, first.model.fc.weight)
    assert result.test_accuracy["last"] == result.history[-1]["test_accuracy"]


def test_bootstrap_sam_stage_1_is_a_sam_run_and_relabel_accuracy_is_that_models(reference, tiny):
    result = reference("bootstrap-sam")
    first = reference("sam")
    assert canonical(result.history[:3]) == canonical(first.history)
    relabels = train_split_predictions(first, tiny)[0].numpy()
    assert result.summary["stage1"]["relabel_accuracy"] == \
        pytest.approx(np.mean(relabels == tiny.y_train[train_rows()]), abs=1e-12)


# -------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("override, field, value", [
    (dict(method="nope"), "method", "'nope'"),
    (dict(model="nope"), "model", "'nope'"),
    (dict(noise="nope"), "noise", "'nope'"),
    (dict(noise_rate=1.5), "noise_rate", "1.5"),
    (dict(val_fraction=1.0), "val_fraction", "1.0"),
    (dict(val_fraction=0.999), "val_fraction", "no training samples"),  # round(0.999 * 256) = 256
    (dict(epochs=0), "epochs", "0"),
])
def test_bad_input_raises_value_error_naming_the_field_before_writing(tiny, tmp_path, override, field, value):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as info:
        train(dataset=tiny, out=str(out), **{**RUN, **override})
    message = str(info.value)
    assert message.startswith(field + " ") and value in message
    assert not out.exists()


def test_bad_model_params_raise_before_writing(tiny, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="widht"):
        train(dataset=tiny, out=str(out), **{**RUN, "model_params": {"widht": 4}})
    assert not out.exists() or not any(out.iterdir())


def test_non_empty_out_without_resume_is_refused(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="resume"):
        train(dataset=tiny, out=str(out), **RUN)
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_resume_with_a_different_config_is_refused_naming_the_field(reference, tiny, tmp_path, snapshot):
    source = reference("sgd").run_dir
    out = tmp_path / "run"
    shutil.copytree(source, out)
    before = snapshot(out)
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        train(dataset=tiny, out=str(out), resume=True, **{**RUN, "lr": 0.01, "method": "sgd"})
    assert snapshot(out) == before


def test_resume_from_another_data_folder_is_accepted(reference, tiny, tmp_path):
    """Where the data lives (data_root, download) is not a setting of the run: moving the data keeps it resumable."""
    source = reference("sgd").run_dir
    out = tmp_path / "run"
    shutil.copytree(source, out)
    saved = read_json(out / "result.json")
    result = train(dataset=tiny, out=str(out), resume=True, data_root=str(tmp_path), download=True,
                   **{**RUN, "method": "sgd"})
    assert result.summary == saved


# ------------------------------------------------------------------------- one writer per run directory

def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_recovered(
        reference, tiny, tmp_path, lock_holder, snapshot):
    out = tmp_path / "run"
    shutil.copytree(reference("sgd").run_dir, out)
    saved = read_json(out / "result.json")
    holder = lock_holder(out)
    before = snapshot(out)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    for resume in (True, False):
        with pytest.raises(RunDirectoryBusy) as info:
            train(dataset=tiny, out=str(out), resume=resume, **{**RUN, "method": "sgd"})
        assert f"pid {holder.pid} on {socket.gethostname()}" in str(info.value)
        assert snapshot(out) == before
    assert isinstance(info.value, ValueError)  # bad input for the CLI: exit 2
    holder.kill()  # SIGKILL: no clean-up, the lock file stays behind
    holder.wait()
    assert (out / LOCK_NAME).exists()
    result = train(dataset=tiny, out=str(out), resume=True, **{**RUN, "method": "sgd"})
    assert result.summary == saved
    assert sorted(os.listdir(out)) == sorted((*RUN_FILES, DYNAMICS_DIR))  # the stale lock file taken over, then removed


def test_the_lock_is_held_from_start_to_end_of_a_run(tiny, tmp_path):
    out = tmp_path / "run"
    refusals = []

    def second_writer(event, info):
        try:
            train(dataset=tiny, out=str(out), resume=True, **{**RUN, "epochs": 1})
        except RunDirectoryBusy as e:
            refusals.append((event, str(e)))

    train(dataset=tiny, out=str(out), callback=second_writer, **{**RUN, "epochs": 1, "method": "sgd"})
    events = [event for event, _ in refusals]
    assert events[0] == "start" and events[-1] == "end" and "epoch" in events and "batch" in events
    assert all(f"pid {os.getpid()}" in message for _, message in refusals)
    assert sorted(os.listdir(out)) == sorted((*RUN_FILES, DYNAMICS_DIR))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_honour_the_umask(tiny, tmp_path, umask):
    old = os.umask(umask)
    try:
        train(dataset=tiny, out=str(tmp_path / "run"), **{**RUN, "method": "sgd", "epochs": 1})
        atomic_write(tmp_path / "run" / "other.txt", lambda f: f.write("x"), mode="w")
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE(os.stat(tmp_path / "run" / name).st_mode) for name in os.listdir(tmp_path / "run")}
    assert modes == {**{name: 0o666 & ~umask for name in (*RUN_FILES, "other.txt")}, DYNAMICS_DIR: 0o777 & ~umask}


# ---------------------------------------------------------------------- what a resume checks

def test_resume_refuses_changed_training_labels_naming_them(tiny, tmp_path, snapshot):
    out = tmp_path / "run"
    labels = symmetric(tiny.y_train, 0.4, seed=3)
    train(dataset=tiny, noise=labels, out=str(out), **{**RUN, "method": "sgd", "epochs": 1})
    before = snapshot(out)
    other = symmetric(tiny.y_train, 0.4, seed=4)  # the same kind of noise, so the same config: "custom:symmetric"
    with pytest.raises(ValueError, match=r"the training labels \(noisy and clean\) \(sha256 \w{12}\.\.\. when it "
                                         r"started, \w{12}\.\.\. now\) changed"):
        train(dataset=tiny, noise=other, out=str(out), resume=True, **{**RUN, "method": "sgd", "epochs": 1})
    assert snapshot(out) == before


def test_resume_refuses_a_changed_dataset_but_not_the_same_one_elsewhere(reference, tiny, tmp_path, snapshot):
    out = tmp_path / "run"
    shutil.copytree(reference("sgd").run_dir, out)
    before = snapshot(out)
    x_test = tiny.x_test.copy()
    x_test[0, 0, 0, 0] ^= 1  # one bit of one test pixel
    changed = ImageDataset("tiny", tiny.x_train, tiny.y_train, x_test, tiny.y_test, tiny.classes)
    with pytest.raises(ValueError, match=r"the dataset \(its train/test images, labels and class names\)"):
        train(dataset=changed, out=str(out), resume=True, **{**RUN, "method": "sgd"})
    assert snapshot(out) == before
    copy = ImageDataset("tiny", tiny.x_train.copy(), tiny.y_train.copy(), tiny.x_test.copy(), tiny.y_test.copy(),
                        list(tiny.classes))
    assert train(dataset=copy, out=str(out), resume=True, **{**RUN, "method": "sgd"}).summary == \
        read_json(out / "result.json")


def test_amp_auto_is_resolved_once_and_kept_on_resume(reference, tiny, tmp_path, monkeypatch):
    """Started where "auto" means fp32 and resumed where it means bf16: the run stays fp32 throughout, so it
    ends with the weights of the uninterrupted fp32 (amp="none") reference run."""
    expected = reference("sgd")
    real, machine = noisysam.run.config.resolve_amp, {"auto": None}
    for module in (noisysam.run.loop, noisysam.run.rundir):  # the modules that resolve a run's precision
        monkeypatch.setattr(module, "resolve_amp",
                            lambda amp, device: machine[amp] if amp == "auto" else real(amp, device))

    def kill(event, info):
        if event == "batch" and (info["epoch"], info["batch"]) == (2, 1):
            raise KeyboardInterrupt

    out = tmp_path / "run"
    auto = {**RUN, "method": "sgd", "amp": "auto"}
    with pytest.raises(KeyboardInterrupt):
        train(dataset=tiny, out=str(out), callback=kill, **auto)
    assert read_json(out / "config.json")["amp"] == "none"
    machine["auto"] = torch.bfloat16  # another machine
    result = train(dataset=tiny, out=str(out), resume=True, **auto)
    assert result.summary["amp"] == "fp32"
    assert same_weights(weights(result.model), weights(expected.model))


@pytest.mark.parametrize("native, mkldnn, expected", [
    (True, True, torch.bfloat16),  # AVX-512 BF16 or AMX: bf16 in hardware, faster
    (False, True, None),  # plain AVX-512: oneDNN emulates bf16 (2.5x slower than fp32 here), so fp32
    (False, False, None),
])
def test_amp_auto_takes_bf16_only_on_a_cpu_with_native_bf16_and_records_why(tiny, tmp_path, monkeypatch, native,
                                                                            mkldnn, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn, raising=False)
    out = tmp_path / "run"
    result = train(dataset=tiny, method="sgd", out=str(out), **{**RUN, "amp": "auto", "epochs": 1})
    config = read_json(out / "config.json")
    assert config["amp"] == ("bf16" if expected else "none")
    assert result.summary["amp"] == ("bfloat16" if expected else "fp32")
    assert ("has native bf16" if expected else "no native bf16") in config["amp_choice"]


def test_onecycle_schedule_is_torchs_onecycle_lr_step_for_step():
    for total in (7, 26, 2600):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=total, pct_start=0.15,
                                                    cycle_momentum=False)
        for t in range(total):
            assert lr_at(t, total, 0.05, "onecycle") == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=0)
            opt.step()
            if t < total - 1:
                sched.step()


# ------------------------------------------------------------------------------------- Python API

def test_custom_module_and_custom_noisy_labels(tiny, tmp_path):
    labels = symmetric(tiny.y_train, 0.5, seed=3, mode="flip")
    net = SmallNet()
    before = weights(net)
    result = train(dataset=tiny, noise=labels, method="sam", out=str(tmp_path / "run"),
                   **{**RUN, "epochs": 1, "model": net})
    assert result.noisy_labels is labels
    assert same_weights(weights(net), before)  # the module passed in is a template, copied
    assert isinstance(result.model, SmallNet) and not torch.equal(result.model.fc.weight, net.fc.weight)
    noise = result.summary["noise"]
    assert (noise["type"], noise["mode"], noise["rate"]) == ("symmetric", "flip", 0.5)
    assert noise["realised_rate"] == np.mean(labels.noisy != tiny.y_train)
    config = read_json(result.run_dir / "config.json")["config"]
    assert (config["model"], config["dataset"]) == ("custom:SmallNet", "custom:tiny")
    assert np.array_equal(NoisyLabels.load(result.run_dir / "noisy_labels.npz").noisy, labels.noisy)
    assert 0.0 <= result.test_accuracy["last"] <= 1.0


def test_noisy_labels_of_another_dataset_are_refused(tiny, tmp_path):
    labels = symmetric(tiny.y_train[:100], 0.5, seed=3)
    with pytest.raises(ValueError, match="noisy labels"):
        train(dataset=tiny, noise=labels, out=str(tmp_path / "run"), **RUN)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------- profiles

def labels_at(rate, seed=0):
    """Symmetric labels at nominal ``rate`` for 500 samples of 10 classes."""
    return symmetric(np.arange(500) % 10, rate, seed=seed)


@pytest.mark.parametrize("rate, rho", [(0.2, 0.1), (0.4, 0.1), (0.6, 0.1), (0.8, 0.05)])
def test_paper_profile_follows_the_paper(rate, rho):
    cfg = TrainConfig(profile="paper", noise_rate=rate).resolved()
    assert (cfg.rho, cfg.model, cfg.epochs) == (None, "resnet32", 200)  # rho waits for the labels
    labels = labels_at(rate)
    assert method_radius(cfg, labels) == dict(value=rho, source="profile", profile="paper", noise_rate=rate,
                                              rate="nominal")
    assert build_method(cfg, labels).params["rho"] == rho


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.6, 0.8, 1.0])
def test_cpu_profile_halves_its_rho_at_80_percent_like_the_paper(rate):
    rho = PROFILES["cpu"]["rho"]
    cfg = TrainConfig(profile="cpu", noise_rate=0.4).resolved()  # the labels' rate counts, not the config's
    assert build_method(cfg, labels_at(rate)).params["rho"] == (rho / 2 if rate >= 0.8 else rho)


def test_80_percent_rule_reads_the_labels_rate_and_result_json_says_which(tiny, tmp_path):
    """Labels passed in (as from a file or CIFAR-10N) at 80% halve the radius though noise_rate says 0.4;
    labels without a nominal rate use their realised one."""
    rho = PROFILES["cpu"]["rho"]
    labels = symmetric(tiny.y_train, 0.8, seed=3, mode="flip")
    result = train(dataset=tiny, noise=labels, method="sam", out=str(tmp_path / "a"), **{**RUN, "epochs": 1})
    assert result.summary["rho"] == dict(value=rho / 2, source="profile", profile="cpu", noise_rate=0.8,
                                         rate="nominal")
    assert read_json(result.run_dir / "config.json")["method_params"]["rho"] == rho / 2
    unnamed = NoisyLabels(labels.noisy, labels.clean, 10, dict(kind="mine", nominal_rate=None))
    realised = float(np.mean(labels.noisy != labels.clean))
    assert realised >= 0.8
    cfg = TrainConfig(profile="cpu").resolved()
    assert method_radius(cfg, unnamed) == dict(value=rho / 2, source="profile", profile="cpu", noise_rate=realised,
                                               rate="realised")
    sixty = NoisyLabels(labels.noisy, labels.clean, 10, dict(kind="mine", nominal_rate=0.6))
    assert build_method(cfg, sixty).params["rho"] == rho


def test_each_method_keeps_its_own_radius_unless_the_user_sets_one(tiny, tmp_path):
    """asam's radius is its own 0.5, not the profile's SAM radius; a user's rho wins; sgd has none."""
    asam = train(dataset=tiny, method="asam", **{**RUN, "epochs": 1})
    assert asam.summary["rho"] == dict(value=0.5, source="method default")
    assert asam.summary["method_params"]["rho"] == 0.5
    cfg = TrainConfig(profile="paper", noise_rate=0.8, method="asam", rho=0.3).resolved()
    assert method_radius(cfg, labels_at(0.8)) == dict(value=0.3, source="user")
    assert build_method(cfg, labels_at(0.8)).params["rho"] == 0.3
    cfg = TrainConfig(method="asam", method_params={"rho": 0.2}).resolved()
    assert method_radius(cfg, None) == dict(value=0.2, source="user")
    for method in ("sam", "bootstrap-sam", "mixup-sam"):
        cfg = TrainConfig(method=method).resolved()
        assert build_method(cfg, labels_at(0.4)).params["rho"] == PROFILES["cpu"]["rho"]
    assert method_radius(TrainConfig(method="sgd").resolved(), labels_at(0.4)) is None
    assert build_method(TrainConfig(method="mixup").resolved()).params["alpha"] == 1.0  # the method's default
    assert build_method(TrainConfig(method="mixup-sam", mixup_alpha=8.0).resolved()).params["alpha"] == 8.0


@pytest.mark.parametrize("override, message", [
    (dict(method="sgd", rho=0.1), "rho is given (0.1) but method 'sgd' takes no rho"),
    (dict(method="mixup", rho=0.1), "takes no rho; methods that take it: ['ae-sam', 'asam', 'bootstrap-sam'"),
    (dict(method="sam", mixup_alpha=8.0), "mixup_alpha is given (8.0) but method 'sam' takes no alpha"),
    (dict(method="sam", rho=0.1, method_params={"rho": 0.2}), "rho is given twice"),
])
def test_rho_or_alpha_for_a_method_without_one_is_refused_before_writing(tiny, tmp_path, override, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as info:
        train(dataset=tiny, out=str(out), **{**RUN, **override})
    assert message in str(info.value)
    assert not out.exists()


def test_explicit_fields_override_the_profile():
    cfg = TrainConfig(profile="paper", noise_rate=0.8, rho=0.3, epochs=5, model="cnn").resolved()
    assert (cfg.rho, cfg.epochs, cfg.model) == (0.3, 5, "cnn")
    assert TrainConfig(profile="cpu").resolved().model == PROFILES["cpu"]["model"] == "cnn5"


def test_profile_model_params_come_with_the_profiles_model_only():
    profile = PROFILES["cpu"]["model_params"]
    assert TrainConfig(profile="cpu").resolved().model_params == profile
    mine = TrainConfig(profile="cpu", model_params={"width": 4}).resolved().model_params
    assert mine == {**profile, "width": 4}  # the user's option wins, the rest stays the profile's
    assert TrainConfig(profile="cpu", model="cnn").resolved().model_params == {}  # a model of the user's choice
    assert TrainConfig(profile="cpu", model="resnet32").resolved().model_params == {}


# ----------------------------------------------------------------------------------- input channels

def test_one_channel_data_trains_end_to_end(tiny, tmp_path):
    gray = ImageDataset("gray", tiny.x_train[..., :1].copy(), tiny.y_train, tiny.x_test[..., :1].copy(), tiny.y_test,
                        tiny.classes)
    result = train(dataset=gray, method="sam", out=str(tmp_path / "run"), **{**RUN, "epochs": 1})
    stem = next(m for m in result.model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1
    assert sorted(os.listdir(tmp_path / "run")) == sorted((*RUN_FILES, DYNAMICS_DIR))
    # The reported accuracy is the model's on the one-channel test images.
    rows = train_rows()
    norm = Loader(gray.x_train[rows], gray.y_train[rows], batch_size=64)  # statistics of the training split
    loader = Loader(gray.x_test, gray.y_test, batch_size=100, shuffle=False, augment=False, channels_last=True,
                    mean=norm.mean, std=norm.std)
    pred, _ = predict(result.model, loader, None)
    assert result.test_accuracy["last"] == float((pred.numpy() == gray.y_test).mean())
    with pytest.raises(ValueError, match="in_channels"):
        train(dataset=gray, out=str(tmp_path / "other"), **{**RUN, "model_params": {"width": 4, "in_channels": 3}})
    assert not (tmp_path / "other").exists()


class SevenClasses(SmallNet):
    def forward(self, x):
        return super().forward(x)[:, :7]


@pytest.mark.parametrize("data_channels, model, message", [
    (1, SmallNet, r"model custom:SmallNet cannot take this dataset's images \(a batch of shape \(2, 1, 32, 32\)\)"),
    (3, SevenClasses, r"returned \(2, 7\) for \(2, 3, 32, 32\) images; expected logits of shape \(2, 10\)"),
])
def test_a_model_that_cannot_take_the_data_is_refused_before_writing(tiny, tmp_path, data_channels, model, message):
    data = ImageDataset("d", tiny.x_train[..., :data_channels].copy(), tiny.y_train,
                        tiny.x_test[..., :data_channels].copy(), tiny.y_test, tiny.classes)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message) as info:
        train(dataset=data, method="sgd", out=str(out), **{**RUN, "model": model()})
    assert "\n" not in str(info.value)
    assert not out.exists()
