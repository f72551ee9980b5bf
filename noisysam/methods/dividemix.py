"""DivideMix (Li, Socher & Hoi, arXiv 2002.07394, Algorithm 1), trained as the authors' Train_CIFAR.py trains it.

Two networks. For the first ``warmup`` epochs each network takes a pass of cross-entropy over every training
sample, in its own batch order. Then each epoch begins with a co-divide: each network's per-sample losses
(eval mode, min-max normalised) are fitted with a two-component Gaussian mixture, and a sample's clean
probability w_i is the posterior of the component with the smaller mean (the authors' code: scikit-learn's
``GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4)``). Network 1 then takes a pass over the samples
that network 2's division labels (w_i > ``threshold``), in its own order, B labelled and B unlabelled samples
(the rest, drawn in their own order and cycled) per step; then network 2 over network 1's division. One step of
network f with the other network g (their Sec. 3.2):

- two random views (crop of the padded image and flip) of every labelled sample x and unlabelled sample u;
- label co-refinement: p = mean softmax of f on the two views of x, target = sharpen(w y + (1 - w) p, T);
- label co-guessing: q = mean softmax of f and of g (eval mode) on the two views of u, target = sharpen(q, T);
  sharpen(p, T)_k = p_k^(1/T) / sum_j p_j^(1/T); f runs these four passes in train mode, without gradients, as
  the authors' code does, so BatchNorm's running statistics follow the unmixed views;
- mixup of all views with lam ~ Beta(alpha, alpha), lam = max(lam, 1 - lam);
- loss = L_x + lambda_u * ramp * L_u + sum_k pi_k log(pi_k / mean_b p_bk)  (pi uniform; Eq. 7-10): L_x the
  soft cross-entropy on the mixed labelled part, L_u the mean squared error on the mixed unlabelled part, ramp
  rising linearly from 0 to 1 over 16 epochs after warm-up (the authors' ``linear_rampup``).

Evaluation: the mean of both networks' softmax (the paper's "average predictions"; the authors' code sums the
logits). Where this differs from the authors' code: warm-up runs at the run's batch size (the authors: 2B) with
plain cross-entropy (the authors add a negative-entropy penalty under asymmetric noise); a pass over the labelled
samples takes ceil(L / B) steps, its last one short (the authors: L // B + 1, the last one restarting the
labelled loader when B divides L), and the unlabelled order restarts when fewer than B samples are left in it
(the authors' loader serves the short remainder first); the losses are not averaged over 5 epochs (their 90%
runs). Warm-up and MixMatch draw their views the same way (:meth:`noisysam.data.loader.Loader.augmented`, the
run's padding), with or without the run's ``augment``: the method needs two random views.

lambda_u: the paper's Appendix B (its Table 7) sets it by dataset and noise: on CIFAR-10, 0 at 20% symmetric noise,
25 at 50%, 25 at 80% and 50 at 90%, and 0 under 40% asymmetric noise; on CIFAR-10 at 20% the authors' 25 costs
4 points (DivideMix issues 10, 26, 41, 50: 91.5% for the paper's 96.1). The default 25 is CIFAR-10's value at
50-80%; set 0 at 20% and for asymmetric noise. The other defaults are the paper's CIFAR-10 values (warm-up 10
epochs, T 0.5, alpha 4, threshold 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from noisysam.methods.learner import EpochInfo, Learner, LearnerMethod, Plan, PlannedStep

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


def _order(rows: Tensor, generator: torch.Generator) -> Tensor:
    return rows[torch.randperm(rows.shape[0], generator=generator).to(rows.device)]


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

    def plan(self, learner: Learner, loader: Any, info: EpochInfo) -> Plan:
        """Network 1's pass, then network 2's: in warm-up over every row, afterwards over the rows the other
        network's division labels, each step drawing its views from the epoch's generator as it comes."""
        generator, batch = info.generator, loader.batch_size
        every = torch.arange(len(loader.labels))
        if info.epoch < self.warmup:
            passes = [(k, _order(every, generator), None) for k in (0, 1)]
        else:
            labelled = (learner.state["clean_prob"] > self.threshold).cpu()  # one host sync per epoch
            passes = [(k, _order(every[labelled[1 - k]], generator), every[~labelled[1 - k]]) for k in (0, 1)]
        sizes = [math.ceil(rows.shape[0] / batch) for _, rows, _ in passes]

        def steps() -> Iterator[PlannedStep]:
            for (k, rows, unlabelled), of in zip(passes, sizes):
                pool, at = _order(unlabelled, generator) if unlabelled is not None else None, 0
                for b in range(of):
                    lab = rows[b * batch:(b + 1) * batch]
                    views = [loader.augmented(lab, generator)]
                    if unlabelled is not None:
                        if at + batch > pool.shape[0]:  # fewer than B left: a new order
                            pool, at = _order(unlabelled, generator), 0
                        unl = pool[at:at + batch]
                        at += batch
                        views = [views[0], loader.augmented(lab, generator), *(loader.augmented(unl, generator)
                                                                              for _ in range(2))]
                    lab = lab.to(loader.device)
                    yield PlannedStep((k, lab, loader.labels[lab], views, b / of), b, of, batch)

        return Plan(sum(sizes), steps)

    def predict(self, learner: Learner, x: Tensor) -> Tensor:
        """log of the networks' mean softmax, computed in log space (no -inf where a probability underflows)."""
        log_p = torch.stack([F.log_softmax(model(x).float(), dim=1) for model in learner.models])
        return torch.logsumexp(log_p, dim=0) - math.log(len(learner.models))

    def step(self, learner: Learner, k: int, rows: Tensor, labels: Tensor, views: list[Tensor], at: float, *,
             generator: torch.Generator, scaler: Any = None) -> Tensor:
        """One update of network ``k`` on the training ``rows`` with their given ``labels`` (after warm-up, the
        rows the other network's division labels) and ``views`` (warm-up: one; MixMatch: two of the labelled rows,
        two of up to B unlabelled rows), ``at`` the share of this network's pass done (for the ramp)."""
        net, optimizer = learner.nets[k], learner.optimizers[k]
        if len(views) == 1:  # warm-up: cross-entropy on the given labels
            return self.update.step(optimizer, net, _cross_entropy, views[0], (labels,), scaler)
        ramp = min(max((learner.epoch + at - self.warmup) / RAMPUP_EPOCHS, 0.0), 1.0)
        other = learner.nets[1 - k]
        w = learner.state["clean_prob"][1 - k, rows][:, None]
        x1, x2, u1, u2 = views
        with torch.no_grad():  # f in train mode, as the authors': BatchNorm's running statistics see the unmixed views
            guessed = []
            if u1.shape[0]:  # the authors' order: f on the unlabelled views, g on them, f on the labelled ones
                guessed = [F.softmax(net(v).float(), dim=1) for v in (u1, u2)]
                other.eval()
                guessed += [F.softmax(other(v).float(), dim=1) for v in (u1, u2)]
                other.train()
            own = [F.softmax(net(v).float(), dim=1) for v in (x1, x2)]
            refined = w * F.one_hot(labels, own[0].shape[1]) + (1 - w) * (own[0] + own[1]) / 2
            target_x = sharpen(refined, self.temperature)
            target_u = sharpen(sum(guessed) / 4, self.temperature) if guessed else target_x[:0]
        inputs = torch.cat(views)
        targets = torch.cat([target_x, target_x, target_u, target_u])
        is_labelled = torch.arange(inputs.shape[0], device=inputs.device) < 2 * rows.shape[0]
        lam, perm = self.mixup.draw(inputs.shape[0], generator)
        lam, perm = max(lam, 1 - lam), perm.to(inputs.device)
        mixed_x = lam * inputs + (1 - lam) * inputs[perm]
        mixed_t = lam * targets + (1 - lam) * targets[perm]

        def loss_fn(logits: Tensor, chunk: tuple[Tensor, Tensor]) -> Tensor:
            return mixmatch_loss(logits, chunk[0], chunk[1], self.lambda_u * ramp)

        return self.update.step(optimizer, net, loss_fn, mixed_x, (mixed_t, is_labelled), scaler)
