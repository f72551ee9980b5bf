"""Hostile input on the newer commands, as on `train` (tests/test_hostile.py): `detect` (a run's dynamics/ files,
K-fold options), `train --labels-from` (a detection directory edited by hand), `sweep`, `table --params-from`
(sweep.json, the table's params_from.json), `--config`, the Ray executor and `--nproc`. Every refusal path exits 2
with one line on stderr (no traceback), names the damaged file where there is one, and leaves every file and folder
of the case directory as it was. A sweep killed part-way (SIGKILL) resumes to the same sweep.json as an
uninterrupted one.

The material (a finished 1-epoch run, a detection made from it, a finished 1-cell sweep) is made once; each case
works on a copy. Tiny data (conftest's 16x16 set), a width-4 CNN.
"""

import importlib.util
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from noisysam.cli.commands import cli
from noisysam.grid.executors import ray_available

TINY = ["--epochs", "1", "--model-param", "width=4", "--batch-size", "50", "--amp", "none", "--no-plot"]
SWEEP = ["--method", "sam", "--param", "rho=0.05", "--rates", "0.4", "--seeds", "0"]
TRAINED = 180  # training rows of the tiny run (200 less the 10% validation split)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def material(tiny_npz, tmp_path_factory):
    """Read-only: the tiny dataset (``data``; the runs below record its path), one with other labels (``other``),
    one with a class of 3 samples (``small``), and in ``base`` a finished sgd run, its AUM detection and a
    finished sweep of sam's rho (one cell)."""
    root = tmp_path_factory.mktemp("commands")
    data, base = root / "data.npz", root / "base"
    shutil.copy(tiny_npz, data)
    with np.load(data) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(root / "other.npz", **{**arrays, "y_train": np.roll(arrays["y_train"], 1)})
    keep = np.concatenate([np.flatnonzero(arrays["y_train"] != 9), np.flatnonzero(arrays["y_train"] == 9)[:3]])
    np.savez(root / "small.npz", **{**arrays, "x_train": arrays["x_train"][keep], "y_train": arrays["y_train"][keep]})
    for args in (["train", "--dataset", data, "--method", "sgd", "--out", base / "run", *TINY],
                 ["detect", "--from-run", base / "run", "--out", base / "det"],
                 ["sweep", "--dataset", data, *SWEEP, "--out", base / "sweep", *TINY]):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
    return dict(data=data, other=root / "other.npz", small=root / "small.npz", base=base)


# ------------------------------------------------------------------------------------------- the cases
# A case is a function of its world ``w`` (``w["dir"]``: the case directory holding a copy of the material's base;
# the material's datasets) that damages what it needs and returns (command line, damaged file or None).

def dynamics(file="stage1_epoch_001.npz", **changes):
    """The run's dynamics file ``file`` with arrays replaced (None: removed), scored by `detect --from-run`."""
    def make(w):
        path = w["dir"] / "run" / "dynamics" / file
        with np.load(path) as f:
            arrays = {**{k: f[k] for k in f.files}, **changes}
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        return ["detect", "--from-run", w["dir"] / "run", "--out", w["dir"] / "d"], path
    return make


def rows(change):
    """rows.npz's row indices replaced by ``change(rows)``."""
    def make(w):
        with np.load(w["dir"] / "run" / "dynamics" / "rows.npz") as f:
            return dynamics("rows.npz", rows=change(f["rows"]))(w)
    return make


def epoch_copy(w):
    """A stray epoch 3 beside epoch 1: the epochs are not 1..n."""
    folder = w["dir"] / "run" / "dynamics"
    shutil.copy(folder / "stage1_epoch_001.npz", folder / "stage1_epoch_003.npz")
    return ["detect", "--from-run", w["dir"] / "run"], None


def unnamed(make):
    """The case ``make`` whose damaged file the message need not name (it names the run or the value instead)."""
    return lambda w: (make(w)[0], None)


def line(*args):
    """A command line whose ``{name}`` parts are filled from the world (``{dir}``, ``{data}``, ...)."""
    return lambda w: [a.format(**w) for a in args]


def command(*args):
    """A case that damages nothing: the command line alone."""
    return lambda w: (line(*args)(w), None)


def rewritten(name, change, then):
    """The case directory's file ``name`` replaced by the text ``change(its path)`` (folders made), then the command
    line ``then(w)``; the message must name the file."""
    def make(w):
        path = w["dir"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(change(path))
        return then(w), path
    return make


def written(name, content, then):
    return rewritten(name, lambda path: content, then)


def json_edit(edit):
    return lambda path: json.dumps(edit(json.loads(path.read_text())))


def detection(edit, name="issues.json"):
    """The detection's ``name`` rewritten by ``edit(its JSON)``, then `train --labels-from` it."""
    return rewritten(f"det/{name}", json_edit(edit), labels_from)


def labels_from(w, dataset="data"):
    return ["train", "--dataset", w[dataset], "--labels-from", w["dir"] / "det", "--out", w["dir"] / "new", *TINY]


def row(i, **changes):
    """An issues.json edit: row ``i`` changed."""
    return lambda table: [({**r, **changes} if j == i else r) for j, r in enumerate(table)]


def sweep_json(edit):
    """The sweep's sweep.json rewritten by ``edit(its JSON)``, then used by `table --params-from`."""
    return rewritten("sweep/sweep.json", json_edit(edit), params_from)


def choice(**params):
    """A sweep.json edit: the choice at its one rate set to ``params``."""
    return lambda content: {**content, "choices": [{**content["choices"][0], "params": params}]}


def params_from(w, *extra, methods="sam"):
    return ["table", "--dataset", w["data"], "--methods", methods, "--rates", "0.4", "--seeds", "0", "--params-from",
            w["dir"] / "sweep", "--out", w["dir"] / "table", *TINY, *extra]


def sweep_cell(name, content):
    """The sweep's one cell with ``name`` replaced by ``content``, then the same sweep again."""
    return written(f"sweep/sam/rho=0.05/rate0.4/seed0/{name}", content, sweep)


def sweep(w, *extra, out="sweep"):
    return ["sweep", "--dataset", w["data"], *SWEEP, "--out", w["dir"] / out, *TINY, *extra]


def chosen_run_gone(w):
    """The sweep without its runs (sweep.json alone): the table cannot check the settings its choice was made under."""
    shutil.rmtree(w["dir"] / "sweep" / "sam")
    return params_from(w), None


def table_cell_metrics(w):
    """A table whose one cell (the run, copied) stopped after its last checkpoint, with a damaged metrics.jsonl."""
    cell = w["dir"] / "grid" / "sgd" / "rate0.4" / "seed0"
    shutil.copytree(w["dir"] / "run", cell)
    (cell / "result.json").unlink()
    (cell / "metrics.jsonl").write_text('{"epoch": 1,\n')
    return ["table", "--dataset", w["data"], "--methods", "sgd", "--rates", "0.4", "--seeds", "0", "--out",
            w["dir"] / "grid", *TINY], cell / "metrics.jsonl"


def config_file(text, name="train"):
    """A --config file holding ``text``, given to `train` (or `table`, `sweep`, `compare`)."""
    def make(w):
        path = w["dir"] / "options.toml"
        path.write_text(text)
        extra = {"train": ["--out", w["dir"] / "new"], "table": ["--out", w["dir"] / "table"],
                 "sweep": ["--out", w["dir"] / "s", "--rates", "0.4"], "compare": ["--out", w["dir"] / "cmp"]}[name]
        return [name, "--config", path, "--dataset", w["data"], *extra, "--epochs", "1", "--no-plot"], None
    return make


def kfold_detection(w):
    """The detection's folder as `detect --kfold` leaves one (detect.json, fold runs, cleanlab's summary.json), then
    a detection from the run's dynamics into it."""
    folder = w["dir"] / "kf"
    shutil.copytree(w["dir"] / "det", folder)
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "score": "cleanlab", "source": {"kind": "kfold"}}))
    (folder / "detect.json").write_text('{"kfold": 2}')
    (folder / "fold_1").mkdir()
    return ["detect", "--from-run", w["dir"] / "run", "--out", folder], None


def case(name, make, message, marks=()):
    return pytest.param(make, message, id=name, marks=marks)


NEEDS_CLEANLAB = pytest.mark.skipif(importlib.util.find_spec("cleanlab") is None,
                                    reason="K-fold detection needs the cleanlab extra")
NEEDS_RAY = pytest.mark.skipif(not ray_available(), reason="the Ray extra (pip install 'noisysam[ray]') is not "
                                                           "importable here; CI installs it")
NEEDS_TENSORBOARD = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the TensorBoard extra is not installed")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")
TRAIN = ["train", "--dataset", "{data}", "--out", "{dir}/new", *TINY]
KFOLD = ["detect", "--kfold", "2", "--dataset", "{data}", "--out", "{dir}/kf", *TINY[:-1]]  # detect draws no curves

CASES = [
    # detect --from-run: the run's dynamics/ files
    case("dynamics-missing-field", dynamics(pred=None), "lacks member 'pred'"),
    case("dynamics-rows-negative", rows(lambda r: np.where(np.arange(r.size) == 5, -1, r)), "rows holds -1 at position 5"),
    case("dynamics-rows-duplicated", rows(lambda r: np.where(np.arange(r.size) == 7, r[3], r)),
         "twice (positions 3 and 7); it must not repeat"),
    case("dynamics-rows-fractional", rows(lambda r: r + 0.5), "rows must be a 1-D array of integers, got float64"),
    case("dynamics-rows-out-of-range", rows(lambda r: np.where(np.arange(r.size) == 2, 200, r)),
         "rows holds 200 at position 2, outside [0, 200)"),
    case("dynamics-rows-2d", rows(lambda r: r[:, None]), "rows must be a 1-D array of integers, got int64 (180, 1)"),
    case("dynamics-rows-empty", rows(lambda r: r[:0]), "rows is empty"),
    case("dynamics-pred-unknown-class", dynamics(pred=np.full(TRAINED, 99, np.int16)), "pred holds 99 at position 0, "
                                                                                       "outside [0, 10)"),
    case("dynamics-pred-negative", dynamics(pred=np.full(TRAINED, -1, np.int16)), "pred holds -1"),
    case("dynamics-pred-fractional", dynamics(pred=np.full(TRAINED, 1.5)), "pred must be integers of shape (180,)"),
    case("dynamics-margin-shorter", dynamics(margin=np.zeros(TRAINED - 1, np.float16)),
         "margin must be floats of shape (180,), got float16 (179,)"),
    case("dynamics-loss-text", dynamics(loss=np.array(["a"] * TRAINED)), "loss must be floats of shape (180,)"),
    case("dynamics-loss-nan", dynamics(loss=np.full(TRAINED, np.nan, np.float16)), "loss holds nan at position 0; "
                                                                                   "it must be finite"),
    case("dynamics-garbage", written("run/dynamics/stage1_epoch_001.npz", "garbage",
                                     lambda w: ["detect", "--from-run", w["dir"] / "run"]), "not an .npz (zip) file"),
    case("dynamics-epoch-gap", epoch_copy, "its dynamics/ files are not epochs 1..2"),
    case("dynamics-none", command("detect", "--from-run", "{dir}/det"), "has no training dynamics"),
    case("detect-from-a-sweep", command("detect", "--from-run", "{dir}/sweep"),
         "holds no config.json, so it is not a run directory"),
    case("detect-out-is-a-run", command("detect", "--from-run", "{dir}/run", "--out", "{dir}/sweep/sam/rho=0.05/rate0.4/"
                                                                                     "seed0"), "is a run directory"),
    case("detect-from-run-missing", command("detect", "--from-run", "{dir}/nowhere"), "does not exist"),
    # detect --out: a folder noisysam did not make, or another detection's
    case("detect-out-holds-your-summary", written("mine/summary.json", '{"my": "notes"}', lambda w: [
        "detect", "--from-run", w["dir"] / "run", "--out", w["dir"] / "mine"]), "is not a detection's summary"),
    case("detect-out-holds-your-files", unnamed(written("mine/notes.txt", "mine", lambda w: [
        "detect", "--from-run", w["dir"] / "run", "--out", w["dir"] / "mine"])), "holds 'notes.txt', which a detection"),
    case("detect-out-another-score", command("detect", "--from-run", "{dir}/run", "--score", "loss", "--out", "{dir}/det"),
         "holds another detection (aum scores from a run's dynamics)"),
    case("detect-out-a-kfold-detection", kfold_detection, "holds another detection (cleanlab scores from K folds)"),
    # detect: options and K-fold
    case("detect-neither-source", command("detect"), "give either --from-run RUN_DIR"),
    case("detect-both-sources", command("detect", "--from-run", "{dir}/run", "--kfold", "2"), "give either"),
    case("detect-kfold-without-out", command("detect", "--kfold", "2"), "--kfold needs --out DIR"),
    case("detect-kfold-with-score", command(*KFOLD, "--score", "aum"), "takes no --score"),
    case("detect-score-unknown", command("detect", "--from-run", "{dir}/run", "--score", "cleanlab"),
         "Invalid value for '--score'"),
    case("detect-kfold-1", command(*KFOLD, "--kfold", "1"), "kfold must be an integer >= 2, got 1", NEEDS_CLEANLAB),
    case("detect-kfold-4-class-of-3", command(*KFOLD, "--kfold", "4", "--dataset", "{small}", "--noise-rate", "0"),
         "kfold 4 needs at least 4 samples of every class, but class 9 has "
                                                      "3", NEEDS_CLEANLAB),
    case("detect-kfold-out-is-a-run", command(*KFOLD, "--out", "{dir}/run"), "is a run directory", NEEDS_CLEANLAB),
    case("detect-kfold-another-detection", written("kf/detect.json", '{"kfold": 3}', line(*KFOLD)),
         "holds another detection", NEEDS_CLEANLAB),
    case("detect-kfold-record-garbage", written("kf/detect.json", "{", line(*KFOLD)),
         "not valid JSON", NEEDS_CLEANLAB),
    case("detect-kfold-out-a-detection-from-a-run", command(*KFOLD, "--out", "{dir}/det"),
         "holds another detection (aum scores from a run's dynamics)", NEEDS_CLEANLAB),
    # train --labels-from: a detection directory edited by hand
    case("labels-from-duplicate-index", detection(lambda t: row(1, index=t[0]["index"])(t)), "twice (positions 0 and "
                                                                                             "1)"),
    case("labels-from-missing-row", detection(lambda t: t[1:]), "it has 179 rows, but summary.json counts 180"),
    case("labels-from-extra-row", detection(lambda t: t + t[:1]), "it has 181 rows, but summary.json counts 180"),
    case("labels-from-suggested-99", detection(row(0, suggested=99)), "suggested holds 99 at position 0, outside [0, "
                                                                      "10)"),
    case("labels-from-suggested-negative", detection(row(3, suggested=-1)), "suggested holds -1 at position 3"),
    case("labels-from-index-out-of-range", detection(row(2, index=200)), "index holds 200 at position 2, outside [0, "
                                                                         "200)"),
    case("labels-from-index-fractional", detection(row(0, index=1.5)), "row 1: 'index' must be int, got float"),
    case("labels-from-index-text", detection(row(4, index="7")), "row 5: 'index' must be int, got str"),
    case("labels-from-index-bool", detection(row(0, index=True)), "row 1: 'index' must be int, got bool"),
    case("labels-from-index-beyond-64-bits", detection(row(0, index=2**70)), "'index' holds an integer beyond 64 bits"),
    case("labels-from-row-lacks-suggested", detection(lambda t: [{k: v for k, v in r.items() if k != "suggested"}
                                                                 for r in t]), "row 1: lacks 'suggested'"),
    case("labels-from-flagged-text", detection(row(0, flagged="no")), "row 1: 'flagged' must be bool, got str"),
    case("labels-from-given-edited", detection(lambda t: row(0, given=(t[0]["given"] + 1) % 10)(t)),
         "the table belongs to other labels"),
    case("labels-from-table-not-a-list", detection(lambda t: {"rows": t}), "expected a list of rows (objects), got "
                                                                           "dict"),
    case("labels-from-summary-lacks-n", detection(lambda s: {k: v for k, v in s.items() if k != "n"}, "summary.json"),
         "lacks 'n'"),
    case("labels-from-summary-garbage", written("det/summary.json", "[", labels_from), "not valid JSON"),
    case("labels-from-labels-garbage", written("det/labels.npz", "PK garbage", labels_from), "not an .npz (zip) file"),
    case("labels-from-another-dataset", lambda w: (labels_from(w, dataset="other"), None),
         "was made on another dataset"),
    case("labels-from-not-a-detection", command("train", "--dataset", "{data}", "--labels-from", "{dir}/run", "--out",
                                                "{dir}/new"), "is not a detection directory"),
    case("labels-from-with-noise-rate", command("train", "--labels-from", "{dir}/det", "--noise-rate", "0.2"),
         "it takes no --noise or --noise-rate"),
    case("labels-from-with-nproc", command("train", "--labels-from", "{dir}/det", "--nproc", "2"),
         "does not take --nproc"),
    # sweep
    case("sweep-out-is-a-run", lambda w: (sweep(w, out="run"), None), "is a run directory (it holds config.json)"),
    case("sweep-param-unknown", command("sweep", "--param", "q=1", "--rates", "0.4", "--out", "{dir}/s"),
         "takes no parameter 'q'"),
    case("sweep-param-out-of-range", command("sweep", "--param", "rho=-1", "--rates", "0.4", "--out", "{dir}/s"),
         "rho must be a finite float > 0"),
    case("sweep-param-twice", command("sweep", "--param", "rho=0.1", "--param", "rho=0.2", "--rates", "0.4"),
         "rho is given twice"),
    case("sweep-param-and-rho", command("sweep", "--param", "rho=0.1", "--rho", "0.2", "--rates", "0.4"),
         "rho given for the whole grid and for cell"),
    case("sweep-param-the-method-lacks", command("sweep", "--method", "sgd", "--param", "m=8", "--rates", "0.4"),
         "takes no parameter 'm'"),
    case("sweep-no-validation-split", command("sweep", "--param", "rho=0.1", "--rates", "0.4", "--val-fraction", "0"),
         "val_fraction must be > 0 for a sweep"),
    case("sweep-rates-out-of-range", command("sweep", "--param", "rho=0.1", "--rates", "1.5"), "'--rates'"),
    case("sweep-cell-other-settings", lambda w: (sweep(w, "--weight-decay", "0.001"), None),
         "was trained with different settings (['weight_decay'])"),
    case("sweep-cell-result-garbage", sweep_cell("result.json", "{"), "not valid JSON"),
    case("sweep-cell-config-garbage", sweep_cell("config.json", "{"), "unreadable config.json"),
    case("sweep-of-another-method-into-a-sweep", command("sweep", "--dataset", "{data}", "--method", "mixup", "--param",
                                                         "mixup_alpha=8", "--rates", "0.4", "--seeds", "0", "--out",
                                                         "{dir}/sweep", *TINY), "holds a sweep of sam"),
    case("sweep-into-a-table", unnamed(written("table/table.json", '{"rows": []}', lambda w: sweep(w, out="table"))),
         "holds 'table.json', which a sweep of sam does not write"),
    case("sweep-dataset-garbage", written("bad.npz", "garbage", lambda w: ["sweep", "--dataset", w["dir"] / "bad.npz",
                                                                           *SWEEP, "--out", w["dir"] / "s", *TINY]),
         "not an .npz (zip) file"),
    case("sweep-param-1-and-true", command("sweep", "--param", "m=1,true", "--rates", "0.4", "--out", "{dir}/s"),
         "m must be an integer >= 1 or None, got True (bool)"),
    case("sweep-config-param-out-of-range", config_file("params = {rho = [0.1, -1.0]}\n", "sweep"),
         "rho must be a finite float > 0 or None, got -1.0"),
    case("sweep-config-unknown-key", config_file("parms = {rho = [0.1]}\n", "sweep"), "unknown key 'parms'"),
    # table --params-from: the sweep's sweep.json, the table's params_from.json
    case("params-from-no-sweep-json", lambda w: (params_from(w, "--params-from", w["dir"] / "run"), None),
         "sweep.json"),
    case("params-from-sweep-json-garbage", written("sweep/sweep.json", "{", params_from), "not valid JSON"),
    case("params-from-sweep-json-lacks-choices", sweep_json(lambda c: {k: v for k, v in c.items() if k != "choices"}),
         "lacks 'choices'"),
    case("params-from-choice-not-an-object", sweep_json(lambda c: {**c, "choices": [0.4]}),
         "each of 'choices' must be an object"),
    case("params-from-seeds-empty", sweep_json(lambda c: {**c, "seeds": []}), "'seeds' must be a non-empty list"),
    case("params-from-choice-not-swept", unnamed(sweep_json(choice(rho=0.07))),
         "has no readable run for its choice at noise rate 0.4"),
    case("params-from-choice-out-of-range", unnamed(sweep_json(choice(rho=-1))), "rho must be a finite float > 0"),
    case("params-from-two-sweeps-of-a-method", lambda w: (params_from(w, "--params-from", w["dir"] / "sweep"), None),
         "two sweeps of method 'sam'"),
    case("params-from-method-not-in-table", lambda w: (params_from(w, methods="sgd"), None),
         "tunes method 'sam', which the table does not train"),
    case("params-from-rate-not-swept", lambda w: (params_from(w, "--rates", "0.4,0.6"), None),
         "has no choice for noise rate 0.6"),
    case("params-from-other-settings", lambda w: (params_from(w, "--weight-decay", "0.001"), None),
         "chose its values under other settings than this table's: weight_decay"),
    case("params-from-chosen-run-gone", chosen_run_gone, "has no readable run for its choice"),
    case("params-from-with-report", command("table", "--report", "{dir}/sweep", "--params-from", "{dir}/sweep"),
         "takes no --params-from"),
    case("table-tuning-record-garbage", written("table/params_from.json", "{", params_from), "cannot read tuning "
                                                                                           "record"),
    case("table-tuning-record-mistyped", written("table/params_from.json", '{"sam": {"sweep": 3, "choices": {}}}',
                                                 params_from), "method 'sam': 'sweep' must be str, got int"),
    case("table-tuning-record-bad-rate", written("table/params_from.json", '{"sam": {"sweep": "s", "choices": {"x": '
                                                                           '{}}}}', params_from),
         "choice 'x' must be a noise rate"),
    case("table-out-is-a-run", command("table", "--dataset", "{data}", "--methods", "sgd", "--rates", "0.4", "--seeds",
                                       "0", "--out", "{dir}/run", *TINY), "is a run directory"),
    case("table-out-a-sweep", command("table", "--dataset", "{data}", "--methods", "sgd", "--rates", "0.4", "--seeds",
                                      "0", "--out", "{dir}/sweep", *TINY), "holds 'sweep.json', which a grid of runs"),
    case("table-out-a-detection", command("table", "--dataset", "{data}", "--methods", "sgd", "--rates", "0.4",
                                          "--seeds", "0", "--out", "{dir}/det", *TINY),
         "holds 'issues.csv', which a grid of runs"),
    case("table-cell-metrics-garbage", table_cell_metrics, "line 1 is not valid JSON"),
    # compare: the first command
    case("compare-out-is-a-run", command("compare", "--dataset", "{data}", "--out", "{dir}/run", *TINY),
         "is a run directory"),
    case("compare-out-a-detection", command("compare", "--dataset", "{data}", "--out", "{dir}/det", *TINY),
         "holds 'issues.csv', which a grid of runs"),
    case("compare-out-holds-your-files", unnamed(written("mine/notes.txt", "mine", lambda w: [
        "compare", "--dataset", w["data"], "--out", w["dir"] / "mine", *TINY])), "holds 'notes.txt', which a grid"),
    case("compare-unknown-method", command("compare", "--dataset", "{data}", "--methods", "sgd,sharp", "--out",
                                           "{dir}/cmp", *TINY), "method must be one of"),
    case("compare-rate-out-of-range", command("compare", "--dataset", "{data}", "--noise-rate", "1.5", "--out",
                                              "{dir}/cmp", *TINY), "1.5"),
    case("compare-config-width-2.5", config_file("model_params = {width = 2.5}\n", "compare"),
         "width must be an integer >= 1, got 2.5 (float)"),
    # --config
    case("config-model-width-2.5", config_file("model_params = {width = 2.5}\n"), "width must be an integer >= 1, got "
                                                                                   "2.5 (float)"),
    case("config-method-param-out-of-range", config_file('method = "sam"\nmethod_params = {rho = -1}\n'),
         "rho must be a finite float > 0, got -1 (int)"),
    case("config-unknown-key", config_file("epoch = 3\n"), "unknown key 'epoch'; did you mean 'epochs'?"),
    case("config-wrong-type", config_file('lr = "fast"\n'), "lr must be a number, got a string"),
    case("config-out-of-range", config_file("noise_rate = 1.5\n"), "noise_rate"),
    case("config-not-toml", config_file("epochs = = 3\n"), "is not valid TOML"),
    case("config-table-rates-out-of-range", config_file("rates = [1.5]\n", "table"), "rates"),
    case("config-labels-from-with-noise-rate", config_file('labels_from = "det"\nnoise_rate = 0.8\n'),
         "--labels-from gives the labels: it takes no --noise or --noise-rate"),
    case("config-labels-from-with-noise", config_file('labels_from = "det"\nnoise = "pairflip"\n'),
         "--labels-from gives the labels: it takes no --noise or --noise-rate"),
    case("config-noise-rate-beside-labels-from", lambda w: (config_file("noise_rate = 0.8\n")(w)[0] + [
        "--labels-from", w["dir"] / "det"], None), "--labels-from gives the labels: it takes no --noise or --noise-rate"),
    # train --resume into a directory that is not a run
    case("train-resume-into-a-sweep", command(*TRAIN[:3], "--out", "{dir}/sweep", "--resume", *TINY),
         "it holds no config.json but 'sam', so it is not a run directory"),
    case("train-into-a-detection", command(*TRAIN[:3], "--out", "{dir}/det", *TINY),
         "it holds no config.json but 'issues.csv', so it is not a run directory --resume could continue"),
    # train --resume --tensorboard of a finished run logs it from its files
    case("tensorboard-of-a-run-with-damaged-metrics", written("run/metrics.jsonl", '{"epoch": 1}\n[2]\n', lambda w: [
        "train", "--out", w["dir"] / "run", "--resume", "--tensorboard", "--no-plot"]), "line 2 is not a JSON object",
         NEEDS_TENSORBOARD),
    # the Ray executor
    case("ray-nothing-listening", command("table", "--executor", "ray", "--address", "127.0.0.1:1", "--dataset",
                                          "{data}", "--out", "{dir}/table", *TINY),
         "no Ray cluster answers at 127.0.0.1:1", NEEDS_RAY),
    case("ray-with-jobs", command("table", "--executor", "ray", "--jobs", "2", "--out", "{dir}/table"),
         "--jobs is for --executor local", NEEDS_RAY),
    case("ray-address-port-not-a-number", command("sweep", "--executor", "ray", "--address", "notahost:abc", "--dataset",
                                                  "{data}", *SWEEP, "--out", "{dir}/s", *TINY),
         "address must be HOST:PORT with PORT a number in 1..65535", NEEDS_RAY),
    case("address-without-ray", command("sweep", "--param", "rho=0.1", "--rates", "0.4", "--address", "127.0.0.1:1"),
         "--address is for --executor ray"),
    # --nproc: refused before any process starts
    case("nproc-0", command(*TRAIN, "--nproc", "0"), "'--nproc'"),
    case("nproc-lr-nan", command(*TRAIN, "--nproc", "2", "--lr", "nan"), "lr must be a finite float >= 0 or None, "
                                                                         "got nan"),
    case("nproc-device-mps", command(*TRAIN, "--nproc", "2", "--device", "mps"), "device 'mps' asked for", NO_MPS),
]


@pytest.mark.parametrize("make, message", CASES)
def test_hostile_input_exits_2_with_one_line_and_changes_nothing(material, tmp_path, monkeypatch, snapshot, make,
                                                                 message):
    shutil.copytree(material["base"], tmp_path, dirs_exist_ok=True)
    w = dict(dir=tmp_path, data=material["data"], other=material["other"], small=material["small"])
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory shows in the snapshot
    args, hostile = make(w)
    before = snapshot(tmp_path)
    r = invoke(*args)
    assert (r.exit_code, r.stdout) == (2, ""), r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr  # one line, no traceback
    assert message in r.stderr, r.stderr
    assert hostile is None or str(hostile) in r.stderr  # the message names the file
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


def test_a_run_resumes_with_its_dataset_moved_and_not_with_other_bytes_there(material, tmp_path, snapshot):
    """Where the dataset lies is no setting of a run: `train --resume` given the same bytes at another path continues
    it (here: reports the finished run, changing nothing); other bytes at that path are refused, naming the dataset."""
    shutil.copytree(material["base"] / "run", tmp_path / "run")
    moved = tmp_path / "moved" / "data.npz"
    moved.parent.mkdir()
    shutil.copy(material["data"], moved)
    before = snapshot(tmp_path / "run")
    r = invoke("train", "--dataset", moved, "--out", tmp_path / "run", "--resume", "--json", *TINY)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads((tmp_path / "run" / "result.json").read_text())
    assert snapshot(tmp_path / "run") == before
    shutil.copy(material["other"], moved)  # other labels at the new path
    r = invoke("train", "--dataset", moved, "--out", tmp_path / "run", "--resume", *TINY)
    assert (r.exit_code, r.stdout, r.stderr.count("\n")) == (2, "", 1), r.output
    assert "the dataset (its train/test images, labels and class names)" in r.stderr and "changed" in r.stderr
    assert snapshot(tmp_path / "run") == before


# ------------------------------------------------------------------------------------ kill and resume

KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from pathlib import Path
from noisysam.core import files
from noisysam.cli.commands import cli

real, written = files.atomic_write, []

def write_then_die(path, *args, **kwargs):
    real(path, *args, **kwargs)
    if Path(path).name == "checkpoint.pt":
        written.append(path)
        if len(written) == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)

files.atomic_write = write_then_die
cli.main(sys.argv[2:])
"""


def test_a_sweep_killed_mid_cell_resumes_to_the_same_sweep_json(material, tmp_path):
    """Two cells of 2 epochs: SIGKILL right after the third checkpoint (cell 1 finished, cell 2 after its first
    epoch), then the same command again: it skips cell 1, resumes cell 2 and writes the sweep.json of an
    uninterrupted sweep, byte for byte."""
    args = ["sweep", "--dataset", str(material["data"]), "--method", "sam", "--param", "rho=0.05,0.5", "--rates",
            "0.4", "--seeds", "0", *TINY, "--epochs", "2", "--threads", "1"]
    reference = invoke(*args, "--out", tmp_path / "uninterrupted")
    assert reference.exit_code == 0, reference.output
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_CHECKPOINT, "3", *args, "--out", str(killed)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    first, second = (killed / "sam" / f"rho={rho}" / "rate0.4" / "seed0" for rho in (0.05, 0.5))
    assert (first / "result.json").is_file() and not (second / "result.json").exists()
    assert (second / "checkpoint.pt").is_file() and not (killed / "sweep.json").exists()
    again = invoke(*args, "--out", killed)
    assert again.exit_code == 0, again.output
    assert again.stdout.count("already finished") == 1
    assert len((second / "metrics.jsonl").read_text().splitlines()) == 2
    assert (killed / "sweep.json").read_bytes() == (tmp_path / "uninterrupted" / "sweep.json").read_bytes()
