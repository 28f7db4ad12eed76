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
    torch.testing.assert_close(mean, torch.tensor(datasets.DOMAINS[name].mean), atol=2e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor(datasets.DOMAINS[name].std), atol=2e-4, rtol=0)


@pytest.fixture(scope="module")
def own_root(data_root, tmp_path_factory):
    """A writable data root holding links to the real files, so MNIST-M is built and cached
    there (never in the shared data folder)."""
    root = tmp_path_factory.mktemp("data")
    for name in os.listdir(data_root):
        if name.endswith(".npz") and not name.startswith("mnistm"):
            os.symlink(os.path.abspath(os.path.join(data_root, name)), root / name)
    return str(root)


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["mnist", "cifar10", "usps", "mnistm"])
def test_normalization_stats_match_the_real_train_split(name, own_root):
    mean, std = _stats(name, own_root)
    torch.testing.assert_close(mean, torch.tensor(datasets.DOMAINS[name].mean), atol=2e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor(datasets.DOMAINS[name].std), atol=2e-4, rtol=0)


@pytest.mark.real_data
def test_real_files_are_recognised_with_provenance(data_root):
    splits = datasets.build_splits("cifar10", data_root, download=False)
    assert splits.info["description"] == "CIFAR-10 (JPEG q75 copy)"
    assert splits.info["sizes"] == {"train": 45000, "val": 5000, "test": 10000}
    # the class-sorted file must still give a balanced validation split
    assert torch.bincount(splits.val.labels, minlength=10).tolist() == [500] * 10
    x, y = splits.test[list(range(16))]
    assert x.shape == (16, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    mnist = datasets.build_splits("mnist", data_root, download=False)  # recognised by its hash
    assert mnist.info["description"] == "MNIST (pixel-exact), digits in a 20-px box in 32x32"
    assert mnist.info["sizes"] == {"train": 55000, "val": 5000, "test": 10000}


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


def test_a_validation_split_too_small_for_every_class_says_which_sizes_work():
    # a stratified split keeps each class on both sides: 8 images cannot hold 10 classes,
    # and scikit-learn's own message speaks of a "test_size" the user never gave
    n = len(datasets.load_arrays("digits", "train")[1])
    for val_size in (8, n - 5):
        with pytest.raises(ValueError, match=rf"--val-size must be between 10 and {n - 10} for digits"):
            datasets.build_splits("digits", val_size=val_size)
    assert len(datasets.build_splits("digits", val_size=10).val) == 10


@pytest.mark.parametrize("name", ["synthetic", "digits"])
def test_a_bundled_set_is_computed_once_and_each_caller_gets_its_own_copy(name):
    images, labels, provenance = datasets.load_arrays(name, "train")
    images[:] = 0
    labels[:] = -1
    provenance["n"] = None
    again_images, again_labels, again = datasets.load_arrays(name, "train")
    assert again_images.any() and (again_labels >= 0).all() and again["n"] == len(again_labels)
    assert datasets._bundled_arrays.cache_info().hits >= 1


def test_train_subset_is_seeded_and_sized():
    a = datasets.build_splits("digits", train_subset=200, seed=1)
    b = datasets.build_splits("digits", train_subset=200, seed=1)
    assert len(a.train) == 200 and torch.equal(a.train.images, b.train.images)
    with pytest.raises(ValueError, match="--train-subset"):
        datasets.build_splits("digits", train_subset=10**6)
    capped = datasets.build_splits("digits", train_subset=10**6, subset_at_most=True)  # --demo
    assert len(capped.train) == 1170


def test_mnist_style_images_are_padded_to_32_and_three_channels():
    images = np.random.randint(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    x = datasets.to_chw32(images)
    assert x.shape == (5, 1, 32, 32)
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(images[..., 0]))
    assert x[:, :, :2].sum() == 0 and x[:, :, 30:].sum() == 0
    ds = datasets.ArrayDataset(x, torch.zeros(5, dtype=torch.long), "mnist")
    batch, _ = ds[[0, 1]]
    assert batch.shape == (2, 3, 32, 32) and torch.equal(batch[:, 0], batch[:, 2])


def test_framing_puts_small_digits_in_mnists_box_or_fills_the_frame():
    usps_like = np.full((2, 16, 16, 1), 255, np.uint8)  # a digit that fills its 16x16 frame
    boxed = datasets.to_chw32(usps_like)
    assert boxed.shape == (2, 1, 32, 32)
    rows = torch.nonzero(boxed[0, 0].sum(1)).flatten()
    cols = torch.nonzero(boxed[0, 0].sum(0)).flatten()
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 25, 6, 25)  # 20 px, centred
    filled = datasets.to_chw32(usps_like, "fill")
    assert bool((filled == 255).all())
    eight = np.zeros((1, 8, 8, 1), np.uint8)
    eight[0, 2:6, 3:5] = 200
    assert datasets.to_chw32(eight)[0, 0, :6].sum() == 0  # sklearn digits get the same margin
    photo = np.random.randint(0, 256, (1, 32, 32, 3), dtype=np.uint8)  # 32x32 is left alone
    for framing in datasets.FRAMINGS:
        assert torch.equal(datasets.to_chw32(photo, framing)[0], torch.from_numpy(photo[0]).permute(2, 0, 1))
    with pytest.raises(ValueError, match="framing"):
        datasets.to_chw32(photo, "stretch")


@pytest.mark.real_data
def test_usps_loads_framed_like_mnist_with_its_provenance(own_root):
    splits = datasets.build_splits("usps", own_root, download=False)
    assert splits.info["sizes"] == {"train": 6562, "val": 729, "test": 2007}
    assert splits.info["description"].startswith("USPS (Hull 1994)")
    assert "20-px box" in splits.info["description"] and splits.info["framing"] == "mnist"
    counts = torch.bincount(torch.cat([splits.train.labels, splits.val.labels]), minlength=10)
    assert counts.tolist() == [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]  # README's
    x, y = splits.test[list(range(64))]
    assert x.shape == (64, 3, 32, 32) and 0 <= x.min() and x.max() == 1.0
    assert x[:, :, :6].sum() == 0 and x[:, :, 26:].sum() == 0  # the margin of MNIST's framing
    filled = datasets.build_eval_split("usps", "test", own_root, False, framing="fill")
    assert filled[0].images[:, :, :6].sum() > 0 and "digits scaled to fill 32x32" in filled[1]["description"]


@pytest.mark.real_data
def test_mnistm_is_mnist_blended_over_cifar10_photos(own_root):
    images, labels, prov = datasets.load_arrays("mnistm", "test", own_root, download=False)
    _, mnist_labels, _ = datasets.load_arrays("mnist", "test", own_root, download=False)
    assert images.shape == (10000, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(labels, mnist_labels)  # MNIST's labels, in MNIST's order
    assert prov["description"] == "MNIST-M (Ganin & Lempitsky 2015 construction, CIFAR-10 backgrounds)"
    assert "MNIST test digits" in prov["note"] and "10,000 CIFAR-10 train photos" in prov["note"]
    assert prov["path"] == os.path.join(own_root, "mnistm-test.npz")  # cached beside the data
    # coloured: the channels differ (a grey image would have R == G == B)
    assert np.abs(images[..., 0].astype(int) - images[..., 1]).mean() > 5
    # each image is |photo - digit| for one CIFAR-10 train photo (perhaps mirrored)
    digits = datasets.to_chw32(datasets.load_arrays("mnist", "test", own_root, False)[0])[:, 0].numpy()
    photos, _, _ = datasets.load_arrays("cifar10", "train", own_root, download=False)
    candidates = np.concatenate([photos, photos[:, :, ::-1]])
    for i in range(3):
        rows, cols = np.nonzero(digits[i] == 0)  # the background, where the image is the photo
        # the photos that agree on a few background pixels, then on all of them
        few = rows[:8], cols[:8]
        near = candidates[(candidates[:, few[0], few[1]] == images[i][few]).all(axis=(1, 2))]
        match = (near[:, rows, cols] == images[i][rows, cols]).all(axis=(1, 2))
        assert match.any()
        photo = near[np.argmax(match)].astype(int)
        assert np.array_equal(images[i], np.abs(photo - digits[i][..., None]))
    # deterministic: rebuilding from the same files gives the same images
    os.remove(prov["path"])
    again, _, _ = datasets.load_arrays("mnistm", "test", own_root, download=False)
    assert np.array_equal(again, images)


def test_mnistm_names_what_is_missing_and_caches_outside_a_read_only_root(tmp_path, monkeypatch):
    with pytest.raises(datasets.DatasetUnavailableError, match="built from MNIST and CIFAR-10") as err:
        datasets.load_arrays("mnistm", "test", str(tmp_path), download=False)
    assert "mnist-test.npz" in str(err.value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.os, "access", lambda path, mode: False)
    assert datasets.cache_dir(str(tmp_path)).startswith(str(tmp_path / "cache"))


def test_a_read_only_data_root_is_never_written_even_by_root(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o555)  # as ../shared/data is: root may still write, we must not
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        assert not datasets.writable(str(shared))
        assert datasets.cache_dir(str(shared)).startswith(str(tmp_path / "cache"))
        with pytest.raises(datasets.DatasetUnavailableError, match="data root is read-only"):
            datasets.load_arrays("svhn", "test", str(shared), download=True)
        assert list(shared.iterdir()) == []  # no torchvision/ folder left behind
    finally:
        shared.chmod(0o755)


def test_mnistm_construction_is_seeded():
    digits = np.random.default_rng(0).integers(0, 256, (50, 32, 32), dtype=np.uint8)
    photos = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    a = datasets.build_mnistm(digits, photos, seed=3)
    assert np.array_equal(a, datasets.build_mnistm(digits, photos, seed=3))
    assert not np.array_equal(a, datasets.build_mnistm(digits, photos, seed=4))


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
    for name in datasets.digit_domains():
        assert not datasets.DOMAINS[name].augment["flip"] and not datasets.DOMAINS[name].augment["jitter"]
    assert datasets.DOMAINS["cifar10"].augment["flip"]


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
    assert splits.info["augment"] == datasets.DOMAINS["svhn"].augment
    x, y = splits.train[list(range(10))]
    assert x.shape == (10, 3, 32, 32) and y.max() <= 9
    # colour jitter is for natural images only; an explicit 0 is accepted everywhere
    assert datasets.build_splits("svhn", str(tmp_path), jitter=0.0).info["augment"]["jitter"] == 0
    with pytest.raises(ValueError, match="cifar10 only"):
        datasets.build_splits("svhn", str(tmp_path), download=False, jitter=0.1)


def test_svhn_mat_files_convert_to_pixels_and_labels(tmp_path, monkeypatch):
    """SVHN's real layout, as torchvision finds it: X is 32x32x3xN uint8, y is Nx1 with 10
    standing for the digit 0. Only torchvision's checksum is bypassed."""
    import scipy.io
    import torchvision

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 12), dtype=np.uint8)
    digits = np.array([10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3])
    raw = tmp_path / "torchvision"
    raw.mkdir()
    scipy.io.savemat(raw / "test_32x32.mat", {"X": x, "y": digits[:, None].astype(np.uint8)})
    for module in (torchvision.datasets.utils, torchvision.datasets.svhn):  # no md5 of the real file
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)
    images, labels, prov = datasets.load_arrays("svhn", "test", str(tmp_path), download=True)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[5], x[:, :, :, 5])  # image i is X[:, :, :, i], rows first
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 3]  # 10 is the digit 0
    assert prov["description"] == "svhn downloaded by torchvision"
    split = datasets.build_eval_split("svhn", "test", str(tmp_path), download=False)[0]
    batch, y = split[[5]]
    assert torch.equal(batch[0], torch.from_numpy(x[:, :, :, 5]).permute(2, 0, 1).float() / 255)


def test_bad_files_are_rejected_with_their_path(tmp_path):
    np.savez_compressed(tmp_path / "mnist-train.npz", images=np.zeros((4, 28, 28), np.float32),
                        labels=np.zeros(4, np.int64))
    with pytest.raises(datasets.DatasetUnavailableError, match="mnist-train.npz"):
        datasets.load_arrays("mnist", "train", str(tmp_path), download=False)
    (tmp_path / "cifar10-train.npz").write_bytes(b"not a zip file")
    with pytest.raises(datasets.DatasetUnavailableError, match="could not be read"):
        datasets.load_arrays("cifar10", "train", str(tmp_path), download=False)
