"""TOML config files: the writer against the standard library's parser, --print-config -> --config round
trips, command line over file (flags included), bad files as one line with exit 2, and one real run from a file
whose config.json is compared with the file as tomllib reads it."""

import dataclasses
import json
import math
import random
import sys

import pytest
from click.testing import CliRunner

from noisysam.cli import commands as cli_module
from noisysam.cli.commands import cli
from noisysam.cli.config_file import dumps
from noisysam.run.config import PROFILES, TrainConfig

tomllib = pytest.importorskip("tomllib")


class Stop(Exception):
    """Raised by the stand-in for train(): the command got as far as training, with this config."""


@pytest.fixture
def captured(monkeypatch):
    """The TrainConfig each `train` invocation would train (training itself replaced by raising Stop)."""
    configs = []

    def fake_train(config, callback=None):
        configs.append(config)
        raise Stop

    monkeypatch.setattr(cli_module, "train", fake_train)
    return configs


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def trained_config(captured, *args):
    r = invoke("train", *args)
    assert isinstance(r.exception, Stop), r.output
    return captured[-1]


def test_written_toml_reads_back_identically_with_tomllib():
    rng = random.Random(0)
    alphabet = ['"', "\\", "\x7f", "\x00", "\x1f", "\x08", "\n", "\r", "\t", "é", "😀", "\u2028", " ", "=", "#", "'",
                "[", "{", ".", "a", "Z", "0"]
    values = {f"s{i}": "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))) for i in range(300)}
    values.update({
        "zero": 0, "negative": -1, "int64_max": 2**63 - 1, "int64_min": -2**63, "true": True, "false": False,
        "tenth": 0.1, "tiny": 1e-05, "huge": 1e300, "subnormal": 5e-324, "negative_zero": -0.0, "third": 1 / 3,
        "inf": float("inf"), "minus_inf": float("-inf"), "whole_float": 2.0, "big_float": 1e16,
        "array": [1, "a", 2.5, [True, "b"]], "empty_array": [], "empty_table": {},
        "table": {"width": 4, "pool": "avg", "odd key": 'say "hi"', "": 1, "é": [1, 2], "x.y": {"deep": False}},
        "key with spaces": "v", "dotted.key": 1, "é": "unicode key", "": "empty key",
    })
    text = dumps(values, header="a header\nof two lines")
    parsed = tomllib.loads(text)
    assert parsed == values
    assert math.copysign(1, parsed["negative_zero"]) == -1 and type(parsed["whole_float"]) is float
    assert text.startswith("# a header\n# of two lines\n")
    assert math.isnan(tomllib.loads(dumps({"nan": float("nan")}))["nan"])
    assert tomllib.loads(dumps({"unset": None, "set": 1})) == {"set": 1}
    assert "# unset: not set" in dumps({"unset": None})


OPTIONS = ["--noise-rate", 0.6, "--method", "sam", "--method-param", "adaptive=true", "--method-param", "m=8", "--model-param", "width=4",
           "--no-augment", "--noise-exact", "--lr", 0.05, "--noise", "asymmetric", "--dataset", 'my "data".npz',
           "--tensorboard", "--threads", 2]


def test_print_config_round_trips_to_the_same_text_and_the_same_config(tmp_path, captured):
    out = tmp_path / "run"
    r = invoke("train", *OPTIONS, "--out", out, "--print-config")
    assert r.exit_code == 0, r.output
    printed = r.stdout
    assert not out.exists()  # printing writes nothing

    path = tmp_path / "run.toml"
    path.write_text(printed)
    r = invoke("train", "--config", path, "--print-config")
    assert r.exit_code == 0, r.output
    assert r.stdout == printed

    from_options = trained_config(captured, *OPTIONS, "--out", out)
    from_file = trained_config(captured, "--config", path)
    assert from_file == from_options.resolved()  # the file pins every value the profile filled in
    assert from_file.resolved() == from_options.resolved()

    # The text says what the config holds, read independently by tomllib.
    values = tomllib.loads(printed)
    resolved = dataclasses.asdict(from_options.resolved())
    assert {k: v for k, v in values.items() if k in resolved} == {
        k: v for k, v in resolved.items() if v is not None}  # every field, none left out (as --help offers them)
    assert (values["method_params"], values["model_params"]) == ({"adaptive": True, "m": 8}, {"width": 4})
    assert (values["epochs"], values["tensorboard"], values["threads"]) == (PROFILES["cpu"]["epochs"], True, 2)
    # rho is left to the radius rule, which reads the labels' own noise rate when the run starts
    assert "rho" not in values and "# rho: not set" in printed.splitlines()
    assert "# data_root: not set" in printed.splitlines()


def test_command_line_overrides_the_file_exactly_flags_included(tmp_path, captured):
    path = tmp_path / "run.toml"
    path.write_text('noise_rate = 0.2\nseed = 5\naugment = true\nnoise_exact = true\nepochs = 7\n'
                    'method_params = {p = 3}\nmodel_params = {width = 8}\nmethod = "sam"\n')
    from_file = trained_config(captured, "--config", path)
    assert (from_file.noise_rate, from_file.seed, from_file.augment, from_file.noise_exact, from_file.epochs,
            from_file.method_params, from_file.model_params) == (0.2, 5, True, True, 7, {"p": 3}, {"width": 8})

    # A command-line value equal to the option's default (seed 0) still wins over the file; a repeatable
    # --method-param replaces the file's table as a whole; what the command line leaves alone stays the file's.
    mixed = trained_config(captured, "--config", path, "--noise-rate", 0.5, "--seed", 0, "--no-augment",
                           "--method-param", "m=8")
    assert (mixed.noise_rate, mixed.seed, mixed.augment, mixed.noise_exact, mixed.epochs, mixed.method_params,
            mixed.model_params) == (0.5, 0, False, True, 7, {"m": 8}, {"width": 8})

    path.write_text("augment = false\nnoise_exact = false\n")
    flags = trained_config(captured, "--config", path, "--augment", "--noise-exact")
    assert (flags.augment, flags.noise_exact) == (True, True)


def test_config_file_values_must_agree_with_a_resumed_run(tmp_path, captured):
    """File values count as given: resuming with a file that changes a saved setting is refused."""
    out = tmp_path / "run"
    out.mkdir()
    saved = TrainConfig(epochs=3, out=str(out)).resolved()
    (out / "config.json").write_text(json.dumps({"config": saved.to_dict()}))
    path = tmp_path / "run.toml"
    path.write_text("epochs = 5\n")
    resumed = trained_config(captured, "--out", out, "--resume", "--config", path)
    assert (resumed.epochs, resumed.lr, resumed.resume) == (5, saved.lr, True)  # train() then names the difference


@pytest.mark.parametrize("text, words", [
    ("epoch = 3", ["unknown key 'epoch'", "did you mean 'epochs'"]),
    ("noise-rate = 0.3", ["unknown key 'noise-rate'", "did you mean 'noise_rate'"]),
    ('config = "other.toml"', ["unknown key 'config'"]),
    ("[section]\nx = 1", ["unknown key 'section'"]),
    ('epochs = "3"', ["epochs must be an integer, got a string"]),
    ("epochs = 2.5", ["epochs must be an integer, got a float"]),
    ("augment = 1", ["augment must be true or false, got an integer"]),
    ("lr = true", ["lr must be a number, got a boolean"]),
    ("method = 3", ["method must be a string, got an integer"]),
    ("method_params = 3", ["method_params must be a table"]),
    ("model_params = {when = 1979-05-27}", ["model_params must be a table"]),
    ("noise_rate = 1.5", ["noise_rate:", "1.5 is not in the range"]),
    ('method = "adam"', ["method:", "'adam' is not one of"]),
    ("epochs = ", ["is not valid TOML", "line 1"]),
])
def test_bad_config_file_exits_2_with_one_line_naming_the_key_and_writes_nothing(tmp_path, text, words):
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    out = tmp_path / "run"
    r = invoke("train", "--config", path, "--out", out)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and "Traceback" not in r.output, r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not out.exists()


def test_config_files_without_a_toml_parser_get_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\n")
    r = invoke("train", "--config", path)
    assert r.exit_code == 2 and r.stderr.strip() == \
        "error: reading a TOML config file needs Python >= 3.11 or the tomli package (pip install tomli)"


def test_table_takes_the_same_keys_and_its_lists_as_arrays(tmp_path, monkeypatch):
    calls = []

    def fake_run_grid(cells, config, **kwargs):
        calls.append((cells, config))
        raise Stop

    monkeypatch.setattr(cli_module.grid_cells, "run_grid", fake_run_grid)
    path = tmp_path / "table.toml"
    path.write_text(f'methods = ["sgd", "sam"]\nrates = [0.2, 0.8]\nseeds = "0,3"\nepochs = 2\n'
                    f'model_params = {{width = 4}}\nout = {json.dumps(str(tmp_path / "grid"))}\n')
    r = invoke("table", "--config", path)
    assert isinstance(r.exception, Stop), r.output
    cells, config = calls[-1]
    assert [(c.method, c.rate, c.seed) for c in cells] == [
        (m, rate, s) for m in ("sgd", "sam") for rate in (0.2, 0.8) for s in (0, 3)]
    assert cells[0].dir.parents[2] == tmp_path / "grid"
    assert (config.epochs, config.model_params) == (2, {"width": 4})

    r = invoke("table", "--config", path, "--methods", "mixup")
    assert isinstance(r.exception, Stop), r.output
    assert {c.method for c in calls[-1][0]} == {"mixup"}

    path.write_text("rates = [0.2, true]\n")
    r = invoke("table", "--config", path)
    assert r.exit_code == 2 and "rates must be an array or a comma-separated string" in r.stderr


def test_a_run_from_a_config_file_alone_saves_the_file_values(tiny_npz, tmp_path):
    path = tmp_path / "run.toml"
    out = tmp_path / "run"
    path.write_text(f"dataset = {json.dumps(tiny_npz)}\nmethod = \"sgd\"\nnoise_rate = 0.3\nepochs = 1\n"
                    f"batch_size = 32\namp = \"none\"\nmodel_params = {{width = 4}}\nplot = false\n"
                    f"out = {json.dumps(str(out))}\njson = true\n")
    r = CliRunner().invoke(cli, ["train", "--config", str(path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads((out / "result.json").read_text())  # json = true took effect
    saved = json.loads((out / "config.json").read_text())["config"]
    values = tomllib.loads(path.read_text())
    training = {k: v for k, v in values.items() if k in saved and k != "model_params"}
    assert {k: saved[k] for k in training} == training
    assert saved["model_params"]["width"] == 4
    assert not (out / "curves.png").exists()  # plot = false took effect


def test_every_run_setting_is_an_option_and_a_config_key(tmp_path, captured):
    """Every TrainConfig field can be set from the command line (train: all but where it writes; the grid commands:
    all but what they set per cell) and so from a TOML file; channels_last, eval_batch_size and workers could not."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    params = {name: {p.name for p in cli.commands[name].params} for name in ("train", "table", "compare", "sweep")}
    assert fields <= params["train"] | {"out", "resume"}  # train's --out and --resume are its own options
    per_cell = {"method", "noise_rate", "seed", "sam_sync", "sync_bn", "out", "resume"}
    assert fields - per_cell <= params["table"] and fields - per_cell <= params["compare"]
    assert fields - per_cell - {"val_labels"} <= params["sweep"]  # --select sets the validation labels
    path = tmp_path / "run.toml"
    path.write_text("channels_last = false\neval_batch_size = 64\nworkers = 2\nnesterov = false\n"
                    'padding_mode = "constant"\n')
    config = trained_config(captured, "--config", path)
    assert (config.channels_last, config.eval_batch_size, config.workers, config.nesterov, config.padding_mode) == \
        (False, 64, 2, False, "constant")
