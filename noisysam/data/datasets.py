"""Datasets as uint8 arrays and a wrapper that attaches noisy labels.

- :func:`load_dataset`: the embedded CIFAR-10 subset, torchvision's CIFAR-10/100 (Krizhevsky 2009),
  your own ``.npz`` or an ``ImageFolder`` directory, all as one :class:`ImageDataset`.
- :class:`NoisyDataset`: any map-style dataset of (image, label) -> (image, noisy_label, index).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import numpy as np
import torch

from noisysam.core.assets import find_data_file
from noisysam.core.files import FileFormatError, NpzArrays
from noisysam.noise.labels import MAX_CLASSES
from noisysam.core.params import ArrayLike, Boolean, InstanceOf, PathLike, Text, validate_params
from noisysam.data.streaming import dataset_labels

if TYPE_CHECKING:
    from noisysam.noise.labels import NoisyLabels

__all__ = ["ImageDataset", "NoisyDataset", "load_dataset"]

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

@validate_params(dict(name=Text(), x_train=InstanceOf(np.ndarray, description="a numpy array"),
                     y_train=ArrayLike(), x_test=InstanceOf(np.ndarray, description="a numpy array"),
                     y_test=ArrayLike(), classes=ArrayLike(), train_index=[ArrayLike(), None]))
@dataclass
class ImageDataset:
    """Images and labels of one dataset. ``x_*``: uint8 (N, H, W, C); ``y_*``: int64 (N,) in
    [0, len(classes)); ``train_index``: where known, each training image's position in torchvision's
    CIFAR-10 training set (what :func:`noisysam.noise.labels.cifar10n` needs), else None."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    train_index: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            if not isinstance(x, np.ndarray):
                raise ValueError(f"x_{split} must be a uint8 numpy array of shape (N, H, W, C), got {type(x).__name__}")
        arrays = {k: np.asarray(getattr(self, k)) for k in ("y_train", "y_test")}
        if self.train_index is not None:
            arrays["train_index"] = np.asarray(self.train_index)
        _check_layout({k: (a.shape, a.dtype) for k, a in {**arrays, "x_train": self.x_train, "x_test": self.x_test}.items()})
        _check_num_classes(len(self.classes))
        self.classes = [str(c) for c in self.classes]
        for split in ("train", "test"):
            y = arrays[f"y_{split}"]
            if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
                raise ValueError(f"y_{split} must lie in [0, {len(self.classes)}) (one per class name), "
                                 f"got values in [{y.min()}, {y.max()}]")
            setattr(self, f"y_{split}", y.astype(np.int64, copy=False))
        if self.train_index is not None:
            self.train_index = arrays["train_index"].astype(np.int64, copy=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


Layout = Mapping[str, tuple[tuple[int, ...], np.dtype]]


def _check_layout(layout: Layout) -> None:
    """Shapes and dtypes of a dataset's arrays (``name -> (shape, dtype)``): x_train/x_test uint8 (N, H, W, C) of
    one image size, y_train/y_test N integers, train_index (if present) N_train integers. Checked on an
    ImageDataset's arrays and, before anything is decompressed, on an .npz's headers."""
    for split in ("train", "test"):
        (x_shape, x_dtype), (y_shape, y_dtype) = layout[f"x_{split}"], layout[f"y_{split}"]
        if x_dtype != np.uint8:
            raise ValueError(f"x_{split} must be uint8 (pixel values 0..255), got {x_dtype}; "
                             "convert floats in [0, 1] with (x * 255).round().astype(np.uint8)")
        if len(x_shape) != 4:
            raise ValueError(f"x_{split} must have shape (N, H, W, C) (in an .npz also (N, H, W) or (N, C, H, W)), "
                             f"got {x_shape}")
        if len(y_shape) != 1 or y_dtype.kind not in "iu" or y_shape[0] != x_shape[0]:
            raise ValueError(f"y_{split} must be {x_shape[0]} integer labels, got {y_dtype} {y_shape}")
    train, test = layout["x_train"][0][1:], layout["x_test"][0][1:]
    if train != test:
        raise ValueError(f"train and test images differ in shape: {train} vs {test}")
    if "train_index" in layout:
        shape, dtype = layout["train_index"]
        if shape != layout["y_train"][0] or dtype.kind not in "iu":
            raise ValueError(f"train_index must be {layout['y_train'][0][0]} integers, got {dtype} {shape}")


def _check_num_classes(num_classes: int) -> None:
    if num_classes > MAX_CLASSES:
        raise ValueError(f"a dataset may have at most {MAX_CLASSES} classes (noisysam keeps dense classes x classes "
                         f"matrices), got {num_classes}")


# -------------------------------------------------------------------------------------------- loading

#: The datasets noisysam knows by name (anything else given as a dataset is the path of a .npz file or an image folder).
DATASET_NAMES = ("cifar10-mini", "cifar10", "cifar100")


@validate_params(dict(name_or_path=PathLike(), root=[PathLike(), None], download=Boolean()))
def load_dataset(name_or_path: Union[str, os.PathLike], root: Union[str, os.PathLike, None] = None,
                 download: bool = False) -> ImageDataset:
    """Load ``"cifar10-mini"`` (embedded real CIFAR-10 subset, offline), ``"cifar10"`` / ``"cifar100"``
    (torchvision, from ``root``, default ``~/.cache/noisysam``; ``download=True`` fetches them), a ``.npz``
    file, or a folder in ``ImageFolder`` layout (``train/<class>/*.png``, ``test/<class>/*.png``).

    torchvision stores CIFAR as Python pickles and unpickles them: only point ``root`` at files you trust.
    """
    name = str(name_or_path)
    if name == DATASET_NAMES[0]:
        dataset = _load_npz(find_data_file("cifar10-mini.npz"))
        dataset.name = name
        return dataset
    if name in DATASET_NAMES[1:]:
        return _load_cifar(name, Path(root).expanduser() if root else Path.home() / ".cache" / "noisysam", download)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path)
    if path.is_dir():
        return _load_folder(path)
    raise ValueError(f"dataset must be 'cifar10-mini', 'cifar10', 'cifar100', an existing .npz file or an "
                     f"ImageFolder directory, got {name!r}" + ("" if path.exists() else " (no such path)"))


def _load_cifar(name: str, root: Path, download: bool) -> ImageDataset:
    """torchvision's CIFAR-10/100 as arrays. For CIFAR-10, ``train_index`` is 0..N-1: the loaded
    training set *is* torchvision's order, which CIFAR-10N indexes."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root / cls.base_folder
    if not download and not folder.is_dir():
        raise FileNotFoundError(
            f"{name} not found: looked for {folder}. Pass download=True (CLI: --download) to fetch it "
            f"into {root}, or download the python version from {_CIFAR_URL} and extract "
            f"'{cls.base_folder}' under {root}")
    try:
        train, test = (cls(str(root), train=split, download=download) for split in (True, False))
    except RuntimeError as e:  # torchvision's md5 check of every file failed
        raise RuntimeError(f"{name} under {folder} is incomplete or corrupted ({e}); delete the folder "
                           "and pass download=True, or re-extract the official archive") from None
    except OSError as e:  # download=True without network (URLError is an OSError)
        raise RuntimeError(f"could not download {name} into {root}: {e}; download the python version from "
                           f"{_CIFAR_URL} and extract '{cls.base_folder}' under {root}") from None
    return ImageDataset(
        name=name,
        x_train=np.asarray(train.data, dtype=np.uint8), y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=np.asarray(test.data, dtype=np.uint8), y_test=np.asarray(test.targets, dtype=np.int64),
        classes=list(train.classes),
        train_index=np.arange(len(train.targets), dtype=np.int64) if name == "cifar10" else None,
    )


def _nhwc_shape(shape: tuple[int, ...]) -> tuple[tuple[int, ...], Optional[tuple[int, ...]]]:
    """Images of ``shape`` as (N, H, W, C), and the transpose that gets them there (None: a reshape). (N, H, W)
    grayscale gains a channel axis; (N, C, H, W) with C in {1, 3} and W not in {1, 3} is transposed to
    channels-last; anything else 4-D is taken as (N, H, W, C); other ranks are returned as they are."""
    if len(shape) == 3:
        return (*shape, 1), None
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        return (shape[0], shape[2], shape[3], shape[1]), (0, 2, 3, 1)
    return tuple(shape), None


def _load_npz(path: Path) -> ImageDataset:
    """An .npz with x_train, y_train, x_test, y_test (+ optional classes, train_index); no pickles. Shapes and
    dtypes are checked from the .npy headers, and the class count from those and the labels, before any image
    is decompressed."""
    required = ("x_train", "y_train", "x_test", "y_test")
    with NpzArrays(path, "dataset .npz") as npz:
        headers = npz.headers
        missing = [k for k in required if k not in headers]
        if missing:
            raise npz.error(f"lacks {missing}; a dataset .npz needs {list(required)} (optional: classes, train_index)")
        layout = {k: h for k, h in headers.items() if k in required + ("train_index",)}
        layout.update({k: (_nhwc_shape(headers[k].shape)[0], headers[k].dtype) for k in ("x_train", "x_test")})
        try:
            _check_layout(layout)
            arrays = {k: npz.read(k) for k in ("y_train", "y_test")}
            if "classes" in headers:
                shape, dtype = headers["classes"]
                if len(shape) != 1 or dtype.kind not in "USiu" or dtype.itemsize > 4 * 256:
                    raise ValueError(f"classes must be a 1-D array of names (at most 256 characters each) or "
                                     f"integers, got {dtype} {shape}")
                num_classes = shape[0]
            else:  # class names default to the labels 0..max
                num_classes = max((int(y.max()) + 1 for y in arrays.values() if y.size), default=0)
            _check_num_classes(num_classes)
            classes = list(npz.read("classes")) if "classes" in headers else list(range(num_classes))
            arrays.update({k: npz.read(k) for k in ("x_train", "x_test", "train_index") if k in headers})
            for key in ("x_train", "x_test"):
                arrays[key] = _images_nhwc(arrays[key])
            return ImageDataset(name=path.stem, classes=classes, **arrays)
        except FileFormatError:
            raise
        except ValueError as e:  # the file's content is the problem: name the file
            raise npz.error(str(e)) from None


def _images_nhwc(x: np.ndarray) -> np.ndarray:
    """``x`` as (N, H, W, C) by the rule of :func:`_nhwc_shape`."""
    shape, transpose = _nhwc_shape(x.shape)
    return np.ascontiguousarray(x.transpose(transpose)) if transpose else x.reshape(shape)


def _load_folder(path: Path) -> ImageDataset:
    """ImageFolder layout; images decoded once with PIL, converted to RGB; all must share one size.
    Test classes are matched to train classes by folder name."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    if not (path / "train").is_dir() or not (path / "test").is_dir():
        raise ValueError(f"{path} must contain train/ and test/ folders of class folders (ImageFolder layout)")
    train = ImageFolder(str(path / "train"))
    test = ImageFolder(str(path / "test"))
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        raise ValueError(f"{path / 'test'} has classes absent from train/: {unknown}")
    arrays: dict[str, np.ndarray] = {}
    size = None
    for split, folder in (("train", train), ("test", test)):
        images = []
        for file, _ in folder.samples:
            try:
                with Image.open(file) as img:
                    image = np.asarray(img.convert("RGB"), dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL's ways to fail on a file
                raise FileFormatError(file, f"damaged or not an image ({type(e).__name__}: {e})", "image") from None
            if size is None:
                size = image.shape[:2]
            elif image.shape[:2] != size:
                raise ValueError(f"all images must have one size: {file} is {image.shape[1]}x{image.shape[0]}, "
                                 f"expected {size[1]}x{size[0]} (width x height)")
            images.append(image)
        arrays[f"x_{split}"] = np.stack(images)
        arrays[f"y_{split}"] = np.array([train.class_to_idx[folder.classes[t]] for t in folder.targets], dtype=np.int64)
    return ImageDataset(name=path.name, classes=list(train.classes), **arrays)


# ---------------------------------------------------------------------------------------- NoisyDataset

class NoisyDataset(torch.utils.data.Dataset):
    """Wraps a map-style dataset of (image, label): item i is (image, noisy label, i).

    The dataset's own labels (:func:`~noisysam.data.streaming.dataset_labels`) must equal ``noisy_labels.clean``.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, noisy_labels: "NoisyLabels") -> None:
        if len(dataset) != len(noisy_labels):  # type: ignore[arg-type]
            raise ValueError(f"dataset has {len(dataset)} items but noisy_labels has {len(noisy_labels)}")  # type: ignore[arg-type]
        own = dataset_labels(dataset)
        wrong = int((own != noisy_labels.clean).sum())
        if wrong:
            raise ValueError(f"the dataset's labels differ from noisy_labels.clean at {wrong} of {own.size} items")
        self.dataset = dataset
        self.noisy_labels = noisy_labels

    @property
    def clean_targets(self) -> np.ndarray:
        return self.noisy_labels.clean

    @property
    def noisy_targets(self) -> np.ndarray:
        return self.noisy_labels.noisy

    def __len__(self) -> int:
        return len(self.noisy_labels)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        index = range(len(self))[index]  # negative indices; IndexError past the end
        return self.dataset[index][0], int(self.noisy_labels.noisy[index]), index
