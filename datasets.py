"""Datasets of the study as 3x32x32 float tensors in [0, 1] with int labels.

Real data is read from `<data-root>/<dataset>-<split>.npz` (uint8 `images` N,H,W,C and
int64 `labels`; see the README's "Data" section). When a file is missing and downloads are
allowed, torchvision fetches the dataset once and the same file is written, so later runs
read arrays directly. Data that cannot be had raises DatasetUnavailableError; nothing
ever falls back to fake data. `synthetic` exists only when asked for by name.
"""

import functools
import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

# How a digit lands in the 32x32 frame. "mnist" (the default) is MNIST's own convention
# for every digit dataset: the digit in a ~20-pixel box, centred, with margin. MNIST (28x28,
# digit in a 20x20 box) is zero-padded; USPS and scikit-learn digits, whose digits fill their
# 16x16 and 8x8 frames, are scaled to 20x20 and then padded. "fill" scales each dataset's own
# frame to 32x32, so USPS and scikit-learn digits fill it (MNIST's digit grows to ~23 px).
# 32x32 datasets (CIFAR-10, SVHN, MNIST-M, synthetic) are the same under both.
FRAMINGS = ("mnist", "fill")
FRAMING_HELP = ("how small digits (USPS, scikit-learn digits) sit in the 32x32 frame: mnist = "
                "in MNIST's ~20-pixel box, centred; fill = scaled to fill it")
DIGIT_BOX = 20


@dataclass(frozen=True)
class Domain:
    """One dataset, declared once: what it holds, how it is read, and its place in the study."""
    name: str
    classes: tuple
    native: tuple  # (height, width, channels) of its images as stored
    mean: tuple  # per-channel mean/std of its train split as this module delivers it
    std: tuple  # (3 channels, 32x32, "mnist" framing); tests/test_datasets.py recomputes them
    augment: dict  # random crop padding; flips and colour jitter only where label-preserving
    train_images: int  # train images left after the default validation split
    source: str = "files"  # "files": <name>-<split>.npz in the data root; "bundled": `arrays`
    arrays: Callable = None  # split -> (images, labels, provenance) when source is "bundled"
    download: Callable = None  # (folder, train) -> (images, labels) through torchvision, or None
    digit: bool = False  # digit classes: a transfer domain of the study
    small: bool = False  # trained with the small-domain budget (more epochs, smaller batches)
    in_smoke: bool = False  # small enough (or bundled) for the smoke profile's transfer matrix
    synthetic: bool = False

    @property
    def colour(self):
        return self.native[2] == 3

    @property
    def framed(self):
        """Whether its images are smaller than the 32x32 frame (framing applies)."""
        return self.native[0] < 32


DIGITS = tuple(str(i) for i in range(10))
_DIGIT_AUGMENT = {"pad": 2, "flip": False, "jitter": 0.0}
DOMAINS = {d.name: d for d in (
    Domain("mnist", DIGITS, (28, 28, 1), (0.1000, 0.1000, 0.1000), (0.2752, 0.2752, 0.2752),
           _DIGIT_AUGMENT, 55000, digit=True,
           download=lambda raw, train: _torchvision_mnist(raw, train)),
    Domain("usps", DIGITS, (16, 16, 1), (0.0993, 0.0993, 0.0993), (0.2520, 0.2520, 0.2520),
           _DIGIT_AUGMENT, 6562, digit=True, small=True, in_smoke=True,
           download=lambda raw, train: _torchvision_usps(raw, train)),
    Domain("digits", DIGITS, (8, 8, 1), (0.1193, 0.1193, 0.1193), (0.2514, 0.2514, 0.2514),
           _DIGIT_AUGMENT, 1170, source="bundled", arrays=lambda split: _digits_arrays(split),
           digit=True, small=True, in_smoke=True),
    Domain("mnistm", DIGITS, (32, 32, 3), (0.4774, 0.4737, 0.4467), (0.2489, 0.2467, 0.2637),
           _DIGIT_AUGMENT, 55000, source="built", digit=True),
    Domain("svhn", DIGITS, (32, 32, 3), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
           {"pad": 4, "flip": False, "jitter": 0.0}, 68257, digit=True, in_smoke=True,
           download=lambda raw, train: _torchvision_svhn(raw, train)),
    Domain("cifar10", ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck"), (32, 32, 3),
           (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606),
           {"pad": 4, "flip": True, "jitter": 0.1}, 45000,
           download=lambda raw, train: _torchvision_cifar10(raw, train)),
    Domain("synthetic", tuple(f"pattern{i}" for i in range(10)), (32, 32, 3),
           (0.4986, 0.5055, 0.5009), (0.2049, 0.2028, 0.2073), _DIGIT_AUGMENT, 2700,
           source="bundled", arrays=lambda split: _synthetic_arrays(split), synthetic=True),
)}


def digit_domains(smoke=False):
    """The transfer domains, in declaration order (only the smoke-sized ones if `smoke`)."""
    return [n for n, d in DOMAINS.items() if d.digit and (d.in_smoke or not smoke)]


# sha256 of the files in ../shared/data, so the report can name what was used.
KNOWN_FILES = {
    "1e3b9016ce61eb9a66c0549f11f18ca54d133a6e33883f237aeeec15683b4378": "CIFAR-10 (JPEG q75 copy)",
    "70e4ac07061418e21d1d1b862caaf926b5ee04c948a8753583ea90475436c42f": "CIFAR-10 (JPEG q75 copy)",
    "18bec0c3df52ba9179dbdd3f6fc2463fb18bbf1441c2984acde287dcb40162d0": "MNIST (pixel-exact)",
    "e9689ea30ab7f74fe116e3e2be85aac5b985f5b4a38e697fae60d53479b02e4f": "MNIST (pixel-exact)",
    "747b5423852d0731c696bfa06ac91e036747a513e932f46d964a50dca6c546a4": "USPS (Hull 1994), 7,291/2,007 split",
    "ba03bdd5fbe78c83f6c2b2730a68339d124db364f01f89723723ace99bad3ae9": "USPS (Hull 1994), 7,291/2,007 split",
}

# Where the .npz files are looked for when neither --data-root nor $DATA_ROOT says: data/
# under the working folder, then the shared copy beside the project (../shared/data).
DATA_ROOT_CANDIDATES = ("data", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "shared", "data"))
DATA_ROOT_HELP = ("folder with <dataset>-<split>.npz files (default: $DATA_ROOT if set, else "
                  "the first of data/ and ../shared/data that holds .npz files, else data/)")


def default_data_root():
    """$DATA_ROOT; else the first DATA_ROOT_CANDIDATES folder holding .npz files; else data/."""
    if os.environ.get("DATA_ROOT"):
        return os.environ["DATA_ROOT"]
    for folder in DATA_ROOT_CANDIDATES:
        if os.path.isdir(folder) and any(f.endswith(".npz") for f in os.listdir(folder)):
            return os.path.relpath(folder) if os.path.isabs(folder) else folder
    return "data"


def files_missing(name, data_root):
    """The .npz files `name` needs that are not in data_root (MNIST-M is built from MNIST
    and CIFAR-10 unless a built copy exists); [] for the bundled and synthetic sets."""
    if DOMAINS[name].source == "bundled":
        return []
    if DOMAINS[name].source == "built":  # MNIST-M, the one dataset built from others
        built = [os.path.join(d, f"mnistm-{s}.npz") for d in (data_root, cache_dir(data_root))
                 for s in ("train", "test")]
        if sum(os.path.exists(p) for p in built) >= 2:
            return []
        return files_missing("mnist", data_root) + files_missing("cifar10", data_root)
    return [f"{name}-{split}.npz" for split in ("train", "test")
            if not os.path.exists(os.path.join(data_root, f"{name}-{split}.npz"))]


DIGITS_TEST_SIZE = 497  # of scikit-learn's 1,797 digits; the rest (1,300) is train
SYNTHETIC_SIZES = {"train": 3000, "test": 200}  # a stand-in for plumbing: every run predicts its test split


class DatasetUnavailableError(RuntimeError):
    """The requested dataset is not on disk and could not be downloaded."""


@dataclass
class Splits:
    """Train / validation / test datasets plus everything a run should record about them."""
    train: "ArrayDataset"
    val: "ArrayDataset"
    test: "ArrayDataset"
    info: dict = field(default_factory=dict)


class ArrayDataset(torch.utils.data.Dataset):
    """uint8 images (N, C, 32, 32) in memory, delivered as float batches in [0, 1].

    Indexed with a list of indices it returns a whole batch (images, labels), which is
    how the loaders below use it: augmentation then runs once per batch, not per image.
    Indexed with (seed, indices), the batch's augmentation draws from a generator seeded
    with `seed`, so it is the same whichever process (main or loader worker) builds it.
    """

    def __init__(self, images, labels, name, augment=None):
        self.images = images
        self.labels = labels
        self.name = name
        self.augment = augment  # a Domain's augment dict, or None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        generator = None
        if isinstance(index, tuple):
            seed, index = index
            generator = torch.Generator().manual_seed(seed)
        single = isinstance(index, int)
        idx = torch.as_tensor([index] if single else index, dtype=torch.long)
        x = self.images[idx].float().div_(255.0).expand(-1, 3, -1, -1)
        if self.augment is not None:
            x = augment_batch(x, **self.augment, generator=generator)
        y = self.labels[idx]
        return (x[0], int(y[0])) if single else (x.contiguous(), y)


def augment_batch(x, pad=4, flip=False, jitter=0.0, generator=None):
    """Random crop with zero padding, optional horizontal flip and colour jitter, per image."""
    n, c, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                   rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if jitter:
        def factor():
            return 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * jitter
        x = x * factor()  # brightness
        gray = x.mean(dim=(1, 2, 3), keepdim=True)
        x = gray + (x - gray) * factor()  # contrast
        lum = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = lum + (x - lum) * factor()  # saturation
        x = x.clamp_(0.0, 1.0)
    return x


class ShardedBatchSampler:
    """Shuffled global batches of `batch_size` indices; process `rank` of `world` takes its
    contiguous slice of each. With world=1 this is RandomSampler + BatchSampler; with
    several processes the union of their slices is exactly the single-process batch, so
    data-parallel training sees the same global batches as one process would.

    Each item is (seed, indices): the seed, drawn from `generator` per global batch, seeds
    that batch's augmentation, so it does not depend on the number of loader workers."""

    def __init__(self, n, batch_size, world=1, rank=0, drop_last=True, generator=None):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        self.n, self.batch_size, self.world, self.rank = n, batch_size, world, rank
        self.drop_last, self.generator = drop_last, generator

    def __len__(self):
        full, rest = divmod(self.n, self.batch_size)
        return full + (0 if self.drop_last or rest < self.world else 1)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator)
        seeds = torch.randint(0, 2**62, (len(self),), generator=self.generator)
        for b in range(len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            share = len(batch) // self.world
            # the rank is mixed in: each process's slice gets its own augmentation draws
            yield int(seeds[b]) + self.rank, batch[self.rank * share:(self.rank + 1) * share].tolist()


def batch_loader(dataset, batch_size, shuffle=False, drop_last=False, workers=0,
                 generator=None, sampler=None, world=1, rank=0):
    """A DataLoader that fetches whole batches from an ArrayDataset: shuffled (and sharded
    across `world` processes) for training, else in the order of `sampler` or sequential."""
    if shuffle:
        batches = ShardedBatchSampler(len(dataset), batch_size, world, rank, drop_last, generator)
    else:
        batches = torch.utils.data.BatchSampler(
            sampler if sampler is not None else torch.utils.data.SequentialSampler(dataset),
            batch_size, drop_last=drop_last)
    return torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None,
                                       num_workers=workers, generator=generator,
                                       persistent_workers=False)


# ----------------------------------------------------------------------------- loading

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _how_to_provide(name, path):
    return (f"Put `{os.path.basename(path)}` (a numpy .npz with uint8 `images` N,H,W,C and "
            f"int64 `labels` N; see the project README's \"Data\" section) in the data root, "
            f"or run once with downloads allowed (no --no-download) on a machine with internet.")


def _download(name, split, data_root):
    """Fetch through torchvision (the Domain's `download`); returns (images NHWC uint8,
    labels int64)."""
    if DOMAINS[name].download is None:
        raise ValueError(f"{name} has no download: provide its files")
    return DOMAINS[name].download(os.path.join(data_root, "torchvision"), split == "train")


def _torchvision_mnist(raw, train):
    import torchvision

    ds = torchvision.datasets.MNIST(raw, train=train, download=True)
    return ds.data.numpy()[..., None], ds.targets.numpy().astype(np.int64)


def _torchvision_cifar10(raw, train):
    import torchvision

    ds = torchvision.datasets.CIFAR10(raw, train=train, download=True)
    return ds.data, np.asarray(ds.targets, dtype=np.int64)


def _torchvision_usps(raw, train):
    """LIBSVM's copy, values rescaled to 0..255 by torchvision."""
    import torchvision

    ds = torchvision.datasets.USPS(raw, train=train, download=True)
    return ds.data[..., None], np.asarray(ds.targets, dtype=np.int64)


def _torchvision_svhn(raw, train):
    """torchvision already maps SVHN's digit "0" (stored as 10) to label 0."""
    import torchvision

    ds = torchvision.datasets.SVHN(raw, split="train" if train else "test", download=True)
    return ds.data.transpose(0, 2, 3, 1), ds.labels.astype(np.int64)


@functools.lru_cache(maxsize=None)
def _bundled_arrays(name, split):
    """A bundled set is computed, not read: once per process (the smoke profile asks ~60 times)."""
    return DOMAINS[name].arrays(split)


def load_arrays(name, split, data_root="data", download=True):
    """Raw arrays of one split: (uint8 images N,H,W,C, int64 labels N, provenance dict)."""
    if name not in DOMAINS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DOMAINS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if DOMAINS[name].source == "bundled":
        images, labels, provenance = _bundled_arrays(name, split)
        return images.copy(), labels.copy(), dict(provenance)  # callers may change theirs

    path = os.path.join(data_root, f"{name}-{split}.npz")
    if DOMAINS[name].source == "built" and not os.path.exists(path):
        path = _mnistm_file(split, data_root, download)
    if not os.path.exists(path):
        if not download:
            raise DatasetUnavailableError(
                f"{name} ({split}) is not available: tried {os.path.abspath(path)} and "
                f"downloads are off (--no-download). {_how_to_provide(name, path)}")
        if os.path.isdir(data_root) and not writable(data_root):
            raise DatasetUnavailableError(
                f"{name} ({split}) is not available: tried {os.path.abspath(path)}, and the "
                f"data root is read-only, so nothing is downloaded into it (give a writable "
                f"--data-root to download). {_how_to_provide(name, path)}")
        try:
            images, labels = _download(name, split, data_root)
        except Exception as exc:  # no network, torchvision error, disk full, ...
            raise DatasetUnavailableError(
                f"{name} ({split}) is not available: tried {os.path.abspath(path)}, then a "
                f"torchvision download into {os.path.abspath(os.path.join(data_root, 'torchvision'))}"
                f" which failed ({type(exc).__name__}: {exc}). {_how_to_provide(name, path)}"
            ) from exc
        os.makedirs(data_root, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez_compressed(tmp, images=images, labels=labels,
                            provenance=np.array(f"{name} downloaded by torchvision"))
        os.replace(tmp, path)

    try:
        with np.load(path) as data:
            images, labels = data["images"], data["labels"].astype(np.int64)
            note = str(data["provenance"]) if "provenance" in data else None
    except Exception as exc:
        raise DatasetUnavailableError(
            f"{path} could not be read as a dataset file ({type(exc).__name__}: {exc}). "
            f"{_how_to_provide(name, path)}") from exc
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
        raise DatasetUnavailableError(
            f"{path} has images {images.shape} {images.dtype} and {len(labels)} labels; "
            f"expected uint8 (N,H,W,C) and N labels. {_how_to_provide(name, path)}")
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetUnavailableError(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    digest = _sha256(path)
    provenance = {"dataset": name, "split": split, "path": os.path.abspath(path),
                  "sha256": digest, "n": int(len(labels)),
                  # a note's first sentence names the data; the rest is kept as provenance
                  "description": KNOWN_FILES.get(digest) or (note or f"{name} from {path}").split(". ")[0]}
    if note:
        provenance["note"] = note
    return images, labels, provenance


MNISTM_SEED = 0
MNISTM_DESCRIPTION = "MNIST-M (Ganin & Lempitsky 2015 construction, CIFAR-10 backgrounds)"
MNISTM_TEST_BACKGROUNDS = 10000  # CIFAR-10 train images kept apart for the test split


def build_mnistm(digits, backgrounds, seed):
    """MNIST-M as Ganin & Lempitsky (2015) build it: each digit blended over a colour
    photo, per channel |background - digit|, so strokes invert the photo's colours.

    `digits`: uint8 (N, 32, 32) MNIST digits framed in 32x32; `backgrounds`: uint8
    (M, 32, 32, 3) photos. Each digit gets a photo drawn with replacement (and a random
    horizontal flip) from a generator seeded with `seed`. The paper crops BSDS500 photos;
    a CIFAR-10 image is already a 32x32 crop of a photo, our frame's size.
    """
    rng = np.random.default_rng(seed)
    choice = rng.integers(0, len(backgrounds), len(digits))
    flip = rng.random(len(digits)) < 0.5
    out = np.empty((len(digits), 32, 32, 3), np.uint8)
    for start in range(0, len(digits), 10000):  # bounded memory for int16 arithmetic
        end = start + 10000
        bg = backgrounds[choice[start:end]].astype(np.int16)
        bg[flip[start:end]] = bg[flip[start:end], :, ::-1]
        out[start:end] = np.abs(bg - digits[start:end, :, :, None].astype(np.int16))
    return out


def writable(folder):
    """Whether we may write into `folder`: permitted, and not marked read-only by its mode
    (root may write anywhere, but a shared data folder made read-only stays untouched)."""
    return os.access(folder, os.W_OK) and bool(os.stat(folder).st_mode & stat.S_IWUSR)


def cache_dir(data_root):
    """Where derived datasets (MNIST-M) are written: the data root if it is writable,
    else a user cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    if writable(data_root):
        return data_root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnn-robustness-study", "data")


def _mnistm_file(split, data_root, download):
    """Path of mnistm-<split>.npz, built once from MNIST and CIFAR-10 if no copy exists."""
    path = os.path.join(cache_dir(data_root), f"mnistm-{split}.npz")
    if os.path.exists(path):
        return path
    try:
        digits, labels, mnist = load_arrays("mnist", split, data_root, download)
        photos, _, cifar = load_arrays("cifar10", "train", data_root, download)
    except DatasetUnavailableError as exc:
        raise DatasetUnavailableError(
            f"mnistm ({split}) is built from MNIST and CIFAR-10, and one is missing: {exc}") from exc
    # disjoint photo pools: the test split's backgrounds are never seen in training
    order = np.random.default_rng(MNISTM_SEED).permutation(len(photos))
    pool = order[:-MNISTM_TEST_BACKGROUNDS] if split == "train" else order[-MNISTM_TEST_BACKGROUNDS:]
    images = build_mnistm(to_chw32(digits)[:, 0].numpy(), photos[pool],
                          seed=[MNISTM_SEED, split == "test"])
    provenance = (f"{MNISTM_DESCRIPTION}. Built from MNIST {split} digits (sha256 "
                  f"{mnist['sha256'][:12]}) blended |photo - digit| over {len(pool):,} CIFAR-10 "
                  f"train photos (sha256 {cifar['sha256'][:12]}), seed {MNISTM_SEED}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    # stored, not deflated: photo blends shrink by ~7% (164 of 176 MB for the training
    # split), for ~10 s of deflating when it is built and ~1.7 s more on every read
    np.savez(tmp, images=images, labels=labels, provenance=np.array(provenance))
    os.replace(tmp, path)
    print(f"built {path} ({len(labels):,} images): {provenance}", flush=True)
    return path


def _digits_arrays(split):
    """scikit-learn's bundled 8x8 digits (framed into 32x32 by to_chw32), fixed split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images[..., None] * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_SIZE,
                                           stratify=labels, random_state=0)
    idx = idx_train if split == "train" else idx_test
    provenance = {"dataset": "digits", "split": split, "n": int(len(idx)),
                  "description": "scikit-learn 8x8 digits (fixed stratified split, seed 0)"}
    return images[idx], labels[idx], provenance


def _synthetic_arrays(split):
    """Class-dependent random patterns plus noise: learnable, and clearly not real data."""
    templates = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(1234))
    templates = F.interpolate(templates, size=(32, 32), mode="nearest")
    n = SYNTHETIC_SIZES[split]
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    x = 0.5 + 0.5 * (templates[labels] - 0.5) + 0.15 * torch.randn(n, 3, 32, 32, generator=g)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    provenance = {"dataset": "synthetic", "split": split, "n": n,
                  "description": "SYNTHETIC patterns (not real data)"}
    return images, labels.numpy().astype(np.int64), provenance


def to_chw32(images, framing="mnist"):
    """uint8 N,H,W,C -> uint8 tensor N,C,32,32, framed as FRAMINGS describes."""
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; choose from {', '.join(FRAMINGS)}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")
    h, w = x.shape[-2:]
    if h > 32 or w > 32:
        raise ValueError(f"images of {h}x{w} are larger than 32x32")
    if framing == "fill" and (h, w) != (32, 32):
        return _resize(x, 32)
    if h < DIGIT_BOX and w < DIGIT_BOX:  # a digit that fills its small frame: into MNIST's box
        x, h, w = _resize(x, DIGIT_BOX), DIGIT_BOX, DIGIT_BOX
    top, left = (32 - h) // 2, (32 - w) // 2
    return F.pad(x, (left, 32 - w - left, top, 32 - h - top))


def _resize(x, size):
    """Bilinear upscaling of uint8 images to size x size."""
    x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def default_val_size(n_train):
    return min(5000, n_train // 10)


def build_splits(name, data_root="data", download=True, val_size=None, train_subset=None,
                 augment=True, seed=0, jitter=None, framing="mnist", subset_at_most=False):
    """Train (augmented if asked) / validation (carved from train) / test datasets.

    `framing` places small digits in the 32x32 frame (see FRAMINGS). `jitter` overrides
    the dataset's colour-jitter strength (None keeps its Domain's); only datasets whose
    augmentation flips (the natural-image ones) accept a non-zero value.

    The validation split is a seeded, stratified draw from the train file, so the
    class-sorted CIFAR-10 copy gives a balanced one; `train_subset` then takes a seeded
    subset of what remains (for small-target fine-tuning and demo runs; with
    `subset_at_most` it is a cap, so a smaller dataset is used whole).
    """
    from sklearn.model_selection import train_test_split

    aug = dict(DOMAINS[name].augment) if augment else None
    if aug is not None and jitter is not None:
        if jitter and not aug["flip"]:
            raise ValueError(f"colour jitter is not label-preserving augmentation for {name}; "
                             "use it on cifar10 only")
        aug["jitter"] = float(jitter)
    images, labels, prov_train = load_arrays(name, "train", data_root, download)
    test_images, test_labels, prov_test = load_arrays(name, "test", data_root, download)

    n, classes = len(labels), len(np.unique(labels))
    val_size = default_val_size(n) if val_size is None else int(val_size)
    if not classes <= val_size <= n - classes:  # stratified: every class on both sides
        raise ValueError(f"--val-size must be between {classes} and {n - classes} for {name} "
                         f"({n} training images, {classes} classes, each kept on both sides of "
                         f"the split), got {val_size}")
    train_idx, val_idx = train_test_split(np.arange(n), test_size=val_size, stratify=labels,
                                          random_state=seed)
    if train_subset is not None and subset_at_most:  # a cap (--demo), not a demand
        train_subset = min(train_subset, len(train_idx))
    if train_subset is not None:
        if not 0 < train_subset <= len(train_idx):
            raise ValueError(f"--train-subset must be between 1 and {len(train_idx)} for "
                             f"{name} (after the validation split), got {train_subset}")
        rng = np.random.default_rng(seed)
        train_idx = np.sort(rng.choice(train_idx, size=train_subset, replace=False))

    all_images = to_chw32(images, framing)
    all_labels = torch.from_numpy(labels)
    splits = Splits(
        train=ArrayDataset(all_images[train_idx], all_labels[train_idx], name, aug),
        val=ArrayDataset(all_images[val_idx], all_labels[val_idx], name),
        test=ArrayDataset(to_chw32(test_images, framing), torch.from_numpy(test_labels), name),
    )
    splits.info = {
        **_info(name, [prov_train, prov_test], framing),
        "mean": list(DOMAINS[name].mean), "std": list(DOMAINS[name].std),
        "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_labels)},
        "split": {"seed": seed, "val_size": val_size, "train_subset": train_subset},
        "augment": aug,
    }
    return splits


FRAMING_TEXT = {"mnist": "digits in a 20-px box in 32x32", "fill": "digits scaled to fill 32x32"}


def _info(name, files, framing):
    """What every output says about the data: the dataset, its provenance, its framing, its
    classes."""
    description = files[0]["description"]
    if DOMAINS[name].framed:
        description += f", {FRAMING_TEXT[framing]}"
    return {"dataset": name, "synthetic": DOMAINS[name].synthetic, "description": description,
            "framing": framing, "class_names": list(DOMAINS[name].classes), "files": files}


def build_eval_split(name, split="test", data_root="data", download=True, val_size=None, seed=0,
                     framing="mnist"):
    """One unaugmented split ('train', 'val' or 'test') for evaluation."""
    if split in ("train", "val"):
        splits = build_splits(name, data_root, download, val_size=val_size, augment=False,
                              seed=seed, framing=framing)
        return getattr(splits, split), splits.info
    images, labels, prov = load_arrays(name, "test", data_root, download)
    dataset = ArrayDataset(to_chw32(images, framing), torch.from_numpy(labels), name)
    return dataset, _info(name, [prov], framing)
