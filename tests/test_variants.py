"""Cheaper SAM variants: each checked, over several steps, against a reference written here from the
paper's formula (functional gradients and a hand-written SGD with momentum); forward passes counted
on the model; bitwise resume from the optimizer's state_dict; and the trainer's counted cost against
hand counts."""

import ast
import io
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import noisysam
from noisysam.data.datasets import ImageDataset
from noisysam.methods.rules import BootstrapLoss, MixupInputs
from noisysam.methods.registry import default_param, get_method
from noisysam.noise.labels import symmetric
from noisysam.run.config import PROFILES, TrainConfig, build_method
from noisysam.run.loop import train

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4
K, N = 4, 8  # classes, batch size


class MLP(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Linear: a normalisation layer (sam-on) and a last linear layer
    whose input is the feature vector (norm-penalty)."""

    def __init__(self):
        super().__init__()
        self.lin1, self.norm, self.fc = nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, K)

    def forward(self, x):
        return self.fc(torch.relu(self.norm(self.lin1(x))))


def mlp(seed=0):
    torch.manual_seed(seed)
    model = MLP()
    with torch.no_grad():  # LayerNorm's affine parameters away from (1, 0), so that they matter
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
    return model


def batch(t):
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(N, 6, generator=g), torch.randint(0, K, (N,), generator=g)


def step_generator(t):
    return torch.Generator().manual_seed(100 + t)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def grad_at(model, w, x, y):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in w.items()}
    loss = F.cross_entropy(functional_call(model, leaves, (x,)), y)
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def norm(d, keys=None):
    return torch.sqrt(sum((d[k] ** 2).sum() for k in (keys or d)))


def dot(a, b):
    return sum((a[k] * b[k]).sum() for k in a)


def sgd_ref(w, d, buf):
    """torch.optim.SGD (momentum, weight decay, no dampening) written out: buf = mu buf + d + wd w; w -= lr buf."""
    for k in w:
        step = d[k] + WD * w[k]
        buf[k] = step if k not in buf else MOMENTUM * buf[k] + step
        w[k] = w[k] - LR * buf[k]


def sam_grad(model, w, x, y, rho, keys=None):
    """Gradient at w + rho g_K / ||g_K|| (K: the perturbed keys, all by default), and g."""
    g = grad_at(model, w, x, y)
    keys = keys or list(w)
    n = norm(g, keys)
    return grad_at(model, {k: w[k] + rho * g[k] / n if k in keys else w[k] for k in w}, x, y), g


def run(method, model, steps, start=0, optimizer=None, total=None):
    """Train ``steps - start`` steps on batch(t), generator step_generator(t), progress t / total."""
    optimizer = optimizer or method.make_optimizer(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    for t in range(start, steps):
        for group in optimizer.param_groups:
            group["progress"] = t / (total or steps)
        x, y = batch(t)
        method.train_step(model, optimizer, x, y, torch.arange(N), generator=step_generator(t))
    return optimizer


def assert_weights(model, expected):
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), expected[k], rtol=1e-5, atol=1e-6)


def count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].detach().clone()))
    return calls


# ------------------------------------------------------------------------------------ references


def looksam_ref(model, steps, rho, k, alpha):
    w, buf, g_v = params_of(model), {}, None
    for t in range(steps):
        x, y = batch(t)
        if t % k == 0:
            g_s, g = sam_grad(model, w, x, y, rho)
            cos = dot(g_s, g) / (norm(g_s) * norm(g))
            g_v = {n: g_s[n] - norm(g_s) * cos * g[n] / norm(g) for n in w}  # LookSAM's g_v
            d = g_s
        else:
            g = grad_at(model, w, x, y)
            d = {n: g[n] + alpha * norm(g) / norm(g_v) * g_v[n] for n in w}  # LookSAM's reuse
        sgd_ref(w, d, buf)
    return w


def random_sam_ref(model, steps, p_of_t, rho):
    w, buf, sam_steps = params_of(model), {}, 0
    for t in range(steps):
        x, y = batch(t)
        use_sam = torch.rand((), generator=step_generator(t)).item() < p_of_t(t)
        sam_steps += use_sam
        sgd_ref(w, sam_grad(model, w, x, y, rho)[0] if use_sam else grad_at(model, w, x, y), buf)
    return w, sam_steps


def ae_sam_ref(model, steps, c_of_t, delta, warmup, rho):
    """Weights, per-step SAM decisions and the final running statistics (mean, var) of ||g||^2."""
    w, buf, decisions = params_of(model), {}, []
    mean = var = None
    for t in range(steps):
        x, y = batch(t)
        g = grad_at(model, w, x, y)
        n = float(norm(g).double() ** 2)
        if mean is None:
            mean, var = n, 0.0
        else:
            mean = delta * mean + (1 - delta) * n
            var = delta * var + (1 - delta) * (n - mean) ** 2
        use_sam = t >= warmup and n >= mean + c_of_t(t) * math.sqrt(var)
        decisions.append(use_sam)
        sgd_ref(w, sam_grad(model, w, x, y, rho)[0] if use_sam else g, buf)
    return w, decisions, (mean, var)


def momentum_sam_ref(model, steps, rho):
    w, buf = params_of(model), {}
    for t in range(steps):
        x, y = batch(t)
        at = {k: w[k] - rho * buf[k] / norm(buf) for k in w} if buf else w  # w - rho v / ||v||
        sgd_ref(w, grad_at(model, at, x, y), buf)
    return w


def sam_on_ref(model, steps, rho):
    w, buf = params_of(model), {}
    for t in range(steps):
        x, y = batch(t)
        sgd_ref(w, sam_grad(model, w, x, y, rho, keys=["norm.weight", "norm.bias"])[0], buf)
    return w


def norm_penalty_ref(model, steps, weight, feature):
    w, buf = params_of(model), {}
    for t in range(steps):
        x, y = batch(t)
        leaves = {k: v.detach().clone().requires_grad_() for k, v in w.items()}
        h = x @ leaves["lin1.weight"].T + leaves["lin1.bias"]
        phi = torch.relu(F.layer_norm(h, (5,), leaves["norm.weight"], leaves["norm.bias"]))
        logits = phi @ leaves["fc.weight"].T + leaves["fc.bias"]
        objective = (F.cross_entropy(logits, y) + weight * (leaves["fc.weight"] ** 2).sum()
                     + feature * (phi ** 2).sum(1).mean())
        sgd_ref(w, dict(zip(leaves, torch.autograd.grad(objective, list(leaves.values())))), buf)
    return w


# ------------------------------------------------------------------------- steps against references


def test_looksam_matches_the_papers_update_and_skips_the_second_pass_in_between():
    model = mlp()
    expected = looksam_ref(mlp(), 7, rho=0.3, k=3, alpha=0.7)
    calls = count_forwards(model)
    optimizer = run(get_method("looksam", rho=0.3, k=3, alpha=0.7), model, 7)
    assert_weights(model, expected)
    assert len(calls) == 7 + 3  # SAM (2 passes) at steps 0, 3, 6; one pass at the 4 others
    assert optimizer.state_dict()["variant"] == {"steps": 7}


def test_looksam_with_k_1_is_sam():
    model, sam = mlp(), mlp()
    run(get_method("looksam", rho=0.2, k=1), model, 4)
    run(get_method("sam", rho=0.2), sam, 4)
    assert_weights(model, params_of(sam))


@pytest.mark.parametrize("p_start, p", [(None, 0.5), (0.1, 0.9)])
def test_random_sam_draws_from_the_step_generator_and_follows_its_schedule(p_start, p):
    steps = 12
    p_of_t = (lambda t: p) if p_start is None else (lambda t: p_start + (p - p_start) * t / steps)
    expected, sam_steps = random_sam_ref(mlp(), steps, p_of_t, rho=0.3)
    assert 0 < sam_steps < steps  # the reference itself mixes SAM and SGD steps
    model = mlp()
    calls = count_forwards(model)
    rng = torch.get_rng_state()
    run(get_method("random-sam", p=p, p_start=p_start, rho=0.3), model, steps)
    assert torch.equal(torch.get_rng_state(), rng)  # global RNG untouched
    assert_weights(model, expected)
    assert len(calls) == steps + sam_steps


@pytest.mark.parametrize("p, like", [(0.0, "sgd"), (1.0, "sam")])
def test_random_sam_with_p_0_or_1_is_sgd_or_sam(p, like):
    model, other = mlp(), mlp()
    run(get_method("random-sam", p=p, rho=0.2), model, 3)
    run(get_method(like, **({"rho": 0.2} if like == "sam" else {})), other, 3)
    assert_weights(model, params_of(other))


@pytest.mark.parametrize("c_start, c", [(None, -0.2), (1.0, -1.0)])
def test_ae_sam_matches_the_papers_policy(c_start, c):
    steps, delta, warmup = 12, 0.8, 2
    c_of_t = (lambda t: c) if c_start is None else (lambda t: c_start + (c - c_start) * t / steps)
    expected, decisions, (mean, var) = ae_sam_ref(mlp(), steps, c_of_t, delta, warmup, rho=0.3)
    assert 0 < sum(decisions) < steps - warmup  # the reference itself mixes SAM and SGD steps after warm-up
    model = mlp()
    calls = count_forwards(model)
    optimizer = run(get_method("ae-sam", c=c, c_start=c_start, delta=delta, warmup=warmup, rho=0.3), model, steps)
    assert_weights(model, expected)
    assert len(calls) == steps + sum(decisions)
    assert optimizer.variant["sam_steps"] == sum(decisions) and optimizer.variant["steps"] == steps
    assert optimizer.variant["mean"] == pytest.approx(mean, rel=1e-5)
    assert optimizer.variant["var"] == pytest.approx(var, rel=1e-5)


def test_momentum_sam_matches_the_papers_update_in_one_pass_per_step():
    model = mlp()
    expected = momentum_sam_ref(mlp(), 5, rho=0.3)
    calls = count_forwards(model)
    run(get_method("momentum-sam", rho=0.3), model, 5)
    assert_weights(model, expected)
    assert len(calls) == 5


def test_sam_on_perturbs_only_the_normalisation_parameters():
    model = mlp()
    expected = sam_on_ref(mlp(), 4, rho=0.3)
    run(get_method("sam-on", rho=0.3), model, 4)
    assert_weights(model, expected)
    # ... and it is neither SGD nor full SAM
    sgd, sam = mlp(), mlp()
    run(get_method("sgd"), sgd, 4)
    run(get_method("sam", rho=0.3), sam, 4)
    for other in (sgd, sam):
        assert not torch.allclose(model.lin1.weight, other.lin1.weight, atol=1e-6)


def test_norm_penalty_matches_the_penalised_objective_and_returns_the_plain_loss():
    model = mlp()
    expected = norm_penalty_ref(mlp(), 4, weight=0.05, feature=0.02)
    run(get_method("norm-penalty", weight=0.05, feature=0.02), model, 4)
    assert_weights(model, expected)
    method, fresh = get_method("norm-penalty", weight=0.05, feature=0.02), mlp()
    x, y = batch(0)
    loss = method.train_step(fresh, method.make_optimizer(fresh.parameters(), lr=LR, momentum=MOMENTUM,
                                                          weight_decay=WD), x, y, torch.arange(N),
                             generator=step_generator(0))
    torch.testing.assert_close(loss, F.cross_entropy(mlp()(x), y))


def test_norm_penalty_with_zero_coefficients_is_sgd():
    model, sgd = mlp(), mlp()
    run(get_method("norm-penalty", weight=0.0, feature=0.0), model, 3)
    run(get_method("sgd"), sgd, 3)
    assert_weights(model, params_of(sgd))


# ------------------------------------------------------------------------------------ composition


@pytest.mark.parametrize("name, params", [("looksam", {"k": 2}), ("random-sam", {"p": 1.0}), ("sam-on", {})])
def test_variants_compose_with_mixup_inputs(name, params):
    """Both passes of a SAM step see the same mixed batch, drawn from the step generator first."""
    method = replace(get_method(name, **params), inputs=MixupInputs(1.0))
    model = mlp()
    calls = count_forwards(model)
    x, y = batch(0)
    method.train_step(model, method.make_optimizer(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD),
                      x, y, torch.arange(N), generator=step_generator(0))
    lam, perm = MixupInputs(1.0).draw(N, step_generator(0))
    assert len(calls) == 2
    for seen in calls:
        torch.testing.assert_close(seen, lam * x + (1 - lam) * x[perm])


@pytest.mark.parametrize("name, params", [("random-sam", {"p": 1.0}), ("looksam", {"k": 1})])
def test_variants_that_reduce_to_sam_compose_with_the_bootstrap_loss_like_bootstrap_sam(name, params):
    """Every step a SAM step: with Reed et al.'s soft bootstrap loss, the same steps as bootstrap-sam (soft)."""
    method = replace(get_method(name, rho=0.2, **params), loss=BootstrapLoss(0.8))
    model, reference = mlp(), mlp()
    run(method, model, 3)
    run(get_method("bootstrap-sam", mode="soft", beta=0.8, rho=0.2), reference, 3)
    assert_weights(model, params_of(reference))


# ---------------------------------------------------------------------------------- bitwise resume

RESUMABLE = [
    ("looksam", {"k": 3}),
    ("random-sam", {"p": 0.9, "p_start": 0.1}),
    ("ae-sam", {"c": -0.2, "c_start": 0.5, "warmup": 2, "delta": 0.8}),
    ("momentum-sam", {}),
    ("sam-on", {}),
    ("norm-penalty", {}),
]


@pytest.mark.parametrize("name, params", RESUMABLE)
def test_resume_from_the_state_dict_continues_bitwise(name, params):
    steps, cut = 9, 4
    method = get_method(name, **params)
    whole = mlp()
    run(method, whole, steps)

    first = mlp()
    optimizer = run(method, first, cut, total=steps)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = mlp(seed=1)  # other weights: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    optimizer = method.make_optimizer(resumed.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    optimizer.load_state_dict(saved["optimizer"])
    run(method, resumed, steps, start=cut, optimizer=optimizer)
    for (k, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), k


def test_stateful_optimizer_refuses_a_state_dict_without_its_counters():
    model = mlp()
    method = get_method("looksam")
    optimizer = method.make_optimizer(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    plain = get_method("sam").make_optimizer(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    with pytest.raises(ValueError, match="variant"):
        optimizer.load_state_dict(plain.state_dict())


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("looksam", {"k": 0}, "k must"),
        ("looksam", {"k": 2.5}, "k must"),
        ("looksam", {"alpha": -1.0}, "alpha must"),
        ("looksam", {"rho": 0.0}, "rho must"),
        ("random-sam", {"p": 1.5}, "p must"),
        ("random-sam", {"p_start": -0.1}, "p_start must"),
        ("ae-sam", {"delta": 1.0}, "delta must"),
        ("ae-sam", {"warmup": -1}, "warmup must"),
        ("ae-sam", {"c": math.inf}, "c must"),
        ("ae-sam", {"c_start": math.nan}, "c_start must"),
        ("momentum-sam", {"rho": math.nan}, "rho must"),
        ("sam-on", {"rho": -0.1}, "rho must"),
        ("norm-penalty", {"weight": -1.0}, "weight must"),
        ("norm-penalty", {"feature": math.inf}, "feature must"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_method(name, **params)


@pytest.mark.parametrize("name", ["looksam", "random-sam", "ae-sam", "momentum-sam", "sam-on", "norm-penalty"])
def test_the_method_table_in_the_docs_lists_each_variants_parameters_and_defaults(name):
    """The defaults live in the update rule's dataclass; the factory and the methods docstring must say the same."""
    row = next(line for line in noisysam.methods.registry.__doc__.splitlines() if line.startswith(f"{name} "))
    listed = dict(pair.split("=") for pair in re.findall(r"\b\w+=[^,\s]+", row.split("(")[0]))
    method = get_method(name)
    assert {k: ast.literal_eval(v) for k, v in listed.items()} == method.params
    assert all(default_param(name, k) == v for k, v in method.params.items())


def test_momentum_sam_needs_momentum_and_sam_on_needs_norm_layers():
    with pytest.raises(ValueError, match="momentum must"):
        get_method("momentum-sam").make_optimizer(mlp().parameters(), lr=LR, momentum=0.0, weight_decay=WD)
    model = nn.Linear(6, K)
    method = get_method("sam-on")
    optimizer = method.make_optimizer(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    x, y = batch(0)
    with pytest.raises(ValueError, match="normalisation layers"):
        method.train_step(model, optimizer, x, y, torch.arange(N), generator=step_generator(0))


# ------------------------------------------------------------------------------------------ radius


def test_variants_with_sams_ball_take_the_profiles_radius_the_others_keep_their_own():
    """looksam, random-sam and ae-sam take SAM steps on SAM's ball, so a radius tuned for SAM applies; the
    momentum and normalisation-layer perturbations are other balls and keep their default unless given."""
    labels = symmetric(np.arange(500) % 10, 0.4, seed=0)
    for method in ("looksam", "random-sam", "ae-sam"):
        assert build_method(TrainConfig(method=method).resolved(), labels).params["rho"] == PROFILES["cpu"]["rho"]
    for method in ("momentum-sam", "sam-on"):
        assert build_method(TrainConfig(method=method).resolved(), labels).params["rho"] == 0.5
        assert build_method(TrainConfig(method=method, rho=0.3).resolved(), labels).params["rho"] == 0.3
    with pytest.raises(ValueError, match="takes no rho"):
        TrainConfig(method="norm-penalty", rho=0.1).resolved()


# ------------------------------------------------------------------------------ counted cost (trainer)

# 230 training rows at batch 64: 4 batches per epoch (the last one 38 rows), 2 epochs: 8 steps.
RUN = dict(model="cnn", model_params={"width": 4}, epochs=2, batch_size=64, amp="none", noise_rate=0.4, seed=0)


@pytest.fixture(scope="module")
def tiny():
    d = noisysam.load_dataset("cifar10-mini")
    return ImageDataset("tiny", d.x_train[:256], d.y_train[:256], d.x_test[:128], d.y_test[:128], d.classes)


@pytest.mark.parametrize(
    "method, params, per_epoch",
    [
        ("sgd", {}, [4, 4]),
        ("sam", {}, [8, 8]),
        ("sam", {"m": 16}, [8, 8]),  # 4 chunks (the short batch: 16+16+6) of 2 passes each: still 2 batch passes
        ("looksam", {"k": 3}, [4 + 2, 4 + 1]),  # SAM at steps 0, 3 | 6
        ("random-sam", {"p": 1.0}, [8, 8]),
        ("momentum-sam", {}, [4, 4]),
        ("sam-on", {}, [8, 8]),
        ("norm-penalty", {}, [4, 4]),
        ("bootstrap", {}, [4, 4, 4, 4]),  # relabel-and-retrain: two stages of SGD
    ],
)
def test_the_trainer_counts_passes_like_a_hand_count(tiny, method, params, per_epoch):
    result = train(dataset=tiny, method=method, method_params=params, **RUN)
    assert [r["forward_passes"] for r in result.history] == per_epoch
    assert [r["backward_passes"] for r in result.history] == per_epoch
    assert [r["steps"] for r in result.history] == [4] * len(per_epoch)
    s = result.summary
    assert (s["forward_passes"], s["backward_passes"], s["train_steps"]) == (sum(per_epoch), sum(per_epoch),
                                                                             4 * len(per_epoch))


def test_resumed_trainer_run_of_a_stateful_variant_is_bitwise_the_uninterrupted_one(tiny, tmp_path):
    """ae-sam's running statistics and looksam's stored direction travel in the trainer's checkpoint."""
    for method, params in (("ae-sam", {"warmup": 2, "c": -0.5}), ("looksam", {"k": 3})):
        whole = train(dataset=tiny, method=method, method_params=params, **RUN)
        out = tmp_path / method

        def kill(event, info):
            if event == "batch" and (info["epoch"], info["batch"]) == (2, 1):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(dataset=tiny, method=method, method_params=params, out=str(out), callback=kill, **RUN)
        resumed = train(dataset=tiny, method=method, method_params=params, out=str(out), resume=True, **RUN)
        for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
            assert torch.equal(a, b), (method, k)
        assert [r["forward_passes"] for r in resumed.history] == [r["forward_passes"] for r in whole.history]


# ------------------------------------------------------------------------------- fp16 loss scaling


@pytest.mark.parametrize("name, params", RESUMABLE)
def test_a_grad_scaler_without_overflow_gives_the_unscaled_steps(name, params):
    """Scaled losses: the decisions (AE-SAM's ||g||^2), directions and steps are those without a scaler.
    torch.amp.GradScaler("cpu") has the CUDA scaler's unscale/skip/update logic."""
    method = get_method(name, **params)
    plain, scaled = mlp(), mlp()
    run(method, plain, 6)
    optimizer = method.make_optimizer(scaled.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)  # the scale changes on the way
    for t in range(6):
        for group in optimizer.param_groups:
            group["progress"] = t / 6
        x, y = batch(t)
        method.train_step(scaled, optimizer, x, y, torch.arange(N), generator=step_generator(t), scaler=scaler)
    assert scaler.get_scale() > 2.0**10
    assert_weights(scaled, params_of(plain))
