"""Co-teaching (Han, Yao, Yu, Niu, Xu, Hu, Tsang & Sugiyama, arXiv 1804.06872, Algorithm 1).

Two networks f and g see the same batches. Each keeps the fraction R(T) of the batch on which its own loss is
smallest (small-loss samples are likely clean) and hands them to the *other* network, which takes its update
on them; the kept fraction shrinks over the first T_k epochs (the paper's Eq. 1, T the epoch counted from 0):

    R(T) = 1 - tau * min(T / T_k, 1)

tau is the noise rate, the share of wrong labels (the paper assumes it known; through :func:`noisysam.train` it
defaults to the labels' realised share; give it to use an estimate, e.g. from ``noisysam detect``). The authors'
code indexes ``linspace(0, tau, T_k)`` from its first trained epoch, so its forget rate reaches tau two epochs
before this one's. The ranking pass runs both networks on the whole batch in train mode without gradients and
without touching BatchNorm's running statistics; each update then runs its own forward pass on its kept
samples (the authors' code back-propagates through the ranking pass instead, so there BatchNorm's batch
statistics are the whole batch's). Any update rule composes: SGD (``co-teaching``), SAM or momentum-SAM
(``co-teaching-sam``). Evaluation uses network f, the first model the authors' code reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from noisysam.methods.learner import Learner, LearnerMethod
from noisysam.optim.sam import disable_running_stats

__all__ = ["CoTeaching", "kept_fraction", "small_loss"]


def kept_fraction(epoch: int, tau: float, tk: int) -> float:
    """R(T) = 1 - tau * min(T / T_k, 1) for epoch T (from 0)."""
    return 1.0 - tau * min(epoch / tk, 1.0)


def small_loss(losses: Tensor, keep: int) -> Tensor:
    """Positions of the ``keep`` smallest ``losses`` (ties by position)."""
    return torch.argsort(losses, stable=True)[:keep]


def _cross_entropy(logits: Tensor, targets: tuple[Tensor, ...]) -> Tensor:
    return F.cross_entropy(logits.float(), targets[0])


@dataclass(frozen=True)
class CoTeaching(LearnerMethod):
    """Two networks, each updated on the other's small-loss fraction :func:`kept_fraction` of every batch."""

    name: str
    update: Any
    tau: float = 0.5
    tk: int = 10
    params: dict = field(default_factory=dict)

    networks = 2
    prediction = "network 1 (of 2)"

    def init_state(self, n: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        if self.tau is None:
            raise ValueError("co-teaching needs tau, the noise rate (share of wrong labels): pass tau=..., or train "
                             "through noisysam.train(), which sets the labels' own")
        return {}

    def step(self, learner: Learner, x: Tensor, y: Tensor, idx: Tensor, *, generator: torch.Generator,
             scaler: Any = None) -> Tensor:
        f, g = learner.nets
        keep = max(1, int(kept_fraction(learner.epoch, self.tau, self.tk) * x.shape[0]))  # the authors' int()
        with torch.no_grad(), disable_running_stats(f), disable_running_stats(g):
            picked_by_f = small_loss(F.cross_entropy(f(x).float(), y, reduction="none"), keep)
            picked_by_g = small_loss(F.cross_entropy(g(x).float(), y, reduction="none"), keep)
        loss_f = self.update.step(learner.optimizers[0], f, _cross_entropy, x[picked_by_g], (y[picked_by_g],), scaler)
        loss_g = self.update.step(learner.optimizers[1], g, _cross_entropy, x[picked_by_f], (y[picked_by_f],), scaler)
        return (loss_f + loss_g) / 2
