"""Training methods for noisy labels, by name: each name is a factory of a :class:`~noisysam.methods.rules.Method`
(rules.py) or of a :class:`~noisysam.methods.learner.LearnerMethod` (elr.py, coteaching.py, dividemix.py).

Each name has one record, :class:`MethodInfo` in :data:`REGISTRY` (as timm keeps one ``OptimInfo`` per optimizer):
its factory, parameters and defaults, passes per step, networks, whether it needs the labels' noise rate and its
radius rule. ``METHODS``, ``SAM_RADIUS_METHODS`` and ``NOISE_RATE_METHODS`` are views of it.

Radius: the methods with ``sam_radius`` (sam, bootstrap-sam, mixup-sam, ...) take plain SAM's radius, so a training
profile's rho applies to them; asam's radius is on another scale (T-normalised ball) and keeps its own.

Names and defaults (``get_method(name, **params)``):

==================  ==========================================================================
sgd                 (no parameters)
mixup               alpha=1.0
bootstrap           mode="relabel" | "soft" (beta=0.95) | "hard" (beta=0.8)
bootstrap-mixup     mode="relabel", beta=None, alpha=1.0
sam                 rho=0.05, p=2.0, adaptive=False, m=None   (adaptive=True: davda54/sam's T = |w|)
bootstrap-sam       mode="relabel", beta=None, rho=0.05, p=2.0, adaptive=False, m=None
mixup-sam           alpha=1.0, rho=0.05, p=2.0, adaptive=False, m=None
asam                rho=0.5, p=2.0, m=None, normalisation="paper" (eta=0.01) | "davda54"
gce                 q=0.7
label-smoothing     eps=0.1
looksam             rho=0.05, k=5, alpha=0.1                 (LookSAM, arXiv 2203.02714)
random-sam          p=0.5, p_start=None, rho=0.05            (RST, arXiv 2203.09962; p: a probability)
ae-sam              c=0.0, c_start=None, delta=0.9, warmup=10, rho=0.05   (AE-SAM, arXiv 2304.14647)
momentum-sam        rho=0.5                                  (MSAM, arXiv 2401.12033)
sam-on              rho=0.5                                  (SAM-ON, arXiv 2306.04226)
norm-penalty        weight=1e-2, feature=1e-3                (Baek et al., arXiv 2405.03676)
elr                 beta=0.7, lam=3.0                        (ELR, arXiv 2007.00151; noisysam.methods.elr)
co-teaching         tau=None (the labels' noise rate), tk=10  (arXiv 1804.06872; noisysam.methods.coteaching)
dividemix           warmup=10, lambda_u=25.0, temperature=0.5, alpha=4.0, threshold=0.5
                                                             (arXiv 2002.07394; noisysam.methods.dividemix)
elr-sam             elr's parameters, rho=None, update="sam" | "momentum-sam"
co-teaching-sam     co-teaching's parameters, rho=None, update="sam" | "momentum-sam"
dividemix-sam       dividemix's parameters, rho=None, update="sam" | "momentum-sam"
==================  ==========================================================================

The last six train through a :class:`noisysam.methods.learner.Learner` (per-sample state, two networks). Their
``-sam`` forms take the update of SAM (rho None: the profile's SAM radius, as for sam) or, with
``update="momentum-sam"``, momentum-SAM's one-pass update (rho None: its own 0.5).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, MutableMapping, MutableSet
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Union

from noisysam.optim import variants
from noisysam.methods.coteaching import CoTeaching
from noisysam.methods.dividemix import DivideMix
from noisysam.methods.elr import ELR
from noisysam.methods.learner import LearnerMethod
from noisysam.core.params import Boolean, HasAttrs, Interval, Text, validate_params, validate_with
from noisysam.methods.rules import (METHOD_PARAMS, BootstrapLoss, GeneralizedCrossEntropy, LabelSmoothing, Method,
                                    MixupInputs, RelabelAndRetrain, SAMUpdate, SGDUpdate, UpdateRule)

__all__ = [
    "MethodInfo",
    "REGISTRY",
    "method_info",
    "METHODS",
    "get_method",
    "register_method",
    "SAM_RADIUS_METHODS",
    "NOISE_RATE_METHODS",
    "SAM_UPDATES",
    "takes_param",
    "default_param",
]

_checked = validate_with(METHOD_PARAMS)

AnyMethod = Union[Method, RelabelAndRetrain, LearnerMethod]

BOOTSTRAP_BETA = {"soft": 0.95, "hard": 0.8}  # Reed et al.'s values (their Section 4)


@_checked
def _sgd() -> Method:
    return Method("sgd")


@_checked
def _mixup(alpha: float = 1.0) -> Method:
    return Method("mixup", inputs=MixupInputs(alpha), params={"alpha": alpha})


@_checked
def _sam(rho: float = 0.05, p: float = 2.0, adaptive: bool = False, m: int | None = None) -> Method:
    update = SAMUpdate(rho, p, adaptive, m)
    return Method("sam", update=update, params={"rho": rho, "p": p, "adaptive": adaptive, "m": m})


@_checked
def _asam(
    rho: float = 0.5, p: float = 2.0, m: int | None = None, normalisation: str = "paper", eta: float | None = None
) -> Method:
    """ASAM (Kwon et al., arXiv 2102.11600) at its own CIFAR-10 radius 0.5 (10x SAM's; davda54/sam's example
    uses 2.0). ``normalisation="paper"``: the paper's T = |w| + eta (eta = 0.01 as the ASAM class of the
    authors' code, SamsungLabs/ASAM) on the parameters named "weight", T = 1 on the rest; ``"davda54"``:
    davda54/sam's ``adaptive=True``, T = |w| on every parameter (it takes no eta)."""
    if normalisation == "davda54" and eta is not None:
        raise ValueError(f"eta applies to normalisation 'paper' only, got eta={eta} with 'davda54'")
    paper = normalisation == "paper"
    eta = (0.01 if eta is None else eta) if paper else 0.0
    update = SAMUpdate(rho, p, True, m, eta=eta, weights_only=paper)
    params = {"rho": rho, "p": p, "m": m, "normalisation": normalisation, **({"eta": eta} if paper else {})}
    return Method("asam", update=update, params=params)


@_checked
def _mixup_sam(
    alpha: float = 1.0, rho: float = 0.05, p: float = 2.0, adaptive: bool = False, m: int | None = None
) -> Method:
    sam = _sam(rho, p, adaptive, m)
    return replace(sam, name="mixup-sam", inputs=MixupInputs(alpha), params={"alpha": alpha, **sam.params})


@_checked
def _gce(q: float = 0.7) -> Method:
    return Method("gce", loss=GeneralizedCrossEntropy(q), params={"q": q})


@_checked
def _label_smoothing(eps: float = 0.1) -> Method:
    return Method("label-smoothing", loss=LabelSmoothing(eps), params={"eps": eps})


def _with_bootstrap(name: str, base: Method, mode: str, beta: float | None) -> AnyMethod:
    """``base`` bootstrapped: relabel-and-retrain around it, or its loss replaced by Reed et al.'s."""
    if mode == "relabel":
        if beta is not None:
            raise ValueError(f"beta applies to mode 'soft' or 'hard' only, got beta={beta} with mode 'relabel'")
        return RelabelAndRetrain(name, base, params={"mode": mode, **base.params})
    beta = BOOTSTRAP_BETA[mode] if beta is None else beta
    loss = BootstrapLoss(beta, hard=mode == "hard")
    return replace(base, name=name, loss=loss, params={"mode": mode, "beta": beta, **base.params})


@_checked
def _bootstrap(mode: str = "relabel", beta: float | None = None) -> AnyMethod:
    return _with_bootstrap("bootstrap", _sgd(), mode, beta)


@_checked
def _bootstrap_mixup(mode: str = "relabel", beta: float | None = None, alpha: float = 1.0) -> AnyMethod:
    return _with_bootstrap("bootstrap-mixup", _mixup(alpha), mode, beta)


@_checked
def _bootstrap_sam(
    mode: str = "relabel",
    beta: float | None = None,
    rho: float = 0.05,
    p: float = 2.0,
    adaptive: bool = False,
    m: int | None = None,
) -> AnyMethod:
    return _with_bootstrap("bootstrap-sam", _sam(rho, p, adaptive, m), mode, beta)


#: The update rules a field method's ``-sam`` form may take, by its ``update`` parameter.
SAM_UPDATES = {"sam": SAMUpdate, "momentum-sam": variants.MomentumSAMUpdate}


def _sam_update(update: str, rho: float | None) -> UpdateRule:
    """SAM's update rule or momentum-SAM's, at ``rho`` (None: the rule's own default radius)."""
    rule = SAM_UPDATES[update]
    return rule() if rho is None else rule(rho=rho)


def _sam_params(rule: UpdateRule, update: str) -> dict[str, Any]:
    return {"rho": rule.rho, "update": update}  # type: ignore[attr-defined]


@_checked
def _elr(beta: float = 0.7, lam: float = 3.0) -> ELR:
    return ELR("elr", SGDUpdate(), beta, lam, params={"beta": beta, "lam": lam})


@_checked
def _elr_sam(beta: float = 0.7, lam: float = 3.0, rho: float | None = None, update: str = "sam") -> ELR:
    rule = _sam_update(update, rho)
    return ELR("elr-sam", rule, beta, lam, params={"beta": beta, "lam": lam, **_sam_params(rule, update)})


@_checked
def _co_teaching(tau: float | None = None, tk: int = 10) -> CoTeaching:
    return CoTeaching("co-teaching", SGDUpdate(), tau, tk, params={"tau": tau, "tk": tk})


@_checked
def _co_teaching_sam(tau: float | None = None, tk: int = 10, rho: float | None = None,
                     update: str = "sam") -> CoTeaching:
    rule = _sam_update(update, rho)
    return CoTeaching("co-teaching-sam", rule, tau, tk, params={"tau": tau, "tk": tk, **_sam_params(rule, update)})


@_checked
def _dividemix(warmup: int = 10, lambda_u: float = 25.0, temperature: float = 0.5, alpha: float = 4.0,
               threshold: float = 0.5) -> DivideMix:
    params = dict(warmup=warmup, lambda_u=lambda_u, temperature=temperature, alpha=alpha, threshold=threshold)
    return DivideMix("dividemix", SGDUpdate(), warmup, lambda_u, temperature, MixupInputs(alpha), threshold, params)


@_checked
def _dividemix_sam(warmup: int = 10, lambda_u: float = 25.0, temperature: float = 0.5, alpha: float = 4.0,
                   threshold: float = 0.5, rho: float | None = None, update: str = "sam") -> DivideMix:
    params = dict(warmup=warmup, lambda_u=lambda_u, temperature=temperature, alpha=alpha, threshold=threshold)
    rule = _sam_update(update, rho)
    return DivideMix("dividemix-sam", rule, warmup, lambda_u, temperature, MixupInputs(alpha), threshold,
                     {**params, **_sam_params(rule, update)})


MethodFactory = Callable[..., AnyMethod]


def _variant_factory(name: str, update: type) -> MethodFactory:
    """The factory of variant ``name``: cross-entropy on plain inputs with ``update``'s rule (noisysam.optim.variants,
    SGD-priced update rules composable with any loss and input rule, e.g. replace(get_method("looksam"),
    inputs=MixupInputs(8.0))). Its parameters, defaults and checks are the update rule's dataclass fields, declared
    once there; params are those fields."""

    def factory(**params: Any) -> Method:
        rule = update(**params)
        return Method(name, update=rule, params=dataclasses.asdict(rule))

    factory.__signature__ = inspect.signature(update).replace(return_annotation=Method)  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = "_" + name.replace("-", "_")
    return variants.checked(factory)


#: What a method's record says of it (:class:`MethodInfo`), checked when a record is made.
INFO_PARAMS = dict(name=Text(), factory=HasAttrs("__call__", description="a callable"),
                   description=[Text(), None], passes=[Text(), None], networks=Interval(int, 1),
                   sam_radius=Boolean(), noise_rate_param=[Text(r"[A-Za-z_]\w*", "a parameter name"), None])


@validate_params(INFO_PARAMS)
@dataclass(frozen=True)
class MethodInfo:
    """One method's facts, declared once (as timm keeps one ``OptimInfo`` per optimizer): ``name`` (the CLI's and
    the API's), ``factory`` (``get_method(name, **params)`` calls it), a one-line ``description`` (None: none given), ``passes`` (the
    forward-and-backward passes of the model per step and network, as the cost table counts them: a number, or the
    rule where a parameter or the data decide; None: not declared), ``networks`` (how many it trains),
    ``sam_radius`` (its ``rho`` is plain SAM's radius, so a training profile's applies: the radius rule, see
    :attr:`radius`) and ``noise_rate_param`` (the parameter that gets the labels' noise rate when none is given,
    as co-teaching's ``tau``; None: it needs none).

    Its parameters and their defaults are read from the factory's signature once, when the record is made:
    ``params`` (every parameter name), ``defaults`` (those with a default) and ``open_params`` (it takes **kwargs).
    """

    name: str
    factory: MethodFactory
    description: Optional[str] = None
    passes: Optional[str] = None
    networks: int = 1
    sam_radius: bool = False
    noise_rate_param: Optional[str] = None
    params: tuple[str, ...] = field(init=False)
    defaults: dict[str, Any] = field(init=False)
    open_params: bool = field(init=False)

    def __post_init__(self) -> None:
        parameters = inspect.signature(self.factory).parameters
        object.__setattr__(self, "params", tuple(parameters))
        object.__setattr__(self, "defaults", {name: p.default for name, p in parameters.items()
                                              if p.default is not inspect.Parameter.empty})
        object.__setattr__(self, "open_params", any(p.kind is inspect.Parameter.VAR_KEYWORD
                                                    for p in parameters.values()))
        if self.noise_rate_param is not None and not self.takes(self.noise_rate_param):
            raise ValueError(f"method {self.name!r} needs the noise rate as its parameter {self.noise_rate_param!r}, "
                             f"but its factory takes {list(self.params)}")

    @property
    def needs_noise_rate(self) -> bool:
        """Whether the trainer fills :attr:`noise_rate_param` from the labels (:func:`noisysam.run.config.build_method`)."""
        return self.noise_rate_param is not None

    @property
    def radius(self) -> Optional[str]:
        """The radius rule: "profile" (a ``rho`` left unset is the training profile's SAM radius: plain SAM's ball),
        "own" (the method's own default, e.g. asam's 0.5: another ball), None (it takes no ``rho``)."""
        if not self.takes("rho"):
            return None
        return "profile" if self.sam_radius else "own"

    def takes(self, param: str) -> bool:
        """Whether the factory takes ``param`` (by name, or through **kwargs)."""
        return param in self.params or self.open_params


_FIELD = "(arXiv {}; noisysam.methods.{})"

#: Every method by name, one record each, in the order the command line lists them.
REGISTRY: dict[str, MethodInfo] = {info.name: info for info in (
    MethodInfo("sgd", _sgd, "cross-entropy, SGD", "1"),
    MethodInfo("mixup", _mixup, "mixup inputs (arXiv 1710.09412), SGD", "1"),
    MethodInfo("bootstrap", _bootstrap, "the SAM paper's relabel-and-retrain (two stages) or Reed et al.'s soft/hard "
               "loss (arXiv 1412.6596), SGD", "1"),
    MethodInfo("bootstrap-mixup", _bootstrap_mixup, "bootstrap around mixup", "1"),
    MethodInfo("sam", _sam, "SAM (arXiv 2010.01412): p-norm ball, m-sharpness, davda54's adaptive", "2",
               sam_radius=True),
    MethodInfo("bootstrap-sam", _bootstrap_sam, "bootstrap around SAM", "2", sam_radius=True),
    MethodInfo("mixup-sam", _mixup_sam, "mixup inputs, SAM steps", "2", sam_radius=True),
    MethodInfo("asam", _asam, "ASAM (arXiv 2102.11600): a ball scaled by |w| + eta", "2"),
    MethodInfo("gce", _gce, "generalized cross-entropy (arXiv 1805.07836), SGD", "1"),
    MethodInfo("label-smoothing", _label_smoothing, "label smoothing (arXiv 1512.00567), SGD", "1"),
    MethodInfo("elr", _elr, "early-learning regularisation " + _FIELD.format("2007.00151", "elr"), "1"),
    MethodInfo("elr-sam", _elr_sam, "elr with SAM's update, or momentum-SAM's", "2 (1 with update='momentum-sam')",
               sam_radius=True),
    MethodInfo("co-teaching", _co_teaching, "Co-teaching " + _FIELD.format("1804.06872", "coteaching"),
               "1 + r forward, r backward (r: the kept share of the batch)", CoTeaching.networks,
               noise_rate_param="tau"),
    MethodInfo("co-teaching-sam", _co_teaching_sam, "co-teaching with SAM's update, or momentum-SAM's",
               "1 + 2r forward, 2r backward (r: the kept share; 1 + r, r with update='momentum-sam')",
               CoTeaching.networks, sam_radius=True, noise_rate_param="tau"),
    MethodInfo("dividemix", _dividemix, "DivideMix " + _FIELD.format("2002.07394", "dividemix"),
               "1 per MixMatch step, and co-divide's passes over the training set each epoch", DivideMix.networks),
    MethodInfo("dividemix-sam", _dividemix_sam, "dividemix with SAM's update, or momentum-SAM's",
               "2 per MixMatch step (1 with update='momentum-sam'), and co-divide's passes each epoch",
               DivideMix.networks, sam_radius=True),
    # The cheaper SAM variants. looksam, random-sam and ae-sam take plain SAM's steps (same ball, same radius), so a
    # profile's SAM radius applies to them; momentum-sam and sam-on perturb along other directions or subsets and
    # keep their own default.
    MethodInfo("looksam", _variant_factory("looksam", variants.LookSAMUpdate), "LookSAM (arXiv 2203.02714)",
               "1 + 1/k", sam_radius=True),
    MethodInfo("random-sam", _variant_factory("random-sam", variants.RandomSAMUpdate),
               "randomized SAM, RST (arXiv 2203.09962)", "1 + mean p(t)", sam_radius=True),
    MethodInfo("ae-sam", _variant_factory("ae-sam", variants.AESAMUpdate), "AE-SAM (arXiv 2304.14647)",
               "1 + share of SAM steps", sam_radius=True),
    MethodInfo("momentum-sam", _variant_factory("momentum-sam", variants.MomentumSAMUpdate),
               "momentum-SAM, MSAM (arXiv 2401.12033)", "1"),
    MethodInfo("sam-on", _variant_factory("sam-on", variants.SAMOnUpdate), "SAM-ON (arXiv 2306.04226)", "2"),
    MethodInfo("norm-penalty", _variant_factory("norm-penalty", variants.NormPenaltyUpdate),
               "SGD with Baek et al.'s norm penalties (arXiv 2405.03676)", "1"),
)}


def method_info(name: str) -> MethodInfo:
    """The record of the method registered as ``name`` (ValueError naming the choices for an unknown name)."""
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {sorted(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


# noisysam 0.2's three containers, as views of the registry: reading them reads the records, and writing them
# (METHODS[name] = factory, SAM_RADIUS_METHODS.add(name), ...) writes the records, as writing the dict and sets did.


class _Factories(MutableMapping):
    """Method name -> factory, a view of :data:`REGISTRY`; setting a name keeps its other facts."""

    def __getitem__(self, name: str) -> MethodFactory:
        return REGISTRY[name].factory

    def __setitem__(self, name: str, factory: MethodFactory) -> None:
        REGISTRY[name] = replace(REGISTRY[name], factory=factory) if name in REGISTRY else MethodInfo(name, factory)

    def __delitem__(self, name: str) -> None:
        del REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(REGISTRY))

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


class _Names(MutableSet):
    """The names of the registered methods whose record has ``fact`` set: ``on`` when added, ``off`` when discarded."""

    def __init__(self, fact: str, on: Any, off: Any) -> None:
        self._fact, self._on, self._off = fact, on, off

    def __contains__(self, name: object) -> bool:
        return name in REGISTRY and bool(getattr(REGISTRY[name], self._fact))  # type: ignore[index]

    def __iter__(self) -> Iterator[str]:
        return iter([name for name in REGISTRY if name in self])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def add(self, name: str) -> None:
        REGISTRY[name] = replace(method_info(name), **{self._fact: self._on})

    def discard(self, name: str) -> None:
        if name in REGISTRY:
            REGISTRY[name] = replace(REGISTRY[name], **{self._fact: self._off})

    def __repr__(self) -> str:
        return repr(set(self))


#: Method name -> factory (a view of :data:`REGISTRY`).
METHODS: MutableMapping[str, MethodFactory] = _Factories()

#: The methods whose ``rho`` is the radius of plain SAM's ball, so that a radius tuned for SAM (a training
#: profile's) applies to them (records with ``sam_radius``; a view of :data:`REGISTRY`). Every other method that takes
#: a ``rho`` (asam: a ball scaled by |w|, radius 0.5) keeps its own default unless the user sets one.
SAM_RADIUS_METHODS: MutableSet[str] = _Names("sam_radius", True, False)

#: The methods that need the labels' noise rate (records with a ``noise_rate_param``, co-teaching's ``tau``, the
#: forget rate; a view of :data:`REGISTRY`): the trainer fills it from the labels when it is not given
#: (:func:`noisysam.run.config.build_method`).
NOISE_RATE_METHODS: MutableSet[str] = _Names("noise_rate_param", "tau", None)


@validate_params(dict(name=Text(), factory=HasAttrs("__call__", description="a callable"), overwrite=Boolean(),
                     sam_radius=Boolean(), needs_noise_rate=[Boolean(), INFO_PARAMS["noise_rate_param"][0]],
                     networks=Interval(int, 1), passes=[Text(), None]))
def register_method(name: str, factory: MethodFactory, *, overwrite: bool = False, sam_radius: bool = False,
                    needs_noise_rate: Union[bool, str] = False, networks: int = 1, passes: Optional[str] = None) -> None:
    """Make ``get_method(name, **params)`` call ``factory(**params)``, with the facts of its record
    (:class:`MethodInfo`).

    The factory returns an object with ``name``, ``params``, ``relabel``, ``make_optimizer`` and
    ``train_step`` as :class:`Method` has (usually a ``Method`` built from rules); ``make_optimizer``
    receives ``model.named_parameters()`` (which torch optimizers take as they are). ``sam_radius``: the
    factory's ``rho`` is plain SAM's radius, so a profile's rho applies to it (:data:`SAM_RADIUS_METHODS`).
    ``needs_noise_rate``: the trainer passes the labels' noise rate where the run does not give it, as co-teaching's
    forget rate: True to the factory's ``tau``, a string to the parameter of that name (ValueError if the factory
    takes no such parameter). ``networks`` and ``passes``: what :class:`MethodInfo` records of it.
    Re-registering an existing name needs ``overwrite=True``.
    """
    if name in REGISTRY and not overwrite:
        raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    param = "tau" if needs_noise_rate is True else needs_noise_rate or None
    REGISTRY[name] = MethodInfo(name, factory, passes=passes, networks=networks, sam_radius=sam_radius,
                                noise_rate_param=param)


def takes_param(name: str, param: str) -> bool:
    """Whether the method registered as ``name`` takes the parameter ``param`` (by name, or through **kwargs)."""
    return method_info(name).takes(param)


def default_param(name: str, param: str) -> Any:
    """The default of ``param`` in the factory of method ``name`` (None where it has none)."""
    return method_info(name).defaults.get(param)


def get_method(name: str, **params: Any) -> AnyMethod:
    """Build the method registered as ``name`` with its parameters (defaults in the module docstring)."""
    info = method_info(name)
    unknown = sorted(set(params) - set(info.params))
    if unknown and not info.open_params:
        raise ValueError(f"method {name!r} accepts parameters {list(info.params)}, got unknown {unknown}")
    return info.factory(**params)
