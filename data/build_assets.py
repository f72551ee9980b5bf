"""Rebuild the data noisysam ships (``noisysam/assets/cifar10-mini.npz``, ``cifar10n.npz``) from the official files,
and check the shipped files against ``data/manifest.json``.

    python data/build_assets.py --cifar10 cifar-10-binary.tar.gz --cifar10n CIFAR-10_human.pt   # rebuild both, check
    python data/build_assets.py --cifar10n CIFAR-10_human.pt    # rebuild one, check it
    python data/build_assets.py                                 # check the shipped files only
    python data/build_assets.py --write-manifest                # record the shipped files (a deliberate change)

Sources (data/README.md says where to get them and their licences):

- CIFAR-10's *binary* version (Krizhevsky 2009): ``cifar-10-batches-bin/data_batch_{1..5}.bin``, fixed-size records
  of 1 label byte and 3072 pixel bytes (1024 red, then green, then blue, each row-major 32 x 32), concatenated in the
  order of torchvision's CIFAR-10 training set; ``batches.meta.txt``, the class names one a line. Read straight from
  the tarball (or from the unpacked folder); no pickle is ever loaded.
- CIFAR-10N's ``CIFAR-10_human.pt`` (Wei et al., ICLR 2022; CC BY-NC 4.0): a dict of six int64 arrays of length
  50,000, read with ``torch.load(weights_only=True)`` (numpy arrays inside: only numpy's array-rebuilding functions
  are allowed, nothing else).

The manifest records each array's content (sha256 of its C-order bytes, with dtype and shape), not the ``.npz``
file's bytes: those depend on numpy's ``.npy`` header and on the zlib build that deflates them, neither of which is
the data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent / "noisysam" / "assets"
MANIFEST = HERE / "manifest.json"
INDEX_FILES = {"train_index": "cifar10-mini-train-index.txt", "test_index": "cifar10-mini-test-index.txt"}

RECORD = 1 + 3 * 32 * 32  # one CIFAR-10 binary record: the label byte, then the red, green and blue planes
TRAIN_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)]
FOLDER = "cifar-10-batches-bin"  # the tarball's one top-level folder
# noisysam's key -> CIFAR-10_human.pt's key, in the order cifar10n.npz stores them
CIFAR10N_KEYS = {"clean": "clean_label", "aggre": "aggre_label", "random1": "random_label1",
                 "random2": "random_label2", "random3": "random_label3", "worse": "worse_label"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_checksums(arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    """``{key: {"dtype", "shape", "sha256"}}`` in the arrays' order: numpy's dtype string ("<i8"), the shape as
    Python prints it ("(50000,)") and the sha256 of the array's bytes in C order."""
    return {k: {"dtype": a.dtype.str, "shape": str(a.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()} for k, a in arrays.items()}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _cifar10_files(source: Path, names: list[str]) -> dict[str, bytes]:
    """The named files of CIFAR-10's binary version, from its tarball or from the folder it unpacks to."""
    if source.is_dir():
        folder = source / FOLDER if (source / FOLDER).is_dir() else source
        return {n: (folder / n).read_bytes() for n in names}
    with tarfile.open(source) as tar:  # read the members in place: nothing is extracted
        return {n: tar.extractfile(f"{FOLDER}/{n}").read() for n in names}


def read_cifar10_binary(source: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10's training set from its binary version: images uint8 (n, 32, 32, 3) channels last, labels int64 (n,),
    class names str (10,), in the order of the records (data_batch_1 first), which is torchvision's order."""
    files = _cifar10_files(source, [*TRAIN_BATCHES, "batches.meta.txt"])
    for name in TRAIN_BATCHES:
        if len(files[name]) % RECORD:
            raise ValueError(f"{name}: {len(files[name])} bytes is not a whole number of {RECORD}-byte records")
    records = np.frombuffer(b"".join(files[n] for n in TRAIN_BATCHES), dtype=np.uint8).reshape(-1, RECORD)
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    classes = np.array([line.strip() for line in files["batches.meta.txt"].decode("ascii").splitlines() if line.strip()])
    if classes.size != 10 or records[:, 0].max() > 9:
        raise ValueError(f"expected 10 classes and labels 0..9, got {classes.size} class names and labels up to "
                         f"{records[:, 0].max()}")
    return images, records[:, 0].astype(np.int64), classes


def read_index(folder: Path) -> dict[str, np.ndarray]:
    """The mini subset's positions in CIFAR-10's training set (int64), from the text files in ``folder``."""
    return {k: np.loadtxt(folder / name, dtype=np.int64, ndmin=1) for k, name in INDEX_FILES.items()}


def mini_arrays(images: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                index: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of cifar10-mini.npz, in its order: the images and labels at ``train_index`` and ``test_index``."""
    train, test = index["train_index"], index["test_index"]
    for name, idx in index.items():
        if idx.ndim != 1 or idx.min() < 0 or idx.max() >= labels.size or np.unique(idx).size != idx.size:
            raise ValueError(f"{name} must be distinct positions in [0, {labels.size}), got {idx.size} values in "
                             f"[{idx.min()}, {idx.max()}]")
    if np.intersect1d(train, test).size:
        raise ValueError("train_index and test_index overlap")
    return {"x_train": images[train], "y_train": labels[train], "train_index": train,
            "x_test": images[test], "y_test": labels[test], "test_index": test, "classes": classes}


def cifar10n_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of cifar10n.npz: CIFAR-10_human.pt's six label sets under noisysam's keys, each cast to uint8."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    # The file pickles numpy arrays (under numpy 1's module name; numpy 2 writes numpy._core): allow exactly what
    # rebuilds an int64 array.
    allowed = [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               type(np.dtype("int64"))]
    with torch.serialization.safe_globals(allowed):
        human = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for key, source in CIFAR10N_KEYS.items():
        labels = np.asarray(human[source])
        if labels.ndim != 1 or labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{path}: {source} must be one label 0..9 per image, got shape {labels.shape}, "
                             f"values in [{labels.min()}, {labels.max()}]")
        out[key] = labels.astype(np.uint8)
    if len({a.size for a in out.values()}) != 1:
        raise ValueError(f"{path}: the label sets differ in length")
    return out


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` (how the shipped files are written), through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def check(out: Path, manifest: dict, names: list[str]) -> bool:
    """Print whether each file ``names`` in ``out`` holds the arrays the manifest records; True if all do."""
    ok = True
    for name in names:
        expected = manifest["assets"].get(name)
        got = array_checksums(read_npz(out / name)) if (out / name).is_file() else None
        if got is not None and expected is not None and list(got.items()) == list(expected.items()):
            print(f"{name}: every array matches the manifest")
            continue
        ok = False
        if got is None or expected is None:
            print(f"{name}: {'missing from ' + str(out) if got is None else 'not in the manifest'}")
        else:
            differ = [k for k in {**expected, **got} if expected.get(k) != got.get(k)] or ["the order of the keys"]
            print(f"{name}: differs from the manifest in {', '.join(differ)}")
    return ok


def _check_source(path: Path, manifest: dict, name: str) -> None:
    """Say whether a source file is the one the manifest names; the arrays are checked after the build either way."""
    expected = manifest.get("sources", {}).get(name, {}).get("sha256")
    if path.is_file() and expected:
        same = sha256_file(path) == expected
        print(f"{path}: {'the' if same else 'NOT the'} {name} the manifest names (sha256)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar10", type=Path, help="cifar-10-binary.tar.gz, or the cifar-10-batches-bin folder")
    ap.add_argument("--cifar10n", type=Path, help="CIFAR-10N's CIFAR-10_human.pt")
    ap.add_argument("--out", type=Path, default=ASSETS, help="where the .npz files go (default: %(default)s)")
    ap.add_argument("--index-dir", type=Path, default=HERE, help="folder of the mini subset's index files")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="default: %(default)s")
    ap.add_argument("--write-manifest", action="store_true",
                    help="record the arrays of the .npz files in --out in the manifest instead of checking them")
    args = ap.parse_args(argv)
    manifest = json.loads(args.manifest.read_text()) if args.manifest.is_file() else {"assets": {}}
    for option, path, name in (("--cifar10", args.cifar10, "cifar-10-binary.tar.gz"),
                               ("--cifar10n", args.cifar10n, "CIFAR-10_human.pt")):
        if path is not None and not path.exists():
            ap.error(f"{option}: {path} does not exist")
        if path is not None:
            _check_source(path, manifest, name)
    built = {}
    if args.cifar10n is not None:
        built["cifar10n.npz"] = cifar10n_arrays(args.cifar10n)
    if args.cifar10 is not None:
        images, labels, classes = read_cifar10_binary(args.cifar10)
        clean = built.get("cifar10n.npz", {}).get("clean")
        if clean is not None and (clean.shape != labels.shape or (clean != labels).any()):
            raise ValueError("CIFAR-10's binary labels differ from CIFAR-10N's clean labels: not the same images in "
                             "the same order")
        built["cifar10-mini.npz"] = mini_arrays(images, labels, classes, read_index(args.index_dir))
    if built:
        args.out.mkdir(parents=True, exist_ok=True)
    for name, arrays in built.items():
        save_npz(args.out / name, arrays)
    if args.write_manifest:
        names = list(built) or sorted(p.name for p in args.out.glob("*.npz"))
        manifest["assets"].update({n: array_checksums(read_npz(args.out / n)) for n in names})
        args.manifest.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{args.manifest}: recorded {', '.join(names)}")
        return 0
    return 0 if check(args.out, manifest, list(built) or list(manifest["assets"])) else 1


if __name__ == "__main__":
    sys.exit(main())
