"""Your own data through the Python API: any pair of map-style torch datasets (a TensorDataset, an ImageFolder of
images of several sizes with your transform), streamed through a DataLoader, with the per-sample state of the
field's methods and the training dynamics keyed by row; and the API's live progress."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import noisysam
from noisysam.data.streaming import DatasetLoader, DatasetPair
from noisysam.run.rundir import DYNAMICS_DIR

RUN = dict(model="cnn", model_params={"width": 4}, epochs=2, batch_size=16, amp="none", noise_rate=0.4, seed=0)


@pytest.fixture(scope="module")
def tensors():
    """64 training and 32 test images of the embedded data, 16x16, as float tensors (C, H, W) in [0, 1]."""
    d = noisysam.load_dataset("cifar10-mini")
    x = torch.tensor(d.x_train[:64, ::2, ::2]).permute(0, 3, 1, 2).float() / 255
    xt = torch.tensor(d.x_test[:32, ::2, ::2]).permute(0, 3, 1, 2).float() / 255
    return TensorDataset(x, torch.tensor(d.y_train[:64])), TensorDataset(xt, torch.tensor(d.y_test[:32]))


def test_a_tensordataset_pair_trains_elr_with_its_targets_and_dynamics_by_row(tensors, tmp_path):
    result = noisysam.train(dataset=tensors, method="elr", out=str(tmp_path / "run"), progress=False, **RUN)
    labels = result.noisy_labels
    assert np.array_equal(labels.clean, tensors[0].tensors[1].numpy())  # the noise went into the dataset's labels
    assert labels.provenance["kind"] == "symmetric" and labels.provenance["nominal_rate"] == 0.4
    rows = np.load(tmp_path / "run" / DYNAMICS_DIR / "rows.npz")["rows"]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["sample_state"]["target"].shape == (len(rows), 10)  # one ELR target per training row
    # Every row was visited once per epoch: each target holds mass 1 - 0.7^2 (ELR's temporal ensemble).
    mass = ckpt["sample_state"]["target"].sum(1)
    assert torch.allclose(mass, torch.full_like(mass, 1 - 0.7 ** 2), atol=1e-5)
    dyn = np.load(tmp_path / "run" / DYNAMICS_DIR / "stage1_epoch_002.npz")
    assert dyn["pred"].shape == rows.shape
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["dataset"] == "custom:TensorDataset"
    assert config["input_normalisation"] == {"source": "the datasets' own transform"}


def test_the_dataset_loader_serves_the_given_labels_by_row_in_a_seeded_order(tensors):
    train = tensors[0]
    rows = np.array([5, 1, 9, 30, 2, 7, 40])
    labels = np.arange(7) * 10 % 7  # labels of its own: not the dataset's
    loader = DatasetLoader(train, labels, rows=rows, batch_size=3, seed=4)
    seen = []
    for x, y, idx in loader:
        assert torch.equal(y, torch.as_tensor(labels)[idx])
        assert torch.equal(x, train.tensors[0][torch.as_tensor(rows)[idx]])
        seen += idx.tolist()
    assert sorted(seen) == list(range(7)) and len(loader) == 3
    again = [idx.tolist() for _, _, idx in loader]
    loader.set_epoch(1)
    other = [idx.tolist() for _, _, idx in loader]
    assert sum(again, []) == seen and sum(other, []) != seen  # the same order per epoch, another one next epoch


@pytest.fixture
def mixed_folder(tmp_path):
    """An ImageFolder of RGB images of several sizes: train/ 3 classes x 6, test/ 3 x 2."""
    rng = np.random.default_rng(0)
    sizes = [(12, 20), (16, 16), (25, 30), (9, 14)]
    for split, per_class in (("train", 6), ("test", 2)):
        for c in ("ant", "bee", "cat"):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return tmp_path


def test_an_imagefolder_of_mixed_sizes_trains_co_teaching_through_the_users_transform(mixed_folder, tmp_path):
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    augment = transforms.Compose([transforms.Resize((16, 16)), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    plain = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    pair = (ImageFolder(mixed_folder / "train", augment), ImageFolder(mixed_folder / "test", plain),
            ImageFolder(mixed_folder / "train", plain))
    result = noisysam.train(dataset=pair, method="co-teaching", method_params={"tk": 1}, out=str(tmp_path / "run"),
                            progress=False, **{**RUN, "batch_size": 4})
    assert result.summary["networks"] == 2 and result.summary["dataset"] == "custom:ImageFolder"
    assert DatasetPair(*pair).classes == ["ant", "bee", "cat"]
    # Without a transform the images are PIL images of several sizes: refused in one line before anything is written.
    raw = (ImageFolder(mixed_folder / "train"), ImageFolder(mixed_folder / "test"))
    with pytest.raises(ValueError, match="cannot be batched.*give it a transform") as error:
        noisysam.train(dataset=raw, method="sgd", out=str(tmp_path / "raw"), progress=False, **RUN)
    assert "\n" not in str(error.value) and not (tmp_path / "raw").exists()


def test_dividemix_draws_its_two_views_through_the_datasets_transform(tensors):
    flip = lambda x: x.flip(-1) if torch.rand(()) < 0.5 else x  # noqa: E731  (a random transform of the user's)

    class Flipped(torch.utils.data.Dataset):
        def __len__(self):
            return len(tensors[0])

        def __getitem__(self, i):
            x, y = tensors[0][i]
            return flip(x), y

    loader = DatasetLoader(Flipped(), np.zeros(64, dtype=np.int64), batch_size=8)
    rows = torch.arange(16)
    one = loader.augmented(rows, torch.Generator().manual_seed(1))
    assert torch.equal(one, loader.augmented(rows, torch.Generator().manual_seed(1)))  # seeded by the generator
    two = loader.augmented(rows, torch.Generator().manual_seed(2))
    base = tensors[0].tensors[0][:16]
    assert not torch.equal(one, two)
    assert all(torch.equal(v, b) or torch.equal(v, b.flip(-1)) for v, b in zip(one, base))
    result = noisysam.train(dataset=(Flipped(), tensors[1]), method="dividemix", method_params={"warmup": 1},
                            progress=False, **RUN)
    assert result.summary["networks"] == 2


def test_a_killed_run_on_torch_datasets_resumes_and_refuses_other_labels(tensors, tmp_path):
    out = tmp_path / "run"
    whole = noisysam.train(dataset=tensors, method="sgd", progress=False, **RUN)

    def kill(event, info):
        if event == "batch" and (info["epoch"], info["batch"]) == (2, 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        noisysam.train(dataset=tensors, method="sgd", out=str(out), callback=kill, progress=False, **RUN)
    resumed = noisysam.train(dataset=tensors, method="sgd", out=str(out), resume=True, progress=False, **RUN)
    assert resumed.test_accuracy == whole.test_accuracy
    other = TensorDataset(tensors[0].tensors[0], (tensors[0].tensors[1] + 1) % 10)
    with pytest.raises(ValueError, match=r"cannot resume .*the dataset"):
        noisysam.train(dataset=(other, tensors[1]), method="sgd", out=str(out), resume=True, progress=False, **RUN)


@pytest.mark.parametrize("progress, shown", [(True, True), (False, False), (None, False)])
def test_the_api_shows_the_command_lines_progress_where_asked(tensors, capsys, progress, shown):
    """None: shown where stdout is a terminal, which pytest's captured stdout is not; the callback runs either way."""
    events = []
    noisysam.train(dataset=tensors, method="sgd", progress=progress, callback=lambda e, i: events.append(e),
                   **{**RUN, "epochs": 1})
    out = capsys.readouterr().out
    assert ("sgd symmetric 40% seed 0" in out) == shown
    assert events[0] == "start" and events[-1] == "end"
