"""The package's shape (docs/layout.md): subpackages in the order of the data flow, imports only going down, no
cycles, and the module paths of noisysam 0.2 kept as deprecated aliases."""

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import noisysam
from noisysam import _compat

PACKAGE = Path(noisysam.__file__).parent

#: Layer of each subpackage: a module may import its own subpackage and those of lower layers, nothing else.
LAYERS = {"assets": 0, "core": 0, "noise": 1, "data": 2, "models": 2, "optim": 2, "methods": 3, "run": 4, "grid": 5, "detect": 5,
          "report": 6, "cli": 7}
FACADE = {"noisysam", "noisysam.__main__", "noisysam._compat"}  # the public API over all layers


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The noisysam modules ``path`` imports anywhere in it (function bodies and TYPE_CHECKING blocks too),
    ``from package import module`` resolved to the module (one of ``known``)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "noisysam"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "noisysam":
                continue
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            out |= subs or {base}
    return out


def layer(name: str) -> int:
    parts = name.split(".")
    assert len(parts) > 1 and parts[1] in LAYERS, f"{name} is in no layer of docs/layout.md"
    return LAYERS[parts[1]]


def test_every_module_is_in_a_layer():
    for name in modules():
        if name not in FACADE:
            layer(name)


def test_imports_only_go_down():
    wrong, known = [], modules()
    for name, path in known.items():
        if name in FACADE:
            continue
        for target in imported(path, name, known):
            same = target.split(".")[:2] == name.split(".")[:2]
            if target in FACADE or not (same or layer(target) < layer(name)):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    known = modules()
    graph = {name: imported(path, name, known) for name, path in known.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_layer_check_finds_an_upward_import(tmp_path, monkeypatch):
    """The checks above would see noise importing data (the cycle of noisysam 0.2)."""
    fake = tmp_path / "noisysam"
    (fake / "noise").mkdir(parents=True)
    (fake / "data").mkdir()
    (fake / "noise" / "labels.py").write_text("def f():\n    from noisysam.data.loader import Loader\n")
    (fake / "data" / "loader.py").write_text("from noisysam.noise.labels import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match="noisysam.noise.labels imports noisysam.data.loader"):
        test_imports_only_go_down()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()


@pytest.mark.parametrize("old, name, new", [
    ("sam", "SAM", "noisysam.optim.sam"), ("train", "TrainConfig", "noisysam.run.config"),
    ("train", "saved_config", "noisysam.run.rundir"), ("train", "PassCounter", "noisysam.run.loop"),
    ("files", "atomic_write", "noisysam.core.files"), ("params", "Interval", "noisysam.core.params"),
    ("table", "write_table", "noisysam.grid.table"), ("plot", "plot_run", "noisysam.report.plots"),
    ("variants", "LookSAMUpdate", "noisysam.optim.variants"), ("elr", "ELR", "noisysam.methods.elr"),
])
def test_old_module_paths_are_deprecated_aliases(old, name, new):
    with pytest.warns(DeprecationWarning, match=rf"noisysam\.{old}\.{name} moved to {new}\.{name}"):
        got = getattr(importlib.import_module(f"noisysam.{old}"), name)
    assert got is getattr(importlib.import_module(new), name)


def test_old_from_imports_and_the_train_function_survive_together():
    """``import noisysam.train`` must not replace the function noisysam.train by the old module's alias."""
    code = ("import warnings; warnings.simplefilter('error')\n"
            "import noisysam.train, noisysam\n"
            "assert callable(noisysam.train) and noisysam.train.__module__ == 'noisysam.report.live'\n"
            "try:\n    from noisysam.sam import SAM\nexcept DeprecationWarning as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "noisysam.sam.SAM moved to noisysam.optim.sam.SAM; the old path will be removed"


def test_packages_that_kept_their_old_name_export_its_public_names():
    """noisysam.noise, .data, .models, .methods, .detect, .cli were modules; as packages they export the same names."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from noisysam.cli import main  # noqa: F401  (the console script's entry point)
        from noisysam.data import ImageDataset, Loader, find_data_file, load_dataset  # noqa: F401
        from noisysam.detect import Detection, find_label_issues  # noqa: F401
        from noisysam.methods import METHODS, Method, SAMUpdate, get_method, register_method  # noqa: F401
        from noisysam.models import MODELS, get_model  # noqa: F401
        from noisysam.noise import KINDS, NoisyLabels, cifar10n, make, symmetric  # noqa: F401
    for package in ("noise", "data", "models", "methods", "detect", "cli"):
        module = importlib.import_module(f"noisysam.{package}")
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing and package not in _compat.MOVED


#: The top-level public names of each module of noisysam 0.2 (commit 90749b3), by module.
OLD_PUBLIC = {
    "params": ("T InvalidParameterError Constraint Interval Options Boolean Text PathLike InstanceOf SubclassOf "
               "ArrayLike HasAttrs NONE ParamTable TABLES declare validate_params validate_with"),
    "files": ("PathLike LOCK_NAME atomic_write RunDirectoryBusy run_lock RUN_FILES check_not_a_run to_jsonable "
              "write_json write_jsonl read_json save_checkpoint load_checkpoint MAX_JSON_BYTES CHECKPOINT_SCHEMA "
              "CONFIG_SCHEMA RESULT_SCHEMA FileFormatError schema_problem read_jsonl NpyHeader NpzArrays ArraySpec "
              "read_table"),
    "noise": ("Seed CIFAR10_ASYMMETRIC CIFAR10N_KINDS CIFAR10N_ANNOTATORS KINDS RATED_KINDS label MAX_CLASSES "
              "NoisyLabels symmetric asymmetric pairflip from_transition cifar10n_annotators cleanlab_module "
              "consensus cifar10n make"),
    "data": ("DEVICE check_device find_data_file ImageDataset Layout load_dataset NoisyDataset Loader crop_flip "
             "random_crop_flip"),
    "models": "MODEL_PARAMS ResNet32 PreActResNet18 WideResNet SimpleCNN wrn28_10 MODELS get_model",
    "sam": "SAM_PARAMS SAM disable_running_stats sam_step",
    "variants": ("Targets LossFn NORM_LAYERS VARIANT_PARAMS checked StatefulSAM LookSAMUpdate RandomSAMUpdate "
                 "AESAMUpdate MomentumSAMUpdate SAMOnUpdate NormPenaltyUpdate"),
    "methods": ("ASAM_NORMALISATIONS METHOD_PARAMS LossRule CrossEntropy LabelSmoothing BootstrapLoss "
                "GeneralizedCrossEntropy InputRule PlainInputs MixupInputs UpdateRule SGDUpdate SAMUpdate Method "
                "RelabelAndRetrain AnyMethod BOOTSTRAP_BETA SAM_UPDATES MethodFactory METHODS SAM_RADIUS_METHODS "
                "NOISE_RATE_METHODS register_method takes_param default_param get_method"),
    "learner": "EpochInfo LearnerMethod Learner",
    "elr": "CLAMP elr_loss ELR",
    "coteaching": "kept_fraction small_loss CoTeaching",
    "dividemix": "RAMPUP_EPOCHS co_divide sharpen mixmatch_loss DivideMix",
    "metrics": "ArrayLike accuracy memorisation_recovery noise_auroc",
    "train": ("PROFILES SCHEDULES AMP_MODES VAL_LABELS RUN_FILES METHOD_FIELDS profile_rho labels_rate "
              "method_radius CONFIG_PARAMS TrainConfig derive_seed lr_at resolve_device resolve_amp "
              "TrainingDiverged TrainResult Callback chain predict predict_margins PassCounter fingerprints "
              "comparable_config config_diff saved_config train build_method DYNAMICS_DIR dynamics_path "
              "save_dynamics"),
    "distributed": "SAM_SYNC env_world_size env_rank writer_process Distributed device_for setup check_resume launch",
    "tensorboard": "TAGS FINAL LOG_DIR step hparams TensorBoardLogger log_finished_run",
    "executors": ("POLL_SECONDS ORPHAN_CHECK_SECONDS Job Outcome Watch CellsFailed epochs_done error_line run_cell "
                  "default_threads Executor InProcess LocalProcesses PROBE_SECONDS probe_ray_address ray_available "
                  "RayExecutor"),
    "table": ("PAPER_RATES PAPER_METHODS PAPER_TABLE4 LITERATURE_TABLE4 TABLE_FILES PARAMS_FROM TUNING_SCHEMA "
              "paper_value Cell params_name cell_dir grid cell_config run_grid read_tuning SkippedCellWarning "
              "collect mean_std column_label aggregate settings fmt fmt_diff fmt_ratio COST_NOTE render_markdown "
              "CSV_COLUMNS render_csv write_table"),
    "sweep": ("SWEEP_FILES SELECT RULE SWEEP_RESULT_SCHEMA SWEEP_SCHEMA check_params Sweep run_sweep summarise "
              "choose write_sweep render_markdown read_choices tuned record_tuning"),
    "detect": ("DYNAMICS_SCORES SCORES OUTPUT_FILES CLEAN_MODES ESTIMATORS THRESHOLD_PERCENTILE THRESHOLD_RUN "
               "FAKE_CLASS Detection DYNAMICS_ARRAYS read_dynamics dynamics_scores threshold_sample_rows "
               "threshold_flags threshold_scores symmetric_rate symmetric_rate_error validation_estimate "
               "annotator_scores crowdlab check_kfold kfold_probabilities predict_probabilities cleanlab_scores "
               "default_out find_label_issues ISSUES_COLUMNS SUMMARY_SCHEMA read_detection cleaned"),
    "plot": ("plot_run run_figure plot_table table_figure plot_scores plot_cost pareto_front cost_figure "
             "plot_sweep sweep_figure"),
    "cli": ("RunProgress GridProgress cli main train_command table_command sweep_command noise_command "
            "detect_command info_command"),
    "config_file": "NOT_KEYS key keyed_options read default_map resolved_values value_text dumps",
}


@pytest.mark.parametrize("old", sorted(OLD_PUBLIC))
def test_every_public_name_of_0_2_is_still_reachable_at_its_old_path(old):
    """Through the package of the same name, or through the deprecated alias of a module that moved."""
    module = importlib.import_module(f"noisysam.{old}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        missing = [name for name in OLD_PUBLIC[old].split() if not hasattr(module, name)]
    assert not missing, f"noisysam.{old} lost {missing}"
