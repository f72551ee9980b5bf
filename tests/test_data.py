"""Datasets (embedded, torchvision on-disk format, npz, ImageFolder), NoisyDataset, and the Loader's
batched augmentation checked against crops and flips made by hand in numpy."""

import hashlib
from pathlib import Path
import pickle
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

import noisysam
from noisysam.noise import labels as noise
from noisysam.data.datasets import ImageDataset, NoisyDataset, load_dataset
from noisysam.data.loader import Loader, check_device
from noisysam.core.assets import find_data_file

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------------------------------- embedded

def test_embedded_mini_dataset():
    d = load_dataset("cifar10-mini")
    assert d.name == "cifar10-mini" and d.num_classes == 10
    assert d.x_train.shape == (4085, 32, 32, 3) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (1000, 32, 32, 3) and d.y_test.dtype == np.int64
    assert d.classes[0] == "airplane" and d.classes[9] == "truck"
    assert d.train_index.shape == (4085,) and d.train_index.max() < 50_000


def test_find_data_file_honours_env_then_reads_package_data(tmp_path, monkeypatch):
    (tmp_path / "extra.npz").write_bytes(b"x")
    monkeypatch.setenv("NOISYSAM_DATA", str(tmp_path))
    assert find_data_file("extra.npz") == tmp_path / "extra.npz"
    shipped = Path(noisysam.__file__).parent / "assets" / "cifar10n.npz"  # falls through to the package's own copy
    assert find_data_file("cifar10n.npz") == shipped and shipped.is_file()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*assets"):  # the error names both places
        find_data_file("nowhere.npz")


# ------------------------------------------------------------------------- torchvision's CIFAR-10 format

def write_tiny_cifar10(root, rng):
    """torchvision's layout: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}, each a pickled
    dict; images as rows of 3072 bytes in (C, H, W) order. The real files are Python 2 pickles whose str
    keys torchvision reads with encoding='latin1' as str, so these use str keys "data", "labels"."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = rng.integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)  # 5 x 2 train + 3 test
    labels = rng.integers(0, 10, 13)
    files = {}
    for name, rows in [(f"data_batch_{i + 1}", slice(2 * i, 2 * i + 2)) for i in range(5)] + [("test_batch", slice(10, 13))]:
        entry = {"data": images[rows].transpose(0, 3, 1, 2).reshape(-1, 3072), "labels": labels[rows].tolist()}
        (folder / name).write_bytes(pickle.dumps(entry))
        files[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    names = [f"class{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    files["batches.meta"] = hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()
    return images, labels, names, files


def test_cifar10_loader_reads_torchvision_format(tmp_path, monkeypatch):
    images, labels, names, md5 = write_tiny_cifar10(tmp_path, np.random.default_rng(0))
    # torchvision verifies every file against the md5 of the official archive. The loader keeps that
    # check; the test registers the tiny files' own md5s (computed above) in place of the official ones,
    # so the check still runs and passes honestly, rather than the loader gaining a way to skip it.
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    d = load_dataset("cifar10", root=tmp_path)
    np.testing.assert_array_equal(d.x_train, images[:10])
    np.testing.assert_array_equal(d.x_test, images[10:])
    np.testing.assert_array_equal(d.y_train, labels[:10])
    np.testing.assert_array_equal(d.y_test, labels[10:])
    assert d.classes == names and d.name == "cifar10"
    np.testing.assert_array_equal(d.train_index, np.arange(10))
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"truncated")
    with pytest.raises(RuntimeError, match="corrupted"):
        load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_says_where_and_how(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=f"(?s){tmp_path}.*download=True"):
        load_dataset(name, root=tmp_path)


def test_failed_download_says_how_to_get_the_files(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(RuntimeError, match=f"(?s)could not download cifar10 into {tmp_path}.*cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path, download=True)


# ---------------------------------------------------------------------------------------------- npz

def test_npz_loader(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8), np.array([0, 2, 1, 2, 0, 1])
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], classes=np.array(["a", "b", "c"]))
    d = load_dataset(tmp_path / "mine.npz")
    np.testing.assert_array_equal(d.x_train, x)
    assert d.classes == ["a", "b", "c"] and d.name == "mine" and d.y_train.dtype == np.int64 and d.train_index is None
    # grayscale (N, H, W) gains a channel; channels-first (N, C, H, W) is transposed; classes default to indices
    np.savez(tmp_path / "gray.npz", x_train=x[..., 0], y_train=y, x_test=x[:2, ..., 0], y_test=y[:2])
    gray = load_dataset(str(tmp_path / "gray.npz"))
    assert gray.x_train.shape == (6, 5, 4, 1) and gray.classes == ["0", "1", "2"]
    np.savez(tmp_path / "chw.npz", x_train=x.transpose(0, 3, 1, 2), y_train=y, x_test=x[:2].transpose(0, 3, 1, 2), y_test=y[:2])
    np.testing.assert_array_equal(load_dataset(tmp_path / "chw.npz").x_train, x)


def test_npz_loader_errors(tmp_path):
    x, y = np.zeros((4, 3, 3, 3), np.uint8), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "nokey.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(ValueError, match="y_test"):
        load_dataset(tmp_path / "nokey.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read"):
        load_dataset(tmp_path / "junk.npz")
    np.savez(tmp_path / "float.npz", x_train=x / 255, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match="uint8"):
        load_dataset(tmp_path / "float.npz")
    np.savez(tmp_path / "short.npz", x_train=x, y_train=y[:3], x_test=x, y_test=y)
    with pytest.raises(ValueError, match="y_train"):
        load_dataset(tmp_path / "short.npz")
    np.savez(tmp_path / "pickled.npz", x_train=x, y_train=y, x_test=x, y_test=y, classes=np.array([None, "b"], dtype=object))
    with pytest.raises(ValueError, match="cannot read"):
        load_dataset(tmp_path / "pickled.npz")
    with pytest.raises(ValueError, match="no such path"):
        load_dataset(tmp_path / "absent.npz")


# ---------------------------------------------------------------------------------------- ImageFolder

def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_loader(tmp_path):
    rng = np.random.default_rng(2)
    pics = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)  # height 6, width 5
    write_png(tmp_path / "train" / "cat" / "a.png", pics[0])
    write_png(tmp_path / "train" / "cat" / "b.png", pics[1])
    write_png(tmp_path / "train" / "dog" / "c.png", pics[2])
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    write_png(tmp_path / "test" / "dog" / "d.png", gray)  # test lacks "cat": dog must still be class 1
    d = load_dataset(tmp_path)
    assert d.classes == ["cat", "dog"] and d.name == tmp_path.name
    np.testing.assert_array_equal(d.x_train, pics[:3])  # PNG is lossless
    np.testing.assert_array_equal(d.y_train, [0, 0, 1])
    np.testing.assert_array_equal(d.y_test, [1])
    np.testing.assert_array_equal(d.x_test[0], np.repeat(gray[..., None], 3, axis=2))  # L -> RGB
    write_png(tmp_path / "test" / "dog" / "e.png", pics[3][:4])
    with pytest.raises(ValueError, match="one size"):
        load_dataset(tmp_path)


def test_check_device_names_a_device_this_machine_or_torch_lacks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    check_device("cuda")
    with pytest.raises(ValueError, match=r"^device 'cuda:2' asked for, but this machine has 2 CUDA device\(s\), "
                                         r"cuda:0 to cuda:1$"):
        check_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device 'cuda:0' asked for, but CUDA is not available here$"):
        check_device("cuda:0")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for built, where in ((False, "this build of torch lacks MPS"), (True, "this machine has no MPS device")):
        monkeypatch.setattr(torch.backends.mps, "is_built", lambda: built)
        with pytest.raises(ValueError, match=f"^device 'mps' asked for, but {where}; use cpu or cuda$"):
            check_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_device("mps")
    with pytest.raises(ValueError, match="MPS has one device, mps:0"):
        check_device("mps:1")
    check_device("cpu")


def test_folder_loader_needs_train_and_test(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="train/ and test/"):
        load_dataset(tmp_path)


def test_image_dataset_validates():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="y_train must lie in"):
        ImageDataset("t", x, np.array([0, 2]), x, np.array([0, 1]), classes=["a", "b"])
    with pytest.raises(ValueError, match="x_test"):
        ImageDataset("t", x, np.array([0, 1]), x.astype(np.float32), np.array([0, 1]), classes=["a", "b"])


# --------------------------------------------------------------------------------------- NoisyDataset

def test_noisy_dataset_around_tensor_dataset():
    clean = torch.arange(40) % 4
    images = torch.randn(40, 3, 2, 2)
    nl = noise.symmetric(clean.numpy(), 0.5, 4, seed=0, mode="flip")
    ds = NoisyDataset(torch.utils.data.TensorDataset(images, clean), nl)
    assert len(ds) == 40
    for i in (0, 17, -1):
        image, label, index = ds[i]
        assert index == range(40)[i] and label == nl.noisy[index]
        assert torch.equal(image, images[index])
    np.testing.assert_array_equal(ds.clean_targets, clean.numpy())
    np.testing.assert_array_equal(ds.noisy_targets, nl.noisy)
    assert ds.noisy_labels is nl
    x, y, idx = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)))
    assert x.shape == (8, 3, 2, 2) and torch.equal(y, torch.tensor(nl.noisy[:8])) and torch.equal(idx, torch.arange(8))
    with pytest.raises(IndexError):
        ds[40]


def test_noisy_dataset_checks_length_and_labels():
    clean = np.arange(10) % 2
    nl = noise.symmetric(clean, 0.3, 2, seed=0)
    with pytest.raises(ValueError, match="items"):
        NoisyDataset(torch.utils.data.TensorDataset(torch.zeros(9, 1), torch.as_tensor(clean[:9])), nl)
    plain = [(torch.zeros(1), int(1 - c)) for c in clean]  # a list is a map-style dataset without .targets
    with pytest.raises(ValueError, match="differ from noisy_labels.clean"):
        NoisyDataset(plain, nl)
    assert len(NoisyDataset([(torch.zeros(1), int(c)) for c in clean], nl)) == 10


# --------------------------------------------------------------------------------------------- Loader

def coded_images(n, h=8, w=8):
    """Each pixel identifiable: channel 0 = position in the image (1..h*w), channel 1 = image id + 1,
    channel 2 = 200. No pixel is 0, so zeros in an output come from padding or cutout only."""
    img = np.zeros((n, h, w, 3), np.uint8)
    img[..., 0] = (np.arange(h * w) + 1).reshape(h, w)
    img[..., 1] = (np.arange(n) + 1)[:, None, None]
    img[..., 2] = 200
    return img


def hand_candidates(image):
    """Every crop of the 4-px zero-padded image, unflipped and flipped, built with numpy slicing: {(oy, ox, flip): CHW}."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    out = {}
    for oy in range(9):
        for ox in range(9):
            crop = padded[oy:oy + h, ox:ox + w].transpose(2, 0, 1)
            out[(oy, ox, False)] = crop
            out[(oy, ox, True)] = crop[:, :, ::-1]
    return out


def as_uint8(x):
    """Undo mean=0, std=1 normalisation: back to 0..255, asserting the values are exact pixel levels."""
    v = x.cpu().double().numpy() * 255
    assert np.allclose(v, np.round(v), atol=1e-3) and v.min() >= 0 and v.max() <= 255
    return np.round(v).astype(np.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_loader_crops_and_flips_match_hand_made_ones(device):
    images = coded_images(64)
    loader = Loader(images, np.arange(64) % 10, batch_size=16, mean=[0, 0, 0], std=[1, 1, 1], device=device, seed=3)
    found = []
    for x, y, idx in loader:
        assert x.device.type == device
        for out, i in zip(as_uint8(x), idx.tolist()):
            matches = [key for key, crop in hand_candidates(images[i]).items() if np.array_equal(crop, out)]
            assert len(matches) == 1
            found.append(matches[0])
    flips = [f for _, _, f in found]
    offsets = {(oy, ox) for oy, ox, _ in found}
    assert 0 < sum(flips) < len(flips)  # both flipped and unflipped samples
    assert len(offsets) > 20 and {oy for oy, _ in offsets} == set(range(9))  # crops vary over the full range


def test_loader_cutout_zeroes_one_clipped_square():
    size, h, w = 4, 8, 8
    images = coded_images(64, h, w)
    loader = Loader(images, np.zeros(64, int), batch_size=64, cutout=size, mean=[0, 0, 0], std=[1, 1, 1], seed=1)
    x, _, idx = next(iter(loader))
    # Every square cutout may make: rows and columns [c - size//2, c - size//2 + size) for a centre c in the image.
    squares = {}
    for cy in range(h):
        for cx in range(w):
            square = np.zeros((h, w), bool)
            square[max(cy - size // 2, 0):cy - size // 2 + size, max(cx - size // 2, 0):cx - size // 2 + size] = True
            squares[(cy, cx)] = square
    centres = []
    for out, i in zip(as_uint8(x), idx.tolist()):
        # the matching crop agrees wherever cutout left the pixel alone (cutout writes 0 = mean here)
        matches = [c for c in hand_candidates(images[i]).values() if np.all((out == c) | (out == 0))]
        assert len(matches) == 1
        zero = out == 0
        assert np.all(zero == zero.all(axis=0))  # zeroed in every channel alike
        # zero exactly on the crop's padding plus one square (several centres fit when it overlaps the padding)
        fits = [c for c, square in squares.items() if np.array_equal(zero[0], (matches[0][0] == 0) | square)]
        assert fits
        centres.append(fits)
    assert len(centres) == 64
    # the centres are spread over the image: every row and column of it holds a centre known exactly
    known = [fits[0] for fits in centres if len(fits) == 1]
    assert {cy for cy, _ in known} == set(range(h)) and {cx for _, cx in known} == set(range(w))


def test_loader_without_augmentation_returns_the_images():
    images = coded_images(10)
    labels = np.arange(10)[::-1].copy()
    loader = Loader(images, labels, batch_size=4, shuffle=False, augment=False, mean=[0, 0, 0], std=[1, 1, 1])
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape[0] for b in batches] == [4, 4, 2]
    x = np.concatenate([as_uint8(b[0]) for b in batches])
    np.testing.assert_array_equal(x, images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), labels)
    assert Loader(images, labels, batch_size=4, drop_last=True).__len__() == 2


def test_loader_takes_read_only_labels_without_warning():
    images = coded_images(10)
    nl = noise.symmetric(np.arange(10) % 3, 0.5, 3, seed=0)  # NoisyLabels hold read-only arrays
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a read-only array without copying
        loader = Loader(images, nl.noisy, batch_size=10, shuffle=False, augment=False)
    np.testing.assert_array_equal(next(iter(loader))[1].numpy(), nl.noisy)


def test_loader_default_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    images[..., 1] //= 4  # channels with different statistics
    loader = Loader(images, np.zeros(50, int), batch_size=50, augment=False)
    flat = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(loader.mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(loader.std, flat.std(axis=0), rtol=1e-9)
    x, y, idx = next(iter(loader))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and idx.dtype == torch.int64
    assert x.shape == (50, 3, 6, 6)
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3), unbiased=False).numpy(), 1, atol=1e-5)
    assert Loader(images, np.zeros(50, int), batch_size=8, channels_last=True).__iter__().__next__()[0] \
        .is_contiguous(memory_format=torch.channels_last)


def test_loader_is_seeded_per_epoch():
    images = coded_images(30)
    labels = np.arange(30) % 7

    def epoch(seed, number):
        loader = Loader(images, labels, batch_size=8, cutout=3, seed=seed)
        loader.set_epoch(number)
        return list(loader)

    a, b = epoch(0, 0), epoch(0, 0)
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    for batches in (a, epoch(0, 1), epoch(1, 0)):
        idx = torch.cat([i for _, _, i in batches])
        assert sorted(idx.tolist()) == list(range(30))  # every index exactly once per epoch
        assert torch.equal(torch.cat([y for _, y, _ in batches]), torch.as_tensor(labels)[idx])
    order = lambda batches: torch.cat([i for _, _, i in batches])  # noqa: E731
    assert not torch.equal(order(a), order(epoch(0, 1)))
    assert not torch.equal(order(a), order(epoch(1, 0)))


def test_loader_bad_arguments():
    images, labels = coded_images(4), np.zeros(4, int)
    with pytest.raises(ValueError, match="batch_size"):
        Loader(images, labels, batch_size=0)
    with pytest.raises(ValueError, match="cutout"):
        Loader(images, labels, batch_size=2, cutout=-1)
    with pytest.raises(ValueError, match="images must be uint8"):
        Loader(images.astype(np.float32), labels, batch_size=2)
    with pytest.raises(ValueError, match="labels"):
        Loader(images, labels[:3], batch_size=2)
    with pytest.raises(ValueError, match="mean and std"):
        Loader(images, labels, batch_size=2, mean=[0.5], std=[0.5])
