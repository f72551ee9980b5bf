"""Any map-style torch ``Dataset`` of (image, label) as a run's data: the second way in beside the in-memory arrays of
:mod:`.datasets`. The images stream through torch's ``DataLoader`` (workers, the dataset's own transform: any image
size, any augmentation, data that does not fit in memory); the labels are the run's (noisy) ones, looked up by row,
so every batch is ``(x, y, idx)`` as :class:`~noisysam.data.loader.Loader`'s and per-sample state keeps working.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from noisysam.core.params import ArrayLike, Boolean, InstanceOf, Interval, Text, validate_params
from noisysam.data.loader import DEVICE

__all__ = ["DatasetPair", "DatasetLoader", "dataset_labels"]

_DATASET = InstanceOf(Dataset, description="a map-style torch.utils.data.Dataset")


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The labels of a map-style dataset of (image, label), int64: its ``targets`` (torchvision's datasets), the label
    tensor of a ``TensorDataset``, a ``Subset``'s share of its parent's, or else every item's second element (which
    loads every image once)."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if hasattr(dataset, "targets"):
        own: Any = dataset.targets
    elif isinstance(dataset, TensorDataset):
        own = dataset.tensors[1]
    else:
        own = [dataset[i][1] for i in range(len(dataset))]  # type: ignore[arg-type]
    labels = torch.as_tensor(own).cpu().numpy().ravel()
    if labels.dtype.kind not in "iu":
        raise ValueError(f"the dataset's labels must be integers (class indices), got {labels.dtype}")
    return labels.astype(np.int64)


@validate_params(dict(train=_DATASET, test=_DATASET, train_eval=[_DATASET, None], name=[Text(), None]))
@dataclass
class DatasetPair:
    """A training and a clean test set, map-style torch datasets of (image, label), as a run's data: what
    ``noisysam.train(dataset=(train, test))`` makes of the pair. ``train_eval``: the training images as the test set
    transforms them, for the per-epoch evaluation of the training split (memorisation, the dynamics detection reads)
    without the training augmentation (default: ``train`` itself). Images must come out of the dataset as tensors of
    one size per batch (give it a transform that makes them: any size goes in); uint8 tensors are scaled to [0, 1].
    Offers what a run reads of an :class:`~noisysam.data.datasets.ImageDataset`: ``name``, ``y_train``, ``y_test``,
    ``classes``, ``num_classes``, ``train_index`` (None)."""

    train: Dataset
    test: Dataset
    train_eval: Optional[Dataset] = None
    name: Optional[str] = None

    def __post_init__(self) -> None:
        self.name = self.name or type(self.train).__name__
        self.y_train, self.y_test = dataset_labels(self.train), dataset_labels(self.test)
        if self.train_eval is not None and not np.array_equal(dataset_labels(self.train_eval), self.y_train):
            raise ValueError("train_eval must hold the training images in the training set's order, with its labels")
        named = getattr(self.train, "classes", None)
        count = max((int(y.max()) + 1 for y in (self.y_train, self.y_test) if y.size), default=0)
        self.classes = [str(c) for c in named] if named is not None else [str(c) for c in range(count)]
        for split, y in (("train", self.y_train), ("test", self.y_test)):
            if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
                raise ValueError(f"the {split} set's labels must lie in [0, {len(self.classes)}), got values in "
                                 f"[{y.min()}, {y.max()}]")
        self.train_index = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class _Rows(Dataset):
    """Row r of ``dataset``'s rows ``rows`` as (image, labels[r], r)."""

    def __init__(self, dataset: Dataset, rows: np.ndarray, labels: torch.Tensor) -> None:
        self.dataset, self.rows, self.labels = dataset, rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, r: int) -> tuple[Any, torch.Tensor, int]:
        return self.dataset[int(self.rows[r])][0], self.labels[r], r


@validate_params(dict(dataset=_DATASET, labels=ArrayLike(), rows=[ArrayLike(), None], batch_size=Interval(int, 1),
                      shuffle=Boolean(), seed=Interval(int, 0), workers=Interval(int, 0), channels_last=Boolean(),
                      device=[DEVICE, InstanceOf(torch.device, description="a torch.device")]))
class DatasetLoader:
    """Batches ``(x, y, idx)`` of the items ``rows`` of a map-style ``dataset`` (default: all), through torch's
    ``DataLoader``: ``x`` the images as the dataset makes them (its transform; uint8 tensors scaled to [0, 1]),
    moved to ``device``; ``y`` the given ``labels`` (one per row); ``idx`` the row (0..len(rows) - 1).

    The order comes from a generator seeded from ``(seed, epoch)`` (call :meth:`set_epoch`), and so does each
    worker's seed, so a transform drawing from torch's random generator repeats with the epoch, with
    ``workers`` > 0 as with 0 (in the main process it draws from the global generator, which the trainer seeds
    per epoch). Offers :class:`~noisysam.data.loader.Loader`'s interface to the trainer."""

    def __init__(self, dataset: Dataset, labels: Union[np.ndarray, Sequence[int], torch.Tensor], *,
                 rows: Union[np.ndarray, Sequence[int], torch.Tensor, None] = None, batch_size: int,
                 shuffle: bool = True, seed: int = 0, device: Union[str, torch.device] = "cpu", workers: int = 0,
                 channels_last: bool = False) -> None:
        rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)  # type: ignore[arg-type]
        labels = torch.as_tensor(np.array(labels) if isinstance(labels, np.ndarray) else labels)
        if labels.ndim != 1 or labels.shape[0] != rows.shape[0] or labels.is_floating_point():
            raise ValueError(f"labels must be {rows.shape[0]} integers (one per row), got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        self.dataset, self.rows = dataset, rows
        self.device = torch.device(device)
        self.labels = labels.to(self.device, torch.int64)
        self._labels = labels.to(torch.int64)  # served by the workers, moved with each batch
        self.batch_size, self.shuffle, self.seed, self.workers = batch_size, shuffle, int(seed), workers
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        state = np.random.SeedSequence((self.seed, self.epoch)).generate_state(1, dtype=np.uint64)[0]
        gen = torch.Generator().manual_seed(int(state))
        n = len(self.rows)
        order = torch.randperm(n, generator=gen).tolist() if self.shuffle else list(range(n))
        loader = DataLoader(_Rows(self.dataset, self.rows, self._labels), batch_size=self.batch_size, sampler=order,
                            num_workers=self.workers, generator=gen, pin_memory=self.device.type == "cuda")
        batches = iter(loader)
        while True:
            try:
                x, y, idx = next(batches)
            except StopIteration:
                return
            except (RuntimeError, TypeError) as e:
                if "equal size" not in str(e) and "default_collate" not in str(e):
                    raise  # the dataset's own failure, not collate's: PIL images or tensors of several sizes
                raise ValueError(f"the dataset's images cannot be batched ({str(e).strip().splitlines()[0]}): give it a "
                                 "transform that makes tensors of one size, e.g. torchvision.transforms.v2's "
                                 "Compose([Resize((32, 32)), ToImage(), ToDtype(torch.float32, scale=True)])") from None
            yield self._batch(x), y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)

    def augmented(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A view of each image at ``rows`` (positions among this loader's rows) as the dataset makes it again: its
        transform's random augmentation, drawn from torch's generator seeded from ``generator`` (one draw), so the
        views repeat with it. For a method that draws its own views (DivideMix's two per image)."""
        seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            images = [torch.as_tensor(self.dataset[int(self.rows[r])][0]) for r in rows.tolist()]
        if not images:  # an empty batch of the images' shape
            return self._batch(torch.as_tensor(self.dataset[int(self.rows[0])][0])[None][:0])
        return self._batch(torch.stack(images))

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x
