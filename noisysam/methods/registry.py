"""Training methods for noisy labels, by name: each name is a factory of a :class:`~noisysam.methods.rules.Method`
(rules.py) or of a :class:`~noisysam.methods.learner.LearnerMethod` (elr.py, coteaching.py, dividemix.py).

Radius: :data:`SAM_RADIUS_METHODS` (sam, bootstrap-sam, mixup-sam) take plain SAM's radius, so a training
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
random-sam          p=0.5, p_start=None, rho=0.05            (RST, arXiv 2203.09962)
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
from dataclasses import replace
from typing import Any, Callable, Union

from noisysam.optim import variants
from noisysam.methods.coteaching import CoTeaching
from noisysam.methods.dividemix import DivideMix
from noisysam.methods.elr import ELR
from noisysam.methods.learner import LearnerMethod
from noisysam.core.params import Boolean, HasAttrs, Text, validate_params, validate_with
from noisysam.methods.rules import (METHOD_PARAMS, BootstrapLoss, GeneralizedCrossEntropy, LabelSmoothing, Method,
                                    MixupInputs, RelabelAndRetrain, SAMUpdate, SGDUpdate, UpdateRule)

__all__ = [
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

METHODS: dict[str, MethodFactory] = {
    "sgd": _sgd,
    "mixup": _mixup,
    "bootstrap": _bootstrap,
    "bootstrap-mixup": _bootstrap_mixup,
    "sam": _sam,
    "bootstrap-sam": _bootstrap_sam,
    "mixup-sam": _mixup_sam,
    "asam": _asam,
    "gce": _gce,
    "label-smoothing": _label_smoothing,
    "elr": _elr,
    "elr-sam": _elr_sam,
    "co-teaching": _co_teaching,
    "co-teaching-sam": _co_teaching_sam,
    "dividemix": _dividemix,
    "dividemix-sam": _dividemix_sam,
}


#: The methods whose ``rho`` is the radius of plain SAM's ball, so that a radius tuned for SAM (a training
#: profile's) applies to them. Every other method that takes a ``rho`` (asam: a ball scaled by |w|, radius
#: 0.5) keeps its own default unless the user sets one.
SAM_RADIUS_METHODS: set[str] = {"sam", "bootstrap-sam", "mixup-sam", "elr-sam", "co-teaching-sam", "dividemix-sam"}


#: The methods whose ``tau`` is the labels' noise rate (Co-teaching's forget rate): the trainer fills it from the
#: labels when it is not given (:func:`noisysam.run.config.build_method`).
NOISE_RATE_METHODS: set[str] = {"co-teaching", "co-teaching-sam"}


@validate_params(dict(name=Text(), factory=HasAttrs("__call__", description="a callable"), overwrite=Boolean(),
                     sam_radius=Boolean()))
def register_method(name: str, factory: MethodFactory, *, overwrite: bool = False, sam_radius: bool = False) -> None:
    """Make ``get_method(name, **params)`` call ``factory(**params)``.

    The factory returns an object with ``name``, ``params``, ``relabel``, ``make_optimizer`` and
    ``train_step`` as :class:`Method` has (usually a ``Method`` built from rules); ``make_optimizer``
    receives ``model.named_parameters()`` (which torch optimizers take as they are). ``sam_radius``: the
    factory's ``rho`` is plain SAM's radius, so a profile's rho applies to it (:data:`SAM_RADIUS_METHODS`).
    Re-registering an existing name needs ``overwrite=True``.
    """
    if name in METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    METHODS[name] = factory
    (SAM_RADIUS_METHODS.add if sam_radius else SAM_RADIUS_METHODS.discard)(name)


def _parameters(name: str) -> Any:
    """The parameters of the factory registered as ``name`` (ValueError naming the choices for an unknown name)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return inspect.signature(METHODS[name]).parameters


def _takes_any(parameters: Any) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def takes_param(name: str, param: str) -> bool:
    """Whether the method registered as ``name`` takes the parameter ``param`` (by name, or through **kwargs)."""
    parameters = _parameters(name)
    return param in parameters or _takes_any(parameters)


def default_param(name: str, param: str) -> Any:
    """The default of ``param`` in the factory of method ``name`` (None where it has none)."""
    parameter = _parameters(name).get(param)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def get_method(name: str, **params: Any) -> AnyMethod:
    """Build the method registered as ``name`` with its parameters (defaults in the module docstring)."""
    parameters = _parameters(name)
    unknown = sorted(set(params) - set(parameters))
    if unknown and not _takes_any(parameters):
        raise ValueError(f"method {name!r} accepts parameters {list(parameters)}, got unknown {unknown}")
    return METHODS[name](**params)


# --------------------------------------------------------------------------------------------
# Cheaper SAM variants (noisysam.optim.variants): SGD-priced update rules, each composable with any loss
# and input rule, e.g. replace(get_method("looksam"), inputs=MixupInputs(8.0)).
# --------------------------------------------------------------------------------------------


def _variant_factory(name: str, update: type) -> MethodFactory:
    """The factory of variant ``name``: cross-entropy on plain inputs with ``update``'s rule. Its parameters,
    defaults and checks are the update rule's dataclass fields, declared once there; params are those fields."""

    def factory(**params: Any) -> Method:
        rule = update(**params)
        return Method(name, update=rule, params=dataclasses.asdict(rule))

    factory.__signature__ = inspect.signature(update).replace(return_annotation=Method)  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = "_" + name.replace("-", "_")
    return variants.checked(factory)


METHODS.update({name: _variant_factory(name, update) for name, update in (
    ("looksam", variants.LookSAMUpdate),
    ("random-sam", variants.RandomSAMUpdate),
    ("ae-sam", variants.AESAMUpdate),
    ("momentum-sam", variants.MomentumSAMUpdate),
    ("sam-on", variants.SAMOnUpdate),
    ("norm-penalty", variants.NormPenaltyUpdate),
)})
# Their SAM steps are plain SAM's (same ball, same radius), so a profile's SAM radius applies to them;
# momentum-sam and sam-on perturb along other directions or subsets and keep their own default.
SAM_RADIUS_METHODS.update({"looksam", "random-sam", "ae-sam"})
