"""Datasets as uint8 arrays (:mod:`.datasets`) and the batched on-device loader with whole-batch augmentation
(:mod:`.loader`).

Imports :mod:`noisysam.core` and :mod:`noisysam.noise`.
"""

from noisysam.data.datasets import ImageDataset, NoisyDataset, load_dataset
from noisysam.data.loader import DEVICE, Loader, check_device, crop_flip, random_crop_flip
from noisysam.core.assets import find_data_file

# noisysam 0.2's names, kept outside __all__
from noisysam.data.datasets import Layout

__all__ = ["ImageDataset", "NoisyDataset", "load_dataset", "DEVICE", "Loader", "check_device", "crop_flip",
           "random_crop_flip", "find_data_file"]
