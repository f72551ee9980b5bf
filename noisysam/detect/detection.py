"""Find the wrong labels of a training set and estimate its noise, from noisysam's own training.

Two sources of scores, each ranked "higher = more likely wrong":

- Training dynamics of any run directory (its ``dynamics/`` files, :func:`noisysam.run.rundir.save_dynamics`):
  ``aum``, minus the area under the margin, the mean over epochs of the logit of the given label minus the
  largest other logit (Pleiss et al., arXiv 2001.10528, Eq. 1-2); ``loss``, the mean cross-entropy against the
  given label over epochs. A sample is flagged when its mean margin is negative (the model, on average over
  training, prefers another class); the suggested label is the class it predicted most often in the epochs
  where it did not predict the given one (the last epoch's prediction would echo a memorised label).
- Threshold samples (Pleiss et al., arXiv 2001.10528, Sec. 3): the run's settings are trained once more with
  N/(c+1) of its training rows relabelled to an extra, fake class c; a row is flagged when its AUM is below the
  99th percentile of the threshold samples' AUMs. The threshold samples themselves are left out of the table
  (the paper's second run with disjoint threshold samples would score them; noisysam trains once more, not twice).
- Confident learning (Northcutt et al., arXiv 1911.00068) on out-of-fold predicted probabilities: K-fold
  training with :func:`noisysam.run.loop.train` (each fold a resumable run directory), handed to cleanlab
  (``cleanlab.filter.find_label_issues`` flags, ``cleanlab.rank.get_label_quality_scores`` ranks with
  score = 1 - self-confidence, ``cleanlab.count.estimate_joint`` estimates the noise).

- CIFAR-10N's three annotators (CIFAR-10 images only): their consensus by ``cleanlab.multiannotator`` (CROWDLAB,
  Goh et al., arXiv 2210.06812) against the given labels, and each annotator's quality.

Each detection names the estimator of its noise rate (:data:`ESTIMATORS`): the threshold samples, the cut at 0,
cleanlab's joint or the annotators' consensus; a run-based detection adds, under ``other_estimates``, the rate
estimated without training from the run's held-out validation split (:func:`validation_estimate`, Chen et al.,
arXiv 1905.05040). The numbers of different estimators are never mixed in one field.

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
import torch
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold

from noisysam.data.datasets import ImageDataset
from noisysam.data.loader import Loader
from noisysam.core.files import (ArraySpec, FileFormatError, NpzArrays, atomic_write, read_json, read_table, run_lock,
                                 write_json)
from noisysam.run.metrics import noise_auroc
from noisysam.models.networks import get_model
from noisysam.noise.labels import (CIFAR10N_ANNOTATORS, NoisyLabels, cifar10n_annotators, cleanlab_module, consensus,
                                   int_sha256)
from noisysam.detect.figure import plot_scores
from noisysam.run.rundir import (DYNAMICS_DIR, RunDir, check_not_a_run, check_own, dynamics_path, fingerprints,
                                 given_inputs, inputs)
from noisysam.run.loop import Callback, derive_seed, train
from noisysam.run.config import TrainConfig, labels_rate

#: Scores from a run's dynamics; "cleanlab" is the K-fold source, "annotators" CIFAR-10N's three annotators.
DYNAMICS_SCORES = ("aum", "loss")
SCORES = DYNAMICS_SCORES + ("cleanlab", "annotators")
OUTPUT_FILES = ("issues.csv", "issues.json", "summary.json", "labels.npz")
#: How :func:`cleaned` acts on the flagged labels.
CLEAN_MODES = ("drop", "relabel")
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
#: The percentile of the threshold samples' AUMs below which a row is flagged (Pleiss et al., Sec. 3).
THRESHOLD_PERCENTILE = 99.0
#: The threshold run's directory inside its detection directory, and the name of its fake class.
THRESHOLD_RUN = "threshold_run"
FAKE_CLASS = "threshold samples (fake class)"
_THRESHOLD_SEED = 100  # a derive_seed purpose of its own (train's are 0-4): which rows become threshold samples


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


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


# ------------------------------------------------------------------------------------- dynamics

#: What :func:`read_dynamics` requires of each array (rows.npz: ``rows``; each epoch's file: the others, one value
#: per row): row indices distinct training-set positions, predictions classes of the labels, margins and losses
#: finite. The bounds that depend on the run (its number of labels and classes) are filled in when read.
DYNAMICS_ARRAYS = dict(rows=ArraySpec("iu", (None,), low=0, unique=True), margin=ArraySpec("f", finite=True),
                       loss=ArraySpec("f", finite=True), pred=ArraySpec("iu", low=0))


def read_dynamics(run_dir: Union[str, Path], stage: int = 1) -> dict[str, np.ndarray]:
    """A run's recorded dynamics of ``stage`` (stage 1 trains on the given labels): ``rows`` (training-set
    positions), ``margin``, ``loss`` (float32, epochs x rows) and ``pred`` (epochs x rows), checked against the
    run's noisy_labels.npz as :data:`DYNAMICS_ARRAYS` declares; FileFormatError names the file and the array
    otherwise."""
    run_dir = Path(run_dir)
    rows_file = dynamics_path(run_dir, 0, 0)
    _check(rows_file.is_file(), f"run directory {str(run_dir)!r} has no training dynamics ({DYNAMICS_DIR}/ "
                                "with rows.npz): train it with this noisysam version")
    epochs = sorted((run_dir / DYNAMICS_DIR).glob(f"stage{stage}_epoch_*.npz"))
    _check(bool(epochs), f"run directory {str(run_dir)!r} has no recorded epoch of stage {stage}")
    _check([p.name for p in epochs] == [dynamics_path(run_dir, stage, e).name for e in range(1, len(epochs) + 1)],
           f"run directory {str(run_dir)!r}: its {DYNAMICS_DIR}/ files are not epochs 1..{len(epochs)}")
    labels = RunDir(run_dir).labels()
    with NpzArrays(rows_file, "dynamics rows") as npz:
        rows = npz.read("rows", DYNAMICS_ARRAYS["rows"]._replace(high=len(labels)))
    if not rows.size:
        raise FileFormatError(rows_file, "rows is empty: the run recorded no training sample", "dynamics rows")
    per_epoch: dict[str, list] = dict(margin=[], loss=[], pred=[])
    specs = {k: DYNAMICS_ARRAYS[k]._replace(shape=rows.shape, high=labels.num_classes if k == "pred" else None)
             for k in per_epoch}
    for path in epochs:
        with NpzArrays(path, "dynamics") as npz:
            for key, values in per_epoch.items():
                values.append(npz.read(key, specs[key]))
    out = {k: np.stack(v).astype(np.float32 if k != "pred" else np.int64) for k, v in per_epoch.items()}
    return dict(rows=rows.astype(np.int64), **out)


def _most_predicted_other(pred: np.ndarray, given: np.ndarray, k: int) -> np.ndarray:
    """Per row, the class other than ``given`` predicted in most epochs (``pred``: epochs x rows; ties to the
    lower class). A row with negative mean margin was predicted as another class in at least one epoch. A
    prediction of a class >= ``k`` (a threshold run's fake class) is no vote."""
    n = given.size
    real = pred < k
    votes = np.bincount((np.arange(n) * k + np.where(real, pred, 0)).ravel(), weights=real.ravel(),
                        minlength=n * k).reshape(n, k)
    votes[np.arange(n), given] = -1
    return votes.argmax(axis=1)


def dynamics_scores(run_dir: Union[str, Path], score: str = "aum") -> Detection:
    """Scores from a run's dynamics (see the module docstring): ``aum`` = -mean margin, ``loss`` = mean loss;
    flagged (and so the estimated rate): the cut at 0, a mean margin below 0."""
    _check(score in DYNAMICS_SCORES, f"score must be one of {list(DYNAMICS_SCORES)} for a run's dynamics, got {score!r}")
    run_dir = Path(run_dir)
    _check(run_dir.is_dir(), f"run directory {str(run_dir)!r} does not exist")
    dyn = read_dynamics(run_dir)
    labels = RunDir(run_dir).labels()  # what read_dynamics checked the dynamics against
    rows = dyn["rows"]
    _check(rows.size and rows.max() < len(labels), f"run directory {str(run_dir)!r}: dynamics rows exceed its labels")
    keep = np.ones(rows.size, dtype=bool)
    return _dynamics_detection(score, dyn, labels, keep, dyn["margin"].mean(axis=0) < 0,
                               dict(kind="dynamics", run_dir=str(run_dir), epochs=int(dyn["margin"].shape[0])),
                               "cut at 0", {})


def _dynamics_detection(score: str, dyn: dict[str, np.ndarray], labels: NoisyLabels, keep: np.ndarray,
                        flagged: np.ndarray, source: dict, estimator: str, detail: dict) -> Detection:
    """The detection of the rows ``keep`` (a mask over ``dyn["rows"]``) of dynamics ``dyn`` with the verdict
    ``flagged`` (over the kept rows); their given labels are ``labels.noisy``."""
    rows = dyn["rows"][keep]
    values = -dyn["margin"][:, keep].mean(axis=0) if score == "aum" else dyn["loss"][:, keep].mean(axis=0)
    given = labels.noisy[rows]
    k = labels.num_classes
    suggested = np.where(flagged, _most_predicted_other(dyn["pred"][:, keep], given, k), given)
    return Detection(score, rows, given, suggested, values.astype(np.float64), flagged, float(flagged.mean()),
                     _transition(suggested, given, k), labels, source, estimator, detail)


# ------------------------------------------------------------------------------------- threshold samples

def threshold_sample_rows(rows: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """The threshold samples of a run: ``len(rows) // (num_classes + 1)`` of its training ``rows`` (as many as one
    more class of the average size would hold, Pleiss et al., arXiv 2001.10528, Sec. 3), drawn without
    replacement from ``derive_seed(seed, purpose)``, sorted."""
    rng = np.random.default_rng(derive_seed(seed, _THRESHOLD_SEED))
    return np.sort(rng.choice(np.asarray(rows), size=len(rows) // (num_classes + 1), replace=False))


def threshold_flags(aum: np.ndarray, threshold_aum: np.ndarray,
                    percentile: float = THRESHOLD_PERCENTILE) -> tuple[np.ndarray, float]:
    """``aum < t`` and ``t``, the ``percentile`` of the threshold samples' AUMs ``threshold_aum`` (numpy's linear
    interpolation): a row whose margin stays below that of nearly all samples of a class that does not exist is
    as likely as they are to be mislabelled (Pleiss et al., arXiv 2001.10528, Sec. 3)."""
    _check(threshold_aum.size > 0, "no threshold samples: the run has fewer training rows than classes + 1")
    t = float(np.percentile(threshold_aum, percentile))
    return aum < t, t


def threshold_scores(run_dir: Union[str, Path], out: Union[str, Path], dataset: Optional[ImageDataset] = None,
                     callback: Optional[Callback] = None) -> Detection:
    """The paper's procedure on run ``run_dir``: train its settings once more through :func:`noisysam.run.loop.train`
    with its threshold samples (:func:`threshold_sample_rows`) relabelled to a fake class c, in the run directory
    ``out/threshold_run`` (resumed if it is there; its noisy_labels.npz and config.json record the relabelled rows),
    and flag every other training row whose AUM in that run is below the 99th percentile of the threshold samples'
    AUMs (:func:`threshold_flags`). The scores are that run's -AUM; the given labels those of ``run_dir``."""
    run_dir, out = Path(run_dir), Path(out)
    cfg, data, labels = RunDir(run_dir).inputs(dataset)
    with NpzArrays(dynamics_path(run_dir, 0, 0), "dynamics rows") as npz:
        rows = npz.read("rows").astype(np.int64)
    k = labels.num_classes
    chosen = threshold_sample_rows(rows, k, cfg.seed)
    _check(chosen.size > 0, f"run directory {str(run_dir)!r} has {rows.size} training rows: too few for threshold "
                            f"samples (at least {k + 1})")
    fake = ImageDataset(f"{data.name}+threshold-samples", data.x_train, data.y_train, data.x_test, data.y_test,
                        [*data.classes, FAKE_CLASS])
    noisy = labels.noisy.copy()
    noisy[chosen] = k
    provenance = {key: v for key, v in labels.provenance.items() if key != "clean_sha256"}
    provenance.update(kind="aum-threshold-samples", nominal_rate=labels_rate(labels)[0], base_run=str(run_dir),
                      base_kind=labels.provenance.get("kind"), fake_class=k, threshold_rows=chosen.tolist())
    marked = NoisyLabels(noisy, labels.clean, k + 1, provenance)  # the radius follows the run's own rate
    result = train(cfg, dataset=fake, noise=marked, out=str(out / THRESHOLD_RUN), resume=True, callback=callback)
    dyn = read_dynamics(result.run_dir)
    _check(np.array_equal(dyn["rows"], rows), f"{str(out / THRESHOLD_RUN)!r} trained on other rows than "
                                               f"{str(run_dir)!r}")
    aum = dyn["margin"].mean(axis=0)
    is_threshold = np.isin(rows, chosen)
    flagged, t = threshold_flags(aum[~is_threshold], aum[is_threshold])
    source = dict(kind="threshold samples", run_dir=str(run_dir), threshold_run=str(result.run_dir),
                  epochs=int(dyn["margin"].shape[0]))
    detail = dict(percentile=THRESHOLD_PERCENTILE, threshold=t, threshold_samples=int(chosen.size), fake_class=k)
    return _dynamics_detection("aum", dyn, labels, ~is_threshold, flagged, source, "threshold samples", detail)


def _run_model(run_dir: Path, cfg: TrainConfig, data: ImageDataset) -> tuple[np.ndarray, torch.nn.Module]:
    """A run's training rows and its model as its checkpoint.pt holds it (the last finished epoch), on the CPU."""
    with NpzArrays(dynamics_path(run_dir, 0, 0), "dynamics rows") as npz:
        rows = npz.read("rows").astype(np.int64)
    model = get_model(cfg.model, data.num_classes, in_channels=data.x_train.shape[-1], **cfg.model_params)
    model.load_state_dict(RunDir(run_dir).checkpoint()["model"])
    return rows, model


def symmetric_rate(clean_accuracy: float, noisy_accuracy: float, num_classes: int) -> Optional[float]:
    """The symmetric noise rate r at which a model of accuracy A = ``clean_accuracy`` against the clean labels scores
    V = ``noisy_accuracy`` against noisy labels it never trained on: V = A (1 - r) + (1 - A) r / (K - 1) (Chen et al.,
    arXiv 1905.05040, Sec. 3), so r = (A - V) / (A - (1 - A) / (K - 1)), clipped to [0, 1]; None for a model no
    better than chance (A <= 1/K), whose noisy accuracy says nothing of r."""
    a, v, k = clean_accuracy, noisy_accuracy, num_classes
    slope = a - (1.0 - a) / (k - 1)
    return None if slope <= 0 else float(np.clip((a - v) / slope, 0.0, 1.0))


def symmetric_rate_error(clean_accuracy: float, noisy_accuracy: float, clean_se: float, noisy_se: float,
                         num_classes: int) -> Optional[float]:
    """The standard error of :func:`symmetric_rate` by the delta method, from the standard errors of its two
    accuracies (measured on disjoint rows, so independent): with s = A - (1 - A)/(K - 1), dr/dV = -1/s and
    dr/dA = (1 - r K/(K - 1))/s; None where the rate is."""
    rate = symmetric_rate(clean_accuracy, noisy_accuracy, num_classes)
    if rate is None:
        return None
    k = num_classes
    slope = clean_accuracy - (1.0 - clean_accuracy) / (k - 1)
    d_clean = (1.0 - (clean_accuracy - noisy_accuracy) / slope * k / (k - 1)) / slope
    return float(np.hypot(noisy_se / slope, d_clean * clean_se))


def validation_estimate(run_dir: Union[str, Path], dataset: Optional[ImageDataset] = None) -> dict:
    """The noise rate of a run's labels without training: :func:`symmetric_rate` of its final model's mean
    probability of the clean label on the test split (A; noisysam's test labels are clean) and of the given label on
    the validation split the run held out (V; never trained on). Mean probabilities, not argmax accuracies: the
    same relation holds for them in expectation, with less variance. ``standard_error``: its spread over the rows
    (:func:`symmetric_rate_error`); the correction magnifies the accuracies' noise by 1/(A - (1 - A)/(K - 1)).
    Raises ValueError where the run has no validation split or its inputs cannot be reloaded."""
    run_dir = Path(run_dir)
    cfg, data, labels = RunDir(run_dir).inputs(dataset)
    rows, model = _run_model(run_dir, cfg, data)
    val = np.setdiff1d(np.arange(len(labels)), rows)
    _check(val.size > 0, f"run directory {str(run_dir)!r} holds out no validation split (val_fraction 0)")
    val_probs = predict_probabilities(model, data.x_train[rows], data.x_train[val], cfg)
    test_probs = predict_probabilities(model, data.x_train[rows], data.x_test, cfg)
    noisy, clean = val_probs[np.arange(val.size), labels.noisy[val]], test_probs[np.arange(len(data.y_test)), data.y_test]
    v, a, k = float(noisy.mean()), float(clean.mean()), labels.num_classes
    se_v, se_a = (float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0 for x in (noisy, clean))
    return dict(rate=symmetric_rate(a, v, k), standard_error=symmetric_rate_error(a, v, se_a, se_v, k),
                clean_test_accuracy=a, noisy_validation_accuracy=v, validation_rows=int(val.size),
                test_rows=int(len(data.y_test)))


def _other_estimates(run_dir: Union[str, Path], dataset: Optional[ImageDataset]) -> dict:
    """The estimates of a run's noise that need no training beside a detection's own: :func:`validation_estimate`,
    or why it has none."""
    try:
        return {"validation": validation_estimate(run_dir, dataset)}
    except (ValueError, OSError) as e:  # no validation split or checkpoint, a dataset passed as an object, ...
        return {"validation": dict(rate=None, unavailable=str(e))}


# ------------------------------------------------------------------------------------- several annotators

def annotator_scores(run_dir: Union[str, Path], dataset: Optional[ImageDataset] = None) -> Detection:
    """CIFAR-10N's three annotators (:data:`noisysam.noise.labels.CIFAR10N_ANNOTATORS`) against the given labels of run
    ``run_dir``, on every training-set row. CROWDLAB (``cleanlab.multiannotator.get_label_quality_multiannotator``,
    Goh et al., arXiv 2210.06812), with the probabilities of the run's final model (in-sample on its training
    split), gives each image's consensus label (:func:`crowdlab`: the annotators' majority vote) a quality q in
    [0, 1], and each annotator a quality. A given label other than the consensus is flagged (the estimated rate is their share)
    and the consensus suggested; score: q where flagged, 1 - q where not (higher = more likely wrong).
    ``estimator_detail`` holds each annotator's quality and agreement with the consensus beside its accuracy
    against the dataset's own labels, and the consensus's accuracy."""
    _cleanlab()  # before the model is loaded
    run_dir = Path(run_dir)
    cfg, data, labels = RunDir(run_dir).inputs(dataset)
    annotations = cifar10n_annotators(data)
    rows, model = _run_model(run_dir, cfg, data)
    agreed, quality, stats = crowdlab(annotations, predict_probabilities(model, data.x_train[rows], data.x_train, cfg))
    given, clean = labels.noisy, labels.clean
    flagged = given != agreed
    detail = dict(consensus_accuracy=float(np.mean(agreed == clean)), annotators=[
        dict(name=name, quality=float(stats["annotator_quality"].iloc[i]),
             agreement_with_consensus=float(np.mean(annotations[:, i] == agreed)),
             accuracy=float(np.mean(annotations[:, i] == clean))) for i, name in enumerate(CIFAR10N_ANNOTATORS)])
    return Detection("annotators", np.arange(len(labels)), given, agreed, np.where(flagged, quality, 1.0 - quality),
                     flagged, float(flagged.mean()), _transition(agreed, given, labels.num_classes), labels,
                     dict(kind="annotators", run_dir=str(run_dir)), "annotator consensus", detail)


def crowdlab(annotations: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """CROWDLAB (Goh et al., arXiv 2210.06812) by ``cleanlab.multiannotator.get_label_quality_multiannotator`` on
    ``annotations`` (n x M) and a model's ``probs`` (n x K): the consensus labels, their quality q and the annotators'
    statistics (a DataFrame, one row per annotator column, in column order). The consensus is the annotators'
    majority vote without the model (:func:`noisysam.noise.labels.consensus`, the ``cifar10n-consensus`` labels): a model
    trained on the given labels has memorised them, and cleanlab's default consensus (best_quality) follows it
    (62% right on CIFAR-10N worse with an SGD run's model), its majority vote breaks ties by it (89%, against 91%
    without). q is CROWDLAB's quality of that label, as it scores the label of an annotator who gave it."""
    agreed = consensus(annotations, probs.shape[1])
    result = _cleanlab().multiannotator.get_label_quality_multiannotator(
        annotations, probs, consensus_method="majority_vote", verbose=False)
    detailed = result["detailed_label_quality"].to_numpy(np.float64)
    quality = np.where(annotations == agreed[:, None], detailed, -np.inf).max(axis=1)
    return agreed, quality, result["annotator_stats"].sort_index()


# ------------------------------------------------------------------------------------- confident learning

def _cleanlab() -> Any:
    """The cleanlab modules detection uses (cleanlab is an optional extra: one line when it is missing)."""
    return SimpleNamespace(**{name: cleanlab_module(name) for name in ("count", "filter", "rank", "multiannotator")})


def check_kfold(k: Any, given: np.ndarray, num_classes: int) -> None:
    """K-fold detection needs K >= 2, at least 2 classes among the given labels and K samples of each."""
    _check(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 2,
           f"kfold must be an integer >= 2, got {k!r}")
    counts = np.bincount(given, minlength=num_classes)
    present = counts[counts > 0]
    _check(present.size >= 2, f"detection needs at least 2 classes among the labels, got {present.size}")
    _check(present.min() >= k, f"kfold {k} needs at least {k} samples of every class, but class "
                               f"{int(np.flatnonzero(counts == present.min())[0])} has {int(present.min())}")


def kfold_probabilities(labels: NoisyLabels, dataset: ImageDataset, k: int, config: TrainConfig, out: Path,
                        callback: Optional[Callback] = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predicted probabilities (n x K) over the whole training set and each row's fold: fold f's
    rows are predicted by the model trained (``config``, no validation split) on the other folds, in the run
    directory ``out/fold_f`` (resumed if it is there); ``callback`` gets each fold's training events (as
    :func:`noisysam.run.loop.train`'s) with ``info["fold"]`` added."""
    folds = np.empty(len(labels), dtype=np.int64)
    split = StratifiedKFold(n_splits=k, shuffle=True, random_state=config.seed)
    for f, (_, held) in enumerate(split.split(np.zeros(len(labels)), labels.noisy)):
        folds[held] = f
    probs = np.zeros((len(labels), dataset.num_classes), dtype=np.float64)
    for f in range(k):
        rest, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        sub = ImageDataset(f"{dataset.name}-fold{f + 1}of{k}", dataset.x_train[rest], labels.clean[rest],
                           dataset.x_test, dataset.y_test, dataset.classes)
        provenance = {key: v for key, v in labels.provenance.items() if key != "clean_sha256"}
        sub_labels = NoisyLabels(labels.noisy[rest], labels.clean[rest], labels.num_classes,
                                 {**provenance, "fold": f + 1, "folds": k})
        tagged = None if callback is None else (lambda event, info, f=f: callback(event, {**info, "fold": f + 1}))
        result = train(config, dataset=sub, noise=sub_labels, out=str(out / f"fold_{f + 1}"), resume=True,
                       val_fraction=0.0, callback=tagged)
        probs[held] = predict_probabilities(result.model, dataset.x_train[rest], dataset.x_train[held], config)
    return probs, folds


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, train_x: np.ndarray, x: np.ndarray,
                          config: TrainConfig) -> np.ndarray:
    """Softmax of ``model`` on images ``x``, normalised as training on ``train_x`` normalised them (fp32)."""
    device = next(model.parameters()).device
    common = dict(batch_size=config.eval_batch_size, augment=False, device=device, channels_last=config.channels_last)
    norm = Loader(train_x, np.zeros(len(train_x), dtype=np.int64), **common)  # the training split's statistics
    loader = Loader(x, np.zeros(len(x), dtype=np.int64), shuffle=False, mean=norm.mean, std=norm.std, **common)
    model.eval()
    return torch.cat([torch.softmax(model(b).float(), 1) for b, _, _ in loader]).cpu().double().numpy()


def cleanlab_scores(labels: NoisyLabels, probs: np.ndarray, source: dict) -> Detection:
    """Confident learning on out-of-fold ``probs`` for ``labels.noisy`` over the whole training set."""
    cl = _cleanlab()
    given = labels.noisy
    flagged = cl.filter.find_label_issues(given, probs)
    quality = cl.rank.get_label_quality_scores(given, probs, method="self_confidence")
    joint = cl.count.estimate_joint(given, probs)  # joint[given, true]
    true_mass = joint.sum(axis=0, keepdims=True)
    k = probs.shape[1]
    transition = np.where(true_mass.T > 0, (joint / np.maximum(true_mass, 1e-300)).T, np.eye(k))
    return Detection("cleanlab", np.arange(len(labels)), given, probs.argmax(1), 1.0 - quality, np.asarray(flagged),
                     float(1.0 - np.trace(joint)), transition, labels, source, "cleanlab")


# ------------------------------------------------------------------------------------- entry point

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


def find_label_issues(run_dir: Union[str, Path, None] = None, *, kfold: Optional[int] = None,
                      score: Optional[str] = None, threshold_samples: bool = False, annotators: bool = False,
                      config: Optional[TrainConfig] = None, dataset: Union[str, ImageDataset, None] = None,
                      noise: Union[str, NoisyLabels, None] = None, out: Union[str, Path, None] = None,
                      callback: Optional[Callback] = None, **overrides: Any) -> Detection:
    """Rank the training labels by how likely they are wrong and estimate the noise.

    Either ``run_dir`` (a finished or running run directory: scores from its dynamics, ``score`` "aum"
    (default) or "loss"; with ``threshold_samples``, :func:`threshold_scores`, which trains once more; with
    ``annotators``, :func:`annotator_scores`; for these two ``dataset`` is the run's own where it was passed as an
    object), or ``kfold`` K: K-fold training with ``config`` (``overrides`` of its fields; SAM by default),
    ``dataset``/``noise`` as :func:`noisysam.run.loop.train` takes them, out-of-fold probabilities to cleanlab; fold run
    directories go under ``out`` (required for K-fold and threshold samples, which train). The table, summary and
    plot are written to ``out`` where it is given, and nowhere else (``noisysam detect`` passes :func:`default_out`;
    :meth:`Detection.save` writes them later). ``callback``: training events, see :func:`kfold_probabilities`.
    Raises ValueError for bad input before writing anything."""
    _check((run_dir is None) != (kfold is None), "pass either run_dir (dynamics) or kfold (cleanlab), not both "
                                                 "or neither")
    _check(not (threshold_samples and annotators), "pass threshold_samples or annotators, not both")
    if threshold_samples or annotators:
        name = "threshold samples" if threshold_samples else "annotators"
        _check(run_dir is not None, f"{name} need run_dir (the run to read)")
        _check(score in (None, "aum") if threshold_samples else score is None,
               f"{name} take no score but their own, got {score!r}")
        _check(dataset is None or isinstance(dataset, ImageDataset),
               f"dataset must be the run's ImageDataset or None (its own, by name), got {dataset!r}")
        _check(out is not None or annotators, "threshold samples train a run: pass out (a directory for it and "
                                              f"the results; the command line's default is {default_out(run_dir, 'aum-threshold-samples')})")
    if run_dir is not None:
        target = None if out is None else Path(out)
        if target is not None:
            check_out(target, *(("aum", "threshold samples") if threshold_samples else ("annotators", "annotators")
                                if annotators else ("aum" if score is None else score, "dynamics")))
        if threshold_samples:  # trains a run into target: the lock covers it
            with run_lock(target):
                detection = threshold_scores(run_dir, target, dataset, callback)
                detection.other_estimates = _other_estimates(run_dir, dataset)
                detection.save(target)
            return detection
        detection = annotator_scores(run_dir, dataset) if annotators else \
            dynamics_scores(run_dir, "aum" if score is None else score)
        detection.other_estimates = _other_estimates(run_dir, dataset if isinstance(dataset, ImageDataset) else None)
        if target is not None:
            with run_lock(target):
                detection.save(target)
        return detection
    _check(score in (None, "cleanlab"), f"score must be 'cleanlab' for kfold detection, got {score!r}")
    _check(out is not None, "kfold detection needs out (a directory for its fold runs and results)")
    check_out(out, "cleanlab", "kfold")
    _cleanlab()  # before any fold trains
    dataset, noise, _ = given_inputs(overrides, dataset, noise)  # names are config fields, as train() takes them
    _check(dataset is None or isinstance(dataset, ImageDataset),
           f"kfold detection needs arrays: dataset must be a name or an ImageDataset, got {type(dataset).__name__}")
    cfg = dataclasses.replace(config or TrainConfig(), **overrides).resolved()
    data, labels = inputs(cfg, dataset, noise)
    check_kfold(kfold, labels.noisy, data.num_classes)
    out = Path(out)
    with run_lock(out):
        record = dict(kfold=int(kfold), config={k: v for k, v in cfg.to_dict().items() if k not in ("out", "resume")},
                      inputs=fingerprints(data, labels))
        if (out / "detect.json").exists():
            saved = read_json(out / "detect.json")
            _check(saved == record, f"detection directory {str(out)!r} holds another detection ({out / 'detect.json'} "
                                    "records other settings or inputs); choose another out")
        else:
            write_json(out / "detect.json", record)
        probs, folds = kfold_probabilities(labels, data, int(kfold), dataclasses.replace(cfg, out=None), out, callback)
        atomic_write(out / "oof_probs.npz", lambda f: np.savez(f, probs=probs, folds=folds))
        detection = cleanlab_scores(labels, probs, dict(kind="kfold", kfold=int(kfold), method=cfg.method,
                                                        out=str(out)))
        detection.save(out)
    return detection


# ------------------------------------------------------------------------------------- acting on it

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

