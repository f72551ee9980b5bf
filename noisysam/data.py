"""Datasets as uint8 arrays, a wrapper that attaches noisy labels, and the batched on-device loader.

- :func:`load_dataset`: the embedded CIFAR-10 subset, torchvision's CIFAR-10/100 (Krizhevsky 2009),
  your own ``.npz`` or an ``ImageFolder`` directory, all as one :class:`ImageDataset`.
- :class:`NoisyDataset`: any map-style dataset of (image, label) -> (image, noisy_label, index).
- :class:`Loader`: images held once on the training device as uint8; random crop (4-px zero padding),
  horizontal flip and optional cutout done on whole batches with tensor ops; seeded per epoch.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from noisysam.files import FileFormatError, NpzArrays
from noisysam.noise import MAX_CLASSES
from noisysam.params import ArrayLike, Boolean, InstanceOf, Interval, PathLike, Text, validate_params

if TYPE_CHECKING:
    from .noise import NoisyLabels

__all__ = ["ImageDataset", "Loader", "NoisyDataset", "find_data_file", "load_dataset"]

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

#: A torch device by name (TrainConfig adds "auto").
DEVICE = Text(r"(cpu|mps|cuda)(:\d+)?", "'cpu', 'mps' or 'cuda[:N]'")


def check_device(device: str) -> None:
    """ValueError naming ``device`` (a :data:`DEVICE` name) when this machine or this build of torch lacks it:
    CUDA without a GPU or with no GPU of that index, MPS (Apple's Metal) where torch has none; bad input, found
    before anything is written rather than as torch's RuntimeError in the middle of a run."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        if index and int(index) >= count:
            raise ValueError(f"device {device!r} asked for, but this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    elif kind == "mps":
        if not torch.backends.mps.is_available():
            where = "this machine has no MPS device" if torch.backends.mps.is_built() else "this build of torch lacks MPS"
            raise ValueError(f"device {device!r} asked for, but {where}; use cpu or cuda")
        if index and int(index) != 0:
            raise ValueError(f"device {device!r} asked for, but MPS has one device, mps:0")


def find_data_file(name: str) -> Path:
    """Path of a file shipped in the project's ``data/``. Looked for in ``$NOISYSAM_DATA``; the repository's
    ``data/`` next to the package (a checkout or an editable install); then where a non-editable install put
    it (``setup.cfg``'s ``data_files``, ``share/noisysam/data`` under the install prefix): the location the
    installed distribution's RECORD names (any prefix: ``--prefix``, Debian's ``/usr/local``, ...), the
    interpreter's data path, ``<sys.prefix>``, the folder above the package (``pip install --target``) and
    the user base (``pip install --user``)."""
    places = [Path(os.environ["NOISYSAM_DATA"])] if os.environ.get("NOISYSAM_DATA") else []
    package_parent = Path(__file__).resolve().parent.parent
    places += [package_parent / "data", *_recorded_data_dirs()]
    places += [Path(base) / "share" / "noisysam" / "data"
               for base in (sysconfig.get_path("data"), sys.prefix, package_parent, site.getuserbase())]
    places = list(dict.fromkeys(places))  # first occurrence wins; the error lists each place once
    for place in places:
        if (place / name).is_file():
            return place / name
    raise FileNotFoundError(f"data file {name!r} not found; looked in: {', '.join(map(str, places))} "
                            "(set NOISYSAM_DATA to the folder holding it)")


def _recorded_data_dirs() -> list[Path]:
    """Folders of the ``share/noisysam/data`` files listed in the installed distribution's RECORD."""
    try:
        dist = importlib.metadata.distribution("noisysam")
        files = dist.files or []
    except Exception:  # not installed, or unreadable metadata: the other places still apply
        return []
    dirs = [Path(dist.locate_file(f)).parent for f in files if tuple(f.parts[-4:-1]) == ("share", "noisysam", "data")]
    return [d.resolve() for d in dict.fromkeys(dirs)]


@validate_params(dict(name=Text(), x_train=InstanceOf(np.ndarray, description="a numpy array"),
                     y_train=ArrayLike(), x_test=InstanceOf(np.ndarray, description="a numpy array"),
                     y_test=ArrayLike(), classes=ArrayLike(), train_index=[ArrayLike(), None]))
@dataclass
class ImageDataset:
    """Images and labels of one dataset. ``x_*``: uint8 (N, H, W, C); ``y_*``: int64 (N,) in
    [0, len(classes)); ``train_index``: where known, each training image's position in torchvision's
    CIFAR-10 training set (what :func:`noisysam.noise.cifar10n` needs), else None."""

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

@validate_params(dict(name_or_path=PathLike(), root=[PathLike(), None], download=Boolean()))
def load_dataset(name_or_path: Union[str, os.PathLike], root: Union[str, os.PathLike, None] = None,
                 download: bool = False) -> ImageDataset:
    """Load ``"cifar10-mini"`` (embedded real CIFAR-10 subset, offline), ``"cifar10"`` / ``"cifar100"``
    (torchvision, from ``root``, default ``~/.cache/noisysam``; ``download=True`` fetches them), a ``.npz``
    file, or a folder in ``ImageFolder`` layout (``train/<class>/*.png``, ``test/<class>/*.png``).

    torchvision stores CIFAR as Python pickles and unpickles them: only point ``root`` at files you trust.
    """
    name = str(name_or_path)
    if name == "cifar10-mini":
        dataset = _load_npz(find_data_file("cifar10-mini.npz"))
        dataset.name = name
        return dataset
    if name in ("cifar10", "cifar100"):
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

    The dataset's own labels are read from ``.targets`` (torchvision), the label tensor of a
    ``TensorDataset``, or else by indexing every item once, and must equal ``noisy_labels.clean``.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, noisy_labels: "NoisyLabels") -> None:
        if len(dataset) != len(noisy_labels):  # type: ignore[arg-type]
            raise ValueError(f"dataset has {len(dataset)} items but noisy_labels has {len(noisy_labels)}")  # type: ignore[arg-type]
        if hasattr(dataset, "targets"):
            own = dataset.targets
        elif isinstance(dataset, torch.utils.data.TensorDataset):
            own = dataset.tensors[1]
        else:
            own = [dataset[i][1] for i in range(len(dataset))]  # type: ignore[arg-type]
        own = torch.as_tensor(own).cpu().numpy().astype(np.int64).ravel()
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


# ----------------------------------------------------------------------------------------------- Loader

@validate_params(dict(images=ArrayLike(), labels=ArrayLike(), batch_size=Interval(int, 1), shuffle=Boolean(),
                     augment=Boolean(), cutout=Interval(int, 0), mean=[ArrayLike(), None], std=[ArrayLike(), None],
                     device=[DEVICE, InstanceOf(torch.device, description="a torch.device")], seed=Interval(int, 0),
                     drop_last=Boolean(), channels_last=Boolean()))
class Loader:
    """Batches ``(x, y, idx)`` from images held once on ``device`` as uint8, augmented there.

    ``images``: uint8 (N, H, W, C), numpy or tensor; ``labels``: (N,) integers. Each batch: ``x`` float32
    (B, C, H, W), normalised with per-channel ``mean``/``std`` (on the [0, 1] scale; default: computed from
    ``images``); ``y`` int64; ``idx`` int64 row positions in ``images``. With ``augment``: random crop of a
    4-px zero-padded image (zero = black, padded before normalisation, as torchvision's
    ``RandomCrop(padding=4)`` before ``Normalize``), horizontal flip with probability 1/2, and if
    ``cutout > 0`` one ``cutout`` x ``cutout`` square (centre uniform over the image, clipped at the border)
    set to 0 after normalisation, i.e. to the mean colour (DeVries & Taylor 2017, arXiv 1708.04552).

    Randomness (order and augmentation) comes from a CPU generator seeded from ``(seed, epoch)``: call
    :meth:`set_epoch` before each epoch; the same (seed, epoch) gives the same batches, so a resumed run
    continues identically. Iterating twice without ``set_epoch`` repeats the epoch.
    """

    PADDING = 4

    def __init__(self, images: Union[np.ndarray, torch.Tensor], labels: Union[np.ndarray, torch.Tensor, Sequence[int]],
                 *, batch_size: int, shuffle: bool = True, augment: bool = True, cutout: int = 0,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 device: Union[str, torch.device] = "cpu", seed: int = 0, drop_last: bool = False,
                 channels_last: bool = False) -> None:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 of shape (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
        # Arrays are copied (labels are small): NoisyLabels' read-only arrays can't be wrapped without a warning.
        labels = torch.as_tensor(np.array(labels) if isinstance(labels, np.ndarray) else labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ValueError(f"labels must be {images.shape[0]} integers, got {labels.dtype} {tuple(labels.shape)}")
        self.device = torch.device(device)
        self.images = images.to(self.device).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
        self.labels = labels.to(self.device, torch.int64)
        channels = self.images.shape[1]
        auto_mean, auto_std = _channel_stats(self.images) if mean is None or std is None else (mean, std)
        self.mean = tuple(float(v) for v in (auto_mean if mean is None else mean))
        self.std = tuple(float(v) for v in (auto_std if std is None else std))
        if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
            raise ValueError(f"mean and std need {channels} values each, std > 0; got mean={self.mean}, std={self.std}")
        self.batch_size, self.shuffle, self.augment, self.cutout = batch_size, shuffle, augment, cutout
        self.seed, self.drop_last, self.channels_last = int(seed), drop_last, channels_last
        self.epoch = 0
        self._mean = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n, _, h, w = self.images.shape
        # One CPU generator per (seed, epoch), mixed by SeedSequence: identical draws on every device.
        state = np.random.SeedSequence((self.seed, self.epoch)).generate_state(1, dtype=np.uint64)[0]
        gen = torch.Generator().manual_seed(int(state))
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        pad = self.PADDING
        if self.augment:
            offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).to(self.device)
            flips = (torch.rand(n, generator=gen) < 0.5).to(self.device)
            centres = torch.stack([torch.randint(0, h, (n,), generator=gen),
                                   torch.randint(0, w, (n,), generator=gen)], 1).to(self.device)
        order = order.to(self.device)
        rows_h, cols_w = torch.arange(h, device=self.device), torch.arange(w, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx]
            if self.augment:
                sl = slice(start, start + idx.shape[0])
                x = crop_flip(x, offsets[sl], flips[sl], self.PADDING)
            x = (x.float().div_(255) - self._mean).div_(self._std)
            if self.augment and self.cutout:
                x = x.masked_fill(self._cutout_mask(centres[start:start + idx.shape[0]], rows_h, cols_w), 0.0)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx], idx

    def _cutout_mask(self, centres: torch.Tensor, rows_h: torch.Tensor, cols_w: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) bool mask, True inside each sample's cutout square [c - s//2, c - s//2 + s)."""
        lo = centres - self.cutout // 2
        inside_r = (rows_h[None, :] >= lo[:, :1]) & (rows_h[None, :] < lo[:, :1] + self.cutout)
        inside_c = (cols_w[None, :] >= lo[:, 1:]) & (cols_w[None, :] < lo[:, 1:] + self.cutout)
        return (inside_r[:, :, None] & inside_c[:, None, :]).unsqueeze(1)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int,
              mode: str = "constant") -> torch.Tensor:
    """Per-sample crop of the batch ``x`` (B, C, H, W) padded by ``padding`` pixels (``mode`` as
    ``torch.nn.functional.pad``: "constant" pads zeros, "reflect" mirrors), flipped horizontally where ``flips``
    (B,) is True, in one gather; ``offsets`` (B, 2) are each crop's top-left corner in the padded image.
    Equivalent to ``for b: out[b] = padded[b, :, oy:oy+H, ox:ox+W]``, then ``out[b].flip(-1)`` if ``flips[b]``."""
    _, _, h, w = x.shape
    rows_h, cols_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    padded = F.pad(x, (padding,) * 4, mode=mode)
    cols = torch.where(flips[:, None], cols_w.flip(0)[None, :], cols_w[None, :])
    rows = offsets[:, :1] + rows_h[None, :]          # (B, H)
    cols = offsets[:, 1:] + cols                     # (B, W)
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """One random view of each image of a normalised batch: a crop of the ``padding``-px reflect-padded image and a
    horizontal flip with probability 1/2 (reflect padding needs no mean colour); draws from the CPU ``generator``:
    offsets ``randint(0, 2 * padding + 1, (B, 2))``, then flips ``rand(B) < 0.5``."""
    offsets = torch.randint(0, 2 * padding + 1, (x.shape[0], 2), generator=generator).to(x.device)
    flips = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return crop_flip(x, offsets, flips, padding, mode="reflect")


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and (population) std on the [0, 1] scale of uint8 (N, C, H, W) images, from
    a 256-bin histogram per channel (no float copy of the whole dataset); a constant channel gets std 1."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).cpu().double()
        p = counts / counts.sum()
        mean = float((p * values).sum())
        means.append(mean)
        stds.append(math.sqrt(max(float((p * values**2).sum()) - mean**2, 0.0)) or 1.0)
    return means, stds
