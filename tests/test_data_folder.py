"""The top-level data/ folder: its manifest records the shipped arrays, and data/build_assets.py rebuilds them from
CIFAR-10's binary version and CIFAR-10N's CIFAR-10_human.pt (issue: the licences told honestly; a data/ with a job)."""

import hashlib
import importlib.util
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import noisysam

ROOT = Path(noisysam.__file__).resolve().parent.parent
DATA, ASSETS = ROOT / "data", ROOT / "noisysam" / "assets"
HUMAN_PT = ROOT.parent / "shared" / "data" / "CIFAR-10_human.pt"  # in CI: ../shared beside the repository
CIFAR10N_KEYS = {"clean": "clean_label", "aggre": "aggre_label", "random1": "random_label1",
                 "random2": "random_label2", "random3": "random_label3", "worse": "worse_label"}

if not (DATA / "build_assets.py").is_file():
    pytest.skip("noisysam is not imported from a source checkout", allow_module_level=True)


@pytest.fixture(scope="module")
def build_assets():
    spec = importlib.util.spec_from_file_location("build_assets", DATA / "build_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arrays_of(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_the_manifest_records_every_shipped_array_in_order():
    """Changing a shipped file without the manifest (or shipping a new one) fails here. Checksums computed here, as
    the manifest says they are: sha256 of the array's C-order bytes."""
    manifest = json.loads((DATA / "manifest.json").read_text())["assets"]
    assert sorted(manifest) == sorted(p.name for p in ASSETS.glob("*.npz"))
    for name, recorded in manifest.items():
        got = [(k, {"dtype": a.dtype.str, "shape": str(a.shape),
                    "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()})
               for k, a in arrays_of(ASSETS / name).items()]
        assert got == list(recorded.items()), name


def test_the_index_files_are_the_shipped_subsets_positions_and_every_asset_has_a_licence_notice():
    mini = arrays_of(ASSETS / "cifar10-mini.npz")
    for key in ("train_index", "test_index"):
        assert np.array_equal(np.loadtxt(DATA / f"cifar10-mini-{key.replace('_', '-')}.txt", dtype=np.int64),
                              mini[key])
    notice = (ROOT / "NOTICE.md").read_text()
    assert all(f"noisysam/assets/{p.name}" in notice for p in ASSETS.glob("*.npz"))


def fabricated_cifar10(folder, n_per_batch=3, seed=0):
    """CIFAR-10's binary version in miniature: a tarball of five data_batch_i.bin of ``n_per_batch`` records each
    and batches.meta.txt; returns the tarball, the raw records and the class names."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, size=(5 * n_per_batch, 3073), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 10, size=len(records))
    classes = [f"class{i}" for i in range(10)]
    members = {f"data_batch_{i + 1}.bin": records[i * n_per_batch:(i + 1) * n_per_batch].tobytes() for i in range(5)}
    members["batches.meta.txt"] = ("\n".join(classes) + "\n\n").encode()  # the real file ends in blank lines
    tarball = folder / "cifar-10-binary.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return tarball, records, classes


def image_of(record):
    """One binary record's image, channels last, pixel by pixel: byte 1 + c * 1024 + row * 32 + column."""
    image = np.zeros((32, 32, 3), np.uint8)
    for c in range(3):
        for row in range(32):
            for column in range(32):
                image[row, column, c] = record[1 + c * 1024 + row * 32 + column]
    return image


@pytest.mark.parametrize("as_tensors", [False, True])
def test_the_build_script_rebuilds_both_files_from_official_format_inputs(build_assets, tmp_path, as_tensors):
    """Fabricated inputs in the official formats (CIFAR-10_human.pt holds numpy arrays; a dict of tensors reads the
    same); the rebuilt arrays equal ones computed here, in the shipped files' keys, dtypes and compression."""
    tarball, records, classes = fabricated_cifar10(tmp_path)
    n = len(records)
    rng = np.random.default_rng(1)
    human = {source: rng.integers(0, 10, size=n) for source in CIFAR10N_KEYS.values()}
    human["clean_label"] = records[:, 0].astype(np.int64)  # CIFAR-10N's clean labels are CIFAR-10's, in its order
    torch.save({k: torch.from_numpy(v) if as_tensors else v for k, v in human.items()}, tmp_path / "human.pt")
    train_index, test_index = np.array([0, 4, 7, 14]), np.array([9, 10])
    (tmp_path / "index").mkdir()
    np.savetxt(tmp_path / "index/cifar10-mini-train-index.txt", train_index, fmt="%d")
    np.savetxt(tmp_path / "index/cifar10-mini-test-index.txt", test_index, fmt="%d")
    out, manifest = tmp_path / "out", tmp_path / "manifest.json"
    args = ["--cifar10", str(tarball), "--cifar10n", str(tmp_path / "human.pt"), "--out", str(out),
            "--index-dir", str(tmp_path / "index"), "--manifest", str(manifest)]
    assert build_assets.main([*args, "--write-manifest"]) == 0

    mini, labels = arrays_of(out / "cifar10-mini.npz"), arrays_of(out / "cifar10n.npz")
    expected_mini = {"x_train": np.stack([image_of(records[i]) for i in train_index]),
                     "y_train": records[train_index, 0].astype(np.int64), "train_index": train_index,
                     "x_test": np.stack([image_of(records[i]) for i in test_index]),
                     "y_test": records[test_index, 0].astype(np.int64), "test_index": test_index,
                     "classes": np.array(classes, dtype="<U6")}
    expected_labels = {key: human[source].astype(np.uint8) for key, source in CIFAR10N_KEYS.items()}
    for name, got, expected in (("cifar10-mini.npz", mini, expected_mini), ("cifar10n.npz", labels, expected_labels)):
        shipped = arrays_of(ASSETS / name)
        assert list(got) == list(expected) == list(shipped)
        assert all(np.array_equal(got[k], expected[k]) and got[k].dtype == expected[k].dtype for k in got)
        # the shipped encoding: the same dtypes (str arrays as wide as their longest name)
        assert [a.dtype.str for k, a in got.items() if k != "classes"] == \
               [a.dtype.str for k, a in shipped.items() if k != "classes"]
        with zipfile.ZipFile(out / name) as z:
            assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}  # np.savez_compressed

    # the script checks what it rebuilt against the manifest: the same files pass, a changed one fails
    assert build_assets.main(args) == 0
    np.savez_compressed(out / "cifar10n.npz", **{**labels, "worse": labels["clean"]})
    assert build_assets.main(["--out", str(out), "--manifest", str(manifest)]) == 1


def test_the_build_script_refuses_binary_labels_in_another_order_than_cifar10n(build_assets, tmp_path):
    tarball, records, _ = fabricated_cifar10(tmp_path)
    human = {source: np.roll(records[:, 0], 1).astype(np.int64) for source in CIFAR10N_KEYS.values()}
    torch.save(human, tmp_path / "human.pt")
    with pytest.raises(ValueError, match="not the same images in the same order"):
        build_assets.main(["--cifar10", str(tarball), "--cifar10n", str(tmp_path / "human.pt"),
                           "--out", str(tmp_path / "out"), "--manifest", str(tmp_path / "m.json")])


@pytest.mark.skipif(not HUMAN_PT.is_file(), reason=f"{HUMAN_PT} (CIFAR-10N's file) is not here")
def test_the_rebuilt_cifar10n_labels_are_the_shipped_ones(build_assets, tmp_path):
    assert build_assets.main(["--cifar10n", str(HUMAN_PT), "--out", str(tmp_path)]) == 0  # checked on the manifest
    rebuilt, shipped = arrays_of(tmp_path / "cifar10n.npz"), arrays_of(ASSETS / "cifar10n.npz")
    assert list(rebuilt) == list(shipped)
    assert all(rebuilt[k].dtype == shipped[k].dtype and np.array_equal(rebuilt[k], shipped[k]) for k in shipped)
