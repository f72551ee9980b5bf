"""A run's data, two ways in: datasets as uint8 arrays (:mod:`.datasets`) batched on the device with whole-batch
augmentation (:mod:`.loader`), and any pair of map-style torch datasets streamed through a DataLoader
(:mod:`.streaming`); both yield (x, y_noisy, index).

Imports :mod:`noisysam.core` and :mod:`noisysam.noise`.
"""

from noisysam.core.deprecation import moved_names
from noisysam.data.datasets import ImageDataset, NoisyDataset, load_dataset
from noisysam.data.loader import DEVICE, Loader, channel_stats, check_device, crop_flip, random_crop_flip
from noisysam.data.streaming import DatasetLoader, DatasetPair, dataset_labels
from noisysam.core.assets import find_data_file

# noisysam 0.2's names that live in a module of this package now: deprecated aliases until 0.3.0
__getattr__ = moved_names(__name__, {"Layout": "noisysam.data.datasets"})

__all__ = ["ImageDataset", "NoisyDataset", "load_dataset", "DEVICE", "Loader", "channel_stats", "check_device",
           "crop_flip", "random_crop_flip", "find_data_file", "DatasetLoader", "DatasetPair", "dataset_labels"]
