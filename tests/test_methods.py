"""Methods: each step checked against a hand-written step on the loss written out from its formula."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from noisysam import methods
from noisysam.data.loader import Loader
from noisysam.methods.dividemix import DivideMix
from noisysam.methods.learner import EpochInfo, Learner, LearnerMethod
from noisysam.methods.registry import METHODS, get_method, register_method

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4
K = 4  # classes


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(6, K)


def batch(seed=1, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, K, (n,), generator=g), torch.arange(n)


def optimizer_for(method, model):
    return method.make_optimizer(model.named_parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def grad_at(model, params, loss_of_logits, x):
    """(loss, gradient dict) of loss_of_logits(model(x)) at the given parameter values."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    loss = loss_of_logits(functional_call(model, leaves, (x,)))
    return loss.detach(), dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def sgd_update(w, g):
    # First step of SGD with momentum: the buffer is the (decayed) gradient itself.
    return {k: w[k] - LR * (g[k] + WD * w[k]) for k in w}


def manual_sgd(model, loss_of_logits, x):
    w = params_of(model)
    loss, g = grad_at(model, w, loss_of_logits, x)
    return loss, sgd_update(w, g)


def manual_sam(model, loss_of_logits, x, rho, scale=None):
    """SAM from the paper's formula (p = 2): eps = rho g / ||g||, one global norm. ASAM (Kwon et al. Eq. 8):
    eps = rho T^2 g / ||T g|| with T = scale(name, w) per parameter tensor."""
    w = params_of(model)
    loss, g = grad_at(model, w, loss_of_logits, x)
    t = {k: (torch.ones_like(w[k]) if scale is None else scale(k, w[k])) for k in w}
    norm = torch.sqrt(sum(((t[k] * g[k]) ** 2).sum() for k in w))
    w_eps = {k: w[k] + rho * t[k] ** 2 * g[k] / norm for k in w}
    _, g_sam = grad_at(model, w_eps, loss_of_logits, x)
    return loss, sgd_update(w, g_sam)  # the base step starts from w, not w + eps


def paper_asam_scale(name, w):
    """ASAM's paper/authors' T: |w| + 0.01 on parameters named "weight", 1 elsewhere."""
    return w.abs() + 0.01 if "weight" in name else torch.ones_like(w)


def davda_asam_scale(name, w):
    return w.abs()


def assert_weights(model, expected):
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), expected[k], rtol=1e-5, atol=1e-6)


def count_forwards(model):
    """The inputs of every forward pass of ``model`` from now on."""
    calls = []

    def hook(module, args):
        calls.append(args[0].detach().clone())

    model.register_forward_pre_hook(hook)
    return calls


def ce(y):
    return lambda logits: F.cross_entropy(logits, y)


# ----------------------------------------------------------------------------- loss rules


def soft_bootstrap_loss_f64(z, labels, beta):
    """Reed et al.'s Eq. 6 in float64 numpy: mean over rows of -sum_k (beta t_k + (1 - beta) q_k) log q_k."""
    log_q = z - np.log(np.exp(z).sum(1, keepdims=True))
    t = beta * np.eye(z.shape[1])[labels] + (1 - beta) * np.exp(log_q)
    return -(t * log_q).sum(1).mean()


def test_soft_bootstrap_is_reeds_eq6_with_the_gradient_through_q():
    """With q = softmax(z), H = -sum_k q_k log q_k and t = onehot(y), the loss per row is
    beta CE(t, q) + (1 - beta) H(q). Since dq_k/dz_j = q_k (delta_kj - q_j) and sum_k t_k = 1:
    d CE / dz_j = q_j - t_j and dH / dz_j = -sum_k q_k (delta_kj - q_j)(log q_k + 1) = -q_j (log q_j + H), so

        d loss / dz_j = [beta (q_j - t_j) - (1 - beta) q_j (log q_j + H)] / B    (mean over B rows).

    The detached version (q a constant in the target) gives (q - target) / B = beta (q - t) / B: no entropy
    term. Checked against the closed form and against central finite differences of the float64 formula."""
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, -2.0], [4.0, -3.0, 0.0, 1.0]], requires_grad=True)
    labels = [1, 3, 0]
    beta = 0.95
    z = logits.detach().numpy().astype(np.float64)
    loss = get_method("bootstrap", mode="soft").loss(logits, torch.tensor(labels))
    assert loss.item() == pytest.approx(soft_bootstrap_loss_f64(z, labels, beta), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, logits)

    q = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    t = np.eye(K)[labels]
    entropy = -(q * np.log(q)).sum(1, keepdims=True)
    closed = (beta * (q - t) - (1 - beta) * q * (np.log(q) + entropy)) / len(z)
    np.testing.assert_allclose(grad.numpy(), closed, rtol=1e-5, atol=1e-7)

    h = 1e-6
    finite = np.zeros_like(z)
    for i, j in np.ndindex(*z.shape):
        step = np.zeros_like(z)
        step[i, j] = h
        finite[i, j] = (soft_bootstrap_loss_f64(z + step, labels, beta)
                        - soft_bootstrap_loss_f64(z - step, labels, beta)) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), finite, rtol=1e-4, atol=1e-7)
    # Not the detached (scaled cross-entropy) gradient beta (q - t) / B.
    assert np.abs(grad.numpy() - beta * (q - t) / len(z)).max() > 1e-3


def test_hard_bootstrap_target_uses_argmax():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, -2.0]])
    y = torch.tensor([1, 3])
    z = logits.numpy().astype(np.float64)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    t = 0.8 * np.eye(K)[[1, 3]] + 0.2 * np.eye(K)[[0, 2]]  # argmaxes are 0 and 2
    expected = -(t * log_p).sum(1).mean()
    method = get_method("bootstrap", mode="hard")
    assert method.params == {"mode": "hard", "beta": 0.8}
    assert method.loss(logits, y).item() == pytest.approx(expected, rel=1e-6)


def test_gce_formula():
    logits = torch.tensor([[1.0, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, -2.0, 0.0]])
    y = torch.tensor([0, 2, 0])
    z = logits.numpy().astype(np.float64)
    p_y = (np.exp(z) / np.exp(z).sum(1, keepdims=True))[[0, 1, 2], [0, 2, 0]]
    for q in (0.7, 1.0, 0.2):
        expected = ((1 - p_y**q) / q).mean()
        assert get_method("gce", q=q).loss(logits, y).item() == pytest.approx(expected, rel=1e-6)
    assert get_method("gce").params == {"q": 0.7}


def test_label_smoothing_matches_torch_and_formula():
    torch.manual_seed(0)
    logits, y = torch.randn(5, K), torch.tensor([0, 1, 2, 3, 0])
    loss = get_method("label-smoothing").loss(logits, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    log_p = F.log_softmax(logits, 1)
    by_hand = 0.9 * F.nll_loss(log_p, y) + 0.1 * (-log_p.mean(1)).mean()  # (1-eps) CE + eps * uniform CE
    torch.testing.assert_close(loss, by_hand)


# ----------------------------------------------------------------------------- plain steps


@pytest.mark.parametrize(
    "name, params, loss_rule",
    [
        ("sgd", {}, lambda z, y: F.cross_entropy(z, y)),
        ("label-smoothing", {"eps": 0.2}, lambda z, y: F.cross_entropy(z, y, label_smoothing=0.2)),
        ("gce", {}, lambda z, y: ((1 - F.softmax(z, 1).gather(1, y[:, None]) ** 0.7) / 0.7).mean()),
        (
            "bootstrap",
            {"mode": "soft"},
            lambda z, y: -((0.95 * F.one_hot(y, K) + 0.05 * F.softmax(z, 1)) * F.log_softmax(z, 1)).sum(1).mean(),
        ),
    ],
)
def test_sgd_based_step_matches_hand_step(name, params, loss_rule):
    model = linear_model()
    x, y, idx = batch()
    method = get_method(name, **params)
    optimizer = optimizer_for(method, model)
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["momentum"] == MOMENTUM
    expected_loss, expected = manual_sgd(model, lambda z: loss_rule(z, y), x)
    loss = method.train_step(model, optimizer, x, y, idx, generator=torch.Generator().manual_seed(0))
    assert isinstance(loss, torch.Tensor) and not loss.requires_grad
    torch.testing.assert_close(loss, expected_loss)
    assert_weights(model, expected)


def redraw_mixup(seed, alpha, n):
    """The documented draw order: an int64 seeds numpy's Beta sampler, then a torch permutation."""
    g = torch.Generator().manual_seed(seed)
    s = int(torch.randint(0, 2**63 - 1, (), generator=g))
    lam = np.random.default_rng(s).beta(alpha, alpha)
    return lam, torch.randperm(n, generator=g)


def test_mixup_inputs_and_step():
    model = linear_model()
    x, y, idx = batch()
    method = get_method("mixup", alpha=0.5)
    optimizer = optimizer_for(method, model)
    lam, perm = redraw_mixup(7, 0.5, len(x))
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(len(x)))
    mixed = lam * x + (1 - lam) * x[perm]
    mixup_loss = lambda z: lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])  # noqa: E731
    _, expected = manual_sgd(model, mixup_loss, mixed)
    seen = count_forwards(model)
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    method.train_step(model, optimizer, x, y, idx, generator=torch.Generator().manual_seed(7))
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], mixed)
    assert_weights(model, expected)
    # Randomness came from the generator only.
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


@pytest.mark.parametrize("alpha", [1.0, 8.0])
def test_mixup_lambda_is_beta_distributed(alpha):
    rule = get_method("mixup", alpha=alpha).inputs
    g = torch.Generator().manual_seed(0)
    lams = np.array([rule.draw(4, g)[0] for _ in range(3000)])
    var = 1 / (4 * (2 * alpha + 1))  # variance of Beta(alpha, alpha)
    assert abs(lams.mean() - 0.5) < 4 * math.sqrt(var / len(lams))
    assert lams.var() == pytest.approx(var, rel=0.1)


# ----------------------------------------------------------------------------- SAM steps


def run_one_step(name, params, seed=0, x=None, y=None):
    model = linear_model()
    bx, by, idx = batch()
    x = bx if x is None else x
    y = by if y is None else y
    method = get_method(name, **params)
    optimizer = optimizer_for(method, model)
    seen = count_forwards(model)
    loss = method.train_step(model, optimizer, x, y, idx, generator=torch.Generator().manual_seed(seed))
    return model, loss, seen


@pytest.mark.parametrize("name, params, rho, scale", [
    ("sam", {"rho": 0.3}, 0.3, None),
    ("sam", {"rho": 0.3, "adaptive": True}, 0.3, davda_asam_scale),
    ("asam", {}, 0.5, paper_asam_scale),
    ("asam", {"eta": 0.2, "rho": 0.4}, 0.4, lambda k, w: w.abs() + 0.2 if k == "weight" else torch.ones_like(w)),
    ("asam", {"normalisation": "davda54"}, 0.5, davda_asam_scale),
])
def test_sam_step_matches_manual_sam(name, params, rho, scale):
    x, y, _ = batch()
    expected_loss, expected = manual_sam(linear_model(), ce(y), x, rho, scale)
    model, loss, seen = run_one_step(name, params)
    assert len(seen) == 2  # two forward passes: at w and at w + eps
    torch.testing.assert_close(loss, expected_loss)
    assert_weights(model, expected)


def test_sam_step_differs_from_sgd_step():
    x, y, _ = batch()
    _, sgd_weights = manual_sgd(linear_model(), ce(y), x)
    model, _, _ = run_one_step("sam", {"rho": 0.3})
    assert not torch.allclose(model.weight, sgd_weights["weight"], atol=1e-4)


def test_sam_step_under_bf16_autocast_is_sams_not_sgds():
    """The trainer runs a whole step in one autocast region: the pass at w + eps must not reuse autocast's
    cached bf16 copy of w. The bf16 step must land near the fp32 SAM step, far from the SGD step."""
    x, y, _ = batch()
    _, sam_weights = manual_sam(linear_model(), ce(y), x, 0.3)
    _, sgd_weights = manual_sgd(linear_model(), ce(y), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model, _, _ = run_one_step("sam", {"rho": 0.3})
    to_sam = (model.weight - sam_weights["weight"]).norm()
    to_sgd = (model.weight - sgd_weights["weight"]).norm()
    assert to_sam < 0.1 * to_sgd


def test_mixup_sam_uses_the_same_mixed_batch_in_both_passes():
    x, y, _ = batch()
    lam, perm = redraw_mixup(3, 1.0, len(x))
    mixed = lam * x + (1 - lam) * x[perm]
    mixup_loss = lambda z: lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])  # noqa: E731
    _, expected = manual_sam(linear_model(), mixup_loss, mixed, rho=0.2)
    model, _, seen = run_one_step("mixup-sam", {"rho": 0.2}, seed=3)
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], mixed)
    torch.testing.assert_close(seen[1], mixed)
    assert_weights(model, expected)


@pytest.mark.parametrize("mode, beta", [("soft", 0.95), ("hard", 0.8)])
def test_bootstrap_sam_recomputes_the_target_at_each_pass(mode, beta):
    x, y, _ = batch()

    def loss(z):  # the target uses the prediction of this very pass (at w, then at w + eps)
        q = F.softmax(z, 1) if mode == "soft" else F.one_hot(z.argmax(1), K).float()  # soft: gradient through q
        t = beta * F.one_hot(y, K) + (1 - beta) * q
        return -(t * F.log_softmax(z, 1)).sum(1).mean()

    _, expected = manual_sam(linear_model(), loss, x, rho=0.5)
    model, _, seen = run_one_step("bootstrap-sam", {"mode": mode, "rho": 0.5})
    assert len(seen) == 2
    assert_weights(model, expected)


def test_m_sharpness_chunks_get_their_own_perturbation():
    x, y, _ = batch(n=8)
    w = params_of(linear_model())
    model = linear_model()
    g_sam = {k: torch.zeros_like(v) for k, v in w.items()}
    for chunk in (slice(0, 4), slice(4, 8)):
        _, g = grad_at(model, w, ce(y[chunk]), x[chunk])
        norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
        _, g2 = grad_at(model, {k: w[k] + 0.1 * g[k] / norm for k in w}, ce(y[chunk]), x[chunk])
        g_sam = {k: g_sam[k] + g2[k] / 2 for k in w}
    model, _, _ = run_one_step("sam", {"rho": 0.1, "m": 4})
    assert_weights(model, sgd_update(w, g_sam))


def test_sam_method_rejects_a_plain_optimizer():
    model = linear_model()
    x, y, idx = batch()
    with pytest.raises(ValueError, match="make_optimizer"):
        get_method("sam").train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, idx, generator=torch.Generator())


# ----------------------------------------------------------------------------- relabel-and-retrain


@pytest.mark.parametrize(
    "name, params, base_name, base_params",
    [
        ("bootstrap", {}, "sgd", {}),
        ("bootstrap-mixup", {"alpha": 8.0}, "mixup", {"alpha": 8.0}),
        ("bootstrap-sam", {"rho": 0.1}, "sam", {"rho": 0.1, "p": 2.0, "adaptive": False, "m": None}),
    ],
)
def test_relabel_methods_expose_their_base(name, params, base_name, base_params):
    method = get_method(name, **params)
    assert method.relabel is True and method.base.relabel is False
    assert method.base.name == base_name and method.base.params == base_params
    assert method.params == {"mode": "relabel", **base_params}
    # A step of the relabel method is its base's step, written out by hand.
    x, y, idx = batch()
    lam, perm = redraw_mixup(0, 8.0, len(x))
    mixup_loss = lambda z: lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])  # noqa: E731
    hand_step = {"sgd": lambda: manual_sgd(linear_model(), ce(y), x),
                 "mixup": lambda: manual_sgd(linear_model(), mixup_loss, lam * x + (1 - lam) * x[perm]),
                 "sam": lambda: manual_sam(linear_model(), ce(y), x, rho=0.1)}
    expected_loss, expected = hand_step[base_name]()
    model = linear_model()
    loss = method.train_step(model, optimizer_for(method, model), x, y, idx, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, expected_loss)
    assert_weights(model, expected)


# ----------------------------------------------------------------------------- every method, registry


def tiny_convnet():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)
    )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_a_tiny_convnet(name):
    """Two steps under bf16 autocast on a channels_last conv-BN net land where the same two steps in fp32
    land (each method's fp32 step is checked against a hand-written one above). bf16 keeps 8 significant
    bits (unit roundoff 2**-8 = 0.4%): the losses agree to 1% and the weight changes to 3% of their size
    (measured: at most 1.3%); a SAM pass at w + e that computed with w's cached bf16 weights (the SGD
    gradient) is 7-14% off. Except looksam: its second step reuses g_v, the part of g_s orthogonal to g, which
    is only ~7% of ||g_s|| here, so bf16's ~0.5% on the gradients is ~20% on g_v and 4.3% on the two steps'
    change (measured; 0.4% with k=1, every step SAM): bound 8%."""
    method = get_method(name, **({"tau": 0.5} if name in methods.NOISE_RATE_METHODS else {}))
    bound = 0.08 if name == "looksam" else 0.03
    json.dumps(method.params)  # recordable in the run's config
    before = params_of(tiny_convnet())
    losses, changes = {}, {}
    for bf16 in (True, False):
        # Through the trainer's Learner, which steps every method (two networks where the method trains two).
        models = [tiny_convnet().to(memory_format=torch.channels_last) for _ in range(getattr(method, "networks", 1))]
        model = models[0]
        state = method.init_state(8, K, torch.device("cpu")) if isinstance(method, LearnerMethod) else {}
        learner = Learner(method, models, models, [optimizer_for(method, m) for m in models], state)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, K, (8,), generator=g)
        # The two steps: two batches of (x, y, rows), or DivideMix's own plan: a MixMatch step of each network on
        # the other's division (half the rows labelled), its views drawn from random images.
        if isinstance(method, DivideMix):
            images = torch.randint(0, 256, (8, 8, 8, 3), generator=g, dtype=torch.uint8)
            state["clean_prob"].copy_(torch.tensor([0.9, 0.1] * 8).view(2, 8))
            learner.epoch = method.warmup
            plan = learner.plan(Loader(images, y, batch_size=8, channels_last=True), EpochInfo(learner.epoch, 1, g, None))
            args = [step.args for step in plan]
            assert len(args) == 2
        else:
            args = [(x, y, torch.arange(8))] * 2
        steps = []
        for step_args in args:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                steps.append(learner.step(*step_args, generator=g))
        assert all(loss.ndim == 0 and loss.dtype == torch.float32 and not loss.requires_grad for loss in steps)
        losses[bf16] = torch.stack(steps)
        changes[bf16] = torch.cat([(v.detach() - before[k]).flatten() for k, v in model.named_parameters()])
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-2, atol=0)
    assert (changes[True] - changes[False]).norm() <= bound * changes[False].norm()
    assert all(not torch.equal(before[k], v) for k, v in model.named_parameters())  # fp32 moved every weight


def test_default_params():
    assert get_method("sam").params == {"rho": 0.05, "p": 2.0, "adaptive": False, "m": None}
    assert get_method("asam").params == {"rho": 0.5, "p": 2.0, "m": None, "normalisation": "paper", "eta": 0.01}
    assert get_method("asam", normalisation="davda54").params == \
        {"rho": 0.5, "p": 2.0, "m": None, "normalisation": "davda54"}
    assert get_method("mixup").params == {"alpha": 1.0}
    assert get_method("mixup-sam").params == {"alpha": 1.0, "rho": 0.05, "p": 2.0, "adaptive": False, "m": None}
    assert get_method("bootstrap", mode="soft").params == {"mode": "soft", "beta": 0.95}
    assert get_method("label-smoothing").params == {"eps": 0.1}
    assert get_method("sgd").params == {} and get_method("sgd").relabel is False


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("sgdd", {}, "bootstrap-sam"),  # lists the choices
        ("sgd", {"rho": 0.1}, "rho"),
        ("mixup", {"alpha": 0.0}, "alpha"),
        ("sam", {"rho": -0.1}, "rho"),
        ("sam", {"m": 0}, "m must"),
        ("sam", {"p": 0.5}, "p must"),
        ("bootstrap", {"mode": "reed"}, "relabel"),
        ("bootstrap", {"beta": 0.9}, "beta"),
        ("bootstrap", {"mode": "soft", "beta": 1.5}, "beta"),
        ("gce", {"q": 0.0}, "q must"),
        ("label-smoothing", {"eps": 1.0}, "eps"),
        ("asam", {"adaptive": False}, "adaptive"),
        ("asam", {"normalisation": "kwon"}, "normalisation must"),
        ("asam", {"normalisation": "davda54", "eta": 0.01}, "eta applies"),
        ("asam", {"eta": -0.1}, "eta must"),
    ],
)
def test_bad_names_and_params_raise(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_method(name, **params)


def test_register_method(monkeypatch):
    monkeypatch.setattr(methods.registry, "REGISTRY", dict(methods.registry.REGISTRY))  # where register_method writes

    def focal_ish(gamma: float = 2.0):
        def loss(logits, labels):
            log_p_y = F.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
            return (-((1 - log_p_y.exp()) ** gamma) * log_p_y).mean()

        return methods.Method("focal", loss=loss, params={"gamma": gamma})

    register_method("focal", focal_ish)
    method = methods.get_method("focal", gamma=1.0)
    assert method.params == {"gamma": 1.0}
    model = linear_model()
    x, y, idx = batch()
    expected_loss, expected = manual_sgd(
        model, lambda z: (-(1 - F.softmax(z, 1).gather(1, y[:, None])) * F.log_softmax(z, 1).gather(1, y[:, None])).mean(), x
    )
    method.train_step(model, optimizer_for(method, model), x, y, idx, generator=torch.Generator())
    assert_weights(model, expected)
    with pytest.raises(ValueError, match="already registered"):
        register_method("focal", focal_ish)
    register_method("focal", methods.registry._sgd, overwrite=True)
    assert methods.get_method("focal").name == "sgd"
    with pytest.raises(ValueError, match="callable"):
        register_method("x", 3)


# ----------------------------------------------------------------------------- ASAM's normalisations


def test_asam_paper_form_groups_weights_apart_and_needs_names():
    model = tiny_convnet()
    optimizer = optimizer_for(get_method("asam"), model)
    groups = [(g["adaptive"], g["eta"], g["param_names"]) for g in optimizer.param_groups]
    assert groups == [(True, 0.01, ["0.weight", "1.weight", "5.weight"]), (False, 0.0, ["0.bias", "1.bias", "5.bias"])]
    davda = optimizer_for(get_method("asam", normalisation="davda54"), model)
    assert [(g["adaptive"], g["eta"], len(g["params"])) for g in davda.param_groups] == [(True, 0.0, 6)]
    with pytest.raises(ValueError, match="named_parameters"):
        get_method("asam").make_optimizer(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)


@pytest.mark.parametrize("normalisation", ["paper", "davda54"])
def test_asam_resume_from_state_dict_is_bitwise(normalisation):
    """Two groups (paper form) save and load through the trainer's path (torch.save, weights_only load)."""
    import io

    method = get_method("asam", normalisation=normalisation)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, K, (8,), generator=g)) for _ in range(4)]
    straight = tiny_convnet()
    opt = optimizer_for(method, straight)
    for x, y in data:
        method.train_step(straight, opt, x, y, torch.arange(8), generator=torch.Generator())
    first = tiny_convnet()
    opt = optimizer_for(method, first)
    for x, y in data[:2]:
        method.train_step(first, opt, x, y, torch.arange(8), generator=torch.Generator())
    blob = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, blob)
    blob.seek(0)
    saved = torch.load(blob, weights_only=True)
    resumed = tiny_convnet()
    resumed.load_state_dict(saved["model"])
    opt = optimizer_for(method, resumed)
    opt.load_state_dict(saved["opt"])
    for x, y in data[2:]:
        method.train_step(resumed, opt, x, y, torch.arange(8), generator=torch.Generator())
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
