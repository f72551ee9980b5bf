"""Acting on a detection: the training set and labels to retrain on, its flagged labels dropped or relabelled."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from noisysam.data.datasets import ImageDataset
from noisysam.detect.record import _check, read_detection
from noisysam.noise.labels import NoisyLabels, int_sha256

#: How :func:`cleaned` acts on the flagged labels.
CLEAN_MODES = ("drop", "relabel")


def cleaned(detect_dir: Union[str, Path], mode: str, dataset: ImageDataset) -> tuple[ImageDataset, NoisyLabels]:
    """The training set and labels to retrain on after detection ``detect_dir`` (for :func:`noisysam.run.loop.train`;
    read and checked by :func:`read_detection`).

    ``relabel``: each flagged label becomes its suggested label (the dataset as it is). ``drop``: the flagged
    samples leave the training set (a subset of ``dataset``, whose validation split is then drawn from the
    kept samples; the test set is unchanged). The labels' provenance records the detection directory, its
    score and how many labels were dropped or relabelled (config.json's ``noise`` of the run)."""
    _check(mode in CLEAN_MODES, f"mode must be one of {list(CLEAN_MODES)}, got {mode!r}")
    detect_dir = Path(detect_dir)
    labels, table, summary = read_detection(detect_dir, dataset)
    index, suggested = table["index"][table["flagged"]], table["suggested"][table["flagged"]]
    provenance = {k: v for k, v in labels.provenance.items() if k != "clean_sha256"}
    provenance.update(kind="cleaned", nominal_rate=None, detection=dict(dir=str(detect_dir), score=summary["score"],
                                                     source=summary["source"], mode=mode,
                                                     flagged=int(index.size), of_labels=len(labels),
                                                     original_kind=labels.provenance.get("kind")))
    if mode == "relabel":
        noisy = labels.noisy.copy()
        noisy[index] = suggested
        provenance["detection"]["relabelled"] = int(np.sum(labels.noisy[index] != suggested))
        return dataset, NoisyLabels(noisy, labels.clean, labels.num_classes, provenance)
    keep = np.setdiff1d(np.arange(len(labels)), index)
    _check(keep.size > 0, f"detection {str(detect_dir)!r} flags every label: nothing left to train on")
    provenance["detection"].update(dropped=int(index.size), kept_rows_sha256=int_sha256(keep))
    subset = ImageDataset(f"{dataset.name}-dropped", dataset.x_train[keep], dataset.y_train[keep], dataset.x_test,
                          dataset.y_test, dataset.classes)
    return subset, NoisyLabels(labels.noisy[keep], labels.clean[keep], labels.num_classes, provenance)


