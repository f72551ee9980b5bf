"""DivideMix (Li, Socher & Hoi, arXiv 2002.07394, Algorithm 1).

Two networks. After ``warmup`` epochs of cross-entropy on every sample, each epoch begins with a co-divide:
each network's per-sample losses (eval mode, min-max normalised) are fitted with a two-component Gaussian
mixture, and a sample's clean probability w_i is the posterior of the component with the smaller mean (the
authors' code: scikit-learn's ``GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4)``). Each network
then trains on the *other* network's division: samples with w_i > ``threshold`` are labelled, the rest
unlabelled, and one MixMatch step (their Sec. 3.2) does

- label co-refinement: p = mean softmax of the network on two views of each labelled sample,
  target = sharpen(w y + (1 - w) p, T);
- label co-guessing: q = mean softmax of *both* networks on two views of each unlabelled sample,
  target = sharpen(q, T);  sharpen(p, T)_k = p_k^(1/T) / sum_j p_j^(1/T);
- mixup of all views with lam ~ Beta(alpha, alpha), lam = max(lam, 1 - lam);
- loss = L_x + lambda_u * ramp * L_u + sum_k pi_k log(pi_k / mean_b p_bk)  (pi uniform; Eq. 7-10): L_x the
  soft cross-entropy on the mixed labelled part, L_u the mean squared error on the mixed unlabelled part, ramp
  rising linearly from 0 to 1 over 16 epochs after warm-up (the authors' ``linear_rampup``).

Where this differs from the authors' code (LiJunnan1992/DivideMix, Train_CIFAR.py):

- every batch of the run's loader trains both networks in turn (network 1 with network 2's division, then
  network 2 with network 1's), its rows labelled or unlabelled by the division, instead of an epoch of network 1
  over its labelled set with B labelled and B cycled unlabelled samples per step, then one of network 2; so the
  share of labelled rows per step follows the division, and a batch without labelled rows has no L_x;
- the network's own refinement and co-guessing passes are one forward pass over all four views (BatchNorm's
  batch statistics mix them) that leaves the running statistics alone; the other network co-guesses in eval mode;
- warm-up trains at the run's batch size (the authors: 2B) with plain cross-entropy (the authors add a
  negative-entropy penalty under asymmetric noise), and the losses are not averaged over 5 epochs (their 90% runs);
- lambda_u is one value (the authors choose it per noise rate: 0 / 25 / 50 / 150 at 20 / 50 / 80 / 90%).

The two views are drawn here (random crop of the 4-px reflect-padded image, which needs images larger than
4 px, and a flip; on top of the loader's augmentation if any). Evaluation: the mean of both networks' softmax
(the paper's "average predictions"; the authors' code sums the logits). Defaults: the paper's CIFAR-10 values
(warm-up 10 epochs, T 0.5, alpha 4, threshold 0.5, lambda_u 25, its value at 50% noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from noisysam.data.loader import random_crop_flip
from noisysam.methods.learner import EpochInfo, Learner, LearnerMethod
from noisysam.optim.sam import disable_running_stats

__all__ = ["DivideMix", "co_divide", "sharpen", "mixmatch_loss", "RAMPUP_EPOCHS"]

#: Epochs over which lambda_u ramps up after warm-up (the authors' ``linear_rampup``).
RAMPUP_EPOCHS = 16


def co_divide(losses: np.ndarray, seed: int) -> np.ndarray:
    """Each sample's probability of being clean: the posterior of the lower-mean component of a two-component
    Gaussian mixture fitted to the min-max normalised ``losses`` (the authors' ``eval_train``)."""
    from sklearn.mixture import GaussianMixture

    losses = np.asarray(losses, dtype=np.float64)
    span = losses.max() - losses.min()
    scaled = ((losses - losses.min()) / (span if span > 0 else 1.0)).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed)
    gmm.fit(scaled)
    return gmm.predict_proba(scaled)[:, int(gmm.means_.argmin())]


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """p^(1/T), renormalised over classes (MixMatch's temperature sharpening)."""
    p = p ** (1 / temperature)
    return p / p.sum(dim=1, keepdim=True)


def mixmatch_loss(logits: Tensor, target: Tensor, labelled: Tensor, lambda_u: float) -> Tensor:
    """L_x + lambda_u * L_u + the uniform-prior penalty on one (mixed) batch; ``labelled`` (B,) bool marks the
    rows of L_x (soft cross-entropy, mean over those rows); the rest are L_u's (squared error, mean over their
    rows and classes); an empty part adds 0."""
    logits = logits.float()
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    lab = labelled.to(p.dtype)
    loss_x = -(lab * (target * log_p).sum(dim=1)).sum() / lab.sum().clamp(min=1)
    loss_u = ((1 - lab)[:, None] * (p - target) ** 2).sum() / ((1 - lab).sum() * p.shape[1]).clamp(min=1)
    prior = torch.full((p.shape[1],), 1 / p.shape[1], device=p.device)
    penalty = (prior * torch.log(prior / p.mean(dim=0))).sum()
    return loss_x + lambda_u * loss_u + penalty


def _cross_entropy(logits: Tensor, targets: tuple[Tensor, ...]) -> Tensor:
    return F.cross_entropy(logits.float(), targets[0])


@dataclass(frozen=True)
class DivideMix(LearnerMethod):
    """DivideMix with any update rule for both networks (SGD: ``dividemix``; SAM / momentum-SAM:
    ``dividemix-sam``). State: ``clean_prob`` (2, training rows), each network's co-divide of this epoch."""

    name: str
    update: Any
    warmup: int = 10
    lambda_u: float = 25.0
    temperature: float = 0.5
    mixup: Any = None  # the mixup input rule whose draw (lam, permutation) the MixMatch step uses
    threshold: float = 0.5
    params: dict = field(default_factory=dict)

    networks = 2
    prediction = "mean softmax of networks 1 and 2"

    def check_labels(self, labels: np.ndarray, num_classes: int) -> None:
        counts = np.bincount(labels, minlength=num_classes)
        if counts.min() < 2:
            rare = [int(c) for c in np.flatnonzero(counts < 2)]
            raise ValueError(f"dividemix needs at least 2 training samples of every class after the validation "
                             f"split; class(es) {rare} have {[int(counts[c]) for c in rare]}")

    def init_state(self, n: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        return {"clean_prob": torch.ones(2, n, device=device)}

    def begin_epoch(self, learner: Learner, info: EpochInfo) -> None:
        if info.epoch < self.warmup:
            return
        for k, model in enumerate(learner.models):
            seed = int(torch.randint(0, 2**31 - 1, (), generator=info.generator))
            prob = co_divide(info.sample_losses(model).numpy(), seed)
            learner.state["clean_prob"][k] = torch.as_tensor(prob, dtype=torch.float32)
        learner.train()

    def predict(self, learner: Learner, x: Tensor) -> Tensor:
        """log of the networks' mean softmax, computed in log space (no -inf where a probability underflows)."""
        log_p = torch.stack([F.log_softmax(model(x).float(), dim=1) for model in learner.models])
        return torch.logsumexp(log_p, dim=0) - math.log(len(learner.models))

    def step(self, learner: Learner, x: Tensor, y: Tensor, idx: Tensor, *, generator: torch.Generator,
             scaler: Any = None) -> Tensor:
        if learner.epoch < self.warmup:
            losses = [self.update.step(opt, net, _cross_entropy, x, (y,), scaler)
                      for net, opt in zip(learner.nets, learner.optimizers)]
            return sum(losses) / 2  # type: ignore[return-value]
        ramp = min(max((learner.progress - self.warmup) / RAMPUP_EPOCHS, 0.0), 1.0)
        losses = [self._train(learner, k, x, y, idx, generator, self.lambda_u * ramp, scaler) for k in (0, 1)]
        return sum(losses) / 2  # type: ignore[return-value]

    def _train(self, learner: Learner, k: int, x: Tensor, y: Tensor, idx: Tensor, generator: torch.Generator,
               lambda_u: float, scaler: Any) -> Tensor:
        """One MixMatch update of network ``k`` on the division of the other network."""
        net, other = learner.nets[k], learner.nets[1 - k]
        w = learner.state["clean_prob"][1 - k, idx]
        labelled = w > self.threshold  # the split's sizes are data: boolean indexing syncs once per update
        xl, yl, wl, xu = x[labelled], y[labelled], w[labelled, None], x[~labelled]
        views = [random_crop_flip(part, generator) for part in (xl, xl, xu, xu)]
        nl, nu = xl.shape[0], xu.shape[0]
        with torch.no_grad(), disable_running_stats(net):
            p_own = F.softmax(net(torch.cat(views)).float(), dim=1)
            p_other = p_own[:0]
            if nu:  # co-guessing needs the other network only where there are unlabelled samples
                other.eval()
                p_other = F.softmax(other(torch.cat(views[2:])).float(), dim=1)
                other.train()
            k_classes = p_own.shape[1]
            refined = wl * F.one_hot(yl, k_classes) + (1 - wl) * (p_own[:nl] + p_own[nl:2 * nl]) / 2
            guessed = (p_own[2 * nl:2 * nl + nu] + p_own[2 * nl + nu:] + p_other[:nu] + p_other[nu:]) / 4
            target_x, target_u = sharpen(refined, self.temperature), sharpen(guessed, self.temperature)
        inputs = torch.cat(views)
        targets = torch.cat([target_x, target_x, target_u, target_u])
        is_labelled = torch.arange(inputs.shape[0], device=x.device) < 2 * nl
        lam, perm = self.mixup.draw(inputs.shape[0], generator)
        lam, perm = max(lam, 1 - lam), perm.to(x.device)
        mixed_x = lam * inputs + (1 - lam) * inputs[perm]
        mixed_t = lam * targets + (1 - lam) * targets[perm]

        def loss_fn(logits: Tensor, chunk: tuple[Tensor, Tensor]) -> Tensor:
            return mixmatch_loss(logits, chunk[0], chunk[1], lambda_u)

        return self.update.step(learner.optimizers[k], net, loss_fn, mixed_x, (mixed_t, is_labelled), scaler)
