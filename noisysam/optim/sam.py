"""Sharpness-Aware Minimization (Foret et al., arXiv 2010.01412; ASAM: Kwon et al., arXiv 2102.11600).

`SAM` wraps a base optimizer in the shape of davda54/sam: `first_step` climbs from w to w + e(w),
`second_step` returns to w and lets the base optimizer step with the gradient taken at w + e(w).
`sam_step` runs one whole step on a batch, with m-sharpness and mixed precision.

With 1/p + 1/q = 1 and t = T g, the perturbation is (Foret et al. Eq. 2; Kwon et al. Eq. 8 for T != 1)

    e(w) = rho * T * sign(t) |t|^(q-1) / ||t||_q^(q-1)       [T = 1: rho sign(g)|g|^(q-1) / (||g||_q^q)^(1/p)]

with one global norm over every parameter of every group: p = 2 gives rho g / ||g||_2, p = inf gives
rho sign(g). ASAM's normalisation operator is elementwise, set per param group: T = |w| + eta where
``adaptive`` is true, T = 1 elsewhere; for p = 2 that is e(w) = rho T^2 g / ||T g||_2. ASAM's paper and its
authors' code (SamsungLabs/ASAM) use eta = 0.01 on the parameters named "weight" and T = 1 on the rest (biases),
all under the one norm; davda54/sam's ``adaptive=True`` is eta = 0 on every parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.amp import GradScaler
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from noisysam.core.params import Boolean, HasAttrs, InstanceOf, Interval, SubclassOf, declare, validate_params

# Added to the norm so that a zero gradient gives e(w) = 0 instead of 0/0.
_TINY = 1e-12

# SAM's radius and norm, declared here once for every layer that takes them (this optimizer, the methods' update
# rules in noisysam.optim.variants and noisysam.methods.rules, TrainConfig.rho), one contract per layer:
#: rho of the optimizer: >= 0. At rho = 0 SAM never climbs and follows its base optimizer's trajectory exactly (a
#: check of the implementation, and how davda54/sam's SAM reads), so the optimizer, a tool, takes it.
RHO = Interval(float, 0)
#: rho of a method or update rule (``get_method``, ``--rho``, the variants): > 0. A SAM method at radius 0 is sgd at
#: twice the price and says nothing of sharpness; a run asking for it is refused rather than mislabelled ("sam").
METHOD_RHO = Interval(float, 0, closed="neither")
#: p of SAM's ball, a norm: p in (1, inf] (q = p / (p - 1) is its dual). random-sam's ``p`` is another quantity, the
#: probability of a SAM step (noisysam.optim.variants.STEP_PROBABILITY).
P_NORM = Interval(float, 1, math.inf, closed="right")

#: SAM's parameters (noisysam.core.params); rho, adaptive and eta are checked again in every param group added.
SAM_PARAMS = declare("noisysam.optim.sam.SAM", dict(
    params=InstanceOf(Iterable, exclude=(str, bytes, Mapping, Tensor),
                      description="an iterable of parameters or param groups"),
    base_optimizer=[SubclassOf(Optimizer, "a torch.optim.Optimizer class"),
                    InstanceOf(Optimizer, description="a torch.optim.Optimizer instance")],
    rho=RHO,
    p=P_NORM,
    adaptive=Boolean(),
    max_grad_norm=[Interval(float, 0, closed="neither"), None],
    eta=Interval(float, 0),
))


def _scale(group: dict[str, Any], p: Tensor) -> Tensor | None:
    """ASAM's T = |w| + eta for a parameter of an adaptive group (in at least fp32); None where T = 1."""
    if not group["adaptive"]:
        return None
    eta = group.get("eta", 0.0)  # groups saved before eta existed were |w| alone
    scale = _fp32(p).abs()
    return scale.add_(eta) if eta else scale


def _enabled(scaler: GradScaler | None) -> bool:
    return scaler is not None and scaler.is_enabled()


@validate_params(SAM_PARAMS)
class SAM(Optimizer):
    """SAM around `base_optimizer` (a torch.optim.Optimizer class, built with `params` and
    `**base_kwargs`, or an already-built instance over the same parameters).

    `rho`, `adaptive` and `eta` (ASAM's T = |w| + eta where adaptive; module docstring) may be set per param
    group; `p` (> 1, may be inf) and `max_grad_norm` (clip the final SAM gradient to this global 2-norm before
    the base step) are global. `params` may be named (``model.named_parameters()``), as torch optimizers take.
    SAM shares the base optimizer's `param_groups`; `state_dict()` is the base optimizer's.

    A parameter whose gradient is None in the first pass is not perturbed and not stepped: its
    second-pass gradient is dropped (set to None) so the base optimizer skips it (davda54/sam #51).
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer] | Optimizer,
        rho: float = 0.05,
        p: float = 2.0,
        adaptive: bool = False,
        max_grad_norm: float | None = None,
        eta: float = 0.0,
        **base_kwargs: Any,
    ) -> None:
        if isinstance(base_optimizer, Optimizer):
            if base_kwargs:
                raise ValueError(f"base kwargs {sorted(base_kwargs)} need an optimizer class, not instance")
            base = base_optimizer
            ours = {id(t) for group in _as_groups(params) for t in group}
            theirs = {id(t) for group in base.param_groups for t in group["params"]}
            if ours != theirs:
                raise ValueError("params must be the parameters of the base_optimizer instance")
        else:
            base = base_optimizer(params, **base_kwargs)
        clash = sorted({"rho", "adaptive", "eta"} & set(base.defaults))
        if clash:  # e.g. Adadelta's own rho: SAM would silently perturb with it
            raise ValueError(
                f"base_optimizer {type(base).__name__} has its own param-group key(s) {clash}, "
                "which SAM uses for its rho/adaptive/eta"
            )
        self.base_optimizer = base
        # The base optimizer's group dicts get SAM's per-group defaults (rho, adaptive, eta) filled in.
        super().__init__(base.param_groups, dict(rho=rho, adaptive=adaptive, eta=eta))
        self.param_groups = base.param_groups
        self.defaults.update(base.defaults)
        self.p = float(p)
        self.q = 1.0 if math.isinf(self.p) else self.p / (self.p - 1.0)
        self.max_grad_norm = max_grad_norm
        self._climbed = False  # True between first_step and second_step
        self._nonfinite: Tensor | None = None  # a first-pass gradient was inf/nan (with a GradScaler)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        SAM_PARAMS.check({k: param_group[k] for k in ("rho", "adaptive", "eta") if k in param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, scaler: GradScaler | None = None) -> None:
        """Climb from w to w + e(w) using the gradients in .grad (taken at w).

        With an enabled GradScaler the gradients are unscaled in place before the norm."""
        if self._climbed:
            raise RuntimeError("first_step called twice: call second_step before the next first_step")
        with_grad = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if _enabled(scaler) and with_grad:
            inv_scale = 1.0 / scaler.scale(torch.ones((), device=with_grad[0][1].grad.device))
            for _, p in with_grad:
                p.grad.mul_(inv_scale.to(p.grad.device))
        # t = T g in at least fp32, with T = |w| + eta in ASAM groups and T = 1 elsewhere
        scales = [_scale(g, p) for g, p in with_grad]
        ts = [_fp32(p.grad) if s is None else s * _fp32(p.grad) for s, (_, p) in zip(scales, with_grad)]
        if ts:
            device = ts[0].device
            norm = torch.linalg.vector_norm(  # ||t||_q over all parameters of all groups
                torch.stack([torch.linalg.vector_norm(t, self.q).to(device) for t in ts]), self.q
            )
            if _enabled(scaler):
                bad = ~torch.isfinite(norm)
                self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
            denominator = norm.pow(self.q - 1.0) + _TINY
            for (group, p), t, scale in zip(with_grad, ts, scales):
                # e(w) = rho * T * sign(t)|t|^(q-1) / ||t||_q^(q-1)
                e_w = _dual_direction(t, self.q) * (group["rho"] / denominator.to(t.device))
                if scale is not None:
                    e_w.mul_(scale)
                self.state[p]["old_p"] = p.detach().clone()
                p.add_(e_w.to(p.dtype))  # climb to w + e(w)
        _forget_autocast_casts()
        self._climbed = True
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, scaler: GradScaler | None = None) -> None:
        """Return to w and take the base optimizer's step with the gradients in .grad (taken at w + e(w)).

        With an enabled GradScaler: unscale, and skip the step if either pass had inf/nan gradients;
        the caller then calls scaler.update() as usual."""
        self._descend()
        self._base_step(scaler)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, model: nn.Module | None = None) -> Any:
        """One SAM step; `closure` zeroes the gradients, runs forward and backward and returns the loss.

        It runs at w, then at w + e(w) (BatchNorm running stats of `model` untouched there, if given).
        Returns the loss at w. No GradScaler here (as for any closure step): use first/second_step."""
        if closure is None:
            raise RuntimeError("SAM.step needs a closure; or call first_step and second_step")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step()
        with disable_running_stats(model) if model is not None else nullcontext():
            closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (momentum buffers, step counts) and param groups (incl. rho)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # loading replaced the base's group list

    @torch.no_grad()
    def _descend(self) -> None:
        """Return to w exactly (from the saved copy); drop the gradients of unperturbed parameters."""
        if not self._climbed:
            raise RuntimeError("second_step called without first_step")
        for group in self.param_groups:
            for p in group["params"]:
                old_p = self.state[p].pop("old_p", None)
                if old_p is None:
                    p.grad = None
                else:
                    p.copy_(old_p)
        _forget_autocast_casts()
        self._climbed = False

    @torch.no_grad()
    def _base_step(self, scaler: GradScaler | None) -> None:
        """Base optimizer step on the SAM gradients in .grad (clipped, unscaled, skipped on inf/nan)."""
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if _enabled(scaler):
            if self._nonfinite is not None and params:
                # Carry a first-pass overflow into the gradients GradScaler checks, so it skips the step
                # and lowers the scale exactly as for an overflow in the second pass.
                params[0].grad.mul_(torch.where(self._nonfinite, math.nan, 1.0).to(params[0].grad.device))
            scaler.unscale_(self.base_optimizer)
        if self.max_grad_norm is not None and params:
            nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if _enabled(scaler):
            scaler.step(self.base_optimizer)
        else:
            self.base_optimizer.step()
        self._nonfinite = None
        # An LR scheduler counts calls of this object's (wrapped) step(); second_step is a step too.
        self._opt_called = True


@contextmanager
def disable_running_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers of `model` normalise with batch statistics but leave running_mean/var and
    num_batches_tracked untouched inside (for SAM's perturbed pass, which only serves the gradient at w + e(w))."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


@validate_params(dict(optimizer=InstanceOf(SAM, description="a noisysam.SAM optimizer"),
                     model=InstanceOf(nn.Module, description="a torch.nn.Module"),
                     loss_fn=HasAttrs("__call__", description="a callable"),
                     inputs=InstanceOf(Tensor, description="a tensor"),
                     targets=InstanceOf(Tensor, tuple, description="a tensor or a tuple of tensors"),
                     m=[Interval(int, 1), None],
                     scaler=[InstanceOf(GradScaler, description="a torch.amp.GradScaler"), None]))
def sam_step(
    optimizer: SAM,
    model: nn.Module,
    loss_fn: Callable[[Tensor, Any], Tensor],
    inputs: Tensor,
    targets: Tensor | tuple[Tensor, ...],
    m: int | None = None,
    scaler: GradScaler | None = None,
) -> Tensor:
    """One SAM step on a batch; returns the detached mean loss at w.

    m-sharpness: the batch is split into chunks of `m` examples (None or >= batch: one chunk, plain
    SAM); each chunk gets its own e(w) from its own gradient, and the SAM gradients are averaged,
    weighted by chunk size. Each chunk's first pass updates BatchNorm running stats, its second
    doesn't. `loss_fn(logits, targets_chunk)` returns a mean loss; `targets` is a tensor or a tuple
    of tensors with the batch on dim 0. Call under torch.autocast as usual; with an enabled
    GradScaler, the losses are scaled, the step skipped on inf/nan and scaler.update() called here.
    Equivalent, for m=None, to: zero_grad; loss(w).backward(); first_step(zero_grad=True);
    loss(w + e).backward() under disable_running_stats; second_step().

    Data parallelism: a `model` with a ``sam_pass(first, last)`` method (noisysam.run.distributed's DDP wrapper)
    gets every pass run inside the context it returns, e.g. DDP's ``no_sync()`` for a pass whose gradient
    stays on this process. The last chunk's perturbed pass accumulates onto the earlier chunks' SAM
    gradients, so one synced pass there reduces their whole weighted sum at once.
    """
    batch = inputs.shape[0]
    size = batch if m is None else min(m, batch)
    target_chunks = (
        list(zip(*(t.split(size) for t in targets))) if isinstance(targets, tuple) else targets.split(size)
    )
    chunks = list(zip(inputs.split(size), target_chunks))
    pass_context = getattr(model, "sam_pass", None) or _local_pass
    sam_grads: dict[Tensor, Tensor] = {}
    mean_loss: Tensor | float = 0.0
    for i, (x, y) in enumerate(chunks):
        weight = x.shape[0] / batch
        last = i == len(chunks) - 1
        optimizer.zero_grad()
        with pass_context(first=True, last=last):
            loss = loss_fn(model(x), y)
            _backward(loss, scaler)
        optimizer.first_step(zero_grad=True, scaler=scaler)
        if last:  # perturbed parameters: the sum so far goes back into .grad, the last pass adds to it
            for p in list(sam_grads):
                if "old_p" in optimizer.state[p]:
                    p.grad = sam_grads.pop(p)
        with disable_running_stats(model), pass_context(first=False, last=last):
            _backward(loss_fn(model(x), y) * weight, scaler)
        optimizer._descend()
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p in sam_grads:
                    sam_grads[p].add_(p.grad)
                else:
                    sam_grads[p] = p.grad
        mean_loss = mean_loss + loss.detach() * weight
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = sam_grads.get(p)
    optimizer._base_step(scaler)
    if _enabled(scaler):
        scaler.update()
    assert isinstance(mean_loss, Tensor)
    return mean_loss


def _local_pass(first: bool, last: bool) -> AbstractContextManager[None]:
    """A single process: every pass as it is."""
    return nullcontext()


def _backward(loss: Tensor, scaler: GradScaler | None) -> None:
    (scaler.scale(loss) if _enabled(scaler) else loss).backward()


def _forget_autocast_casts() -> None:
    """Drop autocast's cached low-precision copies of the weights after moving them in place.

    Inside one ``torch.autocast`` region the bf16/fp16 cast of each leaf weight is cached by tensor identity
    and reused until the region exits; without this, a pass at w + e(w) run in the same region as the pass at
    w (as in ``sam_step`` under autocast) would compute with the cached casts of w: the SGD gradient, not SAM's.
    """
    torch.clear_autocast_cache()


def _fp32(t: Tensor) -> Tensor:
    """t in at least fp32: the perturbation is computed in fp32 even for half-precision tensors."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _dual_direction(t: Tensor, q: float) -> Tensor:
    """sign(t)|t|^(q-1): t itself for q = 2, sign(t) for q = 1 (p = inf)."""
    if q == 2.0:
        return t
    if q == 1.0:
        return t.sign()
    return t.sign() * t.abs().pow(q - 1.0)


def _as_groups(params: Any) -> list[list[Tensor]]:
    """The tensors of ``params`` (tensors, (name, tensor) pairs, or param-group dicts of either), per group."""
    groups = list(params)
    if groups and isinstance(groups[0], dict):
        groups = [[g["params"]] if isinstance(g["params"], Tensor) else list(g["params"]) for g in groups]
    else:
        groups = [groups]
    return [[t[1] if isinstance(t, tuple) else t for t in group] for group in groups]

