"""What one run trains: its networks, their optimizers and any per-sample state, under one state_dict.

The methods of :mod:`noisysam.methods.rules` train one network and keep nothing between steps but their optimizer's
state. The label-noise methods researchers reach for do more: ELR keeps a running target per training sample
(Liu et al., arXiv 2007.00151), Co-teaching trains two networks on each other's small-loss samples (Han et al.,
arXiv 1804.06872), DivideMix trains two networks that split the data for each other every epoch (Li et al.,
arXiv 2002.07394). A :class:`LearnerMethod` says what it needs (``networks``, ``init_state``, an epoch hook);
a :class:`Learner` holds it, so the run loop (:mod:`noisysam.run.loop`) stays one loop for every method: it calls
:meth:`Learner.begin_epoch` once per epoch, then :meth:`Learner.step` for each step of the epoch's plan
(:meth:`Learner.plan`: one step per batch of the run's loader, unless the method draws its own batches, as
DivideMix does for each network in turn), evaluates ``learner(x)`` and checkpoints :meth:`Learner.state_dict`.

Per-sample state is indexed by the row of the training split (the loader's ``idx``); it is float or integer
tensors only, so it checkpoints and resumes bitwise. Under fp16 the networks share the run's GradScaler, whose
``update`` then runs once per network step (its growth interval counts steps of either network).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sized

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Learner", "LearnerMethod", "EpochInfo", "PlannedStep", "Plan"]


@dataclass(frozen=True)
class EpochInfo:
    """What an epoch hook may use: the ``epoch`` (0-based), its ``steps``, a ``generator`` (the epoch's
    CPU generator, drawn before the steps), and ``sample_losses(model)``: each training-split sample's
    cross-entropy against its given label under ``model`` in eval mode, without augmentation, in row order."""

    epoch: int
    steps: int
    generator: torch.Generator
    sample_losses: Callable[[nn.Module], Tensor]


@dataclass(frozen=True)
class PlannedStep:
    """One step of an epoch: the arguments of the method's step (``(x, y, idx)`` for a batch of the run's loader),
    its place in the epoch, step ``index`` (from 0) of the ``of`` steps of its pass over the data (the learning
    rate schedule reads the epoch as ``index / of`` done), and the ``batch`` its passes are counted against."""

    args: tuple
    index: int
    of: int
    batch: int


class Plan:
    """An epoch's steps: ``steps`` of them, drawn lazily by ``make()`` (so that augmented views are made as each
    step needs them, not all at once)."""

    def __init__(self, steps: int, make: Callable[[], Iterator[PlannedStep]]):
        self.steps, self.make = steps, make

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[PlannedStep]:
        return self.make()


def loader_plan(loader: Sized) -> Plan:
    """One step per batch of ``loader`` (any sized iterable of (x, y, idx)), in its order."""
    steps = len(loader)
    return Plan(steps, lambda: (PlannedStep(batch, b, steps, batch[0].shape[0]) for b, batch in enumerate(loader)))


class LearnerMethod:
    """A method that trains through a :class:`Learner`: ``networks`` networks (each built from the run's model
    with its own initialisation, and its own optimizer from ``update``), per-sample state from
    :meth:`init_state`, an epoch hook :meth:`begin_epoch`, one :meth:`step` per batch and a :meth:`predict` for
    evaluation. Subclasses are frozen dataclasses with ``name``, ``update`` (an update rule of
    :mod:`noisysam.methods.rules` or :mod:`noisysam.optim.variants`) and ``params`` fields."""

    networks = 1
    relabel = False  # trains once (see noisysam.methods.rules.RelabelAndRetrain)
    #: How :meth:`predict` turns the networks into one prediction, in words (recorded in result.json).
    prediction = "the network"

    name: str
    update: Any
    params: dict

    def make_optimizer(self, params: Iterable[Any], *, lr: float, momentum: float, weight_decay: float,
                       nesterov: bool = False) -> torch.optim.Optimizer:
        """One network's optimizer: its update rule's (SGD, or SAM wrapping SGD, ...)."""
        return self.update.make_optimizer(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                          nesterov=nesterov)

    def check_labels(self, labels: np.ndarray, num_classes: int) -> None:
        """Refuse (ValueError) training labels this method cannot train on; called before anything is written."""

    def init_state(self, n: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        """The per-sample state at the start of training (rows of the training split)."""
        return {}

    def begin_epoch(self, learner: "Learner", info: EpochInfo) -> None:
        """Called before each epoch's first step, all networks in train mode."""

    def plan(self, learner: "Learner", loader: Any, info: EpochInfo) -> Optional[Plan]:
        """The epoch's steps, for a method that draws its own batches from the run's training ``loader`` (a
        :class:`~noisysam.data.loader.Loader`); None (the default): one step per batch of the loader."""
        return None

    def step(self, learner: "Learner", x: Tensor, y: Tensor, idx: Tensor, *, generator: torch.Generator,
             scaler: Any = None) -> Tensor:
        """One update on the batch (x, given labels y, training-split rows idx), or on the arguments of a step of
        the method's own :meth:`plan`; the detached mean loss."""
        raise NotImplementedError

    def predict(self, learner: "Learner", x: Tensor) -> Tensor:
        """Evaluation logits (B, K) of the networks in eval mode (a log-probability counts as logits)."""
        return learner.models[0](x)


class Learner:
    """One run's networks (``models``; ``nets`` what the steps train through, DDP wrappers for a one-network
    method under several processes), their ``optimizers``, per-sample ``state`` and the ``method``.
    Callable: ``learner(x)`` is the evaluation prediction (:meth:`LearnerMethod.predict`)."""

    def __init__(self, method: Any, models: list[nn.Module], nets: list[nn.Module],
                 optimizers: list[torch.optim.Optimizer], state: Optional[dict[str, Tensor]] = None):
        self.method, self.models, self.nets, self.optimizers = method, models, nets, optimizers
        self.state = state or {}
        self.epoch = 0

    @property
    def model(self) -> nn.Module:
        return self.models[0]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers[0]

    @property
    def stateful(self) -> bool:
        """Whether the method keeps state beyond one network's weights and optimizer."""
        return isinstance(self.method, LearnerMethod)

    def train(self, mode: bool = True) -> "Learner":
        for model in self.models:
            model.train(mode)
        return self

    def eval(self) -> "Learner":
        return self.train(False)

    def __call__(self, x: Tensor) -> Tensor:
        return self.method.predict(self, x) if self.stateful else self.models[0](x)

    def begin_epoch(self, info: EpochInfo) -> None:
        self.epoch = info.epoch
        if self.stateful:
            self.method.begin_epoch(self, info)

    def plan(self, loader: Any, info: EpochInfo) -> Plan:
        """The epoch's steps (after :meth:`begin_epoch`): the method's own :meth:`LearnerMethod.plan`, else one
        per batch of ``loader``."""
        plan = self.method.plan(self, loader, info) if self.stateful else None
        return loader_plan(loader) if plan is None else plan

    def step(self, *args: Any, generator: torch.Generator, scaler: Any = None) -> Tensor:
        """One step on a :class:`PlannedStep`'s ``args``: ``(x, y, idx)``, or what the method's own plan made."""
        if self.stateful:
            return self.method.step(self, *args, generator=generator, scaler=scaler)
        return self.method.train_step(self.nets[0], self.optimizers[0], *args, generator=generator, scaler=scaler)

    def state_dict(self) -> dict:
        """Network 1's ``model`` and ``optimizer`` (the keys a one-network checkpoint has always had), the other
        networks' in ``models`` / ``optimizers``, and ``sample_state``."""
        return dict(model=self.models[0].state_dict(), optimizer=self.optimizers[0].state_dict(),
                    models=[m.state_dict() for m in self.models[1:]],
                    optimizers=[o.state_dict() for o in self.optimizers[1:]],
                    sample_state={k: v.detach().clone() for k, v in self.state.items()})

    def load_state_dict(self, saved: dict) -> None:
        models, optimizers = saved.get("models", []), saved.get("optimizers", [])
        state = saved.get("sample_state", {})
        if len(models) != len(self.models) - 1 or len(optimizers) != len(self.optimizers) - 1 \
                or set(state) != set(self.state):
            raise ValueError(f"the checkpoint holds {len(models) + 1} network(s) and sample state {sorted(state)}; "
                             f"method {self.method.name!r} trains {len(self.models)} and keeps {sorted(self.state)}")
        for model, sd in zip(self.models, [saved["model"], *models]):
            model.load_state_dict(sd)
        for optimizer, sd in zip(self.optimizers, [saved["optimizer"], *optimizers]):
            optimizer.load_state_dict(sd)
        for key, value in state.items():
            if value.shape != self.state[key].shape or value.dtype != self.state[key].dtype:
                raise ValueError(f"the checkpoint's sample state {key!r} is {value.dtype} {tuple(value.shape)}, "
                                 f"expected {self.state[key].dtype} {tuple(self.state[key].shape)}")
            self.state[key].copy_(value)

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor a checkpoint holds, by a readable name (for the finiteness check)."""
        out: dict[str, Tensor] = {}
        for k, (model, optimizer) in enumerate(zip(self.models, self.optimizers)):
            prefix = f"network {k + 1} " if len(self.models) > 1 else ""
            names = {id(p): n for n, p in model.named_parameters()}
            params = [p for group in optimizer.param_groups for p in group["params"]]  # state_dict's numbering
            out.update({prefix + name: v for name, v in model.state_dict().items()})
            for i, state in optimizer.state_dict()["state"].items():
                for key, value in state.items():
                    out[f"{prefix}optimizer {key} of {names.get(id(params[i]), i)}"] = value
        out.update({f"sample state {k}": v for k, v in self.state.items()})
        return out
