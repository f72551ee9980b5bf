"""Early-learning regularisation (ELR; Liu, Niles-Weed, Razavian & Fernandez-Granda, arXiv 2007.00151).

Early in training a network fits the clean labels first; ELR keeps, for every training sample i, a running
average of its (detached) predictions, the target t_i (their Eq. 9, temporal ensembling):

    t_i <- beta * t_i + (1 - beta) * p_i,     p_i = clamp(softmax(z_i), 1e-4, 1 - 1e-4), renormalised

and adds to cross-entropy a term that keeps the prediction close to it (Eq. 6; the authors' code,
shengliu66/ELR, takes the mean over the batch):

    loss = CE(z, y) + lambda * mean_i log(1 - <t_i, p_i>)

t starts at 0. The paper's CIFAR-10 values are beta 0.7, lambda 3 (its Table 5). Each step updates the batch's
targets once, from the step's first forward pass over each row (at w for SAM, before the climb; momentum-SAM's
only pass is at its perturbed point), and every pass of the step (SAM's second, each m-sharpness chunk)
regularises towards those updated targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from noisysam.methods.learner import Learner, LearnerMethod

__all__ = ["ELR", "elr_loss", "CLAMP"]

#: The clamp of the predictions (the authors' code), which keeps log(1 - <t, p>) finite.
CLAMP = 1e-4


def elr_loss(logits: Tensor, labels: Tensor, target: Tensor, lam: float) -> Tensor:
    """CE(logits, labels) + lam * mean log(1 - <target, p>), p the clamped softmax (the paper's Eq. 6)."""
    logits = logits.float()
    p = F.softmax(logits, dim=1).clamp(CLAMP, 1 - CLAMP)
    return F.cross_entropy(logits, labels) + lam * torch.log(1 - (target * p).sum(dim=1)).mean()


@dataclass(frozen=True)
class ELR(LearnerMethod):
    """ELR on one network with any update rule (SGD: ``elr``; SAM or momentum-SAM: ``elr-sam``). State: the
    targets t, (training rows, classes) float32."""

    name: str
    update: Any
    beta: float = 0.7
    lam: float = 3.0
    params: dict = field(default_factory=dict)

    def init_state(self, n: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        return {"target": torch.zeros(n, num_classes, device=device)}

    def step(self, learner: Learner, x: Tensor, y: Tensor, idx: Tensor, *, generator: torch.Generator,
             scaler: Any = None) -> Tensor:
        stored = learner.state["target"]
        fresh = stored[idx].clone()  # this step's targets, once updated
        seen = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

        def loss_fn(logits: Tensor, chunk: tuple[Tensor, Tensor]) -> Tensor:
            labels, rows = chunk
            with torch.no_grad():  # the first pass over a row updates its target (temporal ensembling)
                p = F.softmax(logits.float(), dim=1).clamp(CLAMP, 1 - CLAMP)
                update = self.beta * stored[idx[rows]] + (1 - self.beta) * p / p.sum(dim=1, keepdim=True)
                fresh[rows] = torch.where(seen[rows, None], fresh[rows], update)
                seen[rows] = True
            return elr_loss(logits, labels, fresh[rows], self.lam)

        rows = torch.arange(x.shape[0], device=x.device)
        loss = self.update.step(learner.optimizers[0], learner.nets[0], loss_fn, x, (y, rows), scaler)
        stored[idx] = fresh
        return loss
