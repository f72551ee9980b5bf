"""Training methods for noisy labels, by name: what loss a step minimises and how the step is taken.

A :class:`Method` is the composition of three small rules, so every named method below is one
mechanism with different parts (and a user can build or register their own):

- a **loss rule** ``(logits, labels) -> mean loss``: cross-entropy; label smoothing (Szegedy et al.,
  arXiv 1512.00567); Reed et al.'s soft/hard bootstrap (arXiv 1412.6596); generalized cross-entropy
  (Zhang & Sabuncu, arXiv 1805.07836);
- an **input rule** turning a batch into inputs plus weighted label sets: plain, or mixup
  (Zhang et al., arXiv 1710.09412);
- an **update rule**: one SGD step, or one SAM step (Foret et al., arXiv 2010.01412; adaptive
  variant ASAM, Kwon et al., arXiv 2102.11600) through :func:`noisysam.sam.sam_step`.

The loss of a step is ``sum_k w_k * loss_rule(model(inputs), labels_k)``: one label set with weight 1
for plain inputs; ``(y, y[perm])`` with weights ``(lam, 1 - lam)`` for mixup.

"bootstrap" has two meanings. ``mode="relabel"`` is the SAM paper's (its Table 4): train, predict the
training labels with that model, retrain from scratch on them. A method cannot do that inside a step,
so it returns a :class:`RelabelAndRetrain` (``relabel=True``) whose ``base`` the trainer runs twice.
``mode="soft"`` / ``"hard"`` is Reed et al.'s loss, used inside every step.

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
elr                 beta=0.7, lam=3.0                        (ELR, arXiv 2007.00151; noisysam.elr)
co-teaching         tau=None (the labels' noise rate), tk=10  (arXiv 1804.06872; noisysam.coteaching)
dividemix           warmup=10, lambda_u=25.0, temperature=0.5, alpha=4.0, threshold=0.5
                                                             (arXiv 2002.07394; noisysam.dividemix)
elr-sam             elr's parameters, rho=None, update="sam" | "momentum-sam"
co-teaching-sam     co-teaching's parameters, rho=None, update="sam" | "momentum-sam"
dividemix-sam       dividemix's parameters, rho=None, update="sam" | "momentum-sam"
==================  ==========================================================================

The last six train through a :class:`noisysam.learner.Learner` (per-sample state, two networks). Their
``-sam`` forms take the update of SAM (rho None: the profile's SAM radius, as for sam) or, with
``update="momentum-sam"``, momentum-SAM's one-pass update (rho None: its own 0.5).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Protocol, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisysam import variants
from noisysam.coteaching import CoTeaching
from noisysam.dividemix import DivideMix
from noisysam.elr import ELR
from noisysam.learner import LearnerMethod
from noisysam.variants import LossFn, Targets
from noisysam.params import Boolean, HasAttrs, Interval, Options, Text, validate_params, validate_with
from noisysam.sam import SAM, sam_step

__all__ = [
    "METHODS",
    "get_method",
    "register_method",
    "Method",
    "RelabelAndRetrain",
    "CrossEntropy",
    "LabelSmoothing",
    "BootstrapLoss",
    "GeneralizedCrossEntropy",
    "PlainInputs",
    "MixupInputs",
    "SGDUpdate",
    "SAMUpdate",
    "SAM_RADIUS_METHODS",
    "NOISE_RATE_METHODS",
    "SAM_UPDATES",
    "ASAM_NORMALISATIONS",
    "takes_param",
    "default_param",
]

#: ASAM's two normalisations T (``get_method("asam", normalisation=...)``).
ASAM_NORMALISATIONS = ("paper", "davda54")

#: Every method parameter, declared once (noisysam.params): each factory and rule below checks the ones its
#: signature names (None too where None is its default).
METHOD_PARAMS = dict(
    alpha=Interval(float, 0, closed="neither"),
    beta=Interval(float, 0, 1),
    mode=Options(("relabel", "soft", "hard")),
    hard=Boolean(),
    rho=Interval(float, 0, closed="neither"),
    p=Interval(float, 1, math.inf, closed="right"),
    adaptive=Boolean(),
    m=Interval(int, 1),
    eta=Interval(float, 0),
    weights_only=Boolean(),
    normalisation=Options(ASAM_NORMALISATIONS),
    q=Interval(float, 0, 1, closed="right"),
    eps=Interval(float, 0, 1, closed="left"),
    lam=Interval(float, 0),
    tau=Interval(float, 0, 1, closed="left"),
    tk=Interval(int, 1),
    warmup=Interval(int, 0),
    lambda_u=Interval(float, 0),
    temperature=Interval(float, 0, closed="neither"),
    threshold=Interval(float, 0, 1, closed="neither"),
    update=Options(("sam", "momentum-sam")),
)
_checked = validate_with(METHOD_PARAMS)


# --------------------------------------------------------------------------------------------
# Loss rules: (logits (B, K), integer labels (B,)) -> mean loss. Computed in float32 so that they
# are accurate under bf16/fp16 autocast.
# --------------------------------------------------------------------------------------------


class LossRule(Protocol):
    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor: ...


def _soft_cross_entropy(log_probs: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of -sum_k target_k log p_k."""
    return -(target * log_probs).sum(dim=1).mean()


@dataclass(frozen=True)
class CrossEntropy:
    """Cross-entropy against the given labels."""

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels)


@_checked
@dataclass(frozen=True)
class LabelSmoothing:
    """Cross-entropy against (1 - eps) * onehot(y) + eps / K (Szegedy et al. 2016, Section 7)."""

    eps: float = 0.1

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.eps)


@_checked
@dataclass(frozen=True)
class BootstrapLoss:
    """Reed et al. 2015 bootstrapping (arXiv 1412.6596): -sum_k (beta t_k + (1 - beta) q_k) log q_k, t = onehot(y).

    Soft (``hard=False``, their Eq. 6): q = softmax(logits), and the gradient flows through q in the target
    too, so the loss is beta * cross-entropy + (1 - beta) * entropy of q (a minimum-entropy term); its
    gradient with respect to the logits is beta (q - t) - (1 - beta) q (log q + H(q)) per sample.
    Hard (Eq. 7): q = onehot(argmax logits), which carries no gradient. q comes from this very forward
    pass; under SAM it is therefore recomputed at w and at w + eps.
    """

    beta: float
    hard: bool = False

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        log_probs = F.log_softmax(logits.float(), dim=1)
        num_classes = log_probs.shape[1]
        if self.hard:
            prediction = F.one_hot(log_probs.detach().argmax(dim=1), num_classes).to(log_probs.dtype)
        else:
            prediction = log_probs.exp()
        target = self.beta * F.one_hot(labels, num_classes).to(log_probs.dtype) + (1 - self.beta) * prediction
        return _soft_cross_entropy(log_probs, target)


@_checked
@dataclass(frozen=True)
class GeneralizedCrossEntropy:
    """Zhang & Sabuncu 2018, Eq. 6: L_q = (1 - p_y^q) / q; q -> 0 is cross-entropy, q = 1 is MAE."""

    q: float = 0.7

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        log_p_y = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
        return ((1 - torch.exp(self.q * log_p_y)) / self.q).mean()


# --------------------------------------------------------------------------------------------
# Input rules: (x, y, generator) -> (inputs, label sets, weights of the label sets).
# --------------------------------------------------------------------------------------------


class InputRule(Protocol):
    def prepare(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Targets, tuple[float, ...]]: ...


@dataclass(frozen=True)
class PlainInputs:
    """The batch as it is: one label set, weight 1."""

    def prepare(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Targets, tuple[float, ...]]:
        return x, (y,), (1.0,)


@_checked
@dataclass(frozen=True)
class MixupInputs:
    """Mixup (Zhang et al. 2018): x~ = lam * x + (1 - lam) * x[perm], loss lam * L(y) + (1 - lam) * L(y[perm]).

    One lam ~ Beta(alpha, alpha) per batch, as in the paper's reference code.
    """

    alpha: float = 1.0

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[float, Tensor]:
        """The step's randomness, from ``generator`` only, in this order:

        1. one int64 ``s = torch.randint(0, 2**63 - 1, (), generator=generator)`` seeds
           ``numpy.random.default_rng(s)``, which draws lam = ``.beta(alpha, alpha)``
           (torch's Beta sampler takes no generator);
        2. ``perm = torch.randperm(batch_size, generator=generator)`` on the generator's device.

        Pass a CPU generator: then reading ``s`` needs no device synchronisation.
        """
        seed = int(torch.randint(0, 2**63 - 1, (), generator=generator, device=generator.device))
        lam = float(np.random.default_rng(seed).beta(self.alpha, self.alpha))
        perm = torch.randperm(batch_size, generator=generator, device=generator.device)
        return lam, perm

    def prepare(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Targets, tuple[float, ...]]:
        lam, perm = self.draw(x.shape[0], generator)
        perm = perm.to(x.device, non_blocking=True)
        return lam * x + (1 - lam) * x[perm], (y, y[perm]), (lam, 1 - lam)


# --------------------------------------------------------------------------------------------
# Update rules: the optimizer to build and how one step on (inputs, targets) is taken.
# --------------------------------------------------------------------------------------------


class UpdateRule(Protocol):
    """``make_optimizer`` gets the model's parameters as the trainer passes them: ``model.named_parameters()``
    (names let a rule treat weights and biases apart, as ASAM's paper form does; torch optimizers take them)."""

    def make_optimizer(
        self, params: Iterable[Any], *, lr: float, momentum: float, weight_decay: float, nesterov: bool
    ) -> torch.optim.Optimizer: ...

    def step(
        self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Targets,
        scaler: Any = None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class SGDUpdate:
    """One forward/backward pass and one step of SGD (with momentum / weight decay / Nesterov)."""

    def make_optimizer(
        self, params: Iterable[Any], *, lr: float, momentum: float, weight_decay: float, nesterov: bool
    ) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)

    def step(
        self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Targets,
        scaler: Any = None,
    ) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        if scaler is not None and scaler.is_enabled():  # fp16: scaled backward, inf/nan steps skipped
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()


@_checked
@dataclass(frozen=True)
class SAMUpdate:
    """One SAM step (two passes) with an SGD base optimizer: radius ``rho``, ``p``-norm ball, m-sharpness over
    chunks of ``m`` samples (None: whole batch), and ASAM's normalisation T = |w| + ``eta`` when ``adaptive``
    (Kwon et al., arXiv 2102.11600, Eq. 8), on every parameter or, with ``weights_only``, on the parameters
    whose name contains "weight" (T = 1 on the rest, e.g. biases, as in the ASAM authors' code). The
    optimizer is :class:`noisysam.sam.SAM` with one param group per normalisation.
    """

    rho: float = 0.05
    p: float = 2.0
    adaptive: bool = False
    m: int | None = None
    eta: float = 0.0
    weights_only: bool = False

    def make_optimizer(
        self, params: Iterable[Any], *, lr: float, momentum: float, weight_decay: float, nesterov: bool
    ) -> torch.optim.Optimizer:
        groups: list[dict[str, Any]] = [{"params": list(params), "adaptive": self.adaptive, "eta": self.eta}]
        if self.adaptive and self.weights_only:
            named = groups[0]["params"]
            if not all(isinstance(item, tuple) for item in named):
                raise ValueError("ASAM's paper normalisation scales the parameters named 'weight' only: pass "
                                 "model.named_parameters() to make_optimizer")
            weights = [item for item in named if "weight" in item[0]]
            rest = [item for item in named if "weight" not in item[0]]
            groups = [g for g in ({"params": weights, "adaptive": True, "eta": self.eta},
                                  {"params": rest, "adaptive": False, "eta": 0.0}) if g["params"]]
        return SAM(
            groups,
            torch.optim.SGD,
            rho=self.rho,
            p=self.p,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )

    def step(
        self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Targets,
        scaler: Any = None,
    ) -> Tensor:
        if not isinstance(optimizer, SAM):
            raise ValueError(f"a SAM method needs the optimizer from its make_optimizer, got {type(optimizer).__name__}")
        return sam_step(optimizer, model, loss_fn, inputs, targets, m=self.m, scaler=scaler)


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A training method: loss rule + input rule + update rule.

    ``params`` is the JSON-able record of the arguments it was built from (saved in the run's config).
    """

    name: str
    loss: LossRule = field(default_factory=CrossEntropy)
    inputs: InputRule = field(default_factory=PlainInputs)
    update: UpdateRule = field(default_factory=SGDUpdate)
    params: dict[str, Any] = field(default_factory=dict)

    relabel = False  # class attribute: a Method trains once; see RelabelAndRetrain

    def make_optimizer(
        self, params: Iterable[Any], *, lr: float, momentum: float, weight_decay: float, nesterov: bool = False
    ) -> torch.optim.Optimizer:
        """The optimizer for this method's steps: SGD, or SAM wrapping SGD for SAM-based methods. ``params``:
        ``model.named_parameters()`` (what the trainer passes; asam's paper form needs the names) or plain tensors."""
        return self.update.make_optimizer(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )

    def train_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        idx: Tensor,
        *,
        generator: torch.Generator,
        scaler: Any = None,
    ) -> Tensor:
        """One optimizer update on the batch (x, labels y, dataset indices idx); returns the detached
        mean training loss (at w for SAM) without synchronising with the device.

        ``generator`` (a CPU ``torch.Generator``) is the only source of the step's randomness (mixup, random-sam).
        ``idx`` is unused by the built-in methods; it is there for methods that keep per-sample state.
        Autocast, if any, is set up by the caller; ``scaler``: a GradScaler for fp16 (None otherwise).
        """
        inputs, targets, weights = self.inputs.prepare(x, y, generator)
        loss_rule = self.loss

        def loss_fn(logits: Tensor, chunk_targets: Targets) -> Tensor:
            return sum(w * loss_rule(logits, t) for w, t in zip(weights, chunk_targets))  # type: ignore[return-value]

        # Update rules that draw (random-sam) declare needs_generator and get the step's generator.
        draws = {"generator": generator} if getattr(self.update, "needs_generator", False) else {}
        return self.update.step(optimizer, model, loss_fn, inputs, targets, scaler, **draws)


@dataclass(frozen=True)
class RelabelAndRetrain:
    """The SAM paper's bootstrap: train with ``base``, relabel the training set with that model's
    predictions, retrain ``base`` from scratch on them. The trainer runs the two stages; steps and
    optimizers are those of ``base``.
    """

    name: str
    base: Method
    params: dict[str, Any] = field(default_factory=dict)

    relabel = True

    def make_optimizer(
        self, params: Iterable[Any], *, lr: float, momentum: float, weight_decay: float, nesterov: bool = False
    ) -> torch.optim.Optimizer:
        """The base method's optimizer."""
        return self.base.make_optimizer(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)

    def train_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        idx: Tensor,
        *,
        generator: torch.Generator,
        scaler: Any = None,
    ) -> Tensor:
        """One step of the base method (both stages train with it)."""
        return self.base.train_step(model, optimizer, x, y, idx, generator=generator, scaler=scaler)


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
#: labels when it is not given (:func:`noisysam.train.build_method`).
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
# Cheaper SAM variants (noisysam.variants): SGD-priced update rules, each composable with any loss
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
