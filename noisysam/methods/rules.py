"""The rules a one-network method is built from: what loss a step minimises and how the step is taken.

A :class:`Method` is the composition of three small rules, so every named method (:mod:`noisysam.methods.registry`)
is one mechanism with different parts, and a user can build their own:

- a **loss rule** ``(logits, labels) -> mean loss``: cross-entropy; label smoothing (Szegedy et al.,
  arXiv 1512.00567); Reed et al.'s soft/hard bootstrap (arXiv 1412.6596); generalized cross-entropy
  (Zhang & Sabuncu, arXiv 1805.07836);
- an **input rule** turning a batch into inputs plus weighted label sets: plain, or mixup
  (Zhang et al., arXiv 1710.09412);
- an **update rule**: one SGD step, or one SAM step (Foret et al., arXiv 2010.01412; adaptive
  variant ASAM, Kwon et al., arXiv 2102.11600) through :func:`noisysam.optim.sam.sam_step`.

The loss of a step is ``sum_k w_k * loss_rule(model(inputs), labels_k)``: one label set with weight 1
for plain inputs; ``(y, y[perm])`` with weights ``(lam, 1 - lam)`` for mixup.

"bootstrap" has two meanings. ``mode="relabel"`` is the SAM paper's (its Table 4): train, predict the
training labels with that model, retrain from scratch on them. A method cannot do that inside a step,
so it returns a :class:`RelabelAndRetrain` (``relabel=True``) whose ``base`` the trainer runs twice.
``mode="soft"`` / ``"hard"`` is Reed et al.'s loss, used inside every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisysam.optim.variants import LossFn, Targets
from noisysam.core.params import Boolean, Interval, Options, validate_with
from noisysam.optim.sam import METHOD_RHO, P_NORM, SAM, sam_step

__all__ = ["Method", "RelabelAndRetrain", "CrossEntropy", "LabelSmoothing", "BootstrapLoss", "GeneralizedCrossEntropy",
           "PlainInputs", "MixupInputs", "SGDUpdate", "SAMUpdate", "METHOD_PARAMS", "ASAM_NORMALISATIONS"]

#: ASAM's two normalisations T (``get_method("asam", normalisation=...)``).
ASAM_NORMALISATIONS = ("paper", "davda54")

#: Every method parameter, declared once (noisysam.core.params): each factory and rule below checks the ones its
#: signature names (None too where None is its default).
METHOD_PARAMS = dict(
    alpha=Interval(float, 0, closed="neither"),
    beta=Interval(float, 0, 1),
    mode=Options(("relabel", "soft", "hard")),
    hard=Boolean(),
    rho=METHOD_RHO,  # rho and p: SAM's radius and norm as noisysam.optim.sam declares them for methods
    p=P_NORM,
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
    optimizer is :class:`noisysam.optim.sam.SAM` with one param group per normalisation.
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
