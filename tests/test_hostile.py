"""Hostile input on the command line: bad datasets, labels files, checkpoints, run files and options.

Every case must end in exit 2 with a single stderr line (no traceback), and leave every file and folder
as it was (a byte snapshot of the whole case directory before and after). The cases run in-process with
the address space capped a little above its current size, so a refusal that comes too late (after a
forged header, a label of 2**40 or a 384 MiB zip bomb was allocated) fails the case with MemoryError
instead of exhausting the machine.
"""

import json
import os
import pickle
import resource
import shutil
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from noisysam.noise import labels as noise
from noisysam.cli.commands import cli

TINY = ["--epochs", "1", "--model-param", "width=4", "--batch-size", "50", "--amp", "none", "--no-plot"]
HEADROOM = 256 * 2**20  # the address space a case may add; the zip bomb below unpacks to more
BOMB_BYTES = 384 * 2**20


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@contextmanager
def memory_cap(extra=HEADROOM):
    """Cap this process's address space at its current size + ``extra`` for the duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------------------------------------- shared material

@pytest.fixture(scope="module")
def material(tiny_npz, tmp_path_factory):
    """A finished 1-epoch run of the tiny dataset, its arrays, a good labels file's members and a zip bomb."""
    base = tmp_path_factory.mktemp("hostile")
    r = invoke("train", "--dataset", tiny_npz, "--method", "sgd", "--out", base / "run", *TINY)
    assert r.exit_code == 0, r.output
    with np.load(tiny_npz) as f:
        arrays = {k: f[k] for k in f.files}
    noise.symmetric(arrays["y_train"], 0.4, 10, seed=0).save(base / "labels.npz")
    with np.load(base / "labels.npz") as f:
        labels = {k: f[k] for k in f.files}
    # 384 MiB of float64 zeros (a wrong dtype) deflated to about 2 MB: refused from its header or not at all.
    bomb = base / "bomb.npz"
    n = BOMB_BYTES // (16 * 16 * 3 * 8)
    header = dict(descr="<f8", fortran_order=False, shape=(n, 16, 16, 3))
    write_npz(bomb, {k: arrays[k] for k in ("x_test", "y_test")}, header, zeros=BOMB_BYTES, y_train=np.zeros(n, np.int64))
    return dict(base=base, arrays=arrays, labels=labels, bomb=bomb)


def write_npz(path, arrays, header=None, payload=b"", zeros=0, **more):
    """An .npz of ``arrays`` (and ``more``), plus an x_train member written by hand: ``header`` followed by
    ``payload`` and ``zeros`` zero bytes (deflated), whatever the header claims."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, a in {**arrays, **more}.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=True)
        if header is not None:
            with z.open("x_train.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, header)
                f.write(payload)
                chunk = bytes(2**20)
                for start in range(0, zeros, len(chunk)):
                    f.write(chunk[:zeros - start])


class Evil:
    """Unpickling this creates a folder: proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


# ------------------------------------------------------------------------------------------- the cases
# A case is a function of its world ``w`` (paths and arrays) that writes the hostile file and returns (command
# line, hostile file or None); a hostile file must be named on stderr. ``w["dir"] / "new"`` is a fresh --out.

COMMANDS = {
    "dataset": lambda w, path: ["train", "--dataset", path, "--out", w["dir"] / "new", *TINY],
    "labels": lambda w, path: ["train", "--dataset", w["data"], "--noise", path, "--out", w["dir"] / "new", *TINY],
    "inspect": lambda w, path: ["noise", "--inspect", path],
}


def hostile_bytes(command, content):
    """bad.npz holding ``content`` (bytes, or a function of the world giving them), used by ``command``."""
    def make(w):
        path = w["dir"] / "bad.npz"
        path.write_bytes(content(w) if callable(content) else content)
        return COMMANDS[command](w, path), path
    return make


def dataset(**changes):
    """The tiny dataset with arrays replaced (None: removed)."""
    def make(w):
        path = w["dir"] / "bad.npz"
        np.savez(path, **{k: v for k, v in {**w["arrays"], **changes}.items() if v is not None})
        return COMMANDS["dataset"](w, path), path
    return make


def labels(command="labels", **changes):
    """A good labels file of the tiny dataset with members replaced (None: removed)."""
    def make(w):
        path = w["dir"] / "bad.npz"
        write_npz(path, {k: v for k, v in {**w["labels"], **changes}.items() if v is not None})
        return COMMANDS[command](w, path), path
    return make


def provenance(command="labels", **changes):
    def make(w):
        p = {**json.loads(w["labels"]["provenance"].item()), **changes}
        return labels(command, provenance=np.array(json.dumps(p)))(w)
    return make


def corrupt_member(path):
    """The .npz's bytes with part of its first member's data overwritten (its CRC no longer matches)."""
    data = bytearray(Path(path).read_bytes())
    data[1000:1100] = bytes(255 - b for b in data[1000:1100])
    return bytes(data)


def forged(w):
    """x_train's header claims 2**31 images of 16 x 16 x 3 while the member stores 16 bytes."""
    path = w["dir"] / "bad.npz"
    header = dict(descr="|u1", fortran_order=False, shape=(2**31, 16, 16, 3))
    write_npz(path, {k: v for k, v in w["arrays"].items() if k != "x_train"}, header, payload=bytes(16))
    return COMMANDS["dataset"](w, path), path


def bomb(w):
    return COMMANDS["dataset"](w, w["bomb"]), w["bomb"]


def other_dataset_labels(w):
    path = w["dir"] / "other.npz"
    noise.symmetric(np.roll(w["arrays"]["y_train"], 1), 0.4, 10, seed=0).save(path)
    return COMMANDS["labels"](w, path), None


def more_classes_than_data(w):
    """Labels of the tiny dataset claiming 20 classes (the data has 10), with noisy labels up to 19."""
    clean = w["arrays"]["y_train"]
    path = w["dir"] / "bad.npz"
    noise.NoisyLabels((clean + 10) % 20, clean, 20, {"kind": "custom"}).save(path)
    return COMMANDS["labels"](w, path), path


def checkpoint(content):
    """The unfinished run's checkpoint.pt replaced by ``content``: bytes, or a value for torch.save (either may
    be a function of the world and the current checkpoint state)."""
    def make(w):
        path = w["partial"] / "checkpoint.pt"
        value = content(w, torch.load(path, weights_only=True)) if callable(content) else content
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            torch.save(value, path)
        return ["train", "--out", w["partial"], "--resume", "--no-plot"], path
    return make


DROP = "<drop>"  # a change that removes the key


def changed(**changes):
    return lambda w, state: {k: v for k, v in {**state, **changes}.items() if v is not DROP}


def run_file(name, content, finished=False):
    """A file of the unfinished (or ``finished``) run replaced by ``content`` (bytes, or a function of the old bytes)."""
    def make(w):
        run = w["run"] if finished else w["partial"]
        path = run / name
        path.write_bytes(content(path.read_bytes()) if callable(content) else content)
        return ["train", "--out", run, "--resume", "--no-plot"], path
    return make


def result_with(**changes):
    def edit(data):
        result = json.loads(data)
        result["test_accuracy"].update(changes)
        result["test_accuracy"] = {k: v for k, v in result["test_accuracy"].items() if v is not DROP}
        return json.dumps(result).encode()
    return edit


def table_cell(content, report, name="result.json"):
    """A table directory whose one finished cell's ``name`` is replaced by ``content``, tabulated with
    --report or trained further with the same settings."""
    def make(w):
        cell = w["dir"] / "grid" / "sgd" / "rate0.4" / "seed0"
        shutil.copytree(w["run"], cell)
        path = cell / name
        path.write_bytes(content(path.read_bytes()) if callable(content) else content)
        if report:
            return ["table", "--report", w["dir"] / "grid", "--no-plot"], path
        return ["table", "--dataset", w["trained_on"], "--methods", "sgd", "--rates", "0.4", "--seeds", "0", "--out",
                w["dir"] / "grid", *TINY], path
    return make


def option(*args, command="train"):
    def make(w):
        line = {"train": ["train", "--dataset", w["data"], "--out", w["dir"] / "new", *TINY],
                "table": ["table", "--dataset", w["data"], "--out", w["dir"] / "grid", *TINY],
                "noise": ["noise", "--dataset", w["data"]]}[command]
        return [*line, *args], None
    return make


def image_folder(damage):
    """An ImageFolder dataset (2 classes, 8x8 PNGs) whose train/b/1.png is replaced by ``damage(its bytes)``."""
    def make(w):
        root = w["dir"] / "images"
        rng = np.random.default_rng(0)
        for split in ("train", "test"):
            for c in ("a", "b"):
                (root / split / c).mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
        path = root / "train" / "b" / "1.png"
        path.write_bytes(damage(path.read_bytes()))
        return COMMANDS["dataset"](w, root), path
    return make


def case(name, make, message, marks=()):
    return pytest.param(make, message, id=name, marks=marks)


NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")


DEEP = b"[" * 200_000 + b"]" * 200_000

CASES = [
    # datasets (--dataset FILE)
    case("dataset-garbage", hostile_bytes("dataset", b"not a zip file at all"), "not an .npz (zip) file"),
    case("dataset-empty", hostile_bytes("dataset", b""), "not an .npz (zip) file"),
    case("dataset-truncated", hostile_bytes("dataset", lambda w: Path(w["data"]).read_bytes()[:5000]), "not an .npz"),
    case("dataset-corrupt-data", hostile_bytes("dataset", lambda w: corrupt_member(w["data"])), "damaged"),
    case("dataset-pickled-classes", dataset(classes=np.array([None, "b"], dtype=object)), "holds Python objects"),
    case("dataset-missing-y_test", dataset(y_test=None), "lacks ['y_test']"),
    case("dataset-float-images", dataset(x_train=np.zeros((200, 16, 16, 3), np.float32)), "x_train must be uint8"),
    case("dataset-5d-images", dataset(x_train=np.zeros((200, 16, 16, 3, 1), np.uint8)), "x_train must have shape"),
    case("dataset-float-labels", dataset(y_train=np.zeros(200)), "y_train must be 200 integer labels"),
    case("dataset-short-labels", dataset(y_train=np.zeros(199, int)), "y_train must be 200 integer labels"),
    case("dataset-2d-labels", dataset(y_train=np.zeros((200, 1), int)), "y_train must be 200 integer labels"),
    case("dataset-test-image-size", dataset(x_test=np.zeros((100, 8, 8, 3), np.uint8)), "differ in shape"),
    case("dataset-label-2**40", dataset(classes=None, y_train=np.full(200, 2**40)), "at most 1000 classes"),
    case("dataset-label-past-classes", dataset(y_test=np.full(100, 10)), "y_test must lie in [0, 10)"),
    case("dataset-negative-label", dataset(y_train=np.full(200, -1)), "y_train must lie in [0, 10)"),
    case("dataset-2000-class-names", dataset(classes=np.array([f"c{i}" for i in range(2000)])), "at most 1000 classes"),
    case("dataset-train-index-length", dataset(train_index=np.arange(3)), "train_index must be 200 integers"),
    case("dataset-forged-header", forged, "truncated or forged"),
    case("dataset-zip-bomb", bomb, "x_train must be uint8"),
    case("folder-image-not-png", image_folder(lambda data: b"not a png at all"), "damaged or not an image"),
    case("folder-image-truncated", image_folder(lambda data: data[:len(data) // 2]), "damaged or not an image"),
    # labels files (--noise FILE, noise --inspect FILE)
    case("labels-garbage", hostile_bytes("labels", b"PK\x03\x04 garbage"), "not an .npz (zip) file"),
    case("labels-empty", hostile_bytes("labels", b""), "not an .npz (zip) file"),
    case("labels-provenance-list", labels(provenance=np.array("[1, 2]")), "provenance must be a JSON object"),
    case("labels-provenance-not-json", labels(provenance=np.array("{kind: x")), "provenance is not valid JSON"),
    case("labels-provenance-deep", labels(provenance=np.array(DEEP.decode())), "provenance is not valid JSON"),
    case("labels-provenance-pickled", labels(provenance=np.array([{}], dtype=object)), "holds Python objects"),
    case("labels-provenance-kind-list", provenance(kind=["symmetric"]), "'kind' must be str"),
    case("labels-provenance-rate-text", provenance(nominal_rate="0.4"), "'nominal_rate' must be"),
    case("labels-num-classes-array", labels(num_classes=np.array([10, 10])), "num_classes must be one integer"),
    case("labels-num-classes-float", labels(num_classes=np.array(10.5)), "num_classes must be one integer"),
    case("labels-num-classes-2**40", labels(num_classes=np.array(2**40)), "num_classes must be in [2, 10]"),
    case("labels-more-classes-than-data", more_classes_than_data, "the data has 10 classes"),
    case("labels-float-noisy", labels(noisy=np.zeros(200)), "noisy must be 200 integer labels"),
    case("labels-2d-noisy", labels(noisy=np.zeros((200, 1), int)), "noisy must be 200 integer labels"),
    case("labels-noisy-shorter", labels(noisy=np.zeros(199, int)), "noisy must be 200 integer labels"),
    case("labels-wrong-format", labels(format=np.array("something/1")), "is not a NoisyLabels file"),
    case("labels-missing-member", labels(clean=None), "missing members: ['clean']"),
    case("labels-tampered-clean", labels(clean=np.zeros(200, int)), "sha256"),
    case("labels-of-another-dataset", other_dataset_labels, "do not belong to this dataset"),
    case("inspect-num-classes-2**40", labels("inspect", num_classes=np.array(2**40)), "num_classes must be in [2, 1000]"),
    case("inspect-provenance-list", labels("inspect", provenance=np.array("[]")), "provenance must be a JSON object"),
    case("inspect-seed-text", provenance("inspect", seed="0"), "'seed' must be int"),
    # checkpoints (train --out RUN --resume)
    case("checkpoint-empty", checkpoint(b""), "the file is empty"),
    case("checkpoint-garbage", checkpoint(b"hello, I am not a checkpoint"), "not a torch checkpoint"),
    case("checkpoint-truncated", checkpoint(lambda w, s: (w["partial"] / "checkpoint.pt").read_bytes()[:3000]),
         "not a torch checkpoint"),
    case("checkpoint-pickle", checkpoint(lambda w, s: pickle.dumps(Evil(str(w["dir"] / "pwned")), protocol=2)),
         "holds objects other than tensors"),
    case("checkpoint-list", checkpoint([1, 2, 3]), "expected an object"),
    case("checkpoint-without-model", checkpoint(changed(model=DROP)), "lacks 'model'"),
    case("checkpoint-epoch-text", checkpoint(changed(epoch="1")), "'epoch' must be int"),
    case("checkpoint-stage-7", checkpoint(changed(stage=7)), "stage must be 1 or 2"),
    case("checkpoint-model-not-tensors", checkpoint(changed(model={"w": 1.0})), "'model' must map"),
    # run files
    case("config-garbage", run_file("config.json", b"{garbage"), "not valid JSON"),
    case("config-a-list", run_file("config.json", b"[1, 2]"), "expected an object"),
    case("config-deep", run_file("config.json", DEEP), "nested too deeply"),
    case("config-not-utf8", run_file("config.json", b'{"config": "\xff\xfe"}'), "not UTF-8"),
    case("result-garbage", run_file("result.json", b"\x00\x01", finished=True), "not valid JSON"),
    case("result-without-last", run_file("result.json", result_with(last=DROP), finished=True),
         "lacks 'test_accuracy.last'"),
    case("result-last-text", run_file("result.json", result_with(last="0.5"), finished=True),
         "'test_accuracy.last' must be"),
    # table directories
    case("table-cell-result-garbage", table_cell(b"{", report=False), "not valid JSON"),
    case("table-cell-result-lacks-key", table_cell(result_with(best=DROP), report=False), "lacks 'test_accuracy.best'"),
    case("table-cell-config-garbage", table_cell(b"{]", report=False, name="config.json"), "unreadable config.json"),
    case("report-only-cell-corrupt", table_cell(b"nul", report=True), "no usable finished runs"),
    case("report-only-cell-lacks-key", table_cell(result_with(selected=DROP), report=True), "no usable finished runs"),
    # options
    case("epochs-0", option("--epochs", "0"), "'--epochs'"),
    case("epochs-text", option("--epochs", "ten"), "'--epochs'"),
    case("batch-size-0", option("--batch-size", "0"), "'--batch-size'"),
    case("lr-negative", option("--lr", "-1"), "'--lr'"),
    case("lr-nan", option("--lr", "nan"), "lr must be a finite float >= 0 or None, got nan (float)"),
    case("momentum-1", option("--momentum", "1"), "'--momentum'"),
    case("noise-rate-nan", option("--noise-rate", "nan"), "noise_rate"),
    case("seed-negative", option("--seed", "-1"), "'--seed'"),
    case("val-fraction-1", option("--val-fraction", "1"), "'--val-fraction'"),
    case("device-tpu", option("--device", "tpu"), "device must be"),
    case("device-mps-absent", option("--device", "mps"), "device 'mps' asked for, but", NO_MPS),
    case("device-cuda-9-absent", option("--device", "cuda:9"), "device 'cuda:9' asked for, but"),
    case("amp-fp8", option("--amp", "fp8"), "'--amp'"),
    case("rho-inf", option("--rho", "inf"), "rho must be a finite float > 0 or None, got inf (float)"),
    case("unknown-method-param", option("--method-param", "nope=1"), "accepts parameters"),
    case("unknown-model-param", option("--model-param", "nope=1"), "accepts options"),
    case("model-width-0", option("--model-param", "width=0"), "width must be"),
    case("model-width-2.5", option("--model-param", "width=2.5"), "width must be an integer >= 1, got 2.5 (float)"),
    case("model-width-true", option("--model-param", "width=true"), "width must be an integer >= 1, got True (bool)"),
    case("method-rho-text", option("--method-param", 'rho="a"'), "rho must be a finite float > 0, got 'a' (str)"),
    case("table-rate-nan", option("--rates", "nan", command="table"), "noise_rate"),
    case("table-seed-negative", option("--seeds", "-1", command="table"), "'--seeds'"),
    case("table-unknown-method", option("--methods", "sgd,nope", command="table"), "method"),
    case("noise-output-not-npz", option("-o", "labels.txt", command="noise"), "must end in .npz"),
    case("noise-rate-2", option("--noise-rate", "2", command="noise"), "'--noise-rate'"),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory cap reads /proc")
@pytest.mark.parametrize("make, message", CASES)
def test_hostile_input_exits_2_with_one_line_and_changes_nothing(material, tiny_npz, tmp_path, monkeypatch, snapshot,
                                                                 make, message):
    w = dict(dir=tmp_path, data=tmp_path / "data.npz", arrays=material["arrays"], labels=material["labels"],
             bomb=material["bomb"], run=tmp_path / "run", partial=tmp_path / "partial", trained_on=tiny_npz)
    shutil.copy(tiny_npz, w["data"])
    shutil.copytree(material["base"] / "run", w["run"])
    shutil.copytree(w["run"], w["partial"])
    (w["partial"] / "result.json").unlink()  # a run killed after its last epoch's checkpoint: resumable
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory shows in the snapshot
    args, hostile = make(w)
    before = snapshot(tmp_path)
    with memory_cap():
        r = invoke(*args)
    assert (r.exit_code, r.stdout) == (2, ""), r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr  # one line, no traceback
    assert message in r.stderr
    assert hostile is None or str(hostile) in r.stderr  # the message names the file
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
    assert not (tmp_path / "pwned").exists()  # no pickle ran


# ------------------------------------------------------------------------------------ the API underneath

def test_readers_raise_one_error_naming_the_file(tmp_path):
    from noisysam.core.files import FileFormatError, load_checkpoint, read_json, read_jsonl

    cases = [
        (read_json, b'{"a": 1', "not valid JSON"),
        (read_json, DEEP, "nested too deeply"),
        (read_json, b"\xff", "not UTF-8"),
        (lambda p: read_json(p, {"config": dict}), b"[]", "expected an object with keys ['config'], got list"),
        (read_jsonl, b'{"epoch": 1}\n\n[2]\n', "line 3 is not a JSON object"),
        (read_jsonl, b'{"epoch": 1}\n{"epoch": \n', "line 2 is not valid JSON"),
        (load_checkpoint, b"", "the file is empty"),
        (load_checkpoint, b"\x80\x02garbage", "refused unread"),
    ]
    for i, (read, content, problem) in enumerate(cases):
        path = tmp_path / f"file{i}"
        path.write_bytes(content)
        with pytest.raises(FileFormatError) as e:
            read(path)
        assert isinstance(e.value, ValueError) and e.value.path == str(path)
        assert str(path) in str(e.value) and problem in str(e.value), (i, str(e.value))
    assert read_jsonl(write(tmp_path / "ok.jsonl", b'{"a": 1}\n\n{"a": 2}\n')) == [{"a": 1}, {"a": 2}]
    with pytest.raises(FileNotFoundError):  # a missing file stays what it is
        read_json(tmp_path / "absent.json")


def test_array_specs_and_json_tables_by_hand(tmp_path):
    from noisysam.core.files import ArraySpec, FileFormatError, read_table

    rows = ArraySpec("iu", (None,), low=0, high=5, unique=True)
    assert rows.problem("rows", np.array([4, 0, 2])) is None
    assert rows.problem("rows", np.array([4, 0, 4, 2])) == "rows holds 4 twice (positions 0 and 2); it must not repeat"
    assert rows.problem("rows", np.array([1, 5])) == "rows holds 5 at position 1, outside [0, 5)"
    assert rows.problem("rows", np.array([-1], np.int8)) == "rows holds -1 at position 0, outside [0, 5)"
    assert rows.problem("rows", np.array([1.0])) == "rows must be a 1-D array of integers, got float64 (1,)"
    assert rows.problem("rows", np.zeros((2, 1), int)) == "rows must be a 1-D array of integers, got int64 (2, 1)"
    margin = ArraySpec("f", (3,), finite=True)
    assert margin.problem("m", np.array([0.0, np.inf, 1.0])) == "m holds inf at position 1; it must be finite"
    assert margin.problem("m", np.zeros(2)) == "m must be floats of shape (3,), got float64 (2,)"
    assert ArraySpec("iu", (2, None), high=3).problem("p", np.array([[0, 1], [3, 0]])) == \
        "p holds 3 at position (1, 0), outside [-inf, 3)"
    path = tmp_path / "table.json"
    columns = {"i": int, "s": (int, float), "f": bool}
    path.write_text('[{"i": 1, "s": 0.5, "f": true}, {"i": 2, "s": 1, "f": false, "extra": null}]')
    table = read_table(path, columns)
    assert {k: (v.dtype, v.tolist()) for k, v in table.items()} == {
        "i": (np.int64, [1, 2]), "s": (np.float64, [0.5, 1.0]), "f": (np.bool_, [True, False])}
    path.write_text("[]")
    assert {k: (v.dtype, v.shape) for k, v in read_table(path, columns).items()} == {
        "i": (np.int64, (0,)), "s": (np.float64, (0,)), "f": (np.bool_, (0,))}
    for text, problem in (('{"i": 1}', "expected a list of rows (objects), got dict"),
                          ('[{"i": 1, "s": 1, "f": true}, {"s": 1, "f": true}]', "row 2: lacks 'i'"),
                          ('[{"i": 1e3, "s": 1, "f": true}]', "row 1: 'i' must be int, got float"),
                          ('[{"i": 1, "s": true, "f": true}]', "row 1: 's' must be int or float, got bool"),
                          ('[{"i": 18446744073709551616, "s": 1, "f": true}]', "'i' holds an integer beyond 64 bits")):
        path.write_text(text)
        with pytest.raises(FileFormatError) as e:
            read_table(path, columns, "table")
        assert str(e.value) == f"cannot read table {path}: {problem}"


def write(path, content):
    path.write_bytes(content)
    return path


def test_schema_problem_by_hand():
    from noisysam.core.files import schema_problem

    schema = {"a": int, "b.c": (float, type(None)), "b.d": str}
    assert schema_problem({"a": 1, "b": {"c": None, "d": "x"}}, schema) is None
    assert schema_problem({"a": True, "b": {"c": 1.0, "d": "x"}}, schema) == "'a' must be int, got bool"
    assert schema_problem({"a": 1, "b": {"c": 1, "d": "x"}}, schema) == "'b.c' must be float or null, got int"
    assert schema_problem({"a": 1, "b": {"d": "x"}}, schema) == "lacks 'b.c'"
    assert schema_problem({"a": 1, "b": 3}, schema) == "'b' must be an object, got int"
    assert schema_problem({"b": {"d": 2}}, schema, optional=True) == "'b.d' must be str, got int"
    assert schema_problem({}, schema, optional=True) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory cap reads /proc")
def test_npz_headers_come_without_decompressing(material, tmp_path):
    """The bomb's 384 MiB member is described from its header within a 256 MiB allowance; a header claiming
    more than its member stores is refused before any allocation."""
    from noisysam.core.files import FileFormatError, NpzArrays

    with memory_cap(), NpzArrays(material["bomb"]) as npz:
        n = BOMB_BYTES // (16 * 16 * 3 * 8)
        assert npz.headers["x_train"] == ((n, 16, 16, 3), np.dtype("<f8"))
        assert npz.headers["y_train"] == ((n,), np.dtype(np.int64))
        np.testing.assert_array_equal(npz.read("y_test"), material["arrays"]["y_test"])
    path = tmp_path / "forged.npz"
    write_npz(path, {}, dict(descr="<i8", fortran_order=False, shape=(2**40,)), payload=bytes(8))
    with memory_cap(), pytest.raises(FileFormatError, match=r"declares shape \(1099511627776,\) of int64 "
                                                               r"\(8796093022208 bytes\) but stores 8 bytes"):
        NpzArrays(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory cap reads /proc")
def test_class_counts_are_bounded_before_anything_is_allocated():
    from noisysam.data.datasets import ImageDataset

    x = np.zeros((2, 4, 4, 3), np.uint8)
    with memory_cap():
        with pytest.raises(ValueError, match=r"labels imply 1099511627777 classes \(largest label 1099511627776\)"):
            noise.symmetric([0, 2**40], 0.2, seed=0)
        with pytest.raises(ValueError, match=r"num_classes must be an integer in \[2, 1000\], got 1099511627776"):
            noise.NoisyLabels(np.array([0, 1]), np.array([0, 1]), 2**40)
        with pytest.raises(ValueError, match="mapping names class 1099511627776"):
            noise.asymmetric([0, 1], 0.2, seed=0, mapping={0: 2**40})
        with pytest.raises(ValueError, match="at most 1000 classes"):
            ImageDataset("t", x, np.array([0, 1]), x, np.array([0, 1]), classes=range(1001))


def test_train_refuses_labels_with_more_classes_than_the_data(tmp_path):
    from noisysam.data.datasets import ImageDataset
    from noisysam.run.loop import train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    data = ImageDataset("t", x, y, x[:8], y[:8], classes=list("abcd"))
    wide = noise.NoisyLabels((y + 4) % 8, y, 8)  # noisy labels 4..7: classes the model has no output for
    with pytest.raises(ValueError, match="noisy labels have 8 classes, more than the dataset's 4"):
        train(dataset=data, noise=wide, out=str(tmp_path / "run"), epochs=1, model_params={"width": 4}, amp="none")
    assert not (tmp_path / "run").exists()


def test_api_names_an_unknown_setting_in_one_line_and_writes_nothing(tmp_path):
    from noisysam.detect.detection import find_label_issues
    from noisysam.run.loop import train

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"^unknown run setting 'epoch'; did you mean 'epochs'\?$"):
        train(out=str(out), epoch=1)
    with pytest.raises(ValueError, match=r"^unknown run setting 'threads'; .*torch\.set_num_threads"):
        train(out=str(out), threads=1)
    with pytest.raises(ValueError, match=r"^unknown run setting 'seeds'; did you mean 'seed'\?$"):
        find_label_issues(kfold=2, out=str(tmp_path / "detect"), seeds=1)
    assert not out.exists() and not (tmp_path / "detect").exists()
