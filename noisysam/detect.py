"""Find the wrong labels of a training set and estimate its noise, from noisysam's own training.

Two sources of scores, each ranked "higher = more likely wrong":

- Training dynamics of any run directory (its ``dynamics/`` files, :func:`noisysam.train.save_dynamics`):
  ``aum``, minus the area under the margin, the mean over epochs of the logit of the given label minus the
  largest other logit (Pleiss et al., arXiv 2001.10528, Eq. 1-2); ``loss``, the mean cross-entropy against the
  given label over epochs. A sample is flagged when its mean margin is negative (the model, on average over
  training, prefers another class); the suggested label is the class it predicted most often in the epochs
  where it did not predict the given one (the last epoch's prediction would echo a memorised label).
- Confident learning (Northcutt et al., arXiv 1911.00068) on out-of-fold predicted probabilities: K-fold
  training with :func:`noisysam.train.train` (each fold a resumable run directory), handed to cleanlab
  (``cleanlab.filter.find_label_issues`` flags, ``cleanlab.rank.get_label_quality_scores`` ranks with
  score = 1 - self-confidence, ``cleanlab.count.estimate_joint`` estimates the noise).

The estimated transition matrix follows :class:`noisysam.noise.NoisyLabels`: ``T[i, j] = P(given = j | true = i)``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold

from noisysam.data import ImageDataset, Loader, load_dataset
from noisysam.files import (ArraySpec, FileFormatError, NpzArrays, atomic_write, check_not_a_run, read_json, read_table,
                            run_lock, write_json)
from noisysam.metrics import noise_auroc
from noisysam.noise import NoisyLabels, make as make_noise
from noisysam.plot import plot_scores
from noisysam.train import DYNAMICS_DIR, Callback, TrainConfig, dynamics_path, fingerprints, train

#: Scores from a run's dynamics; "cleanlab" is the K-fold source.
DYNAMICS_SCORES = ("aum", "loss")
SCORES = DYNAMICS_SCORES + ("cleanlab",)
OUTPUT_FILES = ("issues.csv", "issues.json", "summary.json", "labels.npz")
#: How :func:`cleaned` acts on the flagged labels.
CLEAN_MODES = ("drop", "relabel")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class Detection:
    """Scores of one detector over training-set rows ``index`` (positions in the dataset's training set).

    ``given``/``suggested``: labels; ``score``: higher = more likely wrong; ``flagged``: the detector's own
    verdict; ``estimated_rate``/``estimated_transition``: its noise estimate; ``is_noisy``: the truth where
    known (the labels' clean labels differ from the given ones somewhere), else None; ``source``: provenance."""

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
                    estimated_rate=self.estimated_rate, estimated_transition=self.estimated_transition.tolist(),
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
    labels = NoisyLabels.load(run_dir / "noisy_labels.npz")
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
    lower class). A row with negative mean margin was predicted as another class in at least one epoch."""
    n = given.size
    votes = np.bincount((np.arange(n) * k + pred).ravel(), minlength=n * k).reshape(n, k)
    votes[np.arange(n), given] = -1
    return votes.argmax(axis=1)


def dynamics_scores(run_dir: Union[str, Path], score: str = "aum") -> Detection:
    """Scores from a run's dynamics (see the module docstring): ``aum`` = -mean margin, ``loss`` = mean loss."""
    _check(score in DYNAMICS_SCORES, f"score must be one of {list(DYNAMICS_SCORES)} for a run's dynamics, got {score!r}")
    run_dir = Path(run_dir)
    _check(run_dir.is_dir(), f"run directory {str(run_dir)!r} does not exist")
    dyn = read_dynamics(run_dir)
    labels = NoisyLabels.load(run_dir / "noisy_labels.npz")  # what read_dynamics checked the dynamics against
    rows = dyn["rows"]
    aum = dyn["margin"].mean(axis=0)
    values = -aum if score == "aum" else dyn["loss"].mean(axis=0)
    given = labels.noisy[rows]
    flagged = aum < 0
    suggested = np.where(flagged, _most_predicted_other(dyn["pred"], given, labels.num_classes), given)
    return Detection(score, rows, given, suggested, values.astype(np.float64), flagged, float(flagged.mean()),
                     _transition(suggested, given, labels.num_classes), labels,
                     dict(kind="dynamics", run_dir=str(run_dir), epochs=int(dyn["margin"].shape[0])))


# ------------------------------------------------------------------------------------- confident learning

def _cleanlab() -> Any:
    try:
        import cleanlab.count
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise ValueError("cleanlab is not installed: pip install 'noisysam[cleanlab]'") from None
    return cleanlab


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
    :func:`noisysam.train.train`'s) with ``info["fold"]`` added."""
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
                     float(1.0 - np.trace(joint)), transition, labels, source)


# ------------------------------------------------------------------------------------- entry point

def find_label_issues(run_dir: Union[str, Path, None] = None, *, kfold: Optional[int] = None,
                      score: Optional[str] = None, config: Optional[TrainConfig] = None,
                      dataset: Union[str, ImageDataset, None] = None, noise: Union[str, NoisyLabels, None] = None,
                      out: Union[str, Path, None] = None, callback: Optional[Callback] = None,
                      **overrides: Any) -> Detection:
    """Rank the training labels by how likely they are wrong and estimate the noise.

    Either ``run_dir`` (a finished or running run directory: scores from its dynamics, ``score`` "aum"
    (default) or "loss"), or ``kfold`` K: K-fold training with ``config`` (``overrides`` of its fields; SAM by
    default), ``dataset``/``noise`` as :func:`noisysam.train.train` takes them, out-of-fold probabilities to
    cleanlab; fold run directories go under ``out`` (required for K-fold). The table, summary and plot are
    written to ``out`` (for a run: default ``run_dir/detect-<score>``). ``callback``: see
    :func:`kfold_probabilities`. Raises ValueError for bad input before writing anything."""
    _check((run_dir is None) != (kfold is None), "pass either run_dir (dynamics) or kfold (cleanlab), not both "
                                                 "or neither")
    if run_dir is not None:
        detection = dynamics_scores(run_dir, "aum" if score is None else score)
        target = Path(run_dir) / f"detect-{detection.score_name}" if out is None else Path(out)
        check_not_a_run(target, "a detection")
        with run_lock(target):
            detection.save(target)
        return detection
    _check(score in (None, "cleanlab"), f"score must be 'cleanlab' for kfold detection, got {score!r}")
    _check(out is not None, "kfold detection needs out (a directory for its fold runs and results)")
    check_not_a_run(out, "a detection")
    _cleanlab()  # before any fold trains
    for name, value in (("dataset", dataset), ("noise", noise)):
        if isinstance(value, str):  # a name, as train() takes it: a config field
            overrides[name] = value
    dataset, noise = (None if isinstance(v, str) else v for v in (dataset, noise))
    cfg = dataclasses.replace(config or TrainConfig(), **overrides).resolved()
    data = dataset if dataset is not None else load_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download)
    labels = noise if noise is not None else (
        NoisyLabels.load(cfg.noise, num_classes=data.num_classes, n=len(data.y_train)) if cfg.noise.endswith(".npz")
        else make_noise(cfg.noise, data.y_train, cfg.noise_rate, seed=cfg.seed, mode=cfg.noise_mode,
                        num_classes=data.num_classes, exact=cfg.noise_exact, dataset=data))
    _check(len(labels) == len(data.y_train), f"noise has {len(labels)} labels, the dataset {len(data.y_train)}")
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
    """The training set and labels to retrain on after detection ``detect_dir`` (for :func:`noisysam.train.train`;
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
    provenance["detection"].update(dropped=int(index.size), kept_rows_sha256=_rows_hash(keep))
    subset = ImageDataset(f"{dataset.name}-dropped", dataset.x_train[keep], dataset.y_train[keep], dataset.x_test,
                          dataset.y_test, dataset.classes)
    return subset, NoisyLabels(labels.noisy[keep], labels.clean[keep], labels.num_classes, provenance)


def _rows_hash(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<i8").tobytes()).hexdigest()
