"""Issue 33, one place for each fact: SAM's radius and norm declared once with one contract per layer, a method's
facts in one record, detection's ways each an entry point of its own, and the 0.2 paths' one deprecation mechanism."""

import math

import numpy as np

import pytest
import torch
from torch import nn

from noisysam.core.params import InvalidParameterError
from noisysam.methods.registry import get_method
from noisysam.methods.rules import METHOD_PARAMS
from noisysam.optim import sam as sam_module
from noisysam.optim import variants
from noisysam.run.config import CONFIG_PARAMS


# ------------------------------------------------------------------------------------------ rho and p


def test_rho_is_declared_once_with_one_contract_per_layer():
    """The optimizer takes rho = 0 (its base optimizer's trajectory); a method, an update rule and TrainConfig refuse
    it, every one of them through the same declaration."""
    assert sam_module.SAM_PARAMS.constraints["rho"] == (sam_module.RHO,)
    assert METHOD_PARAMS["rho"] is variants.VARIANT_PARAMS["rho"] is sam_module.METHOD_RHO
    assert CONFIG_PARAMS.constraints["rho"][0] is sam_module.METHOD_RHO
    model = nn.Linear(2, 2)
    assert sam_module.SAM(model.parameters(), torch.optim.SGD, rho=0, lr=0.1).param_groups[0]["rho"] == 0
    for name in ("sam", "looksam", "momentum-sam"):
        with pytest.raises(InvalidParameterError, match=r"^rho must be a finite float > 0, got 0 \(int\)$"):
            get_method(name, rho=0)


def test_p_says_whether_it_is_a_norm_or_a_probability():
    assert sam_module.SAM_PARAMS.constraints["p"] == (sam_module.P_NORM,)
    assert METHOD_PARAMS["p"] is sam_module.P_NORM and math.isinf(sam_module.P_NORM.high)
    assert variants.VARIANT_PARAMS["p"] is variants.VARIANT_PARAMS["p_start"] is variants.STEP_PROBABILITY
    assert get_method("random-sam", p=0.25).params["p"] == 0.25  # a probability: below SAM's p > 1
    with pytest.raises(InvalidParameterError, match="^p must be a float > 1"):
        get_method("sam", p=0.25)


# ------------------------------------------------------------------------------------------ the methods' records


from noisysam import methods  # noqa: E402
from noisysam.methods import registry  # noqa: E402
from noisysam.run.config import TrainConfig, build_method, method_radius  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dataset():
    import noisysam
    from noisysam.data.datasets import ImageDataset

    d = noisysam.load_dataset("cifar10-mini")
    return ImageDataset("tiny", d.x_train[:128], d.y_train[:128], d.x_test[:32], d.y_test[:32], d.classes)


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made in a test stay in it."""
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))


def test_each_method_has_one_record_and_the_old_containers_are_views_of_it():
    assert list(registry.METHODS) == list(registry.REGISTRY)
    assert all(registry.METHODS[n] is info.factory for n, info in registry.REGISTRY.items())
    assert set(registry.SAM_RADIUS_METHODS) == {n for n, i in registry.REGISTRY.items() if i.sam_radius} == {
        "sam", "bootstrap-sam", "mixup-sam", "elr-sam", "co-teaching-sam", "dividemix-sam", "looksam", "random-sam",
        "ae-sam"}
    assert set(registry.NOISE_RATE_METHODS) == {"co-teaching", "co-teaching-sam"}
    info = registry.method_info("asam")
    assert (info.radius, info.defaults["rho"], info.passes, info.networks) == ("own", 0.5, "2", 1)
    assert registry.method_info("sam").radius == "profile" and registry.method_info("sgd").radius is None
    assert registry.method_info("co-teaching").noise_rate_param == "tau"
    with pytest.raises(ValueError, match="method must be one of"):
        registry.method_info("nope")


@pytest.mark.parametrize("name", sorted(registry.REGISTRY))
def test_a_record_says_what_its_method_is(name):
    """Networks, the noise rate and the radius: what the record says is what the built method does."""
    info = registry.method_info(name)
    method = registry.get_method(name, **({info.noise_rate_param: 0.5} if info.needs_noise_rate else {}))
    assert getattr(method, "networks", 1) == info.networks
    assert info.takes("rho") == (info.radius is not None)
    assert info.needs_noise_rate == ("tau" in info.params and info.defaults["tau"] is None)


def test_the_declared_passes_are_what_a_run_counts(tiny_dataset):
    """Every record with a number of passes per step trains at that cost (the cost table's count)."""
    from noisysam.run.loop import train

    fixed = [n for n, i in registry.REGISTRY.items() if i.passes and i.passes.isdigit() and i.networks == 1]
    assert {"sgd", "sam", "asam", "sam-on", "momentum-sam", "norm-penalty"} <= set(fixed)
    for name in fixed:
        s = train(dataset=tiny_dataset, method=name, model="cnn", model_params={"width": 2}, epochs=1, batch_size=32,
                  amp="none", val_fraction=0.0, seed=0).summary
        assert s["forward_passes"] / s["train_steps"] == int(registry.method_info(name).passes), name


def test_register_method_can_say_that_a_method_needs_the_noise_rate(isolated_registry):
    def forgetful(forget: float | None = None):
        return methods.Method("forgetful", params={"forget": forget})

    methods.register_method("forgetful", forgetful, needs_noise_rate="forget")
    methods.register_method("forgetful-tau", lambda tau=None: methods.Method("t", params={"tau": tau}),
                            needs_noise_rate=True)
    assert {"forgetful", "forgetful-tau"} <= set(methods.NOISE_RATE_METHODS)
    cfg = TrainConfig(method="forgetful", noise_rate=0.3)
    assert build_method(cfg).params == {"forget": 0.3}
    assert build_method(TrainConfig(method="forgetful-tau", noise_rate=0.2)).params == {"tau": 0.2}
    assert build_method(TrainConfig(method="forgetful", method_params={"forget": 0.1})).params == {"forget": 0.1}
    with pytest.raises(ValueError, match="needs the noise rate as its parameter 'tau'"):
        methods.register_method("sgd-like", registry._sgd, needs_noise_rate=True)
    assert "sgd-like" not in methods.METHODS


def test_the_views_write_the_records(isolated_registry):
    methods.register_method("mine", registry._sam)
    assert registry.method_info("mine").radius == "own" and method_radius(TrainConfig(method="mine"), None) == dict(
        value=0.05, source="method default")
    methods.SAM_RADIUS_METHODS.add("mine")
    assert registry.method_info("mine").radius == "profile"
    assert method_radius(TrainConfig(method="mine"), None)["source"] == "profile"
    methods.SAM_RADIUS_METHODS.discard("mine")
    methods.METHODS["mine"] = registry._sgd
    assert registry.method_info("mine").radius is None and methods.METHODS.pop("mine") is registry._sgd
    assert "mine" not in registry.REGISTRY


# ------------------------------------------------------------------------------------------ the 0.2 paths


import importlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import noisysam  # noqa: E402
from noisysam.core import deprecation  # noqa: E402


@pytest.mark.parametrize("module, name, new", [
    ("noisysam.sam", "SAM", "noisysam.optim.sam.SAM"),
    ("noisysam.files", "RUN_FILES", "noisysam.run.rundir.RUN_MARKERS"),
    ("noisysam.methods", "BOOTSTRAP_BETA", "noisysam.methods.registry.BOOTSTRAP_BETA"),
    ("noisysam.models", "wrn28_10", "noisysam.models.networks.wrn28_10"),
    ("noisysam.cli", "GridProgress", "noisysam.report.console.GridProgress"),
    ("noisysam.noise", "Seed", "noisysam.noise.labels.Seed"),
])
def test_every_old_path_warns_by_one_mechanism_naming_its_removal_version(module, name, new):
    with pytest.warns(deprecation.RemovedInNoisysam03Warning, match=rf"^{module}\.{name} moved to {new};") as record:
        got = getattr(importlib.import_module(module), name)
    new_module, _, new_name = new.rpartition(".")
    assert got is getattr(importlib.import_module(new_module), new_name)
    assert issubclass(record[0].category, DeprecationWarning) and record[0].category.removed_in == "0.3.0"
    assert record[0].filename == __file__  # it points at the line that used the old path


def test_the_package_has_no_lookup_of_its_own_and_the_packages_share_one():
    assert "__getattr__" not in vars(noisysam) and isinstance(noisysam.sam, deprecation.MovedModule)
    for package in ("noise", "data", "models", "methods", "cli"):
        lookup = vars(importlib.import_module(f"noisysam.{package}"))["__getattr__"]
        assert lookup.__qualname__ == "moved_names.<locals>.__getattr__"
    assert deprecation.REMOVED_IN == "0.3.0" and noisysam.RemovedInNoisysam03Warning is deprecation.RemovedInNoisysam03Warning


def test_noisysam_train_is_the_function_and_from_imports_of_the_old_module_work():
    """What docs/layout.md says: ``from noisysam.train import TrainConfig`` works (and warns); ``noisysam.train`` is the
    function, so ``noisysam.train.TrainConfig`` is no attribute."""
    code = ("import warnings; warnings.simplefilter('error')\n"
            "import noisysam\n"
            "try:\n    noisysam.train.TrainConfig\nexcept AttributeError:\n    print('function')\n"
            "try:\n    from noisysam.train import TrainConfig\nexcept DeprecationWarning as e:\n"
            "    print(type(e).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["function", "RemovedInNoisysam03Warning"]


def test_the_docs_name_the_removal_version_and_say_only_what_works():
    layout = (Path(__file__).parents[1] / "docs" / "layout.md").read_text()
    assert f"removed in noisysam {deprecation.REMOVED_IN}" in layout
    assert "`noisysam.train.TrainConfig` and the" not in layout
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from noisysam.methods import METHODS, get_method  # noqa: F401  (names of __all__ never warn)


# ------------------------------------------------------------------------------------------ detection's ways


import noisysam.detect  # noqa: E402
from noisysam.detect import detection  # noqa: E402
from noisysam.detect import threshold  # noqa: E402
from noisysam.run import loop, seeds  # noqa: E402

ENTRY_POINTS = ("detect_dynamics", "detect_threshold_samples", "detect_annotators", "detect_kfold")


def test_the_seed_purposes_are_declared_once_and_distinct():
    """run/seeds.py's table: every purpose a number of its own (two uses sharing one would draw the same stream), the
    run loop's and the threshold samples' read from it, with the numbers they had (a run's and a threshold run's
    draws, and so their files, are unchanged)."""
    declared = [name for name in seeds.__all__ if name not in ("derive_seed", "PURPOSES")]
    assert sorted(seeds.PURPOSES.values()) == sorted(getattr(seeds, name) for name in declared)
    assert len(set(seeds.PURPOSES.values())) == len(seeds.PURPOSES) == len(declared)
    assert (seeds.SPLIT, seeds.INIT, seeds.LOADER, seeds.STEP, seeds.TORCH, seeds.THRESHOLD_SAMPLES) == (0, 1, 2, 3, 4,
                                                                                                        100)
    assert (loop._SPLIT, loop._INIT, loop._LOADER, loop._STEP, loop._TORCH) == (0, 1, 2, 3, 4)
    assert loop.derive_seed is seeds.derive_seed and threshold.derive_seed is seeds.derive_seed
    assert not any(name.startswith("_THRESHOLD") for name in vars(threshold))  # no private constant of its own
    rows = np.arange(50)
    expected = np.sort(np.random.default_rng(seeds.derive_seed(7, 100)).choice(rows, size=50 // 4, replace=False))
    assert np.array_equal(threshold.threshold_sample_rows(rows, 3, 7), expected)


@pytest.fixture
def entry_points(monkeypatch):
    """Each way of detecting replaced by one that records how the dispatcher called it."""
    calls = []
    for name in ENTRY_POINTS:
        assert getattr(detection, name) is getattr(noisysam.detect, name)
        monkeypatch.setattr(detection, name, lambda *a, _name=name, **kw: calls.append((_name, a, kw)) or _name)
    return calls


def _callback(event, info):
    pass


@pytest.mark.parametrize("args, kwargs, called", [
    (("run",), {}, ("detect_dynamics", ("run", "aum"), dict(dataset=None, out=None))),
    (("run",), dict(score="loss", out="o", dataset="d"), ("detect_dynamics", ("run", "loss"), dict(dataset="d",
                                                                                                    out="o"))),
    (("run",), dict(threshold_samples=True, out="o", callback=_callback),
     ("detect_threshold_samples", ("run",), dict(out="o", dataset=None, callback=_callback))),
    (("run",), dict(threshold_samples=True, score="aum", out="o"),
     ("detect_threshold_samples", ("run",), dict(out="o", dataset=None, callback=None))),
    (("run",), dict(annotators=True, dataset="d"), ("detect_annotators", ("run",), dict(dataset="d", out=None))),
    ((), dict(kfold=3, dataset="cifar10-mini", noise="symmetric-0.2", out="o", epochs=1),
     ("detect_kfold", (3,), dict(config=None, dataset="cifar10-mini", noise="symmetric-0.2", out="o", callback=None,
                                 epochs=1))),
    ((), dict(kfold=2, score="cleanlab", out="o", callback=_callback),
     ("detect_kfold", (2,), dict(config=None, dataset=None, noise=None, out="o", callback=_callback))),
])
def test_find_label_issues_dispatches_to_one_entry_point_per_way(entry_points, args, kwargs, called):
    assert noisysam.find_label_issues is noisysam.detect.find_label_issues is detection.find_label_issues
    assert detection.find_label_issues(*args, **kwargs) == called[0]
    assert entry_points == [called]


@pytest.mark.parametrize("args, kwargs, match", [
    (("run",), dict(kfold=3), "either run_dir"),
    ((), {}, "either run_dir"),
    (("run",), dict(threshold_samples=True, annotators=True), "not both"),
    ((), dict(kfold=3, annotators=True), "annotators need run_dir"),
    ((), dict(kfold=3, threshold_samples=True), "threshold samples need run_dir"),
    (("run",), dict(annotators=True, score="aum"), "take no score"),
    (("run",), dict(threshold_samples=True, score="loss"), "take no score"),
    ((), dict(kfold=3, score="aum"), "must be 'cleanlab'"),
])
def test_the_dispatcher_refuses_a_mix_of_ways_before_any_entry_point(entry_points, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        detection.find_label_issues(*args, **kwargs)
    assert entry_points == []


MOVED_FROM_DETECTION = [name for name in noisysam.detect.__all__
                        if name not in ("find_label_issues", "other_estimates", *ENTRY_POINTS)]


@pytest.mark.parametrize("name", MOVED_FROM_DETECTION)
def test_the_old_names_of_detection_warn_and_are_the_same_objects(name):
    with pytest.warns(deprecation.RemovedInNoisysam03Warning,
                      match=rf"^noisysam\.detect\.detection\.{name} moved to noisysam\.detect\.\w+\.{name};") as record:
        got = getattr(detection, name)
    new_module = str(record[0].message).split(" moved to ")[1].split(";")[0].rpartition(".")[0]
    assert got is getattr(importlib.import_module(new_module), name) is getattr(noisysam.detect, name)
    assert record[0].filename == __file__
    with pytest.warns(deprecation.RemovedInNoisysam03Warning):
        exec(f"from noisysam.detect.detection import {name}", {})


def test_detection_holds_only_the_dispatcher_and_the_package_names_never_warn():
    assert "check_out" in MOVED_FROM_DETECTION and len(MOVED_FROM_DETECTION) == 30
    own = [n for n, v in vars(detection).items() if callable(v) and getattr(v, "__module__", "") == detection.__name__]
    assert own == ["find_label_issues"]  # and the moved names' __getattr__ (noisysam.core.deprecation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in noisysam.detect.__all__:
            getattr(noisysam.detect, name)


# ------------------------------------------------------------------------------------------ the grid's table


from noisysam.grid import table as grid_table  # noqa: E402

MOVED_FROM_TABLE = {"noisysam.grid.paper": "PAPER_RATES PAPER_METHODS PAPER_TABLE4 LITERATURE_TABLE4 paper_value",
                    "noisysam.grid.cells": ("PARAMS_FROM TUNING_SCHEMA Cell params_name cell_dir grid cell_config "
                                            "run_grid read_tuning"),
                    "noisysam.grid.render": "fmt fmt_diff fmt_ratio COST_NOTE render_markdown CSV_COLUMNS render_csv"}


@pytest.mark.parametrize("new, name", [(new, name) for new, names in MOVED_FROM_TABLE.items() for name in names.split()])
def test_the_old_names_of_the_table_module_warn_and_are_the_same_objects(new, name):
    """grid/table.py held the paper's numbers, the grid runner, the aggregation and the rendering; each is a module
    now, and table.py keeps the aggregation and writing the table."""
    with pytest.warns(deprecation.RemovedInNoisysam03Warning,
                      match=rf"^noisysam\.grid\.table\.{name} moved to {new}\.{name};"):
        got = getattr(grid_table, name)
    assert got is getattr(importlib.import_module(new), name)


def test_the_table_module_keeps_its_own_job_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("TABLE_FILES", "SkippedCellWarning", "cell_key", "collect", "mean_std", "column_label",
                     "aggregate", "settings", "write_table"):
            getattr(grid_table, name)


def test_the_0_2_table_module_finds_a_moved_name_with_one_warning():
    with pytest.warns(deprecation.RemovedInNoisysam03Warning) as record:
        got = noisysam.table.run_grid
    assert got is importlib.import_module("noisysam.grid.cells").run_grid
    assert [str(w.message).split(";")[0] for w in record] == ["noisysam.table.run_grid moved to noisysam.grid.cells.run_grid"]
