"""timm's networks (Wightman, "PyTorch Image Models", github.com/huggingface/pytorch-image-models) as noisysam
models: ``timm:<name>`` builds any timm architecture for the data's classes, channels and image size, through the
optional ``timm`` extra (``pip install 'noisysam[timm]'``), pretrained from a local file or timm's cache where you
have one; and what a model says of its inputs (the normalisation of its pretrained weights) and of its head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from torch import nn

__all__ = ["PREFIX", "create", "input_normalisation", "reset_classifier"]

#: Model names starting with this are timm's: ``timm:resnet18``, ``timm:vit_tiny_patch16_224``.
PREFIX = "timm:"


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ImportError("timm models need timm: pip install 'noisysam[timm]'") from None
    return timm


def create(name: str, num_classes: int, in_channels: int = 3, image_size: Optional[Sequence[int]] = None,
           pretrained: bool = False, checkpoint: Union[str, Path, None] = None, **options: Any) -> nn.Module:
    """``timm.create_model`` of ``name`` (without the ``timm:`` prefix) with a fresh ``num_classes`` head and
    ``in_channels`` input channels. ``pretrained``: its pretrained weights, from ``checkpoint`` (a local file of
    them) or else timm's cache (offline, set ``HF_HUB_OFFLINE=1``); timm drops the pretrained head and adapts the
    first convolution to ``in_channels``. A model whose pretrained config fixes its input size (a ViT) is built for
    ``image_size``. ``options`` go to the model's constructor (e.g. ``drop_rate``)."""
    timm = _timm()
    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        raise ValueError(f"timm has no model {name!r}; timm.list_models() lists them")
    if checkpoint is not None and not pretrained:
        raise ValueError(f"checkpoint {str(checkpoint)!r} is given but pretrained is false: pass pretrained=true")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ValueError(f"checkpoint {str(checkpoint)!r} is not a file")
    config = timm.get_pretrained_cfg(name)
    if image_size is not None and config is not None and getattr(config, "fixed_input_size", False):
        options.setdefault("img_size", tuple(image_size))
    overlay = dict(file=str(checkpoint)) if checkpoint is not None else None
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels,
                             pretrained_cfg_overlay=overlay, **options)


def _config(model: Union[str, nn.Module, None]) -> Any:
    if isinstance(model, nn.Module):
        return getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(model, str) and model.startswith(PREFIX):
        return _timm().get_pretrained_cfg(model[len(PREFIX):])
    return None


def input_normalisation(model: Union[str, nn.Module, None]) -> Optional[tuple[list[float], list[float]]]:
    """The per-channel (mean, std) a model's weights expect, from its pretrained config (timm's models have one: a
    ``timm:<name>`` or a timm model object), or None (noisysam's own models: normalise with the data's own)."""
    config = _config(model)
    if config is None:
        return None
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    mean, std = get("mean"), get("std")
    return (list(map(float, mean)), list(map(float, std))) if mean and std else None


def reset_classifier(model: nn.Module) -> None:
    """Draw a model's classifier head afresh from torch's generator, leaving the rest (a pretrained body) as it is:
    timm's ``get_classifier()`` where the model has it, else the last ``nn.Linear`` among its modules."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        head = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no classifier head to draw afresh (no get_classifier() and no "
                         "nn.Linear) for a second network; give a model with one")
    for module in head.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
