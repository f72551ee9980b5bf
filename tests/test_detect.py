"""Label-issue detection (noisysam.detect.detection): dynamics recorded by train(), AUM and loss scores, K-fold
out-of-fold probabilities handed to cleanlab, the ranked table, the truth-based evaluation, resume, bad input.

Tiny data (conftest's tiny_npz: 200 random 16x16 training images, 10 classes), a width-4 CNN, 3 epochs, K = 2."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import precision_score, recall_score, roc_auc_score

import noisysam
from noisysam import ImageDataset, train
from noisysam.cli.commands import cli
from noisysam.detect import (THRESHOLD_RUN, cleaned, crowdlab, find_label_issues, symmetric_rate, symmetric_rate_error,
                             threshold_flags, threshold_sample_rows)
from noisysam.detect.dynamics import _most_predicted_other
from noisysam.models.networks import get_model
from noisysam.noise.labels import NoisyLabels, symmetric
from noisysam.run.rundir import DYNAMICS_DIR
from noisysam.run.loop import _split

N_TRAIN = 200
RUN = dict(model="cnn", model_params={"width": 4}, epochs=3, batch_size=64, amp="none", noise_rate=0.4,
           augment=False, val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_npz):
    return noisysam.load_dataset(tiny_npz)


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread for the module-scoped runs too (set up before conftest's per-test fixture), so that a
    run in a test reproduces them bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory, one_thread_module):
    return train(dataset=tiny, method="sgd", out=str(tmp_path_factory.mktemp("run") / "run"), **RUN)


@pytest.fixture(scope="module")
def kfold(tiny, tmp_path_factory, one_thread_module):
    pytest.importorskip("cleanlab")
    out = tmp_path_factory.mktemp("kfold") / "detect"
    return find_label_issues(kfold=2, dataset=tiny, out=out, method="sgd", **RUN), out


def logits_of(state, x_train, x, num_classes=10):
    """The cnn of ``state`` on uint8 images ``x``, normalised by the per-channel mean and population std of
    ``x_train`` on the [0, 1] scale, written independently of the Loader."""
    model = get_model("cnn", num_classes, width=4)
    model.load_state_dict(state)
    model.eval()
    ref = x_train.astype(np.float64) / 255
    mean, std = ref.mean(axis=(0, 1, 2)), ref.std(axis=(0, 1, 2))
    images = torch.tensor(((x.astype(np.float64) / 255 - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float32)
    with torch.no_grad():
        return model(images).double().numpy()


def epochs_of(run_dir):
    files = sorted((run_dir / DYNAMICS_DIR).glob("stage1_epoch_*.npz"))
    return [dict(np.load(f)) for f in files]


def test_dynamics_equal_margins_and_losses_recomputed_from_the_saved_model(run, tiny):
    out = run.run_dir
    rows = np.load(out / DYNAMICS_DIR / "rows.npz")["rows"]
    assert np.array_equal(rows, _split(N_TRAIN, RUN["val_fraction"], RUN["seed"])[0])
    epochs = epochs_of(out)
    assert len(epochs) == RUN["epochs"] and all(e["margin"].dtype == np.float16 for e in epochs)
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    logits = logits_of(state, tiny.x_train[rows], tiny.x_train[rows])
    given = run.noisy_labels.noisy[rows]
    ordered = np.sort(logits, axis=1)
    own = logits[np.arange(len(rows)), given]
    # margin: own logit minus the largest other; the largest other is the top logit unless the own is it.
    margin = own - np.where(own == ordered[:, -1], ordered[:, -2], ordered[:, -1])
    loss = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1) - own
    last = epochs[-1]
    assert np.allclose(last["margin"], margin, rtol=2e-3, atol=2e-3)
    assert np.allclose(last["loss"], loss, rtol=2e-3, atol=2e-3)
    assert np.array_equal(last["pred"], logits.argmax(1))


def test_the_suggestion_is_the_most_predicted_other_class_not_the_memorised_last_prediction():
    # epochs x rows; row 0 (given 1) was predicted 2 early and memorised late; row 1 (given 0) ties 1 and 3.
    pred = np.array([[2, 3, 2], [2, 1, 2], [1, 1, 2], [1, 3, 2]])
    assert _most_predicted_other(pred, np.array([1, 0, 2]), 4).tolist()[:2] == [2, 1]
    # A threshold run's fake class (4 here) is no vote: row 0 was predicted 4 three times and 3 once.
    assert _most_predicted_other(np.array([[4], [4], [3], [4]]), np.array([1]), 4).tolist() == [3]


def test_aum_and_loss_scores_and_the_table_by_hand(run):
    epochs = epochs_of(run.run_dir)
    rows = np.load(run.run_dir / DYNAMICS_DIR / "rows.npz")["rows"]
    aum = np.mean([e["margin"].astype(np.float64) for e in epochs], axis=0)
    mean_loss = np.mean([e["loss"].astype(np.float64) for e in epochs], axis=0)
    given = run.noisy_labels.noisy[rows]
    det = find_label_issues(run.run_dir, score="aum", out=run.run_dir / "detect-aum")
    assert np.allclose(det.score, -aum, atol=1e-6) and np.array_equal(det.index, rows)
    assert np.allclose(find_label_issues(run.run_dir, score="loss").score, mean_loss, atol=1e-6)
    assert np.array_equal(det.flagged, aum < 0) and det.estimated_rate == pytest.approx(np.mean(aum < 0))
    table = json.loads((run.run_dir / "detect-aum" / "issues.json").read_text())
    by_hand = sorted(range(len(rows)), key=lambda i: (aum[i], rows[i]))  # least margin first
    assert [r["index"] for r in table] == [int(rows[i]) for i in by_hand]
    # suggested: the most frequent prediction other than the given label over the epochs (lower class on ties)
    other = [min((c for c in set(col) if c != g), key=lambda c: (-list(col).count(c), c), default=g)
             for col, g in zip(np.stack([e["pred"] for e in epochs]).T.tolist(), given.tolist())]
    expected_suggested = np.where(aum < 0, other, given)
    assert [r["suggested"] for r in table] == [int(expected_suggested[i]) for i in by_hand]
    assert [r["given"] for r in table] == [int(given[i]) for i in by_hand]
    csv_rows = (run.run_dir / "detect-aum" / "issues.csv").read_text().splitlines()
    assert csv_rows[0] == "index,given,suggested,score,flagged" and len(csv_rows) == len(rows) + 1
    assert int(csv_rows[1].split(",")[0]) == table[0]["index"]


def test_the_api_writes_only_where_asked(run, snapshot):
    """find_label_issues returns its result and writes nothing without out (noisysam detect passes default_out);
    threshold samples, which train a run, need out."""
    before = snapshot(run.run_dir)
    det = find_label_issues(run.run_dir)
    assert snapshot(run.run_dir) == before and det.estimated_rate is not None
    with pytest.raises(ValueError, match="threshold samples train a run: pass out"):
        find_label_issues(run.run_dir, threshold_samples=True)
    assert snapshot(run.run_dir) == before


def test_truth_metrics_agree_with_sklearn(run):
    det = find_label_issues(run.run_dir, out=run.run_dir / "detect-aum")
    truth = run.noisy_labels.is_noisy[det.index]
    got = json.loads((run.run_dir / "detect-aum" / "summary.json").read_text())["truth"]
    assert got["auroc"] == pytest.approx(roc_auc_score(truth, det.score))
    m = int(truth.sum())
    top = np.zeros(truth.size, dtype=bool)
    top[np.lexsort((det.index, -det.score))[:m]] = True
    assert got["precision_at_realised"] == pytest.approx(precision_score(truth, top))
    assert got["recall_at_realised"] == pytest.approx(recall_score(truth, top))
    assert got["precision_flagged"] == pytest.approx(precision_score(truth, det.flagged))
    assert got["recall_flagged"] == pytest.approx(recall_score(truth, det.flagged))
    assert got["realised_rate"] == pytest.approx(truth.mean())


def test_kfold_probabilities_are_out_of_fold_and_go_to_cleanlab_unchanged(kfold, tiny, monkeypatch):
    import cleanlab.count
    import cleanlab.filter

    det, out = kfold
    saved = np.load(out / "oof_probs.npz")
    probs, folds = saved["probs"], saved["folds"]
    given = det.labels.noisy
    assert sorted(set(folds.tolist())) == [0, 1]
    for f in (0, 1):
        rest, held = folds != f, folds == f
        assert np.all(np.abs(np.bincount(given[held], minlength=10) - np.bincount(given[rest], minlength=10)) <= 1)
        fold_labels = NoisyLabels.load(out / f"fold_{f + 1}" / "noisy_labels.npz")
        assert np.array_equal(fold_labels.noisy, given[rest]) and np.array_equal(fold_labels.clean, tiny.y_train[rest])
        state = torch.load(out / f"fold_{f + 1}" / "checkpoint.pt", weights_only=True)["model"]
        logits = logits_of(state, tiny.x_train[rest], tiny.x_train[held])
        soft = np.exp(logits - logits.max(1, keepdims=True))
        assert np.allclose(probs[held], soft / soft.sum(1, keepdims=True), atol=1e-5)

    received = []
    real = cleanlab.filter.find_label_issues
    monkeypatch.setattr(cleanlab.filter, "find_label_issues",
                        lambda labels, pred_probs, **kw: received.append((labels, pred_probs)) or real(labels, pred_probs, **kw))
    from noisysam.detect import cleanlab_scores
    again = cleanlab_scores(det.labels, probs, det.source)
    assert len(received) == 1 and np.array_equal(received[0][0], given) and np.array_equal(received[0][1], probs)

    # The table and estimates by hand from the probabilities.
    score = 1 - probs[np.arange(len(given)), given]
    assert np.allclose(again.score, score) and np.allclose(det.score, score)
    assert np.array_equal(det.suggested, probs.argmax(1))
    assert np.array_equal(det.flagged, real(given, probs))
    order = sorted(range(len(given)), key=lambda i: (-score[i], i))
    table = json.loads((out / "issues.json").read_text())
    assert [r["index"] for r in table] == order
    joint = cleanlab.count.estimate_joint(given, probs)  # P(given = i, true = j)
    assert det.estimated_rate == pytest.approx(1 - np.trace(joint))
    for j in range(10):
        assert np.allclose(det.estimated_transition[j], joint[:, j] / joint[:, j].sum())


def test_killed_kfold_detection_resumes_to_the_same_result(kfold, tiny, tmp_path):
    reference, ref_out = kfold
    out = tmp_path / "detect"

    def kill(event, info):
        if event == "batch" and info["fold"] == 2 and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        find_label_issues(kfold=2, dataset=tiny, out=out, method="sgd", callback=kill, **RUN)
    assert not (out / "issues.json").exists() and (out / "fold_1" / "result.json").exists()
    assert not (out / "fold_2" / "result.json").exists()
    trained = []
    det = find_label_issues(kfold=2, dataset=tiny, out=out, method="sgd",
                            callback=lambda e, i: trained.append(i["fold"]) if e == "batch" else None, **RUN)
    assert set(trained) == {2}  # fold 1 was finished: nothing of it trained again
    assert np.array_equal(np.load(out / "oof_probs.npz")["probs"], np.load(ref_out / "oof_probs.npz")["probs"])
    assert (out / "issues.json").read_text() == (ref_out / "issues.json").read_text()
    assert np.array_equal(det.score, reference.score)
    with pytest.raises(ValueError, match="holds another detection"):
        find_label_issues(kfold=2, dataset=tiny, out=out, method="sam", **RUN)


def _few(tiny, per_class):
    rows = np.concatenate([np.flatnonzero(tiny.y_train == c)[:per_class[c]] for c in range(len(per_class))])
    return ImageDataset("few", tiny.x_train[rows], tiny.y_train[rows], tiny.x_test, tiny.y_test, tiny.classes)


@pytest.mark.parametrize("case, match", [
    ("too few per class", "kfold 3 needs at least 3 samples of every class, but class 1 has 2"),
    ("noise by name", "kfold 3 needs at least 3 samples of every class, but class 1 has 2"),
    ("one class", "at least 2 classes among the labels, got 1"),
    ("k=1", "kfold must be an integer >= 2, got 1"),
    ("score", "score must be 'cleanlab' for kfold detection"),
])
def test_bad_kfold_input_is_refused_before_anything_is_written(tiny, tmp_path, case, match):
    kwargs = dict(kfold=3, dataset=tiny, noise=None)
    if case == "too few per class":
        kwargs["dataset"] = _few(tiny, [5, 2, 5])
    elif case == "noise by name":  # a noise kind by name, as train() takes it (noise "none": labels stay clean)
        kwargs.update(dataset=_few(tiny, [5, 2, 5]), noise="none")
    elif case == "one class":
        d = _few(tiny, [6])
        kwargs.update(dataset=d, noise=NoisyLabels(d.y_train, d.y_train, 10))
    elif case == "k=1":
        kwargs["kfold"] = 1
    else:
        kwargs["score"] = "aum"
    with pytest.raises(ValueError, match=match):
        find_label_issues(out=tmp_path / "detect", method="sgd", **kwargs, **{**RUN, "noise_rate": 0.0})
    assert os.listdir(tmp_path) == []


def test_bad_run_input_is_refused(run, tmp_path):
    with pytest.raises(ValueError, match="score must be one of \\['aum', 'loss'\\]"):
        find_label_issues(run.run_dir, score="cleanlab", out=tmp_path / "d")
    bare = tmp_path / "bare"
    bare.mkdir()
    symmetric(np.arange(20) % 10, 0.4, seed=0).save(bare / "noisy_labels.npz")
    with pytest.raises(ValueError, match="has no training dynamics"):
        find_label_issues(bare, out=tmp_path / "d")
    with pytest.raises(ValueError, match="either run_dir"):
        find_label_issues(run.run_dir, kfold=2)
    assert sorted(os.listdir(tmp_path)) == ["bare"]


def test_cleaned_labels_relabel_and_drop_train_on_exactly_the_intended_labels(kfold, tiny, tmp_path):
    det, out = kfold
    table = json.loads((out / "issues.json").read_text())
    flagged = sorted((r["index"], r["suggested"]) for r in table if r["flagged"])
    rows = np.array([i for i, _ in flagged])
    given = det.labels.noisy
    one = {**RUN, "epochs": 1, "method": "sgd"}

    data, labels = cleaned(out, "relabel", tiny)
    relabelled = given.copy()
    relabelled[rows] = [s for _, s in flagged]
    result = train(dataset=data, noise=labels, out=str(tmp_path / "relabel"), **one)
    assert np.array_equal(NoisyLabels.load(tmp_path / "relabel" / "noisy_labels.npz").noisy, relabelled)
    record = json.loads((tmp_path / "relabel" / "config.json").read_text())["noise"]["detection"]
    assert record["dir"] == str(out) and record["score"] == "cleanlab" and record["mode"] == "relabel"
    assert record["flagged"] == len(rows) and record["relabelled"] == int(np.sum(relabelled != given))
    assert result.noisy_labels.rate == pytest.approx(np.mean(relabelled != tiny.y_train))

    data, labels = cleaned(out, "drop", tiny)
    keep = np.array([i for i in range(N_TRAIN) if i not in set(rows.tolist())])
    train(dataset=data, noise=labels, out=str(tmp_path / "drop"), **one)
    saved = NoisyLabels.load(tmp_path / "drop" / "noisy_labels.npz")
    assert np.array_equal(saved.noisy, given[keep]) and np.array_equal(saved.clean, tiny.y_train[keep])
    assert np.array_equal(data.x_train, tiny.x_train[keep]) and np.array_equal(data.x_test, tiny.x_test)
    config = json.loads((tmp_path / "drop" / "config.json").read_text())
    assert config["train_rows"] + config["val_rows"] == keep.size
    assert config["noise"]["detection"]["dropped"] == len(rows)

    with pytest.raises(ValueError, match="mode must be one of \\['drop', 'relabel'\\], got 'keep'"):
        cleaned(out, "keep", tiny)
    with pytest.raises(ValueError, match="is not a detection directory"):
        cleaned(tmp_path, "drop", tiny)


def cli_run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_detect_from_run_and_retrain_with_labels_from(run, tiny_npz, tmp_path):
    result = cli_run("detect", "--from-run", run.run_dir, "--score", "loss", "--out", tmp_path / "d", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    expected = find_label_issues(run.run_dir, score="loss", out=tmp_path / "api")
    assert summary == json.loads((tmp_path / "api" / "summary.json").read_text())
    assert summary["flagged"] == int(expected.flagged.sum())
    assert (tmp_path / "d" / "issues.csv").read_text() == (tmp_path / "api" / "issues.csv").read_text()
    result = cli_run("train", "--dataset", tiny_npz, "--model", "cnn", "--model-param", "width=4", "--epochs", 1,
                     "--amp", "none", "--method", "sgd", "--labels-from", tmp_path / "d", "--mode", "drop",
                     "--out", tmp_path / "drop", "--no-plot")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "drop" / "config.json").read_text())
    dropped = int(expected.flagged.sum())
    assert config["noise"]["detection"]["dropped"] == dropped
    assert config["train_rows"] + config["val_rows"] == N_TRAIN - dropped
    # It resumes (finished: it reports) with the same --labels-from: config.json's "custom:" names stand for the
    # cleaned data and labels, they are not checked as dataset or noise names.
    result = cli_run("train", "--dataset", tiny_npz, "--labels-from", tmp_path / "d", "--mode", "drop",
                     "--out", tmp_path / "drop", "--resume", "--no-plot", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((tmp_path / "drop" / "result.json").read_text())
    # --print-config leaves noise/noise_rate unset beside labels_from (the detection gives the labels, and a file that
    # set them would be refused as the command line is), so the file round-trips.
    printed = cli_run("train", "--labels-from", tmp_path / "d", "--mode", "drop", "--print-config")
    assert printed.exit_code == 0, printed.output
    assert "# noise: not set\n" in printed.output and "# noise_rate: not set\n" in printed.output
    (tmp_path / "run.toml").write_text(printed.output)
    again = cli_run("train", "--config", tmp_path / "run.toml", "--print-config")
    assert (again.exit_code, again.output) == (0, printed.output)


@pytest.mark.parametrize("args, message", [
    (["--kfold", 2], "--kfold needs --out DIR"),
    (["--kfold", 30, "--out", "{tmp}/d"], "kfold 30 needs at least 30 samples of every class"),
    (["--from-run", "{tmp}"], "has no training dynamics"),
    (["--from-run", "{tmp}", "--kfold", 2], "give either --from-run RUN_DIR"),
    (["--from-run", "{tmp}", "--score", "cleanlab"], "Invalid value for '--score'"),
    (["--aum-threshold-samples"], "--aum-threshold-samples needs --from-run RUN_DIR"),
    (["--aum-threshold-samples", "--kfold", 2, "--out", "{tmp}/d"], "--aum-threshold-samples needs --from-run"),
    (["--aum-threshold-samples", "--from-run", "{tmp}", "--score", "loss"], "takes no --score but aum"),
    (["--aum-threshold-samples", "--from-run", "{tmp}"], "has no config.json"),
    (["--annotators"], "--annotators needs --from-run RUN_DIR"),
    (["--annotators", "--from-run", "{tmp}", "--score", "aum"], "--annotators needs --from-run RUN_DIR"),
    (["--annotators", "--from-run", "{tmp}"], "has no config.json"),
])
def test_cli_detect_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_npz, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["detect", "--dataset", tiny_npz, *[str(a).format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert os.listdir(tmp_path) == []


def test_kfold_without_cleanlab_is_one_line(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab now raises ImportError
    with pytest.raises(ValueError, match="^cleanlab is not installed: pip install 'noisysam\\[cleanlab\\]'$"):
        find_label_issues(kfold=2, dataset=tiny, out=tmp_path / "d", method="sgd", **RUN)
    assert os.listdir(tmp_path) == []


def test_cli_labels_from_refuses_noise_options_and_a_non_detection_directory(tiny_npz, tmp_path):
    for extra, message in ((["--noise-rate", "0.2"], "it takes no --noise or --noise-rate"),
                           ([], "is not a detection directory")):
        result = CliRunner().invoke(cli, ["train", "--dataset", tiny_npz, "--labels-from", str(tmp_path), *extra,
                                          "--out", str(tmp_path / "run")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
        assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------- threshold samples

def test_threshold_samples_are_n_over_c_plus_1_distinct_training_rows_seeded():
    rows = np.arange(0, 370, 10)  # 37 training rows, 3 classes: 37 // 4 = 9 threshold samples
    chosen = threshold_sample_rows(rows, 3, seed=0)
    assert chosen.size == 9 and len(set(chosen.tolist())) == 9 and set(chosen.tolist()) <= set(rows.tolist())
    assert chosen.tolist() == sorted(chosen.tolist())
    assert np.array_equal(chosen, threshold_sample_rows(rows, 3, seed=0))
    assert not np.array_equal(chosen, threshold_sample_rows(rows, 3, seed=1))
    assert threshold_sample_rows(rows[:3], 3, seed=0).size == 0  # fewer rows than classes + 1


def test_threshold_flags_cut_at_the_99th_percentile_of_the_threshold_samples_aums():
    # 101 threshold AUMs 0, 1, ..., 100: the 99th percentile is the value at rank 0.99 * 100 = 99, i.e. 99.
    flagged, t = threshold_flags(np.array([98.9, 99.0, 99.1, -5.0]), np.arange(101.0))
    assert t == 99.0 and flagged.tolist() == [True, False, False, True]
    # Two threshold AUMs -1 and 3: linear interpolation at rank 0.99 * 1 gives -1 + 0.99 * 4 = 2.96.
    flagged, t = threshold_flags(np.array([2.95, 2.97]), np.array([3.0, -1.0]))
    assert t == pytest.approx(2.96) and flagged.tolist() == [True, False]
    with pytest.raises(ValueError, match="no threshold samples"):
        threshold_flags(np.array([0.0]), np.array([]))


@pytest.fixture(scope="module")
def named_run(tiny_npz, tmp_path_factory, one_thread_module):
    """The run of ``run`` on the dataset by its path (a run to train again must name its dataset)."""
    return train(dataset=tiny_npz, method="sgd", out=str(tmp_path_factory.mktemp("named") / "run"), **RUN)


@pytest.fixture(scope="module")
def threshold(named_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("threshold") / "detect"
    result = CliRunner().invoke(cli, ["detect", "--from-run", str(named_run.run_dir), "--aum-threshold-samples",
                                      "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_threshold_run_relabels_its_samples_to_a_fake_class_and_flags_by_their_99th_percentile(named_run, threshold):
    run = named_run
    out, printed = threshold
    rows = np.load(run.run_dir / DYNAMICS_DIR / "rows.npz")["rows"]
    given = run.noisy_labels.noisy
    marked = NoisyLabels.load(out / THRESHOLD_RUN / "noisy_labels.npz")
    chosen = np.flatnonzero(marked.noisy == 10)  # the fake class: one past the 10 real ones
    assert marked.num_classes == 11 and chosen.size == rows.size // 11 and set(chosen) <= set(rows.tolist())
    assert marked.provenance["threshold_rows"] == chosen.tolist() and marked.provenance["fake_class"] == 10
    others = np.setdiff1d(np.arange(N_TRAIN), chosen)
    assert np.array_equal(marked.noisy[others], given[others]) and np.array_equal(marked.clean, run.noisy_labels.clean)
    config = json.loads((out / THRESHOLD_RUN / "config.json").read_text())
    assert config["noise"]["threshold_rows"] == chosen.tolist()  # config.json records them too
    # The flags by hand from the threshold run's margins: sorted threshold AUMs, the 99th percentile interpolated.
    aum = np.mean([e["margin"].astype(np.float64) for e in epochs_of(out / THRESHOLD_RUN)], axis=0)
    is_threshold = np.isin(rows, chosen)
    ranked = sorted(aum[is_threshold])
    position = 0.99 * (len(ranked) - 1)
    low = int(position)
    t = ranked[low] + (position - low) * (ranked[min(low + 1, len(ranked) - 1)] - ranked[low])
    table = json.loads((out / "issues.json").read_text())
    assert sorted(r["index"] for r in table) == rows[~is_threshold].tolist()
    by_row = dict(zip(rows.tolist(), aum.tolist()))
    assert all(r["flagged"] == (by_row[r["index"]] < t) for r in table)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["estimator"] == "threshold samples" and summary["estimator_detail"]["threshold"] == pytest.approx(t)
    assert summary["estimated_rate"] == pytest.approx(np.mean([r["flagged"] for r in table]))
    assert f"{summary['estimated_rate']:.1%} by threshold samples" in printed
    assert find_label_issues(run.run_dir, out=out.parent / "cut").summary()["estimator"] == "cut at 0"


def test_killed_threshold_detection_resumes_to_the_same_result(named_run, threshold, tmp_path):
    run, out = named_run, tmp_path / "detect"

    def kill(event, info):
        if event == "batch" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        find_label_issues(run.run_dir, threshold_samples=True, out=out, callback=kill)
    assert not (out / "issues.json").exists() and (out / THRESHOLD_RUN / "checkpoint.pt").exists()
    trained = []
    find_label_issues(run.run_dir, threshold_samples=True, out=out,
                      callback=lambda e, i: trained.append(i["epoch"]) if e == "batch" else None)
    assert set(trained) == {2, 3}  # epoch 1 was finished: resumed, not retrained
    reference, _ = threshold
    assert (out / "issues.json").read_text() == (reference / "issues.json").read_text()
    assert (out / THRESHOLD_RUN / "result.json").exists()


# ------------------------------------------------------------------------------------- CIFAR-10N's annotators

@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, one_thread_module):
    """A 1-epoch run on the first 300 embedded CIFAR-10 images (with their train_index) and CIFAR-10N worse labels."""
    mini = noisysam.load_dataset("cifar10-mini")
    path = tmp_path_factory.mktemp("cifar") / "sub.npz"
    np.savez(path, x_train=mini.x_train[:300], y_train=mini.y_train[:300], x_test=mini.x_test[:50],
             y_test=mini.y_test[:50], classes=np.array(mini.classes), train_index=mini.train_index[:300])
    return train(dataset=str(path), method="sgd", noise="cifar10n-worse",
                 out=str(tmp_path_factory.mktemp("cifar") / "run"), **{**RUN, "epochs": 1})


def test_annotator_detection_flags_labels_off_the_consensus_and_rates_each_annotator(cifar_run, tmp_path):
    multiannotator = pytest.importorskip("cleanlab.multiannotator")
    result = cli_run("detect", "--from-run", cifar_run.run_dir, "--annotators", "--out", tmp_path / "d", "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "by annotator consensus" in result.output and "annotator random3" in result.output
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    table = {r["index"]: r for r in json.loads((tmp_path / "d" / "issues.json").read_text())}
    data = noisysam.load_dataset(json.loads((cifar_run.run_dir / "config.json").read_text())["config"]["dataset"])
    with np.load(noisysam.data.datasets.find_data_file("cifar10n.npz")) as f:
        votes = np.stack([f[k][data.train_index] for k in ("random1", "random2", "random3")], 1).astype(np.int64)
    given, clean = cifar_run.noisy_labels.noisy, data.y_train
    consensus = np.array([table[i]["suggested"] for i in range(300)])
    counts = np.stack([np.bincount(v, minlength=10) for v in votes])
    majority = counts.max(axis=1) >= 2
    assert np.array_equal(consensus[majority], counts[majority].argmax(axis=1))  # the majority where there is one
    flagged = np.array([table[i]["flagged"] for i in range(300)])
    assert np.array_equal(flagged, given != consensus)
    assert summary["estimator"] == "annotator consensus" and summary["estimated_rate"] == pytest.approx(flagged.mean())
    detail = summary["estimator_detail"]
    assert detail["consensus_accuracy"] == pytest.approx(np.mean(consensus == clean))
    assert [a["name"] for a in detail["annotators"]] == ["random1", "random2", "random3"]
    for a, column in zip(detail["annotators"], votes.T):
        assert a["accuracy"] == pytest.approx(np.mean(column == clean))
        assert a["agreement_with_consensus"] == pytest.approx(np.mean(column == consensus))
    # Scores: CROWDLAB's consensus quality q on the run model's probabilities (recomputed apart from the Loader).
    rows = np.load(cifar_run.run_dir / DYNAMICS_DIR / "rows.npz")["rows"]
    state = torch.load(cifar_run.run_dir / "checkpoint.pt", weights_only=True)["model"]
    logits = logits_of(state, data.x_train[rows], data.x_train)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    probs = soft / soft.sum(1, keepdims=True)
    reference = multiannotator.get_label_quality_multiannotator(votes, probs, consensus_method="majority_vote",
                                                                verbose=False)
    assert np.array_equal(consensus, multiannotator.get_majority_vote_label(votes, verbose=False))  # no model
    detailed = reference["detailed_label_quality"].to_numpy()
    q = np.array([detailed[i, list(votes[i]).index(consensus[i])] for i in range(300)])  # an annotator who gave it
    scores = np.array([table[i]["score"] for i in range(300)])
    assert np.allclose(scores, np.where(flagged, q, 1 - q), atol=1e-4)
    quality = reference["annotator_stats"].sort_index()["annotator_quality"].to_numpy()
    assert np.allclose([a["quality"] for a in detail["annotators"]], quality, atol=1e-4)


def test_the_consensus_is_the_annotators_majority_whatever_a_confident_model_says():
    pytest.importorskip("cleanlab")
    annotations = np.array([[0, 0, 1], [1, 1, 0], [2, 2, 1], [0, 1, 2], [0, 0, 0]] * 4)
    probs = np.full((20, 3), 0.005)
    probs[np.arange(20), [1, 0, 2, 0, 0] * 4] = 0.99  # the model backs the minority in rows 0 and 1, class 0 in the tie
    agreed, quality, stats = crowdlab(annotations, probs)
    # Majorities stand; the three-way tie in row 3 goes to the class rarest among all 60 annotations: class 0 was
    # given 28 times, class 1 20 times, class 2 12 times, so class 2, not the model's class 0.
    assert agreed.tolist() == [0, 1, 2, 2, 0] * 4
    assert quality.shape == (20,) and np.all((quality >= 0) & (quality <= 1)) and len(stats) == 3


def test_annotators_on_images_without_cifar10_positions_exit_2_and_change_nothing(named_run, snapshot):
    before = snapshot(named_run.run_dir)
    result = CliRunner().invoke(cli, ["detect", "--from-run", str(named_run.run_dir), "--annotators"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "train_index is None" in lines[0], result.output
    assert snapshot(named_run.run_dir) == before



# ------------------------------------------------------------------------------------- the validation estimate

def test_symmetric_rate_inverts_the_noisy_accuracy_of_a_model_by_hand():
    # A model right on half the clean labels, labels 40% symmetric over 10 classes: it matches a noisy label when it
    # is right and the label kept (0.5 * 0.6) or it is wrong and the label moved to its class (0.5 * 0.4 / 9).
    assert symmetric_rate(0.5, 0.5 * 0.6 + 0.5 * 0.4 / 9, 10) == pytest.approx(0.4)
    assert symmetric_rate(0.9, 0.9, 10) == 0.0 and symmetric_rate(0.9, 0.95, 10) == 0.0  # clipped at 0
    assert symmetric_rate(0.1, 0.05, 10) is None  # chance: the noisy accuracy says nothing of the rate


def test_the_rate_error_is_the_delta_method_with_numerical_derivatives():
    a, v, se_a, se_v, h = 0.45, 0.21, 0.012, 0.02, 1e-6
    d_a = (symmetric_rate(a + h, v, 10) - symmetric_rate(a - h, v, 10)) / (2 * h)
    d_v = (symmetric_rate(a, v + h, 10) - symmetric_rate(a, v - h, 10)) / (2 * h)
    assert symmetric_rate_error(a, v, se_a, se_v, 10) == pytest.approx(np.sqrt((d_a * se_a) ** 2 + (d_v * se_v) ** 2))
    assert symmetric_rate_error(0.1, 0.05, se_a, se_v, 10) is None


def test_validation_estimate_from_the_held_out_split_and_the_clean_test_split(named_run, tiny, tmp_path):
    summary = find_label_issues(named_run.run_dir, out=tmp_path / "d").summary()
    got = summary["other_estimates"]["validation"]
    rows = np.load(named_run.run_dir / DYNAMICS_DIR / "rows.npz")["rows"]
    val = np.setdiff1d(np.arange(N_TRAIN), rows)
    state = torch.load(named_run.run_dir / "checkpoint.pt", weights_only=True)["model"]

    def probability(x, y):
        logits = logits_of(state, tiny.x_train[rows], x)
        soft = np.exp(logits - logits.max(1, keepdims=True))
        return (soft / soft.sum(1, keepdims=True))[np.arange(len(y)), y]

    clean, noisy = probability(tiny.x_test, tiny.y_test), probability(tiny.x_train[val], named_run.noisy_labels.noisy[val])
    a, v = clean.mean(), noisy.mean()
    se_a, se_v = clean.std(ddof=1) / np.sqrt(clean.size), noisy.std(ddof=1) / np.sqrt(noisy.size)
    error = symmetric_rate_error(a, v, se_a, se_v, 10)
    assert got["standard_error"] == (None if error is None else pytest.approx(error, abs=1e-4))
    assert got["validation_rows"] == val.size == 20 and got["test_rows"] == 100
    assert got["clean_test_accuracy"] == pytest.approx(a, abs=1e-5)
    assert got["noisy_validation_accuracy"] == pytest.approx(v, abs=1e-5)
    slope = a - (1 - a) / 9
    assert got["rate"] == (None if slope <= 0 else pytest.approx(min(max((a - v) / slope, 0), 1), abs=1e-4))


def test_validation_estimate_names_why_it_has_none(run, tmp_path):
    got = find_label_issues(run.run_dir, out=tmp_path / "d").summary()["other_estimates"]["validation"]
    assert got["rate"] is None and "trained on a dataset passed as an object" in got["unavailable"]
