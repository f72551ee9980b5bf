"""noisysam installs as users install packages: the wheel holds every subpackage and the shipped data, and a
non-editable install trains from the package data in any directory (issue: data as package data); its metadata
names the data's licences beside the code's and it carries LICENSE and NOTICE.md (issue: the licences told
honestly)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import noisysam

ROOT = Path(noisysam.__file__).resolve().parent.parent
SUBPACKAGES = ("assets", "core", "noise", "data", "models", "optim", "methods", "run", "grid", "detect", "report", "cli")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if not (ROOT / "setup.cfg").is_file():
        pytest.skip("noisysam is not imported from a source checkout")
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools and wheel come from the dev extra, so no package is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, cwd=out)
    (path,) = out.glob("noisysam-*.whl")
    return path


def test_wheel_holds_every_subpackage_the_data_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert {f"noisysam/{p}/__init__.py" for p in SUBPACKAGES} <= names
    assert {"noisysam/assets/cifar10-mini.npz", "noisysam/assets/cifar10n.npz", "noisysam/py.typed"} <= names
    assert not [n for n in names if ".data/" in n or n.startswith(("tests/", "data/"))]  # no data_files, no tests
    assert "noisysam = noisysam.cli:main" in entry_points
    with zipfile.ZipFile(wheel) as z:  # the shipped data is the repository's, byte for byte
        assert z.read("noisysam/assets/cifar10n.npz") == (ROOT / "noisysam/assets/cifar10n.npz").read_bytes()


def test_a_non_editable_install_reads_its_package_data_from_anywhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import noisysam, sys; from noisysam.core.assets import find_data_file; "
            "d = noisysam.load_dataset('cifar10-mini'); print(noisysam.__file__); print(find_data_file('cifar10n.npz')); "
            "print(len(d.y_train))")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    package, data, n = r.stdout.split()
    assert Path(package).is_relative_to(target) and Path(data) == target / "noisysam/assets/cifar10n.npz"
    assert n == "4085"


def test_the_wheel_names_the_data_licences_and_carries_license_and_notice(wheel):
    """Not "MIT" alone: the BY-NC labels and CIFAR-10 (no licence stated) ride in the same wheel."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        licenses = {n.split(".dist-info/licenses/")[1]: z.read(n) for n in names if ".dist-info/licenses/" in n}
    headers = metadata.split("\n\n")[0].splitlines()
    assert "License-Expression: MIT AND CC-BY-NC-4.0 AND LicenseRef-CIFAR-10" in headers
    assert not [h for h in headers if h.startswith("License:")]  # no bare "MIT" beside the expression
    assert {"License-File: LICENSE", "License-File: NOTICE.md"} <= set(headers)
    assert licenses == {f: (ROOT / f).read_bytes() for f in ("LICENSE", "NOTICE.md")}
