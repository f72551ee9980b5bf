"""Every random stream of noisysam that comes from a run's seed, by purpose: :func:`derive_seed` mixes the seed with
the purpose (and the stage, epoch, ... it needs), so each use draws from a stream of its own and adding a use never
shifts another. The purposes are declared here, in one table, so that a new use (in run or a layer above it) takes a
number no other use has.
"""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed", "SPLIT", "INIT", "LOADER", "STEP", "TORCH", "THRESHOLD_SAMPLES", "PURPOSES"]


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for one purpose, mixed from the run's seed and integer keys (stage, epoch, ...)."""
    state = np.random.SeedSequence((seed, *keys)).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


# The run loop's purposes (noisysam.run.loop): the validation split, the networks' initial weights, the loader's
# order and augmentation, a step's draws (mixup, random-sam), torch's global stream (dropout).
SPLIT, INIT, LOADER, STEP, TORCH = range(5)
#: Detection's threshold samples (noisysam.detect.threshold): which training rows become the fake class.
THRESHOLD_SAMPLES = 100

#: Every purpose by name (distinct numbers; tests/test_one_place.py checks).
PURPOSES = dict(split=SPLIT, init=INIT, loader=LOADER, step=STEP, torch=TORCH, threshold_samples=THRESHOLD_SAMPLES)
