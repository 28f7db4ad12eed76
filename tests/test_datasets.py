import os

import numpy as np
import pytest
import torch

import datasets


def _stats(name, data_root="unused"):
    images, _, _ = datasets.load_arrays(name, "train", data_root, download=False)
    x = datasets.to_chw32(images).float().div_(255).expand(-1, 3, -1, -1)
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_normalization_stats_match_the_train_split(name):
    mean, std = _stats(name)
    torch.testing.assert_close(mean, torch.tensor(datasets.NORM_STATS[name][0]), atol=2e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor(datasets.NORM_STATS[name][1]), atol=2e-4, rtol=0)


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_normalization_stats_match_the_real_train_split(name, data_root):
    mean, std = _stats(name, data_root)
    torch.testing.assert_close(mean, torch.tensor(datasets.NORM_STATS[name][0]), atol=2e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor(datasets.NORM_STATS[name][1]), atol=2e-4, rtol=0)


@pytest.mark.real_data
def test_real_files_are_recognised_with_provenance(data_root):
    splits = datasets.build_splits("cifar10", data_root, download=False)
    assert splits.info["description"] == "CIFAR-10 (JPEG q75 copy)"
    assert splits.info["sizes"] == {"train": 45000, "val": 5000, "test": 10000}
    # the class-sorted file must still give a balanced validation split
    assert torch.bincount(splits.val.labels, minlength=10).tolist() == [500] * 10
    x, y = splits.test[list(range(16))]
    assert x.shape == (16, 3, 32, 32) and 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_splits_are_disjoint_seeded_and_in_range(name):
    a = datasets.build_splits(name, val_size=100, seed=3)
    b = datasets.build_splits(name, val_size=100, seed=3)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    n_train = len(datasets.load_arrays(name, "train")[1])
    assert len(a.train) + len(a.val) == n_train and len(a.val) == 100
    # no validation image is also a training image (rows compared as bytes)
    train_rows = {bytes(r.numpy()) for r in a.train.images.flatten(1)}
    assert sum(bytes(r.numpy()) in train_rows for r in a.val.images.flatten(1)) <= 2
    x, y = a.train[list(range(32))]
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and y.dtype == torch.int64
    assert set(a.test.labels.tolist()) == set(range(10))
    c = datasets.build_splits(name, val_size=100, seed=4)
    assert not torch.equal(a.val.labels, c.val.labels)


def test_train_subset_is_seeded_and_sized():
    a = datasets.build_splits("digits", train_subset=200, seed=1)
    b = datasets.build_splits("digits", train_subset=200, seed=1)
    assert len(a.train) == 200 and torch.equal(a.train.images, b.train.images)
    with pytest.raises(ValueError, match="--train-subset"):
        datasets.build_splits("digits", train_subset=10**6)


def test_mnist_style_images_are_padded_to_32_and_three_channels():
    images = np.random.randint(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    x = datasets.to_chw32(images)
    assert x.shape == (5, 1, 32, 32)
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(images[..., 0]))
    assert x[:, :, :2].sum() == 0 and x[:, :, 30:].sum() == 0
    ds = datasets.ArrayDataset(x, torch.zeros(5, dtype=torch.long), "mnist")
    batch, _ = ds[[0, 1]]
    assert batch.shape == (2, 3, 32, 32) and torch.equal(batch[:, 0], batch[:, 2])


def test_augmentation_crops_and_flips_only_where_label_preserving():
    x = torch.rand(64, 3, 32, 32)
    out = datasets.augment_batch(x, pad=4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(8):  # every output is a 32x32 window of the padded image
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])
                   for dy in range(9) for dx in range(9))
    assert not torch.equal(out, x)
    flipped = datasets.augment_batch(x, pad=0, flip=True)
    is_flip = [torch.equal(flipped[i], x[i].flip(2)) for i in range(64)]
    is_same = [torch.equal(flipped[i], x[i]) for i in range(64)]
    assert all(a or b for a, b in zip(is_flip, is_same)) and 10 < sum(is_flip) < 54
    jittered = datasets.augment_batch(x, pad=0, jitter=0.1)
    assert 0 <= jittered.min() and jittered.max() <= 1 and not torch.equal(jittered, x)
    for name in datasets.DIGIT_DATASETS:
        assert not datasets.AUGMENT[name]["flip"] and not datasets.AUGMENT[name]["jitter"]
    assert datasets.AUGMENT["cifar10"]["flip"]


def test_missing_dataset_raises_a_clear_error_and_never_fakes_data(tmp_path):
    with pytest.raises(datasets.DatasetUnavailableError) as err:
        datasets.build_splits("svhn", str(tmp_path), download=False)
    message = str(err.value)
    assert "svhn" in message and str(tmp_path / "svhn-train.npz") in message
    assert "--no-download" in message and ".npz" in message


def test_failed_download_names_the_paths_tried(tmp_path, monkeypatch):
    def offline(name, split, root):
        raise OSError("network unreachable")
    monkeypatch.setattr(datasets, "_download", offline)
    with pytest.raises(datasets.DatasetUnavailableError, match="network unreachable") as err:
        datasets.load_arrays("cifar10", "test", str(tmp_path), download=True)
    assert "torchvision" in str(err.value) and not (tmp_path / "cifar10-test.npz").exists()


def test_download_writes_the_array_file_once(tmp_path, monkeypatch):
    calls = []

    def fake_torchvision(name, split, root):
        calls.append(split)
        return (np.random.randint(0, 256, (20, 32, 32, 3), dtype=np.uint8),
                np.arange(20, dtype=np.int64) % 10)
    monkeypatch.setattr(datasets, "_download", fake_torchvision)
    first = datasets.load_arrays("svhn", "test", str(tmp_path), download=True)
    again = datasets.load_arrays("svhn", "test", str(tmp_path), download=True)
    assert calls == ["test"] and (tmp_path / "svhn-test.npz").exists()
    assert np.array_equal(first[0], again[0])
    assert again[2]["description"] == "svhn downloaded by torchvision"


def write_svhn_fixture(root, n_train=400, n_test=100):
    """A tiny SVHN-format fixture: noisy images whose colour encodes the class (labels 0-9),
    so random crops keep the label."""
    rng = np.random.default_rng(0)
    palette = rng.integers(30, 226, (10, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n, dtype=np.int64) % 10
        noise = rng.integers(-25, 26, (n, 32, 32, 3))
        images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        np.savez_compressed(os.path.join(root, f"svhn-{split}.npz"), images=images, labels=labels)


def test_svhn_fixture_loads_through_the_real_path(tmp_path):
    write_svhn_fixture(str(tmp_path))
    splits = datasets.build_splits("svhn", str(tmp_path), download=False)
    assert splits.info["sizes"] == {"train": 360, "val": 40, "test": 100}
    assert splits.info["augment"] == datasets.AUGMENT["svhn"]
    x, y = splits.train[list(range(10))]
    assert x.shape == (10, 3, 32, 32) and y.max() <= 9
    # colour jitter is for natural images only; an explicit 0 is accepted everywhere
    assert datasets.build_splits("svhn", str(tmp_path), jitter=0.0).info["augment"]["jitter"] == 0
    with pytest.raises(ValueError, match="cifar10 only"):
        datasets.build_splits("svhn", str(tmp_path), download=False, jitter=0.1)


def test_bad_files_are_rejected_with_their_path(tmp_path):
    np.savez_compressed(tmp_path / "mnist-train.npz", images=np.zeros((4, 28, 28), np.float32),
                        labels=np.zeros(4, np.int64))
    with pytest.raises(datasets.DatasetUnavailableError, match="mnist-train.npz"):
        datasets.load_arrays("mnist", "train", str(tmp_path), download=False)
    (tmp_path / "cifar10-train.npz").write_bytes(b"not a zip file")
    with pytest.raises(datasets.DatasetUnavailableError, match="could not be read"):
        datasets.load_arrays("cifar10", "train", str(tmp_path), download=False)
