"""The SAM paper's label-noise table (Foret et al., arXiv 2010.01412, Table 4): its noise rates, its methods in its
row order, its numbers and the rows it quotes from the literature. Data only: the grid that reproduces it
(:mod:`.cells`), the table of a grid (:mod:`.table`) and its rendering (:mod:`.render`) read it.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

#: Noise rates of the paper's table.
PAPER_RATES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

#: The paper's five methods, in its row order (noisysam method names).
PAPER_METHODS: tuple[str, ...] = ("sgd", "mixup", "bootstrap-mixup", "sam", "bootstrap-sam")

#: Table 4 of the SAM paper: clean-test accuracy (%) of ResNet-32 on CIFAR-10 at 20/40/60/80% symmetric
#: noise, 200 epochs. The paper does not say which epoch it reports; SGD's 26.2 at 80% (far below the best-epoch
#: figures of ASAM's Table 6, Kwon et al., arXiv 2102.11600) points to the last one.
PAPER_TABLE4: dict[str, tuple[float, ...]] = {
    "sgd": (84.8, 68.8, 48.2, 26.2),
    "mixup": (93.0, 90.0, 83.8, 70.2),
    "bootstrap-mixup": (93.3, 92.0, 87.6, 72.0),
    "sam": (95.1, 93.4, 90.5, 77.9),
    "bootstrap-sam": (95.4, 94.2, 91.8, 79.9),
}

#: Rows of the same table that the paper quotes from the literature (not reproduced here).
LITERATURE_TABLE4: dict[str, tuple[float, ...]] = {
    "MentorMix (Jiang et al. 2020)": (95.6, 94.2, 91.3, 81.0),
    "Arazo et al. 2019": (94.0, 92.8, 90.3, 74.1),
    "GCE (Zhang & Sabuncu 2018)": (89.7, 87.6, 82.7, 67.9),
    "MentorNet (Jiang et al. 2018)": (92.0, 91.2, 74.2, 60.0),
    "Mixup (literature)": (94.0, 91.5, 86.8, 76.9),
}


def paper_value(method: str, rate: float) -> Optional[float]:
    """The paper's Table 4 accuracy (%) for ``method`` at noise ``rate``, or None where it has none."""
    row = PAPER_TABLE4.get(method)
    for r, value in zip(PAPER_RATES, row or ()):
        if math.isclose(r, rate):
            return value
    return None


def _method_order(methods: Iterable[str]) -> list[str]:
    """``methods`` in the paper's row order, any other after them by name."""
    methods = set(methods)
    return [m for m in PAPER_METHODS if m in methods] + sorted(methods - set(PAPER_METHODS))
