"""Image classifiers by name: the paper's noisy-label model and common alternatives.

- ``resnet32``: He et al., "Deep Residual Learning for Image Recognition" (arXiv 1512.03385), the
  CIFAR variant of its Section 4.2: 3 stages x 5 basic blocks, widths 16/32/64, option A shortcuts
  (identity; stride-2 subsampling and zero-padded channels when the shape changes). 464,154
  parameters for 10 classes. This is the model of the SAM paper's label-noise table (its Table 4).
- ``preact_resnet18``: He et al., "Identity Mappings in Deep Residual Networks" (arXiv 1603.05027),
  the 18-layer pre-activation ResNet at CIFAR resolution, the usual noisy-label benchmark model.
- ``wrn28_10``: Zagoruyko & Komodakis, "Wide Residual Networks" (arXiv 1605.07146), depth 28,
  widen factor 10: the SAM paper's main CIFAR model.
- ``cnn5``: the plain reference's 5-conv CNN (two convolutions at each of the first two widths, one at the
  third), the CPU profile's model: what a practitioner's noisy-CIFAR script trains.
- ``cnn``: a plain 5-layer convolutional network of width ``w`` (conv widths w, 2w, 4w, 8w and a
  linear head, as in Nakkiran et al., "Deep Double Descent", arXiv 1912.02292): fast on a CPU
  and able to memorise noisy labels, so that SAM's effect shows in minutes.

Every model takes NCHW float input with ``in_channels`` channels (default 3; 1 for grayscale; the trainer
passes the data's count), in any memory format including channels_last, and works under ``torch.autocast``;
spatial size is free (global pooling before the classifier).
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from noisysam.core.params import InstanceOf, Interval, Options, Text, validate_params, validate_with
from noisysam.models import timm_models

__all__ = ["MODELS", "get_model", "ResNet32", "PreActResNet18", "WideResNet", "SimpleCNN", "PlainCNN"]


#: Every model option, declared once (noisysam.core.params): each model checks the ones its signature names.
MODEL_PARAMS = dict(
    num_classes=Interval(int, 2),
    in_channels=Interval(int, 1),
    blocks_per_stage=Interval(int, 1),
    depth=Interval(int, 10),  # and 6n + 4, checked by WideResNet
    widen=Interval(int, 1),
    dropout=Interval(float, 0, 1, closed="left"),
    width=Interval(int, 1),
    pool=Options(("max", "avg")),
)
_checked = validate_with(MODEL_PARAMS)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _kaiming_init(model: nn.Module) -> None:
    """He et al. 2015 normal init for convolutions (fan_out, ReLU gain), BN weight 1 / bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class _BasicBlockA(nn.Module):
    """Post-activation basic block (conv-BN-ReLU-conv-BN + shortcut, ReLU) with option A shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.pad = out_ch - in_ch  # option A: parameter-free shortcut, extra channels are zeros

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@_checked
class ResNet32(nn.Module):
    """CIFAR ResNet-32 of He et al. 2016 (Section 4.2, n = 5), option A shortcuts."""

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = _conv3x3(in_channels, 16)
        self.bn = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        in_ch = 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlockA(in_ch, width, stride))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.layers(out)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class _PreActBlock(nn.Module):
    """Pre-activation basic block (BN-ReLU-conv twice); 1x1 conv shortcut when the shape changes.

    ``dropout`` between the two convolutions is Wide ResNet's option (0 disables it).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection sees the pre-activated input (He et al. 2016b, Fig. 1b / full pre-activation).
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


class _PreActNet(nn.Module):
    """Stem conv, stages of pre-activation blocks, final BN-ReLU, global average pool, linear."""

    def __init__(
        self,
        stem_width: int,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        num_classes: int,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv = _conv3x3(in_channels, stem_width)
        layers: list[nn.Module] = []
        in_ch = stem_width
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_PreActBlock(in_ch, width, stride, dropout))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv(x))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@_checked
class PreActResNet18(_PreActNet):
    """Pre-activation ResNet-18 (He et al. 2016b) at CIFAR resolution: 4 stages x 2 blocks, 64..512."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(64, (64, 128, 256, 512), (2, 2, 2, 2), num_classes, in_channels=in_channels)


@_checked
class WideResNet(_PreActNet):
    """WRN-depth-k (Zagoruyko & Komodakis 2016): 3 stages of (depth - 4) / 6 blocks, widths 16k/32k/64k."""

    def __init__(
        self, num_classes: int = 10, depth: int = 28, widen: int = 10, dropout: float = 0.0, in_channels: int = 3
    ) -> None:
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        super().__init__(16, (16 * widen, 32 * widen, 64 * widen), (n, n, n), num_classes, dropout, in_channels)


@_checked
class SimpleCNN(nn.Module):
    """Plain 5-layer CNN of width w: conv-BN-ReLU at widths w, 2w, 4w, 8w, max-pools, global pool, linear.

    Input 32x32 -> 32 (w) -> 16 (2w) -> 8 (4w) -> 4 (8w) -> global ``pool`` ("max", Nakkiran et al.'s, or
    "avg") -> linear. Under the max pool the classifier sees large features, its weights take most of the
    gradient's norm and SAM's perturbation (the CPU profile uses "avg": docs/cpu-profile.md).
    """

    def __init__(self, num_classes: int = 10, width: int = 32, pool: str = "max", in_channels: int = 3) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width)
        layers: list[nn.Module] = []
        in_ch = in_channels
        for i, out_ch in enumerate(widths):
            layers += [_conv3x3(in_ch, out_ch), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = F.adaptive_max_pool2d if pool == "max" else F.adaptive_avg_pool2d
        self.fc = nn.Linear(in_ch, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x), 1), 1))


@_checked
class PlainCNN(nn.Module):
    """The plain reference's 5-conv CNN (``scripts/plain_reference.py``, the CPU profile's model): conv-BN-ReLU x2
    at width w, max-pool, x2 at 2w, max-pool, x1 at 4w, max-pool, global average pool, linear; convs without bias.
    PyTorch's default initialisation, as a plain script has. 141,034 parameters at w = 32 for 10 classes."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = in_channels
        for out_ch, pool in ((width, False), (width, True), (2 * width, False), (2 * width, True), (4 * width, True)):
            layers += [_conv3x3(in_ch, out_ch), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


@_checked
def wrn28_10(num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-28-10 (36.5M parameters for 10 classes)."""
    return WideResNet(num_classes, depth=28, widen=10, dropout=dropout, in_channels=in_channels)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet32": ResNet32,
    "preact_resnet18": PreActResNet18,
    "wrn28_10": wrn28_10,
    "cnn": SimpleCNN,
    "cnn5": PlainCNN,
}


#: A model name: one of :data:`MODELS`, or ``timm:<name>`` for any of timm's (:mod:`noisysam.models.timm_models`).
MODEL_NAME = [Options(MODELS), Text(r"timm:.+", "timm:<name> (any timm model)")]


@validate_params(dict(name=MODEL_NAME, num_classes=MODEL_PARAMS["num_classes"],
                     in_channels=MODEL_PARAMS["in_channels"],
                     image_size=[InstanceOf(tuple, list, description="(height, width)"), None]))
def get_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: Optional[Sequence[int]] = None,
              **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` for ``num_classes`` outputs from ``in_channels``-channel images
    (``image_size`` (H, W): for a timm model whose input size is fixed).

    Extra keyword arguments go to the constructor (e.g. ``width`` for ``cnn``; ``pretrained``, ``checkpoint`` and
    timm's own for ``timm:<name>``, :func:`noisysam.models.timm_models.create`). Every factory in :data:`MODELS`
    takes ``num_classes`` and ``in_channels``.
    """
    if name.startswith(timm_models.PREFIX):
        return timm_models.create(name[len(timm_models.PREFIX):], num_classes, in_channels, image_size, **kwargs)
    factory = MODELS[name]
    parameters = inspect.signature(factory).parameters
    accepted = set(parameters) - {"num_classes", "in_channels"}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(kwargs) - accepted)
    if unknown and not takes_any:
        raise ValueError(f"model {name!r} accepts options {sorted(accepted)}, got {unknown}")
    return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
