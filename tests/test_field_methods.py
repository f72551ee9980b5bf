"""ELR, Co-teaching and DivideMix (noisysam.methods.elr, .coteaching, .dividemix) and the trainer's learner.

Each step is checked against a reference written here from the paper's equations another way (per-sample loops,
hand-written SGD on a linear model), the co-divide against the posterior of the two clusters computed by hand,
and every new method against an uninterrupted run after a kill and a resume (weights, per-sample state, history).
"""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import noisysam
from noisysam.cli.commands import cli
from noisysam.methods.coteaching import kept_fraction
from noisysam.data.datasets import ImageDataset
from noisysam.data.loader import Loader, crop_flip
from noisysam.methods.dividemix import RAMPUP_EPOCHS, co_divide, mixmatch_loss, sharpen
from noisysam.methods.learner import EpochInfo, Learner
from noisysam.methods.registry import get_method
from noisysam.run.config import build_method, TrainConfig
from noisysam.run.loop import train

LR = 0.5


def linear(seed, c=3, hw=8, k=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, k))


def learner_of(method, models, n, k=3):
    optimizers = [torch.optim.SGD(m.parameters(), lr=LR) for m in models]
    state = method.init_state(n, k, torch.device("cpu"))
    return Learner(method, models, models, optimizers, state)


def begin(learner, epoch, steps=1, generator=None, sample_losses=None):
    learner.begin_epoch(EpochInfo(epoch, steps, generator or torch.Generator().manual_seed(0), sample_losses))


def params_of(model):
    w, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    return w, b


def sgd_by_hand(w, b, loss_of):
    """One plain SGD step at LR on (w, b): loss_of(w, b) -> scalar tensor."""
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = loss_of(w, b)
    gw, gb = torch.autograd.grad(loss, (w, b))
    return (w - LR * gw).detach(), (b - LR * gb).detach()


def batch(seed, n=8, k=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, k, (n,), generator=g)


# ------------------------------------------------------------------------------------------------ ELR

def test_elr_steps_match_a_per_sample_reference_of_the_papers_equations():
    beta, lam = 0.7, 3.0
    method = get_method("elr", beta=beta, lam=lam)
    model = linear(0)
    learner = learner_of(method, [model], n=10)
    begin(learner, 0)
    w, b = params_of(model)
    targets = torch.zeros(10, 3)
    for step, rows in enumerate([[0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 0, 1], [0, 2, 4, 6, 8, 9, 7, 5]]):
        x, y = batch(step)
        idx = torch.tensor(rows)
        # Reference: t_i <- beta t_i + (1 - beta) p_i (clamped, renormalised, detached), then
        # loss = mean_i [CE_i + lam log(1 - <t_i, p_i>)], one sample at a time.
        logits = x.flatten(1) @ w.T + b
        for i, r in enumerate(rows):
            p = torch.softmax(logits[i], 0).clamp(1e-4, 1 - 1e-4)
            targets[r] = beta * targets[r] + (1 - beta) * p / p.sum()

        def loss_of(w_, b_):
            total = 0.0
            for i, r in enumerate(rows):
                z = x[i].flatten() @ w_.T + b_
                p = torch.softmax(z, 0).clamp(1e-4, 1 - 1e-4)
                total = total - torch.log_softmax(z, 0)[y[i]] + lam * torch.log(1 - (targets[r] * p).sum())
            return total / len(rows)

        w, b = sgd_by_hand(w, b, loss_of)
        learner.step(x, y, idx, generator=torch.Generator())
        assert torch.allclose(model[1].weight, w, atol=1e-5) and torch.allclose(model[1].bias, b, atol=1e-5)
        assert torch.allclose(learner.state["target"], targets, atol=1e-6)


def test_elr_under_sam_updates_each_target_once_from_the_first_pass_at_w():
    beta = 0.7
    method = get_method("elr-sam", beta=beta, lam=3.0, rho=0.5)
    model = linear(1)
    learner = Learner(method, [model], [model], [method.make_optimizer(model.parameters(), lr=LR, momentum=0.0,
                                                                        weight_decay=0.0)],
                      method.init_state(8, 3, torch.device("cpu")))
    x, y = batch(3)
    with torch.no_grad():
        p = torch.softmax(model(x), 1).clamp(1e-4, 1 - 1e-4)
    learner.step(x, y, torch.arange(8), generator=torch.Generator())
    # t starts at 0: after one step it is (1 - beta) p(w), p at the weights before the step (not at w + eps).
    assert torch.allclose(learner.state["target"], (1 - beta) * p / p.sum(1, keepdim=True), atol=1e-6)


# ---------------------------------------------------------------------------------------- Co-teaching

def test_kept_fraction_follows_the_papers_schedule():
    assert [kept_fraction(t, 0.6, 5) for t in (0, 1, 5, 9)] == pytest.approx([1.0, 1 - 0.6 / 5, 0.4, 0.4])


def test_co_teaching_updates_each_network_on_the_other_ones_small_loss_samples():
    tau, tk, epoch = 0.5, 4, 2  # R = 1 - 0.5 * 2 / 4 = 0.75: 6 of 8 samples kept
    method = get_method("co-teaching", tau=tau, tk=tk)
    f, g = linear(2), linear(3)
    learner = learner_of(method, [f, g], n=8)
    begin(learner, epoch)
    x, y = batch(4)
    wf, bf = params_of(f)
    wg, bg = params_of(g)

    def losses(w, b):
        return [float(-torch.log_softmax(x[i].flatten() @ w.T + b, 0)[y[i]]) for i in range(8)]

    def smallest(values, keep=6):
        return sorted(range(8), key=lambda i: (values[i], i))[:keep]

    picked_f, picked_g = smallest(losses(wf, bf)), smallest(losses(wg, bg))

    def ce_on(rows):
        return lambda w, b: sum(-torch.log_softmax(x[i].flatten() @ w.T + b, 0)[y[i]] for i in rows) / len(rows)

    wf, bf = sgd_by_hand(wf, bf, ce_on(picked_g))  # f learns from g's picks, g from f's
    wg, bg = sgd_by_hand(wg, bg, ce_on(picked_f))
    learner.step(x, y, torch.arange(8), generator=torch.Generator())
    assert torch.allclose(f[1].weight, wf, atol=1e-5) and torch.allclose(f[1].bias, bf, atol=1e-5)
    assert torch.allclose(g[1].weight, wg, atol=1e-5) and torch.allclose(g[1].bias, bg, atol=1e-5)
    assert picked_f != picked_g  # the two networks disagree here, so the exchange is what is tested


def test_co_teaching_tau_defaults_to_the_labels_share_of_wrong_labels():
    cfg = TrainConfig(method="co-teaching", noise_rate=0.6).resolved()
    labels = noisysam.symmetric(np.arange(1000) % 10, 0.6, seed=0)  # replace mode: about 0.6 * 9/10 wrong
    assert build_method(cfg, labels).tau == float(np.mean(labels.noisy != labels.clean)) != 0.6
    assert build_method(cfg).tau == 0.6  # no labels yet (a grid's check): the config's rate
    assert build_method(TrainConfig(method="co-teaching", method_params={"tau": 0.3}).resolved(), labels).tau == 0.3
    with pytest.raises(ValueError, match="co-teaching needs tau"):
        get_method("co-teaching").init_state(8, 3, torch.device("cpu"))


# ------------------------------------------------------------------------------------------ DivideMix

def test_co_divide_is_the_posterior_of_the_lower_loss_cluster():
    rng = np.random.default_rng(0)
    clean, noisy = rng.normal(0.2, 0.02, 70), rng.normal(1.4, 0.05, 30)
    losses = np.concatenate([clean, noisy])
    prob = co_divide(losses, seed=0)
    # By hand: min-max scaled, each cluster a Gaussian with its own mean and variance (+ reg_covar 5e-4) and
    # its share as weight; with clusters this far apart EM lands on these at once.
    s = (losses - losses.min()) / (losses.max() - losses.min())
    parts = [s[:70], s[70:]]
    dens = [len(q) / 100 * np.exp(-(s - q.mean()) ** 2 / (2 * (q.var() + 5e-4))) / np.sqrt(2 * np.pi * (q.var() + 5e-4))
            for q in parts]
    assert np.allclose(prob, dens[0] / (dens[0] + dens[1]), atol=1e-3)
    assert prob[:70].min() > 0.99 and prob[70:].max() < 0.01
    assert np.allclose(co_divide(3 * losses + 7, seed=0), prob)  # min-max normalised first


def test_sharpen_and_mixmatch_loss_by_hand():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    assert torch.allclose(sharpen(p, 0.5), torch.tensor([[0.36, 0.09, 0.01]]) / 0.46)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    labelled = torch.tensor([True, False, False])
    q = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]
    loss_x = -math.log(q[0][0])
    loss_u = sum((q[i][k] - target[i, k].item()) ** 2 for i in (1, 2) for k in range(3)) / 6
    mean = [sum(q[i][k] for i in range(3)) / 3 for k in range(3)]
    penalty = sum(1 / 3 * math.log((1 / 3) / mean[k]) for k in range(3))
    assert mixmatch_loss(logits, target, labelled, 25.0).item() == pytest.approx(loss_x + 25 * loss_u + penalty,
                                                                                rel=1e-5)


def test_reflect_crop_flip_matches_the_per_image_loop():
    x = torch.randn(5, 3, 6, 6)
    offsets, flips = torch.randint(0, 5, (5, 2)), torch.tensor([True, False, True, False, True])
    out = crop_flip(x, offsets, flips, 2, mode="reflect")
    for b in range(5):
        padded = F.pad(x[b:b + 1], (2, 2, 2, 2), mode="reflect")[0]
        view = padded[:, offsets[b, 0]:offsets[b, 0] + 6, offsets[b, 1]:offsets[b, 1] + 6]
        assert torch.equal(out[b], view.flip(-1) if flips[b] else view)


def test_dividemix_step_matches_a_reference_of_the_papers_mixmatch():
    lambda_u, temperature, alpha, threshold, warmup = 25.0, 0.5, 4.0, 0.5, 1
    method = get_method("dividemix", warmup=warmup, lambda_u=lambda_u, temperature=temperature, alpha=alpha,
                        threshold=threshold)
    nets = [linear(5), linear(6)]
    learner = learner_of(method, nets, n=8)
    learner.state["clean_prob"] = torch.tensor([[0.9, 0.2, 0.7, 0.1, 0.6, 0.3, 0.8, 0.4],
                                                [0.1, 0.9, 0.2, 0.8, 0.45, 0.55, 0.3, 0.7]])
    learner.epoch = 10  # past warm-up (the division set above): ramp = (10 + 0.5 - 1) / 16
    ramp = min((10 + 0.5 - warmup) / RAMPUP_EPOCHS, 1.0)
    x, y = batch(7)
    u, _ = batch(8, n=5)
    views = [x[:3], x[3:6], u[:2], u[2:4]]  # two views of 3 labelled rows and of 2 unlabelled ones
    rows = torch.tensor([0, 2, 6])
    for k in (0, 1):
        before = [params_of(n) for n in nets]
        gen, ref_gen = torch.Generator().manual_seed(11 + k), torch.Generator().manual_seed(11 + k)
        w = learner.state["clean_prob"][1 - k, rows]
        own, other = before[k], before[1 - k]

        def soft(params, v):
            return torch.softmax(v.flatten(1) @ params[0].T + params[1], 1)

        # By hand, the paper's Eq. 3-4 one sample at a time, then its mixup and Eq. 7-10.
        refined = torch.stack([sharpen(((w[j] * F.one_hot(y[rows[j]], 3) + (1 - w[j]) * (
            soft(own, views[0][j:j + 1])[0] + soft(own, views[1][j:j + 1])[0]) / 2))[None], temperature)[0]
            for j in range(3)])
        guessed = torch.stack([sharpen(((soft(own, views[2][j:j + 1]) + soft(own, views[3][j:j + 1])
                                         + soft(other, views[2][j:j + 1]) + soft(other, views[3][j:j + 1])) / 4),
                                       temperature)[0] for j in range(2)])
        inputs = torch.cat(views)
        targets = torch.cat([refined, refined, guessed, guessed])
        seed = int(torch.randint(0, 2**63 - 1, (), generator=ref_gen))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
        lam = max(lam, 1 - lam)
        perm = torch.randperm(inputs.shape[0], generator=ref_gen)
        mx, mt = lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]

        def loss_of(w_, b_):
            z = mx.flatten(1) @ w_.T + b_
            q = torch.softmax(z, 1)
            loss_x = -(mt[:6] * torch.log_softmax(z[:6], 1)).sum(1).mean()
            loss_u = ((q[6:] - mt[6:]) ** 2).mean()
            prior = torch.full((3,), 1 / 3)
            return loss_x + lambda_u * ramp * loss_u + (prior * torch.log(prior / q.mean(0))).sum()

        expected = sgd_by_hand(*own, loss_of)
        learner.step(k, rows, y[rows], views, 0.5, generator=gen)
        assert torch.allclose(nets[k][1].weight, expected[0], atol=1e-5)
        assert torch.allclose(nets[k][1].bias, expected[1], atol=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(params_of(nets[1 - k]), other))  # g only guesses


def test_dividemix_trains_batchnorm_statistics_on_the_unmixed_views_as_the_authors_do():
    """The network being trained runs its refinement and co-guessing passes in train mode (Train_CIFAR.py), so its
    running statistics follow u1, u2, x1, x2 and then the mixed batch; the other network's stay as they were."""
    method = get_method("dividemix", warmup=0)
    nets = [nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 8 * 8, 3)) for _ in range(2)]
    learner = learner_of(method, nets, n=8)
    learner.epoch = 1
    x, y = batch(1, n=4)
    u, _ = batch(2, n=4)
    views = [x[:2], x[2:], u[:2], u[2:]]
    gen = torch.Generator().manual_seed(3)
    lam, perm = method.mixup.draw(8, torch.Generator().manual_seed(3))
    lam = max(lam, 1 - lam)
    inputs = torch.cat(views)
    mixed = lam * inputs + (1 - lam) * inputs[perm]
    mean = torch.zeros(3)
    for v in (views[2], views[3], views[0], views[1], mixed):  # the authors' order: u, u2, x, x2, then the mix
        mean = 0.9 * mean + 0.1 * v.mean((0, 2, 3))
    learner.step(0, torch.tensor([0, 1]), y[:2], views, 0.0, generator=gen)
    assert torch.allclose(nets[0][0].running_mean, mean, atol=1e-6)
    assert torch.equal(nets[1][0].running_mean, torch.zeros(3))


def test_dividemix_plan_gives_each_network_its_own_pass_over_the_other_ones_division():
    method = get_method("dividemix", warmup=2)
    nets = [linear(1), linear(2)]
    learner = learner_of(method, nets, n=10)
    images = torch.randint(0, 256, (10, 8, 8, 3), dtype=torch.uint8)
    loader = Loader(images, torch.arange(10) % 3, batch_size=3, padding_mode="reflect")

    def steps(epoch):  # the plan alone: the division is set by hand (the co-divide is tested on its own)
        plan = method.plan(learner, loader, EpochInfo(epoch, 4, torch.Generator().manual_seed(epoch), None))
        items = list(plan)
        assert len(items) == len(plan)
        return items

    warm = steps(0)  # warm-up: each network one pass over all 10 rows (4 steps), in its own order, one view each
    assert [(s.args[0], s.index, s.of) for s in warm] == [(k, b, 4) for k in (0, 1) for b in range(4)]
    orders = [torch.cat([s.args[1] for s in warm if s.args[0] == k]) for k in (0, 1)]
    assert all(sorted(o.tolist()) == list(range(10)) for o in orders) and not torch.equal(*orders)
    assert all(len(s.args[3]) == 1 and torch.equal(s.args[2], loader.labels[s.args[1]]) for s in warm)
    learner.state["clean_prob"] = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.2, 0.6, 0.9, 0.3, 0.8, 0.1],
                                                [0.2, 0.9, 0.1, 0.6, 0.7, 0.9, 0.4, 0.8, 0.3, 0.2]])
    after = steps(2)
    for k in (0, 1):  # network k: every row network 1 - k labels, once; 3 labelled and 3 unlabelled per step
        mine = [s for s in after if s.args[0] == k]
        labelled = set(torch.nonzero(learner.state["clean_prob"][1 - k] > 0.5)[:, 0].tolist())
        assert sorted(torch.cat([s.args[1] for s in mine]).tolist()) == sorted(labelled)
        assert [(s.index, s.of) for s in mine] == [(b, math.ceil(len(labelled) / 3)) for b in range(len(mine))]
        assert all(len(s.args[3]) == 4 and s.args[3][2].shape[0] == 3 and s.args[4] == s.index / s.of
                   for s in mine)
        assert all(s.args[3][0].shape[0] == s.args[3][1].shape[0] == len(s.args[1]) for s in mine)


def test_dividemix_predicts_the_mean_softmax_of_its_networks():
    method = get_method("dividemix")
    nets = [linear(8), linear(9)]
    learner = learner_of(method, nets, n=4)
    x, _ = batch(10, n=4)
    mean = (torch.softmax(nets[0](x), 1) + torch.softmax(nets[1](x), 1)) / 2
    assert torch.allclose(learner.eval()(x).exp(), mean, atol=1e-6)
    with torch.no_grad():  # a class both networks rule out by a logit gap of 200 stays finite (log space)
        for net in nets:
            net[1].bias.copy_(torch.tensor([200.0, 0.0, 0.0]))
    logits = learner(x)
    assert torch.isfinite(logits).all() and torch.allclose(logits[:, 1], torch.full((4,), -200.0), atol=1.0)


# ----------------------------------------------------------------------------------- through train()

N_TRAIN, N_TEST = 256, 128
RUN = dict(model="cnn", model_params={"width": 4}, epochs=3, batch_size=64, amp="none", noise_rate=0.6,
           augment=True, val_fraction=0.1, seed=0)
FIELD = {"elr": {}, "co-teaching": {"tk": 2}, "dividemix": {"warmup": 1}, "elr-sam": {},
         "co-teaching-sam": {"update": "momentum-sam"}, "dividemix-sam": {"warmup": 1}}


@pytest.fixture(scope="module")
def tiny():
    d = noisysam.load_dataset("cifar10-mini")
    return ImageDataset("tiny", d.x_train[:N_TRAIN], d.y_train[:N_TRAIN], d.x_test[:N_TEST], d.y_test[:N_TEST],
                        d.classes)


def canonical(history):
    return json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in history], sort_keys=True)


@pytest.mark.parametrize("method", list(FIELD))
def test_resume_after_a_kill_is_bitwise_the_uninterrupted_run(tiny, tmp_path, method):
    params = dict(method=method, method_params=FIELD[method], **RUN)
    whole = train(dataset=tiny, out=str(tmp_path / "whole"), **params)

    def kill(event, info):
        if event == "batch" and info["epoch"] == 3 and info["batch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(dataset=tiny, out=str(tmp_path / "run"), callback=kill, **params)
    resumed = train(dataset=tiny, out=str(tmp_path / "run"), resume=True, **params)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    networks = 2 if method.startswith(("co-teaching", "dividemix")) else 1
    assert len(a["models"]) == len(b["models"]) == networks - 1
    for sa, sb in zip([a["model"], *a["models"]], [b["model"], *b["models"]]):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["sample_state"].keys() == b["sample_state"].keys()
    assert all(torch.equal(a["sample_state"][k], b["sample_state"][k]) for k in a["sample_state"])
    assert canonical(resumed.history) == canonical(whole.history)
    summary = resumed.summary
    assert summary["networks"] == networks
    if networks == 2:  # each network evaluated alone, and the prediction named
        assert len(whole.history[-1]["test_accuracy_networks"]) == 2
        assert summary["prediction"] == ("network 1 (of 2)" if "co-teaching" in method
                                         else "mean softmax of networks 1 and 2")
    if method == "elr":  # every row visited once an epoch: t = sum_v beta^v (1 - beta) p_v has mass 1 - beta^3
        mass = a["sample_state"]["target"].sum(1)
        assert torch.allclose(mass, torch.full_like(mass, 1 - 0.7 ** 3), atol=1e-5)


def test_a_second_network_of_your_own_model_keeps_its_weights_and_draws_its_own_head(tiny, tmp_path):
    """A model object of yours may be pretrained: the second network copies it and draws its classifier head (the last
    nn.Linear) afresh, so the two differ (two equal networks would rank alike: no co-teaching); lr 0 keeps them as
    they started."""
    own = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    settings = {k: v for k, v in RUN.items() if k not in ("model", "model_params")}
    train(dataset=tiny, model=own, method="co-teaching", method_params={"tk": 2}, out=str(tmp_path / "run"),
          **{**settings, "epochs": 1, "lr": 0.0})
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    first, second = ckpt["model"], ckpt["models"][0]
    assert first.keys() == second.keys() and all(torch.equal(first[k], v) for k, v in own.state_dict().items()
                                                 if k.startswith("0."))
    assert all(torch.equal(second[k], v) for k, v in own.state_dict().items() if k.startswith("0."))
    assert not torch.equal(first["3.weight"], second["3.weight"]) and not torch.equal(first["3.bias"], second["3.bias"])


def test_two_network_methods_count_both_networks_passes(tiny):
    sgd = train(dataset=tiny, method="sgd", **{**RUN, "epochs": 1})
    co = train(dataset=tiny, method="co-teaching", method_params={"tk": 2}, **{**RUN, "epochs": 1})
    # Epoch 0 keeps every sample: each network one ranking forward and one forward/backward on the whole batch.
    assert co.summary["forward_passes"] == pytest.approx(4 * sgd.summary["forward_passes"])
    assert co.summary["backward_passes"] == pytest.approx(2 * sgd.summary["backward_passes"])


def test_dividemix_refuses_a_class_with_fewer_than_two_training_samples(tiny, tmp_path):
    y = tiny.y_train.copy()
    y[y == 3] = 4
    y[0] = 3  # class 3: one sample
    one = ImageDataset("one", tiny.x_train, y, tiny.x_test, tiny.y_test, tiny.classes)
    with pytest.raises(ValueError, match=r"dividemix needs at least 2 training samples of every class"):
        train(dataset=one, method="dividemix", noise_rate=0.0, out=str(tmp_path / "run"),
              **{k: v for k, v in RUN.items() if k != "noise_rate"})
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("args, message", [
    (["--method", "elr", "--method-param", "lam=-1"], "lam must be"),
    (["--method", "co-teaching", "--method-param", "tau=1"], "tau must be"),
    (["--method", "dividemix-sam", "--method-param", "update=adam"], "update must be"),
    (["--method", "co-teaching", "--nproc", "2"], "one process"),
])
def test_cli_refuses_bad_field_method_settings_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["train", "--epochs", "1", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "run").exists()


def test_cli_summary_names_the_prediction_of_a_two_network_method(tiny_npz, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--dataset", tiny_npz, "--method", "dividemix", "--method-param",
                                      "warmup=1", "--epochs", "2", "--model-param", "width=4", "--batch-size", "50",
                                      "--amp", "none", "--no-plot", "--out", str(tmp_path / "run")],
                                env={"COLUMNS": "200"})  # one table row per line
    assert result.exit_code == 0, result.output
    assert "mean softmax of networks 1 and 2 (2 networks trained)" in result.output
