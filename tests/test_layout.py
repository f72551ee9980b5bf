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


def imported(path: Path, name: str) -> set[str]:
    """The noisysam modules ``path`` imports anywhere in it (function bodies and TYPE_CHECKING blocks too),
    ``from package import module`` resolved to the module."""
    known, out = modules(), set()
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
    wrong = []
    for name, path in modules().items():
        if name in FACADE:
            continue
        for target in imported(path, name):
            same = target.split(".")[:2] == name.split(".")[:2]
            if target in FACADE or not (same or layer(target) < layer(name)):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: imported(path, name) for name, path in modules().items()}
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
            "assert callable(noisysam.train) and noisysam.train.__module__ == 'noisysam.run.loop'\n"
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
        assert not missing and f"noisysam.{package}" not in _compat.MOVED
