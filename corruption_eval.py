"""eval.py's `corruptions` component: one model scored on CIFAR-10-C or MNIST-C, built here from
the split it is evaluated on (`corruptions`), on the same seeded image sample for every model.

Writes, per corruption and severity, the accuracy with its Wilson interval and each image's
outcome (so two models compare by McNemar's test on the same corrupted images), the mean
corruption accuracy with an interval over images, its drop from the same images' clean
accuracy, the accuracy per family, and a corruption x severity heatmap. The corrupted set is
built once per (recipe, source split, sample, seed) and cached beside the data like MNIST-M.
"""

import hashlib
import os
import time

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

import corruptions
import datasets
import plots
import run_contract
from attacks import eval_mode

# Images per corruption and severity in eval.py's default (docs/evaluation.md: the MDE table
# this was chosen from): a cell's Wilson half-width is at most 3.1 points, a family's drop
# (3-5 corruptions x 5 severities on the same images) resolves ~2 points between two models.
DEFAULT_SAMPLES = 1000


def benchmark_for(dataset):
    """MNIST-C for the greyscale digit domains, CIFAR-10-C for colour images (natural images,
    their synthetic stand-in, and the colour digit domains, whose channels MNIST-C would lose)."""
    domain = datasets.DOMAINS[dataset]
    return "mnist-c" if domain.digit and not domain.colour else "cifar10-c"


def _cache_path(benchmark, images, source, seed, data_root):
    key = hashlib.sha256(f"{corruptions.recipe()}|{benchmark}|{source}|{seed}".encode()
                         + images.tobytes()).hexdigest()[:16]
    folder = os.path.join(datasets.cache_dir(data_root), "corrupted")
    return os.path.join(folder, f"{benchmark}-{len(images)}-{key}.npz")


def corrupted_set(benchmark, images, source, seed, data_root):
    """{(corruption, severity): uint8 images} for every released, built cell of `benchmark`,
    read from the cache where this recipe already built it for these images, else built and
    cached. Returns (the set, seconds spent building, 0 where it was read)."""
    path = _cache_path(benchmark, images, source, seed, data_root)
    cells = corruptions.cells(benchmark)
    if os.path.exists(path):
        with np.load(path) as f:
            return {(n, s): f[f"{n}_s{s}"] for n, s in cells}, 0.0
    start = time.time()
    built = {(n, s): corruptions.corrupt(benchmark, n, s, images, seed)
             for n, s in tqdm(cells, desc=f"building {benchmark}", leave=False, disable=None)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **{f"{n}_s{s}": x for (n, s), x in built.items()})
    os.replace(tmp, path)
    print(f"built {path} ({len(cells)} corrupted copies of {len(images):,} images, "
          f"{time.time() - start:.0f}s)", flush=True)
    return built, time.time() - start


def _correct(model, images, labels, device, batch_size):
    """Per-image correctness of `model` on uint8 (N, H, W, C) images."""
    hits = []
    with eval_mode(model), torch.no_grad():
        for lo in range(0, len(images), batch_size):
            x = torch.from_numpy(images[lo:lo + batch_size]).permute(0, 3, 1, 2).float().div_(255)
            x = x.expand(-1, 3, -1, -1).to(device, memory_format=torch.channels_last)
            hits.append((model(x).argmax(1).cpu() == labels[lo:lo + batch_size]).numpy())
    return np.concatenate(hits) if hits else np.zeros(0, bool)


def mean_interval(per_image):
    """The mean of per-image accuracies over the cells, with a t interval over the images (the
    cells share their images, so their outcomes are not independent draws)."""
    m = per_image.mean(axis=0)
    if len(m) < 2 or m.std(ddof=1) == 0:
        return float(m.mean()), [float(m.mean())] * 2
    half = stats.t.ppf(0.975, len(m) - 1) * m.std(ddof=1) / np.sqrt(len(m))
    return float(m.mean()), [float(max(0.0, m.mean() - half)), float(min(1.0, m.mean() + half))]


def score(ctx):
    """The component: every built corruption at its released severities, on the first
    --corruption-samples images of the seeded order the attacks use."""
    a = ctx.args
    bench = corruptions.BENCHMARKS[benchmark_for(a.dataset)]
    n = len(ctx.order) if a.corruption_samples == 0 else min(a.corruption_samples, len(ctx.order))
    index = np.asarray(ctx.order[:n])
    images = ctx.dataset.images[torch.as_tensor(index)].permute(0, 2, 3, 1).contiguous().numpy()
    labels = ctx.dataset.labels[torch.as_tensor(index)]
    data = ctx.results["data"]
    source = f"{data['files'][0].get('sha256', data['description'])}|{data['framing']}"
    start = time.time()
    built, build_seconds = corrupted_set(bench.name, images, source, a.seed, a.data_root)
    clean = _correct(ctx.model, images, labels, ctx.device, a.batch_size)
    ctx.per_image["corruption_clean"] = (index, clean)
    acc, ci, hits = {}, {}, []
    for (name, sev), x in tqdm(built.items(), desc="corruptions", leave=False, disable=None):
        correct = _correct(ctx.model, x, labels, ctx.device, a.batch_size)
        ctx.per_image[f"corruption_{name}_s{sev}"] = (index, correct)
        hits.append(correct)
        k = run_contract.accuracy("a", correct.sum(), n)
        acc.setdefault(name, {})[str(sev)], ci.setdefault(name, {})[str(sev)] = k["a"], k["a_ci95"]
    mean, mean_ci = mean_interval(np.array(hits))
    out = run_contract.accuracy("corruption_clean_accuracy", clean.sum(), n)
    out.update(corruption_mean_accuracy=mean, corruption_mean_accuracy_ci95=mean_ci,
               corruption_mean_accuracy_n=n)
    per_corruption = {c: float(np.mean(list(v.values()))) for c, v in acc.items()}
    families = {}
    for c, value in per_corruption.items():
        families.setdefault(bench.corruptions[c].family, []).append(value)
    out["corruptions"] = {
        "benchmark": bench.name, "description": bench.description, "n": n, "seed": a.seed,
        "accuracy": acc, "ci95": ci, "per_corruption": per_corruption,
        "family": {c: bench.corruptions[c].family for c in acc},
        "family_accuracy": {f: float(np.mean(v)) for f, v in families.items()},
        "drop": float(clean.mean() - mean),
        "not_built": {c: x.missing for c, x in bench.corruptions.items() if x.missing},
        "replaced": {c: x.replaced for c, x in bench.corruptions.items() if x.replaced and not x.missing},
        "recipe": corruptions.recipe(), "build_seconds": round(build_seconds, 1),
        "seconds": round(time.time() - start, 1)}
    plots.plot_corruption_heatmap(acc, float(clean.mean()), ctx.figure("corruptions"),
                                  f"{ctx.title}\n{bench.name}: accuracy (%) on {n:,} images per cell")
    print(f"{bench.name}: mean corruption accuracy {100 * mean:.1f}% "
          f"[{100 * mean_ci[0]:.1f}, {100 * mean_ci[1]:.1f}] over {len(built)} cells of {n:,} images "
          f"(clean on them {100 * clean.mean():.1f}%)", flush=True)
    return out, {"corruptions": n}
