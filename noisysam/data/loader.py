"""The batched on-device loader: images held once on the training device as uint8, random crop (4-px zero
padding), horizontal flip and optional cutout done on whole batches with tensor ops, seeded per epoch
(the airbench way); the device names it accepts."""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from noisysam.core.params import ArrayLike, Boolean, InstanceOf, Interval, Options, Text, validate_params

__all__ = ["DEVICE", "Loader", "channel_stats", "check_device", "crop_flip", "random_crop_flip"]


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


@validate_params(dict(images=ArrayLike(), labels=ArrayLike(), batch_size=Interval(int, 1), shuffle=Boolean(),
                     augment=Boolean(), padding_mode=Options(("constant", "reflect")), cutout=Interval(int, 0),
                     mean=[ArrayLike(), None], std=[ArrayLike(), None],
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
                 *, batch_size: int, shuffle: bool = True, augment: bool = True, padding_mode: str = "constant",
                 cutout: int = 0,
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
        self.padding_mode = padding_mode
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
                x = crop_flip(x, offsets[sl], flips[sl], self.PADDING, mode=self.padding_mode)
            x = self._normalised(x)
            if self.augment and self.cutout:
                x = x.masked_fill(self._cutout_mask(centres[start:start + idx.shape[0]], rows_h, cols_w), 0.0)
            yield self._layout(x), self.labels[idx], idx

    def augmented(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random view of each image at ``rows`` (positions in ``images``), whatever ``augment`` says: a crop
        of the 4-px padded image (``padding_mode``) and a horizontal flip with probability 1/2, normalised, for a
        method that draws its own views (DivideMix's two per image). Draws from the CPU ``generator``: offsets
        ``randint(0, 9, (B, 2))``, then flips ``rand(B) < 0.5``."""
        n = rows.shape[0]
        offsets = torch.randint(0, 2 * self.PADDING + 1, (n, 2), generator=generator).to(self.device)
        flips = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        x = crop_flip(self.images[rows.to(self.device)], offsets, flips, self.PADDING, mode=self.padding_mode)
        return self._layout(self._normalised(x))

    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255) - self._mean).div_(self._std)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

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


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the [0, 1] scale of uint8 images (N, H, W, C): what a :class:`Loader` over them
    normalises with by default."""
    return _channel_stats(torch.as_tensor(images).permute(0, 3, 1, 2))


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
