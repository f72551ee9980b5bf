"""noisysam.SAM against the papers' formulas (Foret et al., arXiv 2010.01412, Eq. 2; ASAM, Kwon et al.,
arXiv 2102.11600, Eq. 8), written here again with plain tensor math.

GPU-free: GradScaler behaviour is tested with torch.amp.GradScaler("cpu") (same unscale/skip/update
logic as the CUDA one) and autocast with bf16 on CPU; fp16 autocast on CUDA is not exercised here.
"""

import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisysam.optim.sam import SAM, disable_running_stats, sam_step

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4


# ---------------------------------------------------------------- an independent reference


def mlp_loss(w, x, y):
    """The loss of `make_mlp`'s network, written with tensors: Linear(4,5) - tanh - Linear(5,3), CE."""
    w1, b1, w2, b2 = w
    return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)


def reference_perturbation(w, g, rho, p, adaptive, eta=None):
    """e = rho * T sign(t)|t|^(q-1) / (sum |t|^q)^(1/p), t = T g, T = |w| + eta (ASAM) or 1; global sum.

    `rho`, `adaptive` and `eta` (default 0) are per tensor (lists) to express per-group settings."""
    eta = [0.0] * len(w) if eta is None else eta
    scale = [wi.abs() + e if a else torch.ones_like(wi) for wi, a, e in zip(w, adaptive, eta)]
    t = [s * gi for s, gi in zip(scale, g)]
    if math.isinf(p):
        unit = [ti.sign() for ti in t]  # q = 1: |t|^0 = 1 and (sum|t|)^0 = 1
    else:
        q = p / (p - 1)
        total = sum((ti.abs() ** q).sum() for ti in t)
        unit = [ti.sign() * ti.abs() ** (q - 1) / total ** (1 / p) for ti in t]
    return [r * s * ui for s, ui, r in zip(scale, unit, rho)]


def reference_sgd(w, g, bufs):
    """torch.optim.SGD(lr, momentum, weight_decay) by hand: d = g + wd w; b = mu b + d (b = d at first);
    w -= lr b."""
    d = [gi + WD * wi for gi, wi in zip(g, w)]
    bufs = d if bufs is None else [MOMENTUM * b + di for b, di in zip(bufs, d)]
    return [wi - LR * b for wi, b in zip(w, bufs)], bufs


def reference_sam(w, batches, rho, p, adaptive, m=None, max_grad_norm=None, eta=None):
    """Five (or len(batches)) SAM steps from w; chunks of m examples each get their own perturbation."""
    w, bufs = [wi.detach().clone() for wi in w], None
    for x, y in batches:
        m_ = x.shape[0] if m is None else m
        g_sam = [torch.zeros_like(wi) for wi in w]
        for xc, yc in zip(x.split(m_), y.split(m_)):
            wg = [wi.clone().requires_grad_() for wi in w]
            g = torch.autograd.grad(mlp_loss(wg, xc, yc), wg)
            e = reference_perturbation(w, g, rho, p, adaptive, eta)
            we = [(wi + ei).requires_grad_() for wi, ei in zip(w, e)]
            gc = torch.autograd.grad(mlp_loss(we, xc, yc), we)
            g_sam = [a + b * xc.shape[0] / x.shape[0] for a, b in zip(g_sam, gc)]
        if max_grad_norm is not None:
            total = torch.sqrt(sum((gi**2).sum() for gi in g_sam))
            g_sam = [gi * min(1.0, max_grad_norm / (total.item() + 1e-6)) for gi in g_sam]
        w, bufs = reference_sgd(w, g_sam, bufs)
    return w


# ---------------------------------------------------------------- helpers


def make_mlp(seed=0, dtype=torch.float64):
    torch_gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(torch.randn(prm.shape, generator=torch_gen, dtype=dtype))
    return model


def make_batches(n_steps=5, batch=8, seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 4, generator=gen, dtype=dtype), torch.randint(0, 3, (batch,), generator=gen))
        for _ in range(n_steps)
    ]


def make_sam(model, rho=0.05, p=2.0, adaptive=False, **kw):
    return SAM(model.parameters(), torch.optim.SGD, rho=rho, p=p, adaptive=adaptive,
               lr=LR, momentum=MOMENTUM, weight_decay=WD, **kw)


def two_step(opt, model, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    F.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)


def closure_step(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return opt.step(closure)


def assert_close_params(model, ref, atol=1e-6):
    for prm, r in zip(model.parameters(), ref):
        torch.testing.assert_close(prm.detach(), r, atol=atol, rtol=0)


# ---------------------------------------------------------------- the update itself

CASES = {
    "p2_rho0.05": dict(rho=0.05, p=2.0, adaptive=False),
    "p2_rho0.5": dict(rho=0.5, p=2.0, adaptive=False),
    "pinf": dict(rho=0.05, p=math.inf, adaptive=False),
    "p3": dict(rho=0.1, p=3.0, adaptive=False),
    "adaptive": dict(rho=0.5, p=2.0, adaptive=True),
}


@pytest.mark.parametrize("api", [two_step, closure_step], ids=["two_step", "closure"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_five_steps_match_formula(case, api):
    model, batches = make_mlp(), make_batches()
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt = make_sam(model, **case)
    for x, y in batches:
        api(opt, model, x, y)
    ref = reference_sam(w0, batches, [case["rho"]] * 4, case["p"], [case["adaptive"]] * 4)
    assert_close_params(model, ref)
    # the perturbation is not negligible here: plain SGD ends somewhere else
    sgd = reference_sam(w0, batches, [0.0] * 4, 2.0, [False] * 4)
    assert max((prm.detach() - r).abs().max() for prm, r in zip(model.parameters(), sgd)) > 1e-3


def test_closure_step_returns_the_loss_at_w():
    model, batches = make_mlp(), make_batches(3)
    opt = make_sam(model, rho=0.5)
    for x, y in batches:
        losses = []

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            losses.append(loss.detach())
            return loss

        with torch.no_grad():
            at_w = F.cross_entropy(model(x), y)
        loss = opt.step(closure)
        assert len(losses) == 2 and not torch.equal(losses[0], losses[1])  # at w, then at w + e
        assert torch.equal(loss.detach(), at_w)


def test_per_group_rho_and_adaptive_share_one_global_norm():
    model, batches = make_mlp(), make_batches()
    w0 = [prm.detach().clone() for prm in model.parameters()]
    first, second = model[0], model[2]
    opt = SAM([{"params": first.parameters(), "rho": 0.3, "adaptive": True}, {"params": second.parameters()}],
              torch.optim.SGD, rho=0.1, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    for x, y in batches:
        two_step(opt, model, x, y)
    ref = reference_sam(w0, batches, [0.3, 0.3, 0.1, 0.1], 2.0, [True, True, False, False])
    assert_close_params(model, ref)


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_asam_eta_per_group_matches_formula(p):
    """ASAM's paper form as param groups: T = |w| + 0.01 on the weights, T = 1 on the biases, one norm."""
    model, batches = make_mlp(), make_batches()
    w0 = [prm.detach().clone() for prm in model.parameters()]
    weights = [prm for name, prm in model.named_parameters() if name.endswith("weight")]
    biases = [prm for name, prm in model.named_parameters() if name.endswith("bias")]
    opt = SAM([{"params": weights, "adaptive": True, "eta": 0.01}, {"params": biases}], torch.optim.SGD,
              rho=0.5, p=p, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    for x, y in batches:
        two_step(opt, model, x, y)
    order = [True, False, True, False]  # w1, b1, w2, b2
    ref = reference_sam(w0, batches, [0.5] * 4, p, order, eta=[0.01 if a else 0.0 for a in order])
    assert_close_params(model, ref)
    davda = reference_sam(w0, batches, [0.5] * 4, p, [True] * 4)
    assert not torch.allclose(ref[0], davda[0], atol=1e-4)  # the two normalisations differ


def test_asam_paper_form_climbs_biases_with_t_equal_one():
    """First step of the paper form: a bias moves by rho g / ||T g||, a weight by rho (|w| + eta)^2 g / ||T g||."""
    model, (x, y) = make_mlp(), make_batches(1)[0]
    named = list(model.named_parameters())
    opt = SAM([{"params": [p for n, p in named if "weight" in n], "adaptive": True, "eta": 0.01},
               {"params": [p for n, p in named if "weight" not in n], "adaptive": False}],
              torch.optim.SGD, rho=0.5, lr=LR)
    w0 = {n: p.detach().clone() for n, p in named}
    F.cross_entropy(model(x), y).backward()
    g = {n: p.grad.clone() for n, p in named}
    t = {n: (w0[n].abs() + 0.01 if "weight" in n else 1.0) for n in w0}
    norm = math.sqrt(sum(float(((t[n] * g[n]) ** 2).sum()) for n in w0))
    opt.first_step()
    for n, p in named:
        torch.testing.assert_close(p.detach() - w0[n], 0.5 * t[n] ** 2 * g[n] / norm, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(model[0].bias.detach() - w0["0.bias"], 0.5 * g["0.bias"] / norm)


def test_first_step_climbs_to_w_plus_e_and_second_step_returns_exactly():
    model, (x, y) = make_mlp(), make_batches(1)[0]
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt = make_sam(model, rho=0.2, p=3.0)
    F.cross_entropy(model(x), y).backward()
    g = [prm.grad.clone() for prm in model.parameters()]
    opt.first_step()
    e = reference_perturbation(w0, g, [0.2] * 4, 3.0, [False] * 4)
    for prm, wi, ei in zip(model.parameters(), w0, e):
        torch.testing.assert_close(prm.detach(), wi + ei, atol=1e-12, rtol=0)
    # ||e||_p = rho: the perturbation lies on the sphere of radius rho
    norm_e = sum((ei.abs() ** 3).sum() for ei in e) ** (1 / 3)
    torch.testing.assert_close(norm_e, torch.tensor(0.2, dtype=torch.float64))
    opt._descend()
    for prm, wi in zip(model.parameters(), w0):
        assert torch.equal(prm.detach(), wi)


def test_max_grad_norm_clips_the_sam_gradient():
    model, batches = make_mlp(), make_batches()
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt = make_sam(model, rho=0.1, max_grad_norm=0.05)
    for x, y in batches:
        two_step(opt, model, x, y)
    assert_close_params(model, reference_sam(w0, batches, [0.1] * 4, 2.0, [False] * 4, max_grad_norm=0.05))
    unclipped = reference_sam(w0, batches, [0.1] * 4, 2.0, [False] * 4)
    assert max((prm.detach() - r).abs().max() for prm, r in zip(model.parameters(), unclipped)) > 1e-3


@pytest.mark.parametrize("case", [dict(p=2.0), dict(p=3.0), dict(p=math.inf), dict(p=2.0, adaptive=True)])
def test_zero_gradient_gives_zero_perturbation(case):
    model = make_mlp()
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt = make_sam(model, rho=0.1, **case)
    for prm in model.parameters():
        prm.grad = torch.zeros_like(prm)
    opt.first_step()
    for prm, wi in zip(model.parameters(), w0):
        assert torch.equal(prm.detach(), wi)


def test_rho_zero_is_exactly_the_base_optimizer():
    batches = make_batches()
    sam_model, sgd_model = make_mlp(), make_mlp()
    sam = make_sam(sam_model, rho=0.0)
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    for x, y in batches:
        two_step(sam, sam_model, x, y)
        sgd.zero_grad()
        F.cross_entropy(sgd_model(x), y).backward()
        sgd.step()
    for a, b in zip(sam_model.parameters(), sgd_model.parameters()):
        assert torch.equal(a, b)


def test_base_optimizer_instance_is_wrapped():
    batches = make_batches()
    by_class, by_instance = make_mlp(), make_mlp()
    a = make_sam(by_class, rho=0.1)
    base = torch.optim.SGD(by_instance.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    b = SAM(by_instance.parameters(), base, rho=0.1)
    assert b.base_optimizer is base and b.param_groups is base.param_groups
    for x, y in batches:
        two_step(a, by_class, x, y)
        two_step(b, by_instance, x, y)
    for pa, pb in zip(by_class.parameters(), by_instance.parameters()):
        assert torch.equal(pa, pb)


# ---------------------------------------------------------------- behaviours around the update


def test_resume_from_state_dict_is_bitwise_equal_to_uninterrupted():
    batches = make_batches(20)
    straight = make_mlp()
    opt = make_sam(straight, rho=0.1)
    for x, y in batches:
        two_step(opt, straight, x, y)

    first = make_mlp()
    opt = make_sam(first, rho=0.1)
    for x, y in batches[:10]:
        two_step(opt, first, x, y)
    blob = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, blob)
    blob.seek(0)
    saved = torch.load(blob, weights_only=True)
    resumed = make_mlp(seed=123)
    resumed.load_state_dict(saved["model"])
    opt = make_sam(resumed, rho=0.7)  # rho comes back from the state dict
    opt.load_state_dict(saved["opt"])
    assert opt.param_groups is opt.base_optimizer.param_groups and opt.param_groups[0]["rho"] == 0.1
    assert all("momentum_buffer" in opt.base_optimizer.state[prm] for prm in resumed.parameters())
    for x, y in batches[10:]:
        two_step(opt, resumed, x, y)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3).double()
        self.b = nn.Linear(4, 3).double()

    def forward(self, x, use_b):
        return self.a(x) + (self.b(x) if use_b else 0.0)


def test_parameter_without_first_gradient_is_left_exactly_as_it_was():
    torch.manual_seed(0)  # only for nn.Linear's default init, compared against itself
    model, (x, y) = TwoHeads(), make_batches(1)[0]
    b0 = [prm.detach().clone() for prm in model.b.parameters()]
    a0 = [prm.detach().clone() for prm in model.a.parameters()]
    opt = make_sam(model, rho=0.5)
    F.cross_entropy(model(x, use_b=False), y).backward()
    opt.first_step(zero_grad=True)
    assert all(torch.equal(prm, b) for prm, b in zip(model.b.parameters(), b0))  # not perturbed
    F.cross_entropy(model(x, use_b=True), y).backward()
    assert all(prm.grad is not None and prm.grad.abs().sum() > 0 for prm in model.b.parameters())
    opt.second_step()
    assert all(torch.equal(prm, b) for prm, b in zip(model.b.parameters(), b0))  # not stepped
    assert all(prm not in opt.base_optimizer.state for prm in model.b.parameters())  # no momentum
    assert all(not torch.equal(prm, a) for prm, a in zip(model.a.parameters(), a0))


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn = nn.Linear(4, 6).double(), nn.BatchNorm1d(6).double()
        self.fc2 = nn.Linear(6, 3).double()

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def bn_stats(model):
    return [model.bn.running_mean.clone(), model.bn.running_var.clone(), model.bn.num_batches_tracked.clone()]


@pytest.mark.parametrize("how", ["sam_step", "closure"])
def test_batchnorm_stats_come_from_the_first_pass_only(how):
    torch.manual_seed(0)  # only for default init; the copy below is compared against it
    model, (x, y) = BNNet(), make_batches(1)[0]
    after_first_pass = BNNet()
    after_first_pass.load_state_dict(model.state_dict())
    after_first_pass(x)
    opt = make_sam(model, rho=0.5)
    if how == "sam_step":
        sam_step(opt, model, F.cross_entropy, x, y)
    else:
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure, model=model)
    for a, b in zip(bn_stats(model), bn_stats(after_first_pass)):
        assert torch.equal(a, b)
    # ... and the perturbed pass would have moved them
    with torch.no_grad():
        model(x)
    assert not torch.equal(bn_stats(model)[0], bn_stats(after_first_pass)[0])


def test_disable_running_stats_restores_tracking_and_keeps_eval_behaviour():
    model = BNNet()
    x = make_batches(1)[0][0]
    before = bn_stats(model)
    with disable_running_stats(model):
        model(x)
    assert model.bn.track_running_stats and all(torch.equal(a, b) for a, b in zip(bn_stats(model), before))
    model(x)
    assert model.bn.num_batches_tracked.item() == 1


@pytest.mark.parametrize("api", ["two_step", "closure", "sam_step"])
def test_lr_scheduler_attaches_without_order_warning(api):
    model, batches = make_mlp(), make_batches(3)
    opt = make_sam(model, rho=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in batches:
            if api == "two_step":
                two_step(opt, model, x, y)
            elif api == "closure":
                closure_step(opt, model, x, y)
            else:
                sam_step(opt, model, F.cross_entropy, x, y)
            sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(LR * 0.5**3)


def test_bad_input_raises_naming_the_problem():
    params = list(make_mlp().parameters())
    with pytest.raises(ValueError, match="rho"):
        SAM(params, torch.optim.SGD, rho=-0.1, lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        SAM([{"params": params, "rho": -1.0}], torch.optim.SGD, lr=0.1)
    for p in (1.0, 0.5, math.nan):
        with pytest.raises(ValueError, match=r"p must be a float > 1 \(inf allowed\)"):
            SAM(params, torch.optim.SGD, p=p, lr=0.1)
    for base in ("sgd", nn.Linear(2, 2), lambda prm: None, int):
        with pytest.raises(ValueError, match="base_optimizer"):
            SAM(params, base, lr=0.1)
    with pytest.raises(ValueError, match="max_grad_norm"):
        SAM(params, torch.optim.SGD, max_grad_norm=0.0, lr=0.1)
    for eta in (-0.01, math.nan, math.inf, "0.01", True):
        with pytest.raises(ValueError, match="eta must be a finite float >= 0"):
            SAM(params, torch.optim.SGD, eta=eta, lr=0.1)
    with pytest.raises(ValueError, match="eta must"):
        SAM([{"params": params, "eta": -1.0}], torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="instance"):
        SAM(params, torch.optim.SGD(params, lr=0.1), lr=0.1)
    with pytest.raises(ValueError, match="params"):
        SAM(params[:1], torch.optim.SGD(params, lr=0.1))
    with pytest.raises(ValueError, match="Adadelta.*rho"):  # its own group key 'rho' would replace SAM's
        SAM(params, torch.optim.Adadelta, rho=0.05, lr=1.0)
    opt = SAM(params, torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="without first_step"):
        opt.second_step()
    opt.first_step()
    with pytest.raises(RuntimeError, match="first_step called twice"):
        opt.first_step()
    with pytest.raises(RuntimeError, match="closure"):
        SAM(params, torch.optim.SGD, lr=0.1).step()
    model = make_mlp()
    x, y = make_batches(1)[0]
    with pytest.raises(ValueError, match="m must be"):
        sam_step(make_sam(model), model, F.cross_entropy, x, y, m=0)


# ---------------------------------------------------------------- m-sharpness


@pytest.mark.parametrize("m", [None, 8, 100])
def test_sam_step_with_whole_batch_is_plain_sam(m):
    batches = make_batches(3)
    a, b = make_mlp(), make_mlp()
    opt_a, opt_b = make_sam(a, rho=0.2), make_sam(b, rho=0.2)
    for x, y in batches:
        with torch.no_grad():
            expected_loss = F.cross_entropy(a(x), y)
        loss = sam_step(opt_a, a, F.cross_entropy, x, y, m=m)
        assert not loss.requires_grad and torch.equal(loss, expected_loss)
        two_step(opt_b, b, x, y)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("m,batch", [(2, 8), (3, 7)])
@pytest.mark.parametrize("case", [CASES["p2_rho0.5"], CASES["adaptive"]], ids=["p2", "adaptive"])
def test_m_sharpness_matches_per_chunk_reference(m, batch, case):
    model, batches = make_mlp(), make_batches(3, batch=batch)
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt = make_sam(model, **case)
    for x, y in batches:
        loss = sam_step(opt, model, F.cross_entropy, x, y, m=m)
    ref = reference_sam(w0, batches, [case["rho"]] * 4, case["p"], [case["adaptive"]] * 4, m=m)
    assert_close_params(model, ref)
    assert loss.dtype == torch.float64
    # chunking matters: plain SAM on the whole batch ends elsewhere
    whole = reference_sam(w0, batches, [case["rho"]] * 4, case["p"], [case["adaptive"]] * 4)
    assert max((prm.detach() - r).abs().max() for prm, r in zip(model.parameters(), whole)) > 1e-4


def test_sam_step_chunks_tuple_targets_together():
    model, (x, y) = make_mlp(), make_batches(1, batch=6)[0]
    y2 = (y + 1) % 3
    seen = []

    def mixed(logits, targets):
        ya, yb = targets
        seen.append((logits.shape[0], ya.shape[0], yb.shape[0]))
        return 0.7 * F.cross_entropy(logits, ya) + 0.3 * F.cross_entropy(logits, yb)

    loss = sam_step(make_sam(model), model, mixed, x, (y, y2), m=4)
    assert seen == [(4, 4, 4), (4, 4, 4), (2, 2, 2), (2, 2, 2)]
    with torch.no_grad():
        w = make_mlp()
        expected = (4 * mixed(w(x[:4]), (y[:4], y2[:4])) + 2 * mixed(w(x[4:]), (y[4:], y2[4:]))) / 6
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------- mixed precision


def test_autocast_bf16_perturbation_is_fp32_on_fp32_params():
    model, (x, y) = make_mlp(dtype=torch.float32), make_batches(1, dtype=torch.float32)[0]
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt = make_sam(model, rho=0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        assert logits.dtype == torch.bfloat16
        F.cross_entropy(logits, y).backward()
        g = [prm.grad.clone() for prm in model.parameters()]
        assert all(gi.dtype == torch.float32 for gi in g)
        opt.first_step()
    w64, g64 = [w.double() for w in w0], [gi.double() for gi in g]
    e = reference_perturbation(w64, g64, [0.3] * 4, 2.0, [False] * 4)
    for prm, wi, ei in zip(model.parameters(), w0, e):
        assert prm.dtype == torch.float32
        torch.testing.assert_close(prm.detach().double(), wi.double() + ei, atol=1e-6, rtol=0)
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(model(x), y).backward()
    opt.second_step()
    # An m-sharpness step under autocast from here lands where the same step in fp32 lands: bf16 keeps 8
    # significant bits (2**-8 = 0.4%), so loss and weight change agree to 1% (measured 0.1% and 0.2%);
    # the step without chunks (m=None) is 4% away, an SGD step 46%.
    w1 = [prm.detach().clone() for prm in model.parameters()]
    fp32_model = make_mlp(dtype=torch.float32)
    fp32_model.load_state_dict(model.state_dict())
    fp32_opt, blob = make_sam(fp32_model, rho=0.3), io.BytesIO()
    torch.save(opt.state_dict(), blob)  # a copy: its own momentum buffers
    blob.seek(0)
    fp32_opt.load_state_dict(torch.load(blob, weights_only=True))
    expected_loss = sam_step(fp32_opt, fp32_model, F.cross_entropy, x, y, m=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sam_step(opt, model, F.cross_entropy, x, y, m=4)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-2, atol=0)
    assert all(prm.dtype == torch.float32 for prm in model.parameters())
    change = torch.cat([(prm.detach() - w).flatten() for prm, w in zip(model.parameters(), w1)])
    expected = torch.cat([(prm.detach() - w).flatten() for prm, w in zip(fp32_model.parameters(), w1)])
    assert (change - expected).norm() <= 0.01 * expected.norm()


@pytest.mark.parametrize("m", [None, 3])
def test_autocast_weight_cache_does_not_hide_the_perturbation(m):
    """Inside one autocast region, autocast reuses its bf16 copy of each weight; the pass at w + e must not
    see the copy of w (that would be SGD's gradient). Reference: autocast with its cache disabled."""
    batches = make_batches(3, batch=6, dtype=torch.float32)
    models = [make_mlp(dtype=torch.float32) for _ in range(3)]
    opts = [make_sam(model, rho=0.5) for model in models]
    for x, y in batches:
        for (model, opt), cache in zip(zip(models[:2], opts[:2]), (True, False)):
            with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache):
                sam_step(opt, model, F.cross_entropy, x, y, m=m)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the SGD step the stale cache would give
            opts[2].zero_grad()
            F.cross_entropy(models[2](x), y).backward()
        opts[2].base_optimizer.step()
    cached, uncached, sgd = ([prm.detach() for prm in model.parameters()] for model in models)
    for a, b, c in zip(cached, uncached, sgd):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c, atol=1e-3)


def scaler(init_scale=2.0**10):
    return torch.amp.GradScaler("cpu", init_scale=init_scale)


@pytest.mark.parametrize("m", [None, 3])
def test_grad_scaler_gives_the_unscaled_step(m):
    """Scaled losses, unscaled before the norm and before clipping: the same trajectory as no scaler."""
    batches = make_batches(3, batch=6, dtype=torch.float32)
    a, b = make_mlp(dtype=torch.float32), make_mlp(dtype=torch.float32)
    opt_a, opt_b = make_sam(a, rho=0.2, max_grad_norm=0.5), make_sam(b, rho=0.2, max_grad_norm=0.5)
    s = scaler()
    for x, y in batches:
        sam_step(opt_a, a, F.cross_entropy, x, y, m=m, scaler=s)
        sam_step(opt_b, b, F.cross_entropy, x, y, m=m)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)
    assert s.get_scale() == 2.0**10  # no overflow, no growth yet (growth_interval 2000)


def test_first_step_unscales_gradients_before_the_norm():
    model, (x, y) = make_mlp(dtype=torch.float32), make_batches(1, dtype=torch.float32)[0]
    opt, s = make_sam(model, rho=0.2), scaler(2.0**12)
    s.scale(F.cross_entropy(model(x), y)).backward()
    scaled = [prm.grad.clone() for prm in model.parameters()]
    opt.first_step(scaler=s)
    for prm, gs in zip(model.parameters(), scaled):
        torch.testing.assert_close(prm.grad, gs / 2.0**12)


@pytest.mark.parametrize("bad_pass", [1, 2])
def test_grad_scaler_skips_a_step_with_inf_gradients(bad_pass):
    """Inf in either pass: params and momentum untouched, scale halved by update(), like GradScaler."""
    model, (x, y) = make_mlp(dtype=torch.float32), make_batches(1, dtype=torch.float32)[0]
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt, s = make_sam(model, rho=0.1, p=math.inf), scaler()  # p = inf: e stays finite after an inf grad
    s.scale(F.cross_entropy(model(x), y)).backward()
    if bad_pass == 1:
        model[0].weight.grad[0, 0] = math.inf
    opt.first_step(zero_grad=True, scaler=s)
    assert all(torch.isfinite(prm).all() for prm in model.parameters())
    s.scale(F.cross_entropy(model(x), y)).backward()
    if bad_pass == 2:
        model[2].bias.grad[0] = math.nan
    assert all(torch.isfinite(prm.grad).all() for prm in model.parameters()) == (bad_pass == 1)
    opt.second_step(scaler=s)
    s.update()
    assert all(torch.equal(prm, w) for prm, w in zip(model.parameters(), w0))
    assert len(opt.base_optimizer.state) == 0
    assert s.get_scale() == 2.0**9
    # the next, finite step goes through
    sam_step(opt, model, F.cross_entropy, x, y, scaler=s)
    assert not torch.equal(model[0].weight, w0[0]) and s.get_scale() == 2.0**9


def test_grad_scaler_skips_an_m_sharpness_step_with_inf_in_an_earlier_chunk():
    """An overflow in chunk 1's first pass skips the whole step even though the later chunks are finite."""
    model, (x, y) = make_mlp(dtype=torch.float32), make_batches(1, batch=6, dtype=torch.float32)[0]
    w0 = [prm.detach().clone() for prm in model.parameters()]
    opt, s = make_sam(model, rho=0.1, p=math.inf), scaler()  # p = inf: e stays finite after an inf grad
    backwards = []

    def inf_in_the_first_backward(grad):
        backwards.append(1)
        return torch.full_like(grad, math.inf) if len(backwards) == 1 else grad

    model[0].weight.register_hook(inf_in_the_first_backward)
    sam_step(opt, model, F.cross_entropy, x, y, m=3, scaler=s)
    assert len(backwards) == 4  # two chunks, two passes each
    assert all(torch.equal(prm, w) for prm, w in zip(model.parameters(), w0))
    assert len(opt.base_optimizer.state) == 0 and s.get_scale() == 2.0**9
