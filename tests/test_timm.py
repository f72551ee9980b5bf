"""timm's networks as noisysam models (``timm:<name>``, the timm extra): built for the data's classes, channels
and image size, pretrained from a local file, normalised as their weights expect, and the second network of a
two-network method starting from the same pretrained body with a head of its own."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import noisysam
from noisysam.cli.commands import cli
from noisysam.data.datasets import ImageDataset
from noisysam.models.networks import get_model

timm = pytest.importorskip("timm")

RUN = dict(epochs=1, batch_size=16, amp="none", noise_rate=0.4, seed=0, lr=0.0, weight_decay=0.0)


@pytest.fixture(scope="module")
def tiny():
    d = noisysam.load_dataset("cifar10-mini")
    return ImageDataset("tiny", d.x_train[:48, ::2, ::2], d.y_train[:48], d.x_test[:16, ::2, ::2], d.y_test[:16],
                       d.classes)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 'pretrained' test_resnet (1000 classes, ImageNet's head) saved as a local weights file."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def body(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}  # test_resnet's head is fc


def test_a_timm_model_is_built_for_the_datas_classes_channels_and_size():
    model = get_model("timm:test_resnet", 7, in_channels=1)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 7)
    vit = get_model("timm:test_vit", 3, image_size=(16, 16))  # a ViT's input size is fixed: built for 16x16
    assert vit(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match="timm has no model 'no_such_net'"):
        get_model("timm:no_such_net", 10)


def test_pretrained_weights_come_from_a_local_file_with_a_fresh_head(checkpoint):
    path, weights = checkpoint
    model = get_model("timm:test_resnet", 10, pretrained=True, checkpoint=str(path))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in body(weights).items())
    assert state["fc.weight"].shape == (10, weights["fc.weight"].shape[1])
    with pytest.raises(ValueError, match="pretrained is false"):
        get_model("timm:test_resnet", 10, checkpoint=str(path))


def test_co_teaching_starts_both_networks_from_the_pretrained_body_each_with_its_own_head(tiny, checkpoint, tmp_path):
    """lr 0: the checkpoint holds the networks as they started (BatchNorm's running statistics aside)."""
    path, weights = checkpoint
    noisysam.train(dataset=tiny, model="timm:test_resnet", model_params={"pretrained": True, "checkpoint": str(path)},
                   method="co-teaching", out=str(tmp_path / "run"), progress=False, **RUN)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    first, second = ckpt["model"], ckpt["models"][0]
    for net in (first, second):
        assert all(torch.equal(net[k], v) for k, v in body(weights).items() if "running" not in k and "num_b" not in k)
    assert not torch.equal(first["fc.weight"], second["fc.weight"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["input_normalisation"] == dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5],
                                                 source="the model's pretrained config")  # test_resnet's config


def test_a_timm_model_object_of_yours_keeps_its_body_in_the_second_network(tiny, tmp_path):
    torch.manual_seed(1)
    mine = timm.create_model("test_resnet", num_classes=10)
    noisysam.train(dataset=tiny, model=mine, method="dividemix", method_params={"warmup": 1},
                   out=str(tmp_path / "run"), progress=False, **RUN)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    first, second = ckpt["model"], ckpt["models"][0]
    assert all(torch.equal(first[k], second[k]) for k in body(first) if "running" not in k and "num_b" not in k)
    assert not torch.equal(first["fc.weight"], second["fc.weight"])


def test_the_cli_trains_a_timm_model_and_refuses_an_unknown_one(tiny_npz, tmp_path):
    ok = CliRunner().invoke(cli, ["train", "--dataset", tiny_npz, "--model", "timm:test_resnet", "--epochs", "1",
                                  "--batch-size", "50", "--amp", "none", "--no-plot", "--out", str(tmp_path / "run")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "run" / "result.json").read_text())["model"] == "timm:test_resnet"
    bad = CliRunner().invoke(cli, ["train", "--dataset", tiny_npz, "--model", "timm:no_such_net", "--epochs", "1",
                                   "--out", str(tmp_path / "bad")])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "timm has no model" in lines[0], bad.output
    assert not (tmp_path / "bad").exists()


def test_without_timm_a_timm_model_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__",
                        lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name == "timm" else
                        real(name, *a, **k))
    with pytest.raises(ImportError, match=r"pip install 'noisysam\[timm\]'"):
        get_model("timm:test_resnet", 10)
