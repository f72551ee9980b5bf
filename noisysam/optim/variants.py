"""Cheaper SAM update rules: each is an update rule for :class:`noisysam.methods.rules.Method` (``make_optimizer``
plus ``step``), so it composes with any loss rule (bootstrap, GCE, ...) and input rule (mixup).

==============  ===============================================  ==================================
rule            one step computes                                passes (forward + backward)/step
==============  ===============================================  ==================================
LookSAM         SAM every k steps, g + reused orthogonal part    1 + 1/k
RandomSAM       SAM with probability p(t), SGD otherwise         1 + p
AESAM           SAM when ||g||^2 >= mean + c * std (EMA)          1 + share of SAM steps
MomentumSAM     gradient at w - rho * v / ||v|| (v: momentum)     1
SAMOn           SAM perturbing the normalisation layers only     2
NormPenalty     SGD + last-layer weight and feature penalties    1
==============  ===============================================  ==================================

Everything a rule carries from one step to the next (step counts, running statistics, stored
directions) lives in its optimizer's ``state_dict``, so the trainer's checkpoint resumes it bitwise.
Run-level randomness comes only from the ``generator`` the trainer passes (rules with
``needs_generator = True`` get it), schedules only from the ``progress`` (fraction of training
done, in [0, 1)) the trainer writes into every param group beside ``lr``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor, nn
from torch.amp import GradScaler
from torch.nn.modules.batchnorm import _NormBase

from noisysam.core.params import Interval, validate_with
from noisysam.optim.sam import METHOD_RHO, SAM, disable_running_stats

__all__ = [
    "StatefulSAM",
    "LookSAMUpdate",
    "RandomSAMUpdate",
    "AESAMUpdate",
    "MomentumSAMUpdate",
    "SAMOnUpdate",
    "NormPenaltyUpdate",
    "NORM_LAYERS",
    "STEP_PROBABILITY",
]

Targets = tuple[Tensor, ...]
LossFn = Callable[[Tensor, Targets], Tensor]

_TINY = 1e-12  # added to norms so that a zero direction gives a zero step instead of 0/0

# Layers whose affine parameters SAM-ON perturbs: BatchNorm/InstanceNorm (_NormBase), GroupNorm, LayerNorm.
NORM_LAYERS: tuple[type[nn.Module], ...] = (_NormBase, nn.GroupNorm, nn.LayerNorm)


# --------------------------------------------------------------------------------------------
# Validation and small shared pieces
# --------------------------------------------------------------------------------------------


#: random-sam's ``p`` and ``p_start``: the probability of a SAM step, in [0, 1]; not SAM's ``p``, the norm of its ball
#: (:data:`noisysam.optim.sam.P_NORM`), which no variant takes.
STEP_PROBABILITY = Interval(float, 0, 1)

#: Every variant parameter, declared once (noisysam.core.params): each update rule below and each factory in
#: noisysam.methods.registry checks the ones its signature names (None too where None is its default).
VARIANT_PARAMS = dict(
    rho=METHOD_RHO,
    k=Interval(int, 1),
    alpha=Interval(float, 0),
    p=STEP_PROBABILITY,
    p_start=STEP_PROBABILITY,
    c=Interval(float),
    c_start=Interval(float),
    delta=Interval(float, 0, 1, closed="neither"),
    warmup=Interval(int, 0),
    weight=Interval(float, 0),
    feature=Interval(float, 0),
)
checked = validate_with(VARIANT_PARAMS)


def _enabled(scaler: Optional[GradScaler]) -> bool:
    return scaler is not None and scaler.is_enabled()


def _backward(loss: Tensor, scaler: Optional[GradScaler]) -> None:
    (scaler.scale(loss) if _enabled(scaler) else loss).backward()


def _pass(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Targets, scaler: Optional[GradScaler]) -> Tensor:
    """One forward and backward pass; the gradients accumulate into .grad; returns the detached loss."""
    loss = loss_fn(model(inputs), targets)
    _backward(loss, scaler)
    return loss.detach()


def _base_step(optimizer: torch.optim.Optimizer, scaler: Optional[GradScaler]) -> None:
    """A plain step of ``optimizer`` (SGD) on the gradients in .grad; with a GradScaler, unscaled and
    skipped on inf/nan, and the scale updated."""
    if _enabled(scaler):
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _squared_norm(tensors: Iterable[Tensor]) -> Tensor:
    """The squared 2-norm of all tensors together, in fp32, on the first one's device (0 for none)."""
    squares = [t.float().pow(2).sum() for t in tensors]
    if not squares:
        return torch.zeros(())
    return torch.stack([s.to(squares[0].device) for s in squares]).sum()


def _global_norm(tensors: Iterable[Tensor]) -> Tensor:
    """The 2-norm of all tensors together, in fp32."""
    return _squared_norm(tensors).sqrt()


@torch.no_grad()
def _climb(pairs: list[tuple[Tensor, Tensor]], rho: float) -> list[tuple[Tensor, Tensor]]:
    """Move every parameter p by rho * d / ||d|| (one 2-norm over all the directions d); return the
    (parameter, old value) pairs that :func:`_restore` puts back exactly."""
    scale = rho / (_global_norm(d for _, d in pairs) + _TINY)
    saved = [(p, p.detach().clone()) for p, _ in pairs]
    for p, d in pairs:
        p.add_((d.float() * scale.to(d.device)).to(p.dtype))
    torch.clear_autocast_cache()  # autocast's cached casts of w would hide the move (see noisysam.optim.sam)
    return saved


@torch.no_grad()
def _restore(saved: list[tuple[Tensor, Tensor]]) -> None:
    for p, old in saved:
        p.copy_(old)
    torch.clear_autocast_cache()


def _step_from(saved: list[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer, model: nn.Module,
               loss_fn: LossFn, inputs: Tensor, targets: Targets, scaler: Optional[GradScaler],
               update_stats: bool) -> Tensor:
    """With the weights moved by :func:`_climb` (``saved``): one pass there (BatchNorm running stats
    updated only if ``update_stats``), back to the saved weights, and the base step with that gradient."""
    optimizer.zero_grad(set_to_none=True)
    try:
        with nullcontext() if update_stats else disable_running_stats(model):
            loss = _pass(model, loss_fn, inputs, targets, scaler)
    finally:
        _restore(saved)
    _base_step(optimizer, scaler)
    return loss


def _sgd(params: Iterable[Any], **kwargs: Any) -> torch.optim.SGD:
    return torch.optim.SGD(params, **kwargs)


def _progress(optimizer: torch.optim.Optimizer) -> float:
    """The fraction of training done, written by the trainer into the param groups (0 outside it)."""
    return float(optimizer.param_groups[0].get("progress", 0.0))


def _ramp(start: Optional[float], end: float, progress: float) -> float:
    """``end`` when ``start`` is None, else the linear schedule start -> end over training."""
    return end if start is None else start + (end - start) * progress


class StatefulSAM(SAM):
    """:class:`noisysam.optim.sam.SAM` whose ``state_dict`` also carries ``variant``: a variant's run-level
    counters (step count, running statistics; plain numbers), so that a checkpoint resumes it bitwise.
    Per-parameter tensors of a variant live in the base optimizer's state, which SAM already saves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.variant: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "variant": dict(self.variant)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        if "variant" not in state_dict:
            raise ValueError("state_dict has no 'variant' entry: it was not saved by a StatefulSAM")
        self.variant = dict(state_dict.pop("variant"))
        super().load_state_dict(state_dict)


def _stateful_sam(params: Iterable[Any], rho: float, **kwargs: Any) -> StatefulSAM:
    return StatefulSAM(params, torch.optim.SGD, rho=rho, **kwargs)


def _require_sam(optimizer: torch.optim.Optimizer, name: str, kind: type = StatefulSAM) -> None:
    if not isinstance(optimizer, kind):
        raise ValueError(f"{name} needs the optimizer from its make_optimizer, got {type(optimizer).__name__}")


def _sam_rest(optimizer: SAM, model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Targets,
              scaler: Optional[GradScaler], at_perturbed: Optional[Callable[[dict[Tensor, Tensor]], None]] = None
              ) -> None:
    """The rest of a SAM step (Foret et al., arXiv 2010.01412) once .grad holds the gradient g at w:
    climb to w + e(w), second pass there (BatchNorm running stats untouched), return to w, base step.
    ``at_perturbed(g)``, if given, is called with a copy of g (unscaled) while .grad holds the
    gradient at w + e(w) (scaled, under a GradScaler)."""
    optimizer.first_step(scaler=scaler)
    g = {p: p.grad.detach().clone() for p in _params(optimizer) if p.grad is not None} if at_perturbed else {}
    optimizer.zero_grad(set_to_none=True)
    with disable_running_stats(model):
        _pass(model, loss_fn, inputs, targets, scaler)
    if at_perturbed:
        at_perturbed(g)
    optimizer.second_step(scaler=scaler)
    if _enabled(scaler):
        scaler.update()


def _sam_or_sgd(optimizer: SAM, use_sam: bool, model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Targets,
                scaler: Optional[GradScaler]) -> None:
    """With .grad holding the gradient at w: finish a SAM step, or take the SGD step on it."""
    if use_sam:
        _sam_rest(optimizer, model, loss_fn, inputs, targets, scaler)
    else:
        _base_step(optimizer.base_optimizer, scaler)


# --------------------------------------------------------------------------------------------
# LookSAM
# --------------------------------------------------------------------------------------------


@checked
@dataclass(frozen=True)
class LookSAMUpdate:
    """LookSAM (Liu et al. 2022, arXiv 2203.02714, Algorithm 1): every ``k``-th step (the first
    included) a full SAM step with g_s = grad at w + rho g/||g||, storing the part of g_s orthogonal
    to the plain gradient g,

        g_v = g_s - (<g_s, g> / ||g||^2) g          (= g_s - ||g_s|| cos(theta) g / ||g||, as they write it);

    on the other steps ONE pass gives g and the step uses g + alpha * (||g|| / ||g_v||) * g_v.
    Norms and inner products are global over all parameters (the paper's LookSAM, not its layer-wise
    Look-LayerSAM). The step count and g_v are in the optimizer's state_dict. ``k=5`` is the paper's;
    ``alpha=0.1``, not its 0.7: under 60% noise at batch 64, 0.7 never leaves chance accuracy, and
    ``noisysam sweep`` over {0.1, 0.3, 0.7} chose 0.1 (docs/cheap-sam-measured.md).
    """

    rho: float = 0.05
    k: int = 5
    alpha: float = 0.1

    def make_optimizer(self, params: Iterable[Any], **sgd: Any) -> torch.optim.Optimizer:
        return _stateful_sam(params, self.rho, **sgd)

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor,
             targets: Targets, scaler: Any = None) -> Tensor:
        _require_sam(optimizer, "looksam")
        t = int(optimizer.variant.get("steps", 0))
        optimizer.variant["steps"] = t + 1
        optimizer.zero_grad(set_to_none=True)
        loss = _pass(model, loss_fn, inputs, targets, scaler)
        state = optimizer.base_optimizer.state
        if t % self.k == 0:
            _sam_rest(optimizer, model, loss_fn, inputs, targets, scaler, at_perturbed=lambda g: self._store(state, g))
        else:
            params = [p for p in _params(optimizer) if p.grad is not None]
            with torch.no_grad():
                g_v = [state[p].get("looksam_gv", torch.zeros_like(p)) for p in params]
                # Scale-free in g_v, and of degree 1 in g: right with scaled gradients too.
                scale = self.alpha * _global_norm(p.grad for p in params) / (_global_norm(g_v) + _TINY)
                for p, v in zip(params, g_v):
                    p.grad.add_((v.float() * scale.to(v.device)).to(p.grad.dtype))
            _base_step(optimizer.base_optimizer, scaler)
        return loss

    @staticmethod
    @torch.no_grad()
    def _store(state: Any, g: dict[Tensor, Tensor]) -> None:
        """Store g_v from g and the g_s in .grad (scaled or not: g_v is used up to scale), keeping the
        previous g_v where g_s is not finite (an fp16 overflow, a skipped step)."""
        both = [p for p in g if p.grad is not None]
        coef = sum((p.grad.float() * g[p].float()).sum() for p in both) / (_squared_norm(g[p] for p in both) + _TINY)
        new = {p: p.grad.float() - coef.to(p.device) * g[p].float() for p in both}
        finite = torch.isfinite(_global_norm(new.values()))
        for p, v in new.items():
            old = state[p].get("looksam_gv", torch.zeros_like(p))
            state[p]["looksam_gv"] = torch.where(finite.to(p.device), v.to(p.dtype), old)


# --------------------------------------------------------------------------------------------
# Randomized SAM (RST) and adaptive SAM (AE-SAM)
# --------------------------------------------------------------------------------------------


@checked
@dataclass(frozen=True)
class RandomSAMUpdate:
    """Randomized sharpness-aware training (Zhao et al. 2022, arXiv 2203.09962, Algorithm 1): each step
    is a SAM step with probability p(t) and an SGD step otherwise (a Bernoulli trial per step).

    ``p`` is a probability here (:data:`STEP_PROBABILITY`), not the norm of SAM's ball (SAM's ``p``, which random-sam
    keeps at 2). Schedule: p(t) = ``p`` (constant, ``p_start=None``) or the linear schedule from ``p_start`` at the
    start of training to ``p`` at its end, t the fraction of training done (the paper compares such
    scheduling functions; the expected extra cost is the mean of p(t)). The trial is
    ``torch.rand((), generator=generator) < p(t)`` on the run's CPU step generator (after the input
    rule's draws): no device synchronisation, never global RNG, and a resumed run draws the same.
    """

    p: float = 0.5
    p_start: Optional[float] = None
    rho: float = 0.05

    needs_generator = True  # class attribute: Method.train_step passes its generator

    def make_optimizer(self, params: Iterable[Any], **sgd: Any) -> torch.optim.Optimizer:
        return SAM(params, torch.optim.SGD, rho=self.rho, **sgd)

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor,
             targets: Targets, scaler: Any = None, *, generator: torch.Generator) -> Tensor:
        _require_sam(optimizer, "random-sam", SAM)
        p = _ramp(self.p_start, self.p, _progress(optimizer))
        use_sam = bool(torch.rand((), generator=generator, device=generator.device) < p)
        optimizer.zero_grad(set_to_none=True)
        loss = _pass(model, loss_fn, inputs, targets, scaler)
        _sam_or_sgd(optimizer, use_sam, model, loss_fn, inputs, targets, scaler)
        return loss


@checked
@dataclass(frozen=True)
class AESAMUpdate:
    """AE-SAM (Jiang et al. 2023, arXiv 2304.14647, Algorithm 1): one pass gives g at w; with
    n = ||g||^2 and its exponential moving statistics (forgetting rate ``delta``)

        mu    <- delta * mu    + (1 - delta) * n
        sigma2 <- delta * sigma2 + (1 - delta) * (n - mu)^2        (with the updated mu)

    the step is SAM's (re-using g for the perturbation: one more pass) when n >= mu + c * sqrt(sigma2),
    SGD's on g otherwise. ``c`` is fixed, or (``c_start`` given) linear from ``c_start`` to ``c`` over
    training, the form of their schedule c_t. Warm-up (ours; the paper does not say how it starts):
    the first step sets mu = n, sigma2 = 0, and the first ``warmup`` steps are SGD steps that only feed
    the statistics. ``delta=0.9``: the paper's value. n is of the loss's gradient (weight decay not
    included), unscaled under a GradScaler; a non-finite n (fp16 overflow) is a skipped SGD step and
    leaves the statistics alone. Deciding reads n on the host: one device synchronisation per step.
    """

    c: float = 0.0
    c_start: Optional[float] = None
    delta: float = 0.9
    warmup: int = 10
    rho: float = 0.05

    def make_optimizer(self, params: Iterable[Any], **sgd: Any) -> torch.optim.Optimizer:
        return _stateful_sam(params, self.rho, **sgd)

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor,
             targets: Targets, scaler: Any = None) -> Tensor:
        _require_sam(optimizer, "ae-sam")
        optimizer.zero_grad(set_to_none=True)
        loss = _pass(model, loss_fn, inputs, targets, scaler)
        n = float(_squared_norm(p.grad for p in _params(optimizer) if p.grad is not None))
        if _enabled(scaler):
            n /= scaler.get_scale() ** 2
        use_sam = math.isfinite(n) and self._update_and_decide(optimizer.variant, n, _progress(optimizer))
        _sam_or_sgd(optimizer, use_sam, model, loss_fn, inputs, targets, scaler)
        return loss

    def _update_and_decide(self, v: dict[str, float], n: float, progress: float) -> bool:
        """Update the running statistics in ``v`` with n; True for a SAM step."""
        steps = int(v.get("steps", 0))
        if steps == 0:
            v["mean"], v["var"] = n, 0.0
        else:
            v["mean"] = self.delta * v["mean"] + (1 - self.delta) * n
            v["var"] = self.delta * v["var"] + (1 - self.delta) * (n - v["mean"]) ** 2
        use_sam = steps >= self.warmup and n >= v["mean"] + _ramp(self.c_start, self.c, progress) * math.sqrt(v["var"])
        v["steps"], v["sam_steps"] = steps + 1, int(v.get("sam_steps", 0)) + use_sam
        return use_sam


# --------------------------------------------------------------------------------------------
# Momentum-SAM and SAM-ON: a cheaper or narrower perturbation
# --------------------------------------------------------------------------------------------


@checked
@dataclass(frozen=True)
class MomentumSAMUpdate:
    """Momentum-SAM (Becker et al. 2024, arXiv 2401.12033, Algorithm 1): the gradient is taken at
    w - rho * v / ||v||, v the SGD momentum buffer (one global 2-norm), and the SGD-with-momentum step
    starts from w: ONE forward/backward pass per step. The first step (no buffer yet) is plain SGD.

    Unlike the paper's code, which keeps the weights perturbed between steps, the weights return to w
    after each step, so evaluation and checkpoints see w. The loss returned is the one at the
    perturbed point (the only one computed). Needs momentum > 0; the buffer (torch's SGD, weight
    decay included) is the optimizer's state. Its ball is not SAM's, so a profile's SAM radius does not
    apply: ``rho=0.5`` is the choice of ``noisysam sweep`` over {0.1, 0.3, 0.5, 0.7, 1, 3} at 60% noise
    (CPU profile, clean validation split, seed 0), measured over 3 seeds; SAM's 0.05 memorised every wrong
    label there, as SGD does. The window is narrow: adding 0.4 and 0.6 moves the seed-0 choice to 0.4.
    """

    rho: float = 0.5

    def make_optimizer(self, params: Iterable[Any], **sgd: Any) -> torch.optim.Optimizer:
        if not sgd.get("momentum", 0) > 0:
            raise ValueError(f"momentum must be > 0 for momentum-sam (it perturbs along the momentum buffer), "
                             f"got {sgd.get('momentum')!r}")
        return _sgd(params, **sgd)

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor,
             targets: Targets, scaler: Any = None) -> Tensor:
        buffers = [(p, optimizer.state[p].get("momentum_buffer")) for p in _params(optimizer)]
        pairs = [(p, -v) for p, v in buffers if v is not None]
        saved = _climb(pairs, self.rho) if pairs else []
        return _step_from(saved, optimizer, model, loss_fn, inputs, targets, scaler, update_stats=True)


@checked
@dataclass(frozen=True)
class SAMOnUpdate:
    """SAM-ON (Mueller et al. 2023, arXiv 2306.04226): a SAM step whose perturbation
    e = rho * g_N / ||g_N|| covers only the normalisation layers' affine parameters N (weight and bias
    of BatchNorm/InstanceNorm, GroupNorm, LayerNorm: :data:`NORM_LAYERS`); every parameter is then
    stepped with its gradient at w + e (BatchNorm running stats untouched there), from w. Two passes.
    The layers are found by module type in the model at each step (names would not say which
    parameters belong to a normalisation layer). Its ball is not SAM's, so a profile's SAM radius does
    not apply: ``rho=0.5`` is the choice of ``noisysam sweep`` over {0.1, 0.3, 0.5, 1, 2, 3} at 60% noise
    (CPU profile, clean validation split); SAM's 0.05 memorised every wrong label there, as SGD does.
    """

    rho: float = 0.5

    def make_optimizer(self, params: Iterable[Any], **sgd: Any) -> torch.optim.Optimizer:
        return _sgd(params, **sgd)

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor,
             targets: Targets, scaler: Any = None) -> Tensor:
        trained = {id(p) for p in _params(optimizer)}
        norm = [p for m in model.modules() if isinstance(m, NORM_LAYERS)
                for p in m.parameters(recurse=False) if id(p) in trained]
        if not norm:
            raise ValueError(f"sam-on needs normalisation layers with affine parameters {[c.__name__ for c in NORM_LAYERS]}"
                             f" in the model; {type(model).__name__} has none")
        optimizer.zero_grad(set_to_none=True)
        loss = _pass(model, loss_fn, inputs, targets, scaler)
        saved = _climb([(p, p.grad) for p in norm if p.grad is not None], self.rho)  # scale-free in g: fine scaled
        _step_from(saved, optimizer, model, loss_fn, inputs, targets, scaler, update_stats=False)
        return loss


# --------------------------------------------------------------------------------------------
# Regularised SGD of Baek, Kolter & Raghunathan
# --------------------------------------------------------------------------------------------


@checked
@dataclass(frozen=True)
class NormPenaltyUpdate:
    """SGD with the two penalties that Baek, Kolter & Raghunathan ("Why is SAM robust to label noise?",
    ICLR 2024, arXiv 2405.03676, their regularised SGD) derive from SAM's Jacobian term in two-layer linear
    networks and use as a one-pass stand-in for SAM: the step minimises

        L(w) + ``weight`` * ||W_last||_F^2 + ``feature`` * mean_i ||phi(x_i)||_2^2

    with W_last the weight matrix of the model's last ``nn.Linear`` (the last in ``model.modules()``)
    and phi(x_i) its input (the intermediate features), taken by a forward pre-hook in the same pass.
    The returned loss is L alone. The default coefficients are the best of a 3 x 3 sweep at 60% symmetric
    noise on the CPU profile (``noisysam sweep``, clean validation split; README, "Cheaper SAM variants").
    """

    weight: float = 1e-2
    feature: float = 1e-3

    def make_optimizer(self, params: Iterable[Any], **sgd: Any) -> torch.optim.Optimizer:
        return _sgd(params, **sgd)

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, loss_fn: LossFn, inputs: Tensor,
             targets: Targets, scaler: Any = None) -> Tensor:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"norm-penalty needs a last nn.Linear layer in the model; {type(model).__name__} has none")
        last, features = linears[-1], []
        handle = last.register_forward_pre_hook(lambda module, args: features.append(args[0]))
        optimizer.zero_grad(set_to_none=True)
        try:
            logits = model(inputs)
        finally:
            handle.remove()
        if len(features) != 1:
            raise ValueError(f"norm-penalty needs the last nn.Linear called once per forward, it was called "
                             f"{len(features)} times")
        loss = loss_fn(logits, targets)
        phi = features[0].float().flatten(1)
        penalty = self.weight * last.weight.float().pow(2).sum() + self.feature * phi.pow(2).sum(dim=1).mean()
        _backward(loss + penalty, scaler)
        _base_step(optimizer, scaler)
        return loss.detach()
