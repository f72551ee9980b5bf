"""A detection and its directory: :class:`Detection` (the scores of one detector, its verdict and noise estimate,
evaluated where the truth is known, written as issues.csv/json, summary.json, labels.npz and scores.png), what a
detection directory may hold (:func:`check_out`) and reading one back (:func:`read_detection`).

The estimated transition matrix follows :class:`noisysam.noise.labels.NoisyLabels`: ``T[i, j] = P(given = j | true = i)``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Union

import numpy as np
from sklearn.metrics import confusion_matrix

from noisysam.core.files import ArraySpec, FileFormatError, atomic_write, read_json, read_table, write_json
from noisysam.data.datasets import ImageDataset
from noisysam.detect.figure import plot_scores
from noisysam.noise.labels import NoisyLabels, cleanlab_module
from noisysam.run.metrics import noise_auroc
from noisysam.run.rundir import check_not_a_run, check_own

#: Scores from a run's dynamics; "cleanlab" is the K-fold source, "annotators" CIFAR-10N's three annotators.
DYNAMICS_SCORES = ("aum", "loss")
SCORES = DYNAMICS_SCORES + ("cleanlab", "annotators")
OUTPUT_FILES = ("issues.csv", "issues.json", "summary.json", "labels.npz")
#: The noise-rate estimators, by the name every output gives (summary.json ``estimator``, the CLI), and what each is.
ESTIMATORS = {
    "threshold samples": "share of the scored rows whose AUM is below the 99th percentile of the threshold "
                         "samples' AUMs (Pleiss et al., arXiv 2001.10528, Sec. 3)",
    "cut at 0": "share of the scored rows whose AUM (mean margin) is below 0",
    "cleanlab": "1 - trace of cleanlab.count.estimate_joint on out-of-fold probabilities",
    "validation": "(A - V) / (A - (1 - A) / (K - 1)), A the model's clean-test accuracy and V its accuracy against the "
                  "noisy labels of the held-out validation split, both as mean probabilities; assumes symmetric noise "
                  "(Chen et al., arXiv 1905.05040, Sec. 3)",
    "annotator consensus": "share of the scored rows whose given label differs from the majority vote of CIFAR-10N's "
                           "three annotators (cleanlab.multiannotator; qualities by CROWDLAB, arXiv 2210.06812)",
}
#: The threshold run's directory inside its detection directory (:mod:`noisysam.detect.threshold`).
THRESHOLD_RUN = "threshold_run"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _cleanlab() -> Any:
    """The cleanlab modules detection uses (cleanlab is an optional extra: one line when it is missing)."""
    return SimpleNamespace(**{name: cleanlab_module(name) for name in ("count", "filter", "rank", "multiannotator")})


@dataclass
class Detection:
    """Scores of one detector over training-set rows ``index`` (positions in the dataset's training set).

    ``given``/``suggested``: labels; ``score``: higher = more likely wrong; ``flagged``: the detector's own
    verdict; ``estimated_rate``/``estimated_transition``: its noise estimate; ``is_noisy``: the truth where
    known (the labels' clean labels differ from the given ones somewhere), else None; ``source``: provenance;
    ``estimator``: which estimate ``estimated_rate`` is (a key of :data:`ESTIMATORS`), ``estimator_detail`` its
    parameters (e.g. the threshold value); ``other_estimates``: the rates of other estimators of the same labels
    that need no training, by estimator name (each a dict with ``rate`` and its inputs, or the reason it has none)."""

    score_name: str
    index: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    estimated_rate: float
    estimated_transition: np.ndarray
    labels: NoisyLabels
    source: dict
    estimator: str
    estimator_detail: dict = dataclasses.field(default_factory=dict)
    other_estimates: dict = dataclasses.field(default_factory=dict)

    @property
    def is_noisy(self) -> Optional[np.ndarray]:
        return self.labels.is_noisy[self.index] if self.labels.is_noisy.any() else None

    def ranked(self) -> list[dict]:
        """The table: one row per sample, most likely wrong first (ties: lower index first)."""
        order = np.lexsort((self.index, -self.score))
        return [dict(index=int(self.index[i]), given=int(self.given[i]), suggested=int(self.suggested[i]),
                     score=float(self.score[i]), flagged=bool(self.flagged[i])) for i in order]

    def evaluation(self) -> Optional[dict]:
        """Where the truth is known: AUROC of the score, precision/recall of the top-m scores at the realised
        count m and of the flagged set, realised rate and transition on these rows; None otherwise."""
        truth = self.is_noisy
        if truth is None:
            return None
        m = int(truth.sum())
        top = np.zeros_like(truth)
        top[np.lexsort((self.index, -self.score))[:m]] = True
        clean = self.labels.clean[self.index]
        return dict(realised_rate=float(truth.mean()), realised_count=m,
                    realised_transition=_transition(clean, self.given, self.labels.num_classes).tolist(),
                    auroc=noise_auroc(self.score, truth),
                    precision_at_realised=_precision(top, truth), recall_at_realised=_recall(top, truth),
                    precision_flagged=_precision(self.flagged, truth), recall_flagged=_recall(self.flagged, truth))

    def summary(self) -> dict:
        return dict(score=self.score_name, source=self.source, n=int(self.index.size),
                    num_classes=self.labels.num_classes, flagged=int(self.flagged.sum()),
                    estimator=self.estimator, estimator_means=ESTIMATORS[self.estimator],
                    estimator_detail=self.estimator_detail, estimated_rate=self.estimated_rate,
                    estimated_transition=self.estimated_transition.tolist(), other_estimates=self.other_estimates,
                    truth=self.evaluation())

    def save(self, out: Union[str, Path]) -> None:
        """issues.csv, issues.json (the ranked table), summary.json, labels.npz (the labels scored), scores.png
        (with matplotlib); each atomic."""
        out = Path(out)
        self.labels.save(out / "labels.npz")
        rows = self.ranked()
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(out / "issues.csv", lambda f: f.write(text.getvalue()), mode="w")
        write_json(out / "issues.json", rows)
        write_json(out / "summary.json", self.summary())
        try:
            plot_scores(self, out / "scores.png")
        except ImportError:  # matplotlib is an optional extra
            pass


def _precision(chosen: np.ndarray, truth: np.ndarray) -> Optional[float]:
    return float(truth[chosen].mean()) if chosen.any() else None


def _recall(chosen: np.ndarray, truth: np.ndarray) -> Optional[float]:
    return float(chosen[truth].mean()) if truth.any() else None


def _transition(true: np.ndarray, given: np.ndarray, k: int) -> np.ndarray:
    """Row-normalised ``T[i, j] = P(given = j | true = i)``; a class never seen as true gets the identity row."""
    counts = confusion_matrix(true, given, labels=np.arange(k)).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(k))


# ------------------------------------------------------------------------------------- its directory

#: What a detection writes into its directory beside :data:`OUTPUT_FILES` and scores.png, by its source's kind
#: (summary.json's ``source.kind``), and that kind in words.
_OWN_FILES = {"threshold samples": (THRESHOLD_RUN,), "kfold": ("detect.json", "oof_probs.npz", "fold_*")}
_SOURCES = {"dynamics": "from a run's dynamics", "threshold samples": "with threshold samples",
            "annotators": "from CIFAR-10N's annotators", "kfold": "from K folds"}


def check_out(out: Union[str, Path], score: str, kind: str) -> None:
    """ValueError unless ``out`` is new or holds this detection (``score`` of a source of ``kind``, as summary.json
    records them) or what is left of it: a run directory, a folder holding what no detection writes (yours, another
    command's output), a summary.json no detection wrote, or another detection is refused before anything is written."""
    out, what = Path(out), "a detection"
    check_not_a_run(out, what)
    summary = out / "summary.json"
    if summary.is_file():
        try:
            record = read_json(summary, SUMMARY_SCHEMA, "detection summary")
        except FileFormatError as e:
            raise ValueError(f"{summary} is not a detection's summary ({e.problem}): {str(out)!r} is a folder of yours "
                             "or another command's output, not a place for a detection; choose another out") from None
        theirs, source = record["score"], record["source"].get("kind")
        _check((theirs, source) == (score, kind),
               f"{str(out)!r} holds another detection ({theirs} scores {_SOURCES.get(source, f'from {source}')}), not "
               f"one of {score} scores {_SOURCES[kind]}; choose another out")
    check_own(out, what, (*OUTPUT_FILES, "scores.png", *_OWN_FILES.get(kind, ())))


def default_out(run_dir: Union[str, Path], name: str) -> Path:
    """Where a detection from run ``run_dir`` is written unless told: ``run_dir/detect-<name>``, ``name`` its score,
    ``aum-threshold-samples`` or ``annotators``."""
    return Path(run_dir) / f"detect-{name}"


#: What :func:`read_detection` requires of a detection's issues.json (one row per scored sample, as
#: :meth:`Detection.ranked` writes it) and summary.json.
ISSUES_COLUMNS: dict[str, Any] = dict(index=int, given=int, suggested=int, score=(int, float), flagged=bool)
SUMMARY_SCHEMA: dict[str, Any] = dict(score=str, source=dict, n=int)


def read_detection(detect_dir: Union[str, Path], dataset: ImageDataset) -> tuple[NoisyLabels, dict[str, np.ndarray], dict]:
    """A ``noisysam detect`` directory made on ``dataset``: its labels (labels.npz, the dataset's training labels),
    issues.json as columns (:data:`ISSUES_COLUMNS`) and summary.json. Refused (FileFormatError naming the file)
    unless issues.json holds one row per scored sample (summary.json's ``n``), each a distinct training row whose
    given label is labels.npz's and whose suggested label is one of its classes; which rows are flagged and what
    they suggest may be edited by hand."""
    detect_dir = Path(detect_dir)
    _check((detect_dir / "issues.json").is_file() and (detect_dir / "labels.npz").is_file(),
           f"{str(detect_dir)!r} is not a detection directory (issues.json and labels.npz from noisysam detect)")
    labels = NoisyLabels.load(detect_dir / "labels.npz", num_classes=dataset.num_classes, n=len(dataset.y_train))
    _check(np.array_equal(labels.clean, dataset.y_train), f"detection {str(detect_dir)!r} was made on another "
                                                          "dataset: its clean labels differ from this dataset's")
    summary = read_json(detect_dir / "summary.json", SUMMARY_SCHEMA, "detection summary")
    path = detect_dir / "issues.json"
    table = read_table(path, ISSUES_COLUMNS, "detection table")
    fail = lambda problem: FileFormatError(path, problem, "detection table")
    if table["index"].size != summary["n"]:
        raise fail(f"it has {table['index'].size} rows, but summary.json counts {summary['n']} scored samples: "
                   "rows were removed or added")
    for name, high in (("index", len(labels)), ("suggested", labels.num_classes)):
        problem = ArraySpec("iu", low=0, high=high, unique=name == "index").problem(name, table[name])
        if problem:
            raise fail(problem)
    differ = np.flatnonzero(table["given"] != labels.noisy[table["index"]])
    if differ.size:
        row = int(differ[0])
        raise fail(f"row {row + 1} gives sample {table['index'][row]} the label {table['given'][row]}, but labels.npz "
                   f"gives it {labels.noisy[table['index'][row]]}: the table belongs to other labels")
    return labels, table, summary

