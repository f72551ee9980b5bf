"""Label corruption: every common noise model, seeded, with its realised statistics and provenance.

Noise models follow the conventions of the learning-with-noisy-labels literature, which differ between
codebases (see :mod:`noisysam`'s "Conventions"); which one was used is recorded in every result:

- symmetric, ``mode="replace"``: with probability ``rate`` the label is re-drawn uniformly from all K
  classes, possibly landing on the true class (realised rate about rate*(K-1)/K; DivideMix/ELR).
- symmetric, ``mode="flip"``: with probability ``rate`` the label moves to a uniformly drawn *different*
  class (realised rate about ``rate``; Co-teaching).
- asymmetric: class-dependent flips (Patrini et al. 2017, arXiv 1609.03683), by the field's convention for the class
  count: CIFAR-10's class map on 10 classes, CIFAR-100's groups of 5 consecutive classes on 100 (ELR's); any other
  count needs a mapping. asymmetric-superclass: the next fine class of the same CIFAR-100 superclass.
- pairflip: class i -> i+1 mod K (Han et al. 2018, Co-teaching).
- from_transition: any row-stochastic matrix ``T[i, j] = P(noisy = j | clean = i)``.
- cifar10n: real human labels, CIFAR-10N (Wei et al. 2022, "Learning with Noisy Labels Revisited: A
  Study Using Real-World Human Annotations", ICLR 2022; CC BY-NC 4.0), and the consensus of its three annotators
  by cleanlab's multi-annotator majority vote (:func:`consensus`; cleanlab is an optional extra).

Randomness: every function takes an explicit ``seed`` (int or ``numpy.random.Generator``) and uses only
``Generator.random`` / ``integers`` / ``permutation`` of numpy's default PCG64 generator, whose streams
are integer arithmetic or exact 53-bit doubles and therefore identical on every platform.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, NamedTuple, Sequence, Union

import numpy as np
from sklearn.metrics import confusion_matrix

from noisysam.core.assets import find_data_file
from noisysam.core.files import FileFormatError, NpzArrays, atomic_write, schema_problem
from noisysam.core.params import (ArrayLike, Boolean, HasAttrs, InstanceOf, Interval, InvalidParameterError, Options,
                             validate_params)

__all__ = [
    "CIFAR100_ASYMMETRIC",
    "CIFAR100_COARSE",
    "CIFAR100_SUPERCLASS_ASYMMETRIC",
    "CIFAR10_ASYMMETRIC",
    "CIFAR10N_ANNOTATORS",
    "CIFAR10N_KINDS",
    "KINDS",
    "MAX_CLASSES",
    "RATED_KINDS",
    "NoisyLabels",
    "asymmetric",
    "cifar10n",
    "cifar10n_annotators",
    "cleanlab_module",
    "consensus",
    "from_transition",
    "label",
    "make",
    "pairflip",
    "symmetric",
]

Seed = Union[int, np.random.Generator]

#: CIFAR-10 class-dependent noise (torchvision class order): truck->automobile, bird->airplane,
#: deer->horse, cat<->dog (Patrini et al. 2017, "Making Deep Neural Networks Robust to Label Noise").
CIFAR10_ASYMMETRIC: Mapping[int, int] = MappingProxyType({9: 1, 2: 0, 4: 7, 3: 5, 5: 3})  # read-only

#: CIFAR-100's superclass (coarse label, 0-19) of each fine label 0-99, both in torchvision's order (the names sorted
#: alphabetically, as in the dataset's ``meta`` file; https://www.cs.toronto.edu/~kriz/cifar.html). The standard table,
#: as in ryanchankh/cifar100coarse ``cifar100coarse.py`` and UCSC-REAL/cifar-10-100n ``fine2coarse.py``.
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,  # apple, aquarium_fish, baby, bear, beaver, bed, bee, beetle, bicycle, bottle
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,  # bowl .. cattle
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,  # chair .. dinosaur
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,  # dolphin .. keyboard
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,  # lamp .. mountain
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,  # mouse .. pine_tree
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,  # plain .. rocket
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,  # rose .. spider
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,  # squirrel .. tractor
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,  # train, trout, tulip, turtle, wardrobe, whale, willow_tree, wolf, woman, worm
)


def _cycles(groups: Iterable[Sequence[int]]) -> Mapping[int, int]:
    """Each class of each group -> the next class of its group, the last -> the first (a read-only mapping)."""
    return MappingProxyType({a: b for group in groups for a, b in zip(group, (*group[1:], group[0]))})


#: CIFAR-100 class-dependent noise as Patrini et al.'s code makes it (arXiv 1609.03683; giorgiop/loss-correction
#: ``noise.py``, ``noisify_cifar100_asymmetric``) and ELR (arXiv 2007.00151; shengliu66/ELR
#: ``ELR/data_loader/cifar100.py``), JoCoR (arXiv 2003.02752; hongxin001/JoCoR ``data/utils.py``) and APL (arXiv
#: 2006.13554; HanxunH/Active-Passive-Losses ``archive/dataset.py``) repeat: classes in groups of 5 consecutive
#: indices, each to the next of its group (4 -> 0). Their comments say "superclass", but in torchvision's alphabetical
#: order these groups are not CIFAR-100's superclasses (the first is apple, aquarium_fish, baby, bear, beaver).
CIFAR100_ASYMMETRIC: Mapping[int, int] = _cycles([range(g, g + 5) for g in range(0, 100, 5)])

#: CIFAR-100 class-dependent noise within the real superclasses (:data:`CIFAR100_COARSE`): each fine class to the
#: next fine class of its superclass, in index order, the last to the first (beaver -> dolphin -> otter -> seal ->
#: whale -> beaver). What the papers above describe in words; noisysam's kind ``asymmetric-superclass``.
CIFAR100_SUPERCLASS_ASYMMETRIC: Mapping[int, int] = _cycles(
    [[f for f, c in enumerate(CIFAR100_COARSE) if c == coarse] for coarse in range(20)])


class _Convention(NamedTuple):
    classes: int  # the class count it is defined for
    mapping: Mapping[int, int]
    kind: str  # the name make() knows it by
    title: str  # for messages


#: The named class-dependent maps, by the name provenance records as ``convention``.
_CONVENTIONS: dict[str, _Convention] = {
    "cifar10": _Convention(10, CIFAR10_ASYMMETRIC, "asymmetric", "CIFAR-10's class map"),
    "cifar100-groups": _Convention(100, CIFAR100_ASYMMETRIC, "asymmetric", "CIFAR-100's groups-of-5 map"),
    "cifar100-superclass": _Convention(100, CIFAR100_SUPERCLASS_ASYMMETRIC, "asymmetric-superclass",
                                       "CIFAR-100's superclass map"),
}

#: The five CIFAR-10N label sets and the consensus of its three annotators (:func:`consensus`), with the fraction
#: of wrong labels on all 50,000 training images (``aggre`` is the dataset's own majority vote, ties broken at random).
CIFAR10N_KINDS: dict[str, float] = {
    "aggre": 0.0901, "random1": 0.1723, "random2": 0.1812, "random3": 0.1764, "worse": 0.4021, "consensus": 0.0811,
}
#: CIFAR-10N's three independent annotators, by the names of their label sets in noisysam/assets/cifar10n.npz.
CIFAR10N_ANNOTATORS: tuple[str, ...] = ("random1", "random2", "random3")

#: Names accepted by :func:`make` (the trainer's and CLI's ``noise`` option).
KINDS: tuple[str, ...] = ("none", "symmetric", "asymmetric", "asymmetric-superclass", "pairflip") + tuple(
    f"cifar10n-{k}" for k in CIFAR10N_KINDS
)

#: The kinds whose rate is a parameter; the others (none, cifar10n-*, a labels file) fix their own labels.
RATED_KINDS: tuple[str, ...] = ("symmetric", "asymmetric", "asymmetric-superclass", "pairflip")

def label(kind: str, rate: float) -> str:
    """"symmetric 40%"; the rate only for the kinds that take one (not cifar10n-*, none or a labels file)."""
    if kind in RATED_KINDS:
        return f"{kind} {rate:.0%}"
    return Path(kind).name if kind.endswith(".npz") else kind


#: The most classes a dataset or labels may have: every run keeps and records dense K x K matrices (the
#: realised transition T, confusion matrices), so K is bounded before any is allocated. 1000 covers
#: ImageNet-1k and WebVision; a label of 2**40 is refused instead of allocating terabytes.
MAX_CLASSES = 1000

_FILE_FORMAT = "noisysam.NoisyLabels/1"

#: Types of the provenance entries noisysam reads (each optional; other entries are free).
_PROVENANCE_TYPES: dict[str, Any] = {"kind": str, "nominal_rate": (int, float, type(None)), "mode": (str, type(None)),
                                     "seed": (int, type(None)), "exact": bool, "clean_sha256": str, "classes": list,
                                     "dataset": str}

#: The longest provenance string a labels file may hold (a 1000-class T in JSON takes about 20M characters).
_MAX_PROVENANCE_CHARS = 2**25

# The parameters the noise functions share, declared once (noisysam.core.params).
_LABELS = ArrayLike()
_RATE = Interval(float, 0, 1)
_NUM_CLASSES = [Interval(int, 2, MAX_CLASSES), None]
_SEED = [Interval(int, 0), InstanceOf(np.random.Generator, description="a numpy Generator")]
_MODE = Options(("replace", "flip"))
_MAPPING = InstanceOf(Mapping, description="a mapping {class: class}")
_DATASET = HasAttrs("y_train", description="a dataset with y_train (an ImageDataset)")


def int_sha256(values: np.ndarray) -> str:
    """sha256 of integers (labels, row indices) as little-endian int64: a labels file's ``clean_sha256`` (which
    labels were corrupted), a cleaned training set's ``kept_rows_sha256``."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<i8").tobytes()).hexdigest()


@validate_params(dict(noisy=_LABELS, clean=_LABELS, num_classes=Interval(int, 2, MAX_CLASSES),
                     provenance=InstanceOf(Mapping, description="a JSON-able dict")))
@dataclass(frozen=True, eq=False)
class NoisyLabels:
    """Noisy labels together with the clean ones they came from and how they were made.

    ``noisy``/``clean``: int64 arrays of shape (n,). Derived on construction: ``is_noisy`` (bool,
    exactly ``noisy != clean``), ``rate`` (realised fraction of wrong labels) and ``transition``, the
    realised K x K row-stochastic matrix ``T[i, j] = P(noisy = j | clean = i)`` estimated with
    ``sklearn.metrics.confusion_matrix`` normalised per row; a class with no samples gets the identity
    row (nothing observed, nothing corrupted), so T stays row-stochastic. ``provenance`` is a JSON-able
    dict: ``kind``, ``nominal_rate``, ``mode``, ``seed`` (each None where it does not apply: ``mode`` outside
    symmetric noise, ``seed`` for a caller's Generator or CIFAR-10N, ``nominal_rate`` for CIFAR-10N), the
    noise model's own parameters (``exact``, ``mapping``, ``T``, ...) and ``clean_sha256``, the sha256 of the
    clean labels (as little-endian int64), checked against ``clean`` on construction and on load. The arrays
    are read-only copies: edit a copy and build a new NoisyLabels, so provenance and rate stay true.
    """

    noisy: np.ndarray
    clean: np.ndarray
    num_classes: int
    provenance: dict[str, Any] = field(default_factory=dict)
    is_noisy: np.ndarray = field(init=False, repr=False)
    rate: float = field(init=False)
    transition: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        clean, k = _check_labels(self.clean, self.num_classes, "clean")
        noisy, _ = _check_labels(self.noisy, k, "noisy")
        if noisy.shape != clean.shape:
            raise ValueError(f"noisy and clean must have the same length, got {noisy.shape[0]} and {clean.shape[0]}")
        try:
            provenance = json.loads(json.dumps(self.provenance))  # a JSON-able copy, detached from the caller's
        except (TypeError, ValueError) as e:
            raise InvalidParameterError(f"provenance must be a JSON-able dict, got one that is not ({e})") from None
        problem = schema_problem(provenance, _PROVENANCE_TYPES, optional=True)
        if problem:
            raise ValueError(f"provenance: {problem}")
        digest = int_sha256(clean)
        if provenance.setdefault("clean_sha256", digest) != digest:
            raise ValueError("provenance['clean_sha256'] does not match the clean labels: they are not the labels "
                             "this provenance describes")
        is_noisy = noisy != clean
        counts = confusion_matrix(clean, noisy, labels=np.arange(k)).astype(np.float64)
        rows = counts.sum(axis=1, keepdims=True)
        transition = np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(k))
        for array in (noisy, clean, is_noisy, transition):
            array.flags.writeable = False  # the labels a result came from can't be changed behind its back
        for name, value in [("num_classes", k), ("noisy", noisy), ("clean", clean), ("provenance", provenance),
                            ("is_noisy", is_noisy), ("rate", float(is_noisy.mean())),
                            ("transition", transition)]:
            object.__setattr__(self, name, value)  # frozen dataclass: fields are set once, here

    def __len__(self) -> int:
        return int(self.noisy.shape[0])

    def summary(self) -> dict[str, Any]:
        """JSON-able description: provenance, realised rate overall and per clean class, realised T."""
        per_class = [float(1.0 - self.transition[i, i]) for i in range(self.num_classes)]
        return {
            **self.provenance,
            "n": len(self),
            "num_classes": self.num_classes,
            "realised_rate": self.rate,
            "num_noisy": int(self.is_noisy.sum()),
            "realised_rate_per_class": per_class,
            "transition": self.transition.tolist(),
        }

    def save(self, path: Union[str, PathLike]) -> None:
        """Write to ``path`` (exactly that name) as .npz: arrays plus provenance as a JSON string. Atomic: an
        interrupted save never leaves a half-written file, nor destroys the one it replaces."""
        arrays = dict(format=np.array(_FILE_FORMAT), noisy=self.noisy, clean=self.clean,
                      num_classes=np.array(self.num_classes, dtype=np.int64),
                      provenance=np.array(json.dumps(self.provenance, sort_keys=True)))
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))

    @classmethod
    def load(cls, path: Union[str, PathLike], *, num_classes: int | None = None, n: int | None = None) -> "NoisyLabels":
        """Read a file written by :meth:`save`; validates it and checks the clean labels' hash. ``num_classes``
        and ``n``: the data the labels are for; a file claiming more classes or other than ``n`` labels is refused.
        Shapes, dtypes and the class count are checked before the label arrays are read (FileFormatError)."""
        with NpzArrays(path, "noisy labels") as npz:
            h = npz.headers
            missing = sorted({"format", "noisy", "clean", "num_classes", "provenance"} - set(h))
            if missing:
                raise npz.error(f"is not a NoisyLabels file (expected format {_FILE_FORMAT!r}; missing members: {missing})")
            problems = _header_problems(h, n)
            if problems:
                raise npz.error(problems[0])
            if npz.read("format").tolist() != _FILE_FORMAT:
                raise npz.error(f"is not a NoisyLabels file (expected format {_FILE_FORMAT!r})")
            limit = MAX_CLASSES if num_classes is None else min(MAX_CLASSES, num_classes)
            k = int(npz.read("num_classes"))
            if not 2 <= k <= limit:
                data = "" if num_classes is None else f" (the data has {num_classes} classes)"
                raise npz.error(f"num_classes must be in [2, {limit}]{data}, got {k}")
            try:
                provenance = json.loads(npz.read("provenance").tolist())
            except (json.JSONDecodeError, RecursionError) as e:
                raise npz.error(f"provenance is not valid JSON ({e})") from None
            if not isinstance(provenance, dict):
                raise npz.error(f"provenance must be a JSON object, got {type(provenance).__name__}")
            noisy, clean = npz.read("noisy"), npz.read("clean")
        try:
            return cls(noisy, clean, k, provenance)
        except ValueError as e:  # includes a clean-labels hash that no longer matches: altered or corrupt
            raise FileFormatError(path, f"invalid NoisyLabels file: {e}", "noisy labels") from None


# ----------------------------------------------------------------------------------------- validation

def _header_problems(h: Mapping[str, Any], n: int | None) -> list[str]:
    """What is wrong with a labels file's .npy headers (name -> (shape, dtype)), found before any array is read."""
    def one_string(name: str, chars: int) -> bool:
        return h[name].shape == () and h[name].dtype.kind == "U" and h[name].dtype.itemsize <= 4 * chars

    count = "" if n is None else f"{n} "
    checks = [(one_string("format", len(_FILE_FORMAT)), "is not a NoisyLabels file (its format is not one string)"),
              (h["num_classes"].shape == () and h["num_classes"].dtype.kind in "iu",
               f"num_classes must be one integer, got {h['num_classes'].dtype} {h['num_classes'].shape}"),
              (one_string("provenance", _MAX_PROVENANCE_CHARS),
               f"provenance must be one JSON string, got {h['provenance'].dtype} {h['provenance'].shape}")]
    for name in ("clean", "noisy"):
        shape, dtype = h[name]
        ok = len(shape) == 1 and dtype.kind in "iu" and shape == h["clean"].shape and (n is None or shape == (n,))
        checks.append((ok, f"{name} must be {count}integer labels, as many as clean, got {dtype} {shape}"))
    return [problem for ok, problem in checks if not ok]


def _check_labels(labels: Any, num_classes: int | None = None, name: str = "labels") -> tuple[np.ndarray, int]:
    """Labels as a fresh 1-D int64 array with values in [0, K), and K: ``num_classes`` validated, or
    inferred as max(labels) + 1 (pass ``num_classes`` when some classes may be absent)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if num_classes is None:
        num_classes = max(hi + 1, 2)
        if num_classes > MAX_CLASSES:
            raise ValueError(f"{name} imply {num_classes} classes (largest label {hi}); at most {MAX_CLASSES} are "
                             "supported")
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or \
            not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be an integer in [2, {MAX_CLASSES}], got {num_classes!r}")
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
    return arr.astype(np.int64, copy=True), int(num_classes)


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))


def _seed_record(seed: Seed) -> int | None:
    """The seed as recorded in provenance (None: a caller-owned Generator, not reproducible from the file)."""
    return None if isinstance(seed, np.random.Generator) else int(seed)


def _select(rng: np.random.Generator, n: int, rate: float, exact: bool) -> np.ndarray:
    """Boolean mask over n items: independent Bernoulli(rate) draws, or exactly round(rate * n) items."""
    if exact:
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[: round(rate * n)]] = True
        return mask
    return rng.random(n) < rate


# --------------------------------------------------------------------------------------- noise models

@validate_params(dict(labels=_LABELS, rate=_RATE, num_classes=_NUM_CLASSES, seed=_SEED, mode=_MODE, exact=Boolean()))
def symmetric(labels: Any, rate: float, num_classes: int | None = None, *, seed: Seed,
              mode: str = "replace", exact: bool = False) -> NoisyLabels:
    """Class-independent noise.

    ``mode="replace"``: each selected label is re-drawn uniformly from all K classes (may stay correct:
    realised rate about rate*(K-1)/K). ``mode="flip"``: each selected label becomes a uniformly drawn
    different class (realised rate about ``rate``). Selection is per-sample Bernoulli(rate), or with
    ``exact=True`` exactly round(rate * n) samples (Python rounding, half to even).
    """
    clean, k = _check_labels(labels, num_classes)
    rate = float(rate)
    rng = _rng(seed)
    mask = _select(rng, clean.size, rate, exact)
    if mode == "replace":
        new = rng.integers(0, k, size=clean.size)
    else:  # a uniform offset in 1..K-1 lands uniformly on the K-1 other classes
        new = (clean + rng.integers(1, k, size=clean.size)) % k
    noisy = np.where(mask, new, clean)
    return NoisyLabels(noisy, clean, k, dict(kind="symmetric", nominal_rate=rate, mode=mode, exact=bool(exact),
                                            seed=_seed_record(seed)))


def _mapped(kind: str, labels: Any, rate: float, mapping: Mapping[int, int], num_classes: int | None,
            seed: Seed, exact: bool, record: Mapping[str, Any] = MappingProxyType({})) -> NoisyLabels:
    """Move each label of a class in ``mapping`` to ``mapping[class]`` with probability ``rate``; ``record``: more
    provenance."""
    mapping = {int(a): int(b) for a, b in mapping.items()}
    clean, k = _check_labels(labels, num_classes)
    if num_classes is None and mapping:  # the mapping names classes too
        k = max(k, max(max(mapping), max(mapping.values())) + 1)
        if k > MAX_CLASSES:
            raise ValueError(f"mapping names class {k - 1}; at most {MAX_CLASSES} classes are supported")
    rate = float(rate)
    bad = [(a, b) for a, b in mapping.items() if a == b or not (0 <= a < k and 0 <= b < k)]
    if bad:
        raise ValueError(f"mapping must send classes in [0, {k}) to a different class, got {bad}")
    target = np.arange(k)
    target[list(mapping)] = list(mapping.values())
    eligible = np.flatnonzero(target[clean] != clean)
    noisy = clean.copy()
    chosen = eligible[_select(_rng(seed), eligible.size, rate, exact)]
    noisy[chosen] = target[clean[chosen]]
    provenance = dict(kind=kind, nominal_rate=rate, mode=None, exact=bool(exact), seed=_seed_record(seed), **record)
    return NoisyLabels(noisy, clean, k, provenance)


def _convention(mapping: Mapping[int, int] | None, k: int, inferred: bool) -> str | None:
    """The name of the convention ``mapping`` is (None: the caller's own), checked against the labels' class count
    ``k`` (``inferred`` from the labels: a smaller count is the convention's, with classes absent); ``mapping=None``
    names the convention for ``k``: CIFAR-10's for 10 (or fewer, inferred), the groups of 5 for 100."""
    if mapping is None:
        name = "cifar10" if k == 10 or (inferred and k < 10) else "cifar100-groups" if k == 100 else None
        if name is None:
            raise ValueError(f"asymmetric noise has conventions for 10 classes (CIFAR-10) and 100 (CIFAR-100), "
                             f"not {k}: pass a mapping, or use pairflip")
        return name
    name = next((n for n, c in _CONVENTIONS.items() if c.mapping == mapping), None)
    if name is not None:
        c = _CONVENTIONS[name]
        if k != c.classes and not (inferred and k < c.classes):
            raise ValueError(f"{c.title} is for {c.classes} classes; these labels have {k}")
    return name


@validate_params(dict(labels=_LABELS, rate=_RATE, seed=_SEED, mapping=[_MAPPING, None], num_classes=_NUM_CLASSES,
                     exact=Boolean()))
def asymmetric(labels: Any, rate: float, *, seed: Seed, mapping: Mapping[int, int] | None = None,
               num_classes: int | None = None, exact: bool = False) -> NoisyLabels:
    """Class-dependent noise (Patrini et al. 2017, arXiv 1609.03683): a label of class ``a`` in ``mapping`` becomes
    ``mapping[a]`` with probability ``rate`` (or, with ``exact``, exactly round(rate * n_eligible) of them); classes
    not in ``mapping`` are untouched.

    ``mapping=None``: the field's convention for K = ``num_classes`` (else max(labels) + 1): :data:`CIFAR10_ASYMMETRIC`
    for 10 (also for fewer, inferred), :data:`CIFAR100_ASYMMETRIC` (groups of 5, as ELR) for 100; any other K is
    refused. A named map (those two, :data:`CIFAR100_SUPERCLASS_ASYMMETRIC`) on another class count is refused.
    Provenance records ``mapping`` and ``convention``, the map's name (None for another mapping)."""
    mapping = None if mapping is None else {int(a): int(b) for a, b in mapping.items()}
    _, k = _check_labels(labels, num_classes)
    name = _convention(mapping, k, inferred=num_classes is None)
    kind = "asymmetric"
    if name is not None:
        convention = _CONVENTIONS[name]
        kind, mapping, num_classes = convention.kind, convention.mapping, convention.classes
    record = dict(convention=name, mapping={str(a): b for a, b in sorted(mapping.items())})
    return _mapped(kind, labels, rate, mapping, num_classes, seed, exact, record)


@validate_params(dict(labels=_LABELS, rate=_RATE, num_classes=_NUM_CLASSES, seed=_SEED, exact=Boolean()))
def pairflip(labels: Any, rate: float, num_classes: int | None = None, *, seed: Seed,
             exact: bool = False) -> NoisyLabels:
    """Pair-flip noise: class i becomes i+1 mod K with probability ``rate`` (Han et al. 2018)."""
    _, k = _check_labels(labels, num_classes)
    return _mapped("pairflip", labels, rate, _cycles([range(k)]), k, seed, exact)


@validate_params(dict(labels=_LABELS, T=ArrayLike(), seed=_SEED))
def from_transition(labels: Any, T: Any, *, seed: Seed) -> NoisyLabels:
    """Draw each noisy label from row ``clean`` of ``T`` (K x K, ``T[i, j] = P(noisy = j | clean = i)``).

    Vectorised inverse-CDF sampling, equivalent to ``for s: noisy[s] = first j with u[s] < cumsum(T[clean[s]])[j]``
    (rows renormalised to sum to exactly 1; a class with probability 0 is never drawn). Provenance records
    ``T`` and, as ``nominal_rate``, the fraction of wrong labels T implies for these clean labels,
    ``mean(1 - T[clean, clean])``.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < 2:
        raise ValueError(f"T must be a K x K matrix with K >= 2, got shape {T.shape}")
    if not np.all(np.isfinite(T)) or T.min() < 0 or not np.allclose(T.sum(axis=1), 1.0, atol=1e-6, rtol=0):
        raise ValueError(f"T must be row-stochastic (entries >= 0, rows summing to 1), got row sums {T.sum(axis=1)}")
    clean, k = _check_labels(labels, T.shape[0])
    cdf = np.cumsum(T / T.sum(axis=1, keepdims=True), axis=1)
    # From each row's last positive entry on, the CDF is exactly 1: rows summing to 1 - 1e-7 (accepted above)
    # or rounding in cumsum must not leave u in [cdf[last], 1) to a trailing zero-probability class.
    last = k - 1 - np.argmax(T[:, ::-1] > 0, axis=1)
    cdf[np.arange(k)[None, :] >= last[:, None]] = 1.0
    u = _rng(seed).random(clean.size)
    noisy = (u[:, None] >= cdf[clean]).sum(axis=1)
    expected = float(np.mean(1.0 - np.diag(T)[clean]))  # the rate T implies for these clean labels
    return NoisyLabels(noisy, clean, k, dict(kind="transition", nominal_rate=expected, mode=None,
                                            seed=_seed_record(seed), T=T.tolist()))


def _cifar10n_fits(num_classes: int | None) -> None:
    """CIFAR-10N's labels are for CIFAR-10's 10 classes: a dataset with another class count is refused."""
    if num_classes is not None and num_classes != 10:
        raise ValueError(f"CIFAR-10N is human labels for CIFAR-10's 10 classes; this data has {num_classes} classes")


def _cifar10n_columns(dataset: Any, columns: tuple[str, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """``dataset.y_train`` (checked to be CIFAR-10's clean labels at ``dataset.train_index``) and the CIFAR-10N
    label sets ``columns`` at those positions, each int64 of the dataset's length."""
    _cifar10n_fits(getattr(dataset, "num_classes", 10))
    index = getattr(dataset, "train_index", None)
    if index is None:
        raise ValueError("dataset.train_index is None: CIFAR-10N needs each image's position in CIFAR-10's training set")
    with np.load(find_data_file("cifar10n.npz"), allow_pickle=False) as f:
        table_clean, tables = f["clean"].astype(np.int64), [f[c].astype(np.int64) for c in columns]
    index = np.asarray(index)
    if index.size == 0:
        raise ValueError("dataset.train_index is empty: CIFAR-10N needs at least one training image")
    if index.ndim != 1 or index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= table_clean.size:
        raise ValueError(f"dataset.train_index must be integers in [0, {table_clean.size}), got "
                         f"dtype {index.dtype}, values in [{index.min()}, {index.max()}]")
    clean, _ = _check_labels(dataset.y_train, 10, "dataset.y_train")
    if clean.shape != index.shape:
        raise ValueError(f"dataset.y_train and train_index differ in length: {clean.size} vs {index.size}")
    wrong = int((table_clean[index] != clean).sum())
    if wrong:
        raise ValueError(f"dataset.y_train disagrees with CIFAR-10's labels at {wrong} of {clean.size} "
                         "train_index positions: not a CIFAR-10 training subset in torchvision order")
    return clean, [t[index] for t in tables]


@validate_params(dict(dataset=_DATASET))
def cifar10n_annotators(dataset: Any) -> np.ndarray:
    """The three independent human labels CIFAR-10N has for each image of ``dataset`` (Wei et al. 2022, its
    ``random_label1/2/3``), as an (n, 3) int64 array, one column per annotator (:data:`CIFAR10N_ANNOTATORS`)."""
    return np.stack(_cifar10n_columns(dataset, CIFAR10N_ANNOTATORS)[1], axis=1)


def cleanlab_module(name: str) -> Any:
    """``cleanlab.<name>``, imported; cleanlab is an optional extra, so its absence is one line (ValueError)."""
    try:
        importlib.import_module("cleanlab")  # first: a cached submodule would hide a package that is gone
        return importlib.import_module(f"cleanlab.{name}")
    except ImportError:
        raise ValueError("cleanlab is not installed: pip install 'noisysam[cleanlab]'") from None


def consensus(annotations: Any, num_classes: int | None = None) -> np.ndarray:
    """The majority vote of ``annotations`` (n x M labels, one column per annotator) by
    ``cleanlab.multiannotator.get_majority_vote_label`` (CROWDLAB's consensus, Goh et al., arXiv 2210.06812):
    the label most annotators gave; a tie goes to the rarer class among all the annotations, then to the
    annotator who agrees most with the untied votes."""
    arr = np.asarray(annotations)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"annotations must be n x M labels with M >= 2 annotators, got shape {arr.shape}")
    flat, _ = _check_labels(arr.reshape(-1), num_classes, "annotations")
    multiannotator = cleanlab_module("multiannotator")
    return multiannotator.get_majority_vote_label(flat.reshape(arr.shape), verbose=False).astype(np.int64)


@validate_params(dict(dataset=_DATASET, kind=Options(CIFAR10N_KINDS)))
def cifar10n(dataset: Any, kind: str) -> NoisyLabels:
    """CIFAR-10N human labels (Wei et al. 2022) for ``dataset.y_train``, looked up by ``dataset.train_index``
    (each image's position in torchvision's CIFAR-10 training set). ``kind``: aggre, random1, random2,
    random3, worse, or consensus (:func:`consensus` of the three annotators on this dataset's images; needs
    cleanlab). Raises ValueError if the dataset's labels are not CIFAR-10's clean labels there."""
    if kind == "consensus":
        clean, columns = _cifar10n_columns(dataset, CIFAR10N_ANNOTATORS)
        noisy = consensus(np.stack(columns, axis=1), 10)
    else:
        clean, (noisy,) = _cifar10n_columns(dataset, (kind,))
    return NoisyLabels(noisy, clean, 10, dict(kind=f"cifar10n-{kind}", nominal_rate=None, mode=None,
                                              seed=None, source="CIFAR-10N, Wei et al. 2022 (CC BY-NC 4.0)"))


@validate_params(dict(kind=Options(KINDS), labels=[_LABELS, None], rate=_RATE, seed=[*_SEED, None], mode=_MODE,
                     num_classes=_NUM_CLASSES, exact=Boolean(), mapping=[_MAPPING, None], dataset=[_DATASET, None]))
def make(kind: str, labels: Any = None, rate: float = 0.0, *, seed: Seed | None = None, mode: str = "replace",
         num_classes: int | None = None, exact: bool = False, mapping: Mapping[int, int] | None = None,
         dataset: Any = None) -> NoisyLabels:
    """One entry point by name (see :data:`KINDS`): ``none``, ``symmetric``, ``asymmetric`` (the convention for the
    class count, or ``mapping``; :func:`asymmetric`), ``asymmetric-superclass`` (:data:`CIFAR100_SUPERCLASS_ASYMMETRIC`,
    100 classes only), ``pairflip``, ``cifar10n-<set>`` (10 classes only). ``labels`` defaults to ``dataset.y_train``;
    CIFAR-10N needs ``dataset`` (for its ``train_index``); ``seed`` is required by the random kinds; arguments a kind
    does not use are ignored. A kind that does not fit the class count raises ValueError."""
    if labels is None:
        if dataset is None:
            raise ValueError("make() needs labels or a dataset with y_train")
        labels = dataset.y_train
    if kind.startswith("cifar10n-"):
        _cifar10n_fits(num_classes)
        if dataset is None:
            raise ValueError(f"noise kind {kind!r} needs dataset= (an ImageDataset with train_index)")
        if not np.array_equal(np.asarray(labels), np.asarray(dataset.y_train)):
            raise ValueError(f"noise kind {kind!r}: labels must be dataset.y_train")
        return cifar10n(dataset, kind.removeprefix("cifar10n-"))
    if kind == "symmetric":
        return symmetric(labels, rate, num_classes, seed=seed, mode=mode, exact=exact)
    if kind.startswith("asymmetric"):
        chosen = CIFAR100_SUPERCLASS_ASYMMETRIC if kind == "asymmetric-superclass" else mapping
        return asymmetric(labels, rate, seed=seed, num_classes=num_classes, exact=exact, mapping=chosen)
    if kind == "pairflip":
        return pairflip(labels, rate, num_classes, seed=seed, exact=exact)
    clean, k = _check_labels(labels, num_classes)
    return NoisyLabels(clean.copy(), clean, k, dict(kind="none", nominal_rate=0.0, mode=None, seed=None))
