"""The plain reference: the ordinary noisy-CIFAR recipe in plain PyTorch, written from the recipe, not from noisysam.

What a practitioner writes without noisysam, to put beside noisysam's figures on the same data and seeds (same
noisy labels by the same convention): a 5-conv CNN (conv-BN-ReLU x2 at width 32, max-pool, x2 at 64, max-pool,
x1 at 128, max-pool, global average pool, linear; convs without bias), inputs standardised per channel, a random
crop of the 4-px reflect-padded image and a horizontal flip on every batch, SGD with Nesterov momentum 0.9,
weight decay 5e-4, batch 128, one-cycle learning rate to 0.05 (torch's OneCycleLR: cosine up over the first 15%
from 0.05/25, cosine down to 0.05/25/1e4; momentum held at 0.9), 40 epochs by default.

Methods, each from its paper:
  sgd          cross-entropy.
  sam          Foret et al. 2021 (arXiv 2010.01412): climb to w + rho g/||g||, take the gradient there, step
               from w; rho 0.1; the second pass leaves BatchNorm's running statistics alone.
  elr          Liu et al. 2020 (arXiv 2007.00151): CE + lambda log(1 - <t_i, p_i>), t_i <- beta t_i + (1 - beta) p_i
               (beta 0.7, lambda 3).
  co-teaching  Han et al. 2018 (arXiv 1804.06872): two networks, each trained on the (1 - tau min(e/T_k, 1))
               smallest-loss share of the other's batch; tau = the share of wrong training labels, T_k 10.
  dividemix    Li et al. 2020 (arXiv 2002.07394), as the authors' Train_CIFAR.py trains it: warm-up 10 epochs of
               CE per network (own batch order), then each epoch a GMM over each network's losses divides the
               data for the other; per network, its labelled set in batches of B with B unlabelled samples
               beside them, two augmented views each, co-refinement, co-guessing, MixMatch (T 0.5, alpha 4,
               threshold 0.5, lambda_u 25 ramped over 16 epochs), the uniform-prior penalty; every forward pass
               of the trained network in train mode; prediction = the mean of both networks' softmax.

Every epoch it records clean-test accuracy, accuracy on the noisy 10% validation split (for choosing the epoch
honestly) and the share of wrong training labels the model predicts (memorisation), and prints one line.

Usage: python scripts/plain_reference.py --method sgd --noise-rate 0.6 --seed 0 [--epochs 40] [--out run.json]
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture


def find_data(path):
    candidates = [path, os.environ.get("NOISYSAM_DATA"),
                  Path(__file__).resolve().parents[1] / "noisysam" / "assets" / "cifar10-mini.npz"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise SystemExit(f"cifar10-mini.npz not found (looked at {[str(c) for c in candidates if c]})")


def net(width=32, classes=10):
    def conv(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    w = width
    return nn.Sequential(*conv(3, w), *conv(w, w), nn.MaxPool2d(2), *conv(w, 2 * w), *conv(2 * w, 2 * w),
                         nn.MaxPool2d(2), *conv(2 * w, 4 * w), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, classes))


def symmetric_noise(labels, rate, seed, k=10):
    """Symmetric noise, the "replace" convention: each label, with probability ``rate``, redrawn uniformly from all
    K classes (so it may stay right)."""
    rng = np.random.default_rng(seed)
    redraw = rng.random(len(labels)) < rate
    return np.where(redraw, rng.integers(0, k, len(labels)), labels)


def augment(x, gen):
    """Random crop of the 4-px reflect-padded batch and a horizontal flip with probability 1/2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy, dx = torch.randint(0, 9, (2, n, 1), generator=gen)
    rows = (dy + torch.arange(h))[:, None, :, None]
    cols = dx + torch.arange(w)
    cols = torch.where(torch.rand(n, 1, generator=gen) < 0.5, cols.flip(1), cols)[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    return out.contiguous(memory_format=torch.channels_last)


def one_cycle(progress, peak, pct=0.15, div=25.0, final_div=1e4):
    """torch's OneCycleLR (cosine anneal) at ``progress`` in [0, 1] of training."""
    lo, end = peak / div, peak / div / final_div
    if progress < pct:
        return lo + (peak - lo) * (1 - math.cos(math.pi * progress / pct)) / 2
    return end + (peak - end) * (1 + math.cos(math.pi * (progress - pct) / (1 - pct))) / 2


@torch.no_grad()
def softmax_of(models, x, batch=128):
    for m in models:
        m.eval()
    out = torch.cat([sum(F.softmax(m(x[i:i + batch]), 1) for m in models) / len(models)
                     for i in range(0, len(x), batch)])
    for m in models:
        m.train()
    return out


def per_sample_loss(model, x, y):
    return -torch.log(softmax_of([model], x).gather(1, y[:, None])[:, 0].clamp_min(1e-12))


def sam_step(model, opt, loss_fn, rho):
    """SAM (Foret et al. 2021, Eq. 2): the gradient at w + rho g/||g||, applied at w."""
    loss = loss_fn()
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    eps = [rho * p.grad / (norm + 1e-12) for p in params]
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.add_(e)
    opt.zero_grad()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 0.0  # the perturbed pass leaves the running statistics as they are
    loss_fn().backward()
    for m in bns:
        m.momentum = 0.1
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.sub_(e)
    opt.step()
    opt.zero_grad()
    return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="sgd", choices=["sgd", "sam", "elr", "co-teaching", "dividemix"])
    ap.add_argument("--noise-rate", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--rho", type=float, default=0.1)
    ap.add_argument("--tk", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--lambda-u", type=float, default=25.0)
    ap.add_argument("--data", default=None, help="cifar10-mini.npz (default: $NOISYSAM_DATA, then noisysam's copy)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write every epoch's record and the summary here (JSON)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    data = np.load(find_data(args.data))
    x_all, clean_all = data["x_train"], data["y_train"].astype(np.int64)
    k = len(data["classes"])
    noisy_all = symmetric_noise(clean_all, args.noise_rate, args.seed, k)
    order = np.random.default_rng([args.seed, 1]).permutation(len(clean_all))
    n_val = round(0.1 * len(clean_all))
    tr, va = np.sort(order[n_val:]), np.sort(order[:n_val])

    def tensor(images):
        return torch.tensor(images).permute(0, 3, 1, 2).float().div(255)
    x_train = tensor(x_all[tr])
    mean, std = x_train.mean((0, 2, 3), keepdim=True), x_train.std((0, 2, 3), keepdim=True)
    x_train = (x_train - mean) / std
    x_val, x_test = (tensor(x_all[va]) - mean) / std, (tensor(data["x_test"]) - mean) / std
    y_train, clean = torch.tensor(noisy_all[tr]), torch.tensor(clean_all[tr])
    y_val, y_test = torch.tensor(noisy_all[va]), torch.tensor(data["y_test"].astype(np.int64))
    wrong = y_train != clean
    tau = float(wrong.float().mean())
    n, bs = len(y_train), args.batch_size

    # channels_last: the memory layout oneDNN's CPU convolutions run fastest in (1.7x here); same arithmetic
    x_train, x_val, x_test = (x.contiguous(memory_format=torch.channels_last) for x in (x_train, x_val, x_test))
    nets = [net(args.width, k).to(memory_format=torch.channels_last)
            for _ in range(2 if args.method in ("co-teaching", "dividemix") else 1)]
    opts = [torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
            for m in nets]
    target = torch.zeros(n, k)  # ELR's running targets
    steps_per_epoch = math.ceil(n / bs)

    def set_lr(progress):
        for o in opts:
            for g in o.param_groups:
                g["lr"] = one_cycle(min(progress, 1.0), args.lr)

    def step(model, opt, loss_fn):
        if args.method == "sam":
            return sam_step(model, opt, loss_fn, args.rho)
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def plain_epoch(epoch, loss_of, models):
        """One pass over the training set in its own random order per network."""
        for i, (model, opt) in enumerate(zip(models, opts)):
            perm = torch.randperm(n, generator=gen)
            for b in range(steps_per_epoch):
                set_lr((epoch + b / steps_per_epoch) / args.epochs)
                idx = perm[b * bs:(b + 1) * bs]
                xb = augment(x_train[idx], gen)
                step(model, opt, lambda: loss_of(model, xb, idx))

    def ce(model, xb, idx):
        return F.cross_entropy(model(xb), y_train[idx])

    def elr(model, xb, idx):
        logits = model(xb)
        p = F.softmax(logits, 1).clamp(1e-4, 1 - 1e-4)
        target[idx] = 0.7 * target[idx] + 0.3 * (p / p.sum(1, keepdim=True)).detach()
        return F.cross_entropy(logits, y_train[idx]) + 3.0 * torch.log(1 - (target[idx] * p).sum(1)).mean()

    def co_teaching_epoch(epoch):
        keep_share = 1 - tau * min(epoch / args.tk, 1)
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            set_lr((epoch + b / steps_per_epoch) / args.epochs)
            idx = perm[b * bs:(b + 1) * bs]
            xb, yb = augment(x_train[idx], gen), y_train[idx]
            logits = [m(xb) for m in nets]
            losses = [F.cross_entropy(z, yb, reduction="none") for z in logits]
            keep = int(keep_share * len(idx))
            picked = [torch.argsort(l.detach())[:keep] for l in losses]
            for j, o in enumerate(opts):  # each network learns from the other's small-loss samples
                o.zero_grad()
                F.cross_entropy(logits[j][picked[1 - j]], yb[picked[1 - j]]).backward()
                o.step()

    def divide(model):
        loss = per_sample_loss(model, x_train, y_train).numpy()
        loss = ((loss - loss.min()) / (loss.max() - loss.min())).reshape(-1, 1)
        gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=args.seed).fit(loss)
        return torch.tensor(gmm.predict_proba(loss)[:, gmm.means_.argmin()], dtype=torch.float32)

    def sharpen(p):
        p = p ** 2  # T = 0.5
        return p / p.sum(1, keepdim=True)

    def mixmatch_epoch(epoch, j, prob):
        model, other, opt = nets[j], nets[1 - j], opts[j]
        labelled, unlabelled = torch.where(prob > 0.5)[0], torch.where(prob <= 0.5)[0]
        lab = labelled[torch.randperm(len(labelled), generator=gen)]
        unl = unlabelled[torch.randperm(len(unlabelled), generator=gen)]
        iters, u_at = math.ceil(len(lab) / bs), 0
        other.eval()
        for b in range(iters):
            ib = lab[b * bs:(b + 1) * bs]
            if len(unl) == 0:
                break
            if u_at + bs > len(unl):  # the authors' loop restarts the unlabelled loader when it runs out
                unl, u_at = unlabelled[torch.randperm(len(unlabelled), generator=gen)], 0
            iu = unl[u_at:u_at + bs]
            u_at += bs
            set_lr((epoch + b / iters) / args.epochs)
            x1, x2, u1, u2 = (augment(x_train[i], gen) for i in (ib, ib, iu, iu))
            w = prob[ib][:, None]
            with torch.no_grad():
                pu = (F.softmax(model(u1), 1) + F.softmax(model(u2), 1) + F.softmax(other(u1), 1)
                      + F.softmax(other(u2), 1)) / 4
                px = (F.softmax(model(x1), 1) + F.softmax(model(x2), 1)) / 2
                tx = sharpen(w * F.one_hot(y_train[ib], k) + (1 - w) * px)
                tu = sharpen(pu)
            lam = float(np.random.default_rng([args.seed, epoch, j, b]).beta(4, 4))
            lam = max(lam, 1 - lam)
            inputs, targets = torch.cat([x1, x2, u1, u2]), torch.cat([tx, tx, tu, tu])
            mix = torch.randperm(len(inputs), generator=gen)
            logits = model(lam * inputs + (1 - lam) * inputs[mix])
            mixed = lam * targets + (1 - lam) * targets[mix]
            nl = 2 * len(ib)
            lx = -(F.log_softmax(logits[:nl], 1) * mixed[:nl]).sum(1).mean()
            lu = ((F.softmax(logits[nl:], 1) - mixed[nl:]) ** 2).mean()
            ramp = min(max((epoch + b / iters - args.warmup) / 16, 0.0), 1.0)
            mean_p = F.softmax(logits, 1).mean(0)
            penalty = (torch.log(torch.tensor(1.0 / k) / mean_p) / k).sum()
            step(model, opt, lambda: lx + args.lambda_u * ramp * lu + penalty)
        other.train()

    history, t0 = [], time.perf_counter()
    for epoch in range(args.epochs):
        if args.method in ("sgd", "sam"):
            plain_epoch(epoch, ce, nets)
        elif args.method == "elr":
            plain_epoch(epoch, elr, nets)
        elif args.method == "co-teaching":
            co_teaching_epoch(epoch)
        elif epoch < args.warmup:  # dividemix
            plain_epoch(epoch, ce, nets)
        else:
            probs = [divide(m) for m in nets]
            for j in (0, 1):
                mixmatch_epoch(epoch, j, probs[1 - j])
        predictors = nets[:1] if args.method == "co-teaching" else nets  # co-teaching reports network 1
        pred = softmax_of(predictors, x_train).argmax(1)
        record = dict(epoch=epoch + 1, test_accuracy=float((softmax_of(predictors, x_test).argmax(1) == y_test).float().mean()),
                      val_accuracy=float((softmax_of(predictors, x_val).argmax(1) == y_val).float().mean()),
                      memorisation=float((pred[wrong] == y_train[wrong]).float().mean()),
                      seconds=time.perf_counter() - t0)
        history.append(record)
        print(json.dumps(record), flush=True)
    best = max(history, key=lambda r: r["test_accuracy"])
    chosen = max(history, key=lambda r: r["val_accuracy"])  # first epoch of the highest noisy-validation accuracy
    summary = dict(method=args.method, seed=args.seed, noise_rate=args.noise_rate, epochs=args.epochs,
                   realised_rate=float((noisy_all != clean_all).mean()), last=history[-1]["test_accuracy"], best=best["test_accuracy"],
                   selected=chosen["test_accuracy"], selected_epoch=chosen["epoch"],
                   memorisation_last=history[-1]["memorisation"], seconds=history[-1]["seconds"],
                   seconds_per_epoch=history[-1]["seconds"] / args.epochs, args=vars(args))
    print(json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(dict(summary=summary, history=history), indent=1))


if __name__ == "__main__":
    main()
