"""Models: exact sizes from the papers, option A shortcuts, init, channels_last and bf16 autocast."""

import math

import pytest
import torch
from torch import nn

from noisysam.models.networks import MODELS, get_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet32_matches_he_et_al():
    model = get_model("resnet32", 10)
    # He et al. 2016 / the SAM paper: 464,154 parameters with option A (parameter-free) shortcuts.
    assert n_params(model) == 464_154
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    # 6n + 2 = 32 weighted layers, all convolutions 3x3 (no 1x1 projection shortcuts).
    assert len(convs) + len(linears) == 32
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [16] * 11 + [32] * 10 + [64] * 10


def test_option_a_shortcut_subsamples_and_zero_pads():
    model = get_model("resnet32")
    block = model.layers[5]  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    torch.testing.assert_close(s[:, 8:24], x[:, :, ::2, ::2])
    assert s[:, :8].abs().sum() == 0 and s[:, 24:].abs().sum() == 0


def test_other_model_sizes():
    # Pre-activation ResNet-18 at CIFAR size (11.17M; includes the final BN of He et al. 2016b).
    assert n_params(get_model("preact_resnet18")) == 11_172_170
    # Simple CNN of width w: 3x3 convs 3->w->2w->4w->8w with BN (2 params per channel), linear 8w->K.
    w, k = 8, 7
    convs = 9 * (3 * w + w * 2 * w + 2 * w * 4 * w + 4 * w * 8 * w)
    bns = 2 * (w + 2 * w + 4 * w + 8 * w)
    assert n_params(get_model("cnn", k, width=w)) == convs + bns + 8 * w * k + k


@pytest.mark.parametrize("pool, reduce", [("max", lambda f: f.amax(dim=(2, 3))), ("avg", lambda f: f.mean(dim=(2, 3)))])
def test_cnn_head_pools_the_last_feature_map(pool, reduce):
    torch.manual_seed(0)
    model = get_model("cnn", 3, width=4, pool=pool).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (2, 32, 4, 4)
        expected = reduce(features) @ model.fc.weight.T + model.fc.bias
        torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="pool"):
        get_model("cnn", pool="median")


def test_wrn28_10_builds_and_runs():
    model = get_model("wrn28_10", num_classes=100)
    assert n_params(model) == 36_536_884  # WRN-28-10, 100 classes (36.5M, Zagoruyko & Komodakis Table 5)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", ["resnet32", "preact_resnet18", "cnn"])
def test_forward_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    model = get_model(name, num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (3, 5)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert out_bf16.dtype == torch.bfloat16
    # bf16 has 8 mantissa bits: agreement to a few percent of the logit scale.
    assert (out_bf16.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 0.05


def test_training_step_under_autocast_gives_the_fp32_gradients():
    """A bf16-autocast, channels_last training pass of ResNet-32 against the same pass in fp32, contiguous.
    bf16 keeps 8 significant bits (2**-8 = 0.4%): the loss agrees to 1%, and the classifier's gradient
    (fp32 softmax residual times bf16 features) to 2% (measured 0.5-0.7% over seeds). Backward through
    31 layers with BatchNorm at batch 4 compounds the rounding: the whole gradient keeps a cosine of
    0.96-0.98 to fp32 (measured), bound 0.9; another batch's fp32 gradient has cosine 0.4-0.6."""
    torch.manual_seed(0)
    reference = get_model("resnet32").train()
    model = get_model("resnet32").train().to(memory_format=torch.channels_last)
    model.load_state_dict(reference.state_dict())
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)).float(), y)
    loss.backward()
    expected = nn.functional.cross_entropy(reference(x), y)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=0)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())

    def flat_grads(net, prefix=""):
        return torch.cat([p.grad.flatten() for name, p in net.named_parameters() if name.startswith(prefix)])

    fc, fc_expected = flat_grads(model, "fc."), flat_grads(reference, "fc.")
    assert (fc - fc_expected).norm() <= 0.02 * fc_expected.norm()
    assert nn.functional.cosine_similarity(flat_grads(model), flat_grads(reference), dim=0) >= 0.9


def test_kaiming_init_scale():
    torch.manual_seed(1)
    model = get_model("resnet32")
    conv = model.layers[14].conv2  # 64 -> 64, 3x3
    expected = math.sqrt(2.0 / (64 * 9))  # He et al. 2015, fan_out mode
    assert abs(conv.weight.std().item() / expected - 1) < 0.05


def test_registry_errors():
    assert set(MODELS) >= {"resnet32", "preact_resnet18", "wrn28_10", "cnn"}
    with pytest.raises(ValueError, match="resnet32"):
        get_model("resnet33")
    with pytest.raises(ValueError, match="width"):
        get_model("resnet32", width=3)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("cnn", num_classes=1)
    with pytest.raises(ValueError, match="width"):
        get_model("cnn", width=0)


@pytest.mark.parametrize("name, options, channels", [
    ("resnet32", {}, 1), ("resnet32", {}, 4), ("preact_resnet18", {}, 1), ("cnn", {"width": 4}, 1),
    ("cnn", {"width": 4}, 2), ("wrn28_10", {}, 1)])
def test_every_model_takes_the_datas_channel_count(name, options, channels):
    """Only the stem convolution changes: 9 * (its output width) weights per extra input channel."""
    base, model = get_model(name, 5, **options), get_model(name, 5, in_channels=channels, **options)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == channels
    assert n_params(model) - n_params(base) == 9 * stem.out_channels * (channels - 3)
    if name != "wrn28_10":  # 36.5M parameters: its forward is the pre-activation net's, checked above
        with torch.no_grad():
            assert model.eval()(torch.randn(2, channels, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize("bad", [0, -1, 1.0, True, "3"])
def test_bad_in_channels_raise(bad):
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1"):
        get_model("cnn", in_channels=bad)
