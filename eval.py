"""Evaluate a checkpoint: robustness, calibration and diagnostics, every number and figure.

    python eval.py --checkpoint checkpoints/cifar10_standard/best.pth --dataset cifar10 \
        --data-root ../shared/data --out checkpoints/cifar10_standard/eval

The model is rebuilt from the checkpoint alone, and may be evaluated on any dataset
(e.g. an SVHN model on MNIST). Writes PREFIX.metrics.json (every number, plus attack
sanity checks) and one PREFIX.<figure>.png per figure (named as in the report).
"""

import argparse
import math
import os
import sys
import textwrap
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from tqdm import tqdm

import corruption_eval
import datasets
import metrics
import plots
import run_contract
import utils
from attacks import ATTACKS, evaluated, pgd_step, run_attack

COMPONENTS = ("umap", "grid", "confusion", "prf1", "calibration", "coverage", "topk",
              "attacks", "autoattack", "sweep", "iter-sweep", "corruptions")
AUTOATTACK_STEPS = 100  # APGD-CE, APGD-T and FAB-T iterations in Croce & Hein's standard version
SQUARE_QUERIES = 5000  # Square's queries there: 50 per APGD iteration
# AutoAttack's ensembles (Croce & Hein 2020), as torchattacks.AutoAttack builds them.
AUTOATTACK_VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
                       "fast": ("apgd-ce", "apgd-t")}


def _eps_list(text):
    values = [utils.pixel_value(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("the eps list is empty; give e.g. 0,2/255,8/255")
    return sorted(set(values))


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more integers >= 1")
    return sorted(set(values))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=utils.HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a train.py checkpoint (best.pth or last.pth)")
    p.add_argument("--dataset", required=True, choices=tuple(datasets.DOMAINS),
                   help="dataset to evaluate on (any of them, whatever the model was trained on)")
    p.add_argument("--data-root", default=datasets.default_data_root(),
                   help=datasets.DATA_ROOT_HELP)
    p.add_argument("--no-download", action="store_true", help="never download a missing dataset")
    p.add_argument("--framing", choices=datasets.FRAMINGS, default="mnist",
                   help=datasets.FRAMING_HELP)
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="split to evaluate (val is carved from train as in training)")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.metrics.json, PREFIX.*.png")
    p.add_argument("--name", default=None,
                   help="model name for titles (default: the checkpoint's folder name)")
    p.add_argument("--components", nargs="+", choices=COMPONENTS, default=list(COMPONENTS),
                   metavar="NAME",
                   help="components to run, each writing PREFIX.<figure>.png: " + "; ".join(
                       f"{name}: {', '.join(f.removesuffix('.png') for f in files) or 'numbers only'}"
                       for name, files in COMPONENT_FILES.items()) + " (default: all)")
    p.add_argument("--batch-size", type=utils.positive_int, default=256, help="evaluation batch size")
    p.add_argument("--eps", type=utils.pixel_value, default=8 / 255,
                   help="attack radius, pixel units (default: 8/255)")
    p.add_argument("--alpha", type=utils.pixel_value, default=None,
                   help="PGD step size, pixel units (default: 2.5 eps / iters, 2/255 for PGD-10 "
                        "at 8/255)")
    p.add_argument("--iters", type=utils.positive_int, default=10, help="PGD iterations")
    p.add_argument("--restarts", type=utils.positive_int, default=1,
                   help="PGD random restarts (each image keeps its worst)")
    p.add_argument("--autoattack-samples", type=utils.nonnegative_int, default=1000,
                   help="test images for AutoAttack, the first N of the seeded order the "
                        "attacks use (0: all)")
    p.add_argument("--autoattack-version", choices=tuple(AUTOATTACK_VERSIONS), default="standard",
                   help="standard: APGD-CE, APGD-T, FAB-T, Square; fast: APGD-CE, APGD-T "
                        "(for CPU budgets)")
    p.add_argument("--autoattack-steps", type=utils.positive_int, default=AUTOATTACK_STEPS,
                   help="iterations of APGD-CE, APGD-T and FAB-T, and Square's queries in "
                        f"proportion (the paper's standard: {AUTOATTACK_STEPS} and "
                        f"{SQUARE_QUERIES}; fewer is a weaker attack, for smoke tests only)")
    p.add_argument("--corruption-samples", type=utils.nonnegative_int,
                   default=corruption_eval.DEFAULT_SAMPLES,
                   help="test images per corruption and severity (CIFAR-10-C for natural images, "
                        "MNIST-C for digits), the first N of the seeded order the attacks use (0: all)")
    p.add_argument("--sweep-epsilons", type=_eps_list,
                   default=_eps_list("0,1/255,2/255,4/255,8/255,16/255,32/255,64/255"),
                   metavar="LIST", help="comma-separated eps values for the robustness sweep "
                   "(PGD step there is eps * alpha / eps_main) (default: 0,1/255,...,64/255)")
    p.add_argument("--pgd-iters-list", type=_int_list, default=_int_list("1,2,5,10,20,50"),
                   metavar="LIST", help="PGD iterations for the iteration sweep (default: 1,2,5,10,20,50)")
    p.add_argument("--topk-list", type=_int_list, default=_int_list("1,2,3,5"), metavar="LIST",
                   help="k values for top-k accuracy (default: 1,2,3,5)")
    p.add_argument("--ece-bins", type=utils.positive_int, default=10, help="equal-width ECE bins")
    p.add_argument("--coverage-points", type=_coverage_list, default=_coverage_list("0.8,0.9"),
                   metavar="LIST", help="coverages for selective accuracy (default: 0.8,0.9)")
    p.add_argument("--max-batches", type=utils.positive_int, default=8,
                   help="batches for the attacks at --eps (clean metrics always use the whole split)")
    p.add_argument("--sweep-max-batches", type=utils.positive_int, default=2,
                   help="batches for the eps sweep")
    p.add_argument("--iter-sweep-max-batches", type=utils.positive_int, default=2,
                   help="batches for the PGD-iteration sweep")
    p.add_argument("--umap-samples", type=utils.positive_int, default=2000,
                   help="test images in the feature projection")
    p.add_argument("--grid-samples", type=utils.positive_int, default=8, help="columns of the sample grid")
    p.add_argument("--val-size", type=utils.positive_int, default=None,
                   help="validation size for temperature fitting (default: as in the checkpoint's run)")
    p.add_argument("--seed", type=int, default=0, help="seed for attacks' random starts and noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return p


def _coverage_list(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers")
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: coverages must be in (0, 1]")
    return values


# ----------------------------------------------------------------------------- helpers

def _batches(loader, max_batches, desc):
    total = min(len(loader), max_batches) if max_batches else len(loader)
    for i, batch in enumerate(tqdm(loader, total=total, desc=desc, leave=False, disable=None)):
        if max_batches and i >= max_batches:
            return
        yield batch


@contextmanager
def timed(timings, name):
    t0 = time.time()
    yield
    timings[name] = round(time.time() - t0, 2)


def _to(x, device):
    return x.to(device, memory_format=torch.channels_last)


class AttackRecord:
    """Largest perturbation and pixel range seen over every adversarial batch."""

    def __init__(self):
        self.max_perturbation = {}
        self.low, self.high = np.inf, -np.inf

    def add(self, name, x, x_adv):
        delta = (x_adv - x).abs().max().item()
        self.max_perturbation[name] = max(self.max_perturbation.get(name, 0.0), delta)
        self.low = min(self.low, x_adv.min().item())
        self.high = max(self.high, x_adv.max().item())


def attack_accuracies(model, loader, device, eps, alpha, iters, max_batches, seed, record=None,
                      names=None, desc="attacks", restarts=1, per_image=None):
    """Correct counts (clean and under each attack `names`, default: the registry's evaluated
    ones) on the same first `max_batches` batches, and their size. Every attack draws its
    random starts from a generator seeded with `seed`, so the same call gives the same
    numbers in every component. With a dict `per_image`, each name's per-image outcomes (in
    the loader's order) are stored in it too."""
    model.eval()
    names = evaluated() if names is None else tuple(names)
    generators = {name: torch.Generator().manual_seed(seed) for name in names}
    hits = {name: [] for name in ("clean",) + names}
    for x, y in _batches(loader, max_batches, desc):
        x, y = _to(x, device), y.to(device)
        with torch.no_grad():
            hits["clean"].append((model(x).argmax(1) == y).cpu())
        for name in names:
            x_adv = run_attack(name, model, x, y, eps, alpha, iters, restarts, generators[name])
            if record is not None:
                record.add(name, x, x_adv)
            with torch.no_grad():
                hits[name].append((model(x_adv).argmax(1) == y).cpu())
    hits = {name: torch.cat(h).numpy() if h else np.zeros(0, bool) for name, h in hits.items()}
    if per_image is not None:
        per_image.update(hits)
    return {name: int(h.sum()) for name, h in hits.items()}, len(hits["clean"])


# ----------------------------------------------------------------------------- components
# Each component takes the evaluation context, writes its figure, and returns its numbers.

@dataclass
class Context:
    model: torch.nn.Module
    dataset: datasets.ArrayDataset
    loader: torch.utils.data.DataLoader  # seeded random order; attacks use its first batches
    order: list  # that order: AutoAttack takes its first --autoattack-samples images
    device: torch.device
    args: argparse.Namespace
    title: str
    class_names: list
    val_set: datasets.ArrayDataset = None
    pred: dict = None  # component 3, reused by 4-8
    results: dict = None  # the numbers so far (the sweep shows AutoAttack's beside PGD's)
    record: "AttackRecord" = field(default_factory=lambda: AttackRecord())
    per_image: dict = field(default_factory=dict)  # name -> (split indices, correct or not)

    def path(self, suffix):
        return f"{self.args.out}.{suffix}"

    def figure(self, component, i=0):
        """Where `component` draws its i-th figure (COMPONENT_FILES names each file once)."""
        return self.path(COMPONENT_FILES[component][i])

    @cached_property
    def report(self):
        """Confusion matrix and per-class scores, computed once for components 4 and 5."""
        return metrics.per_class_report(self.pred["labels"], self.pred["preds"],
                                        len(self.class_names))


def collect_predictions(model, loader, device):
    """Component 3: logits, probabilities, predictions and targets over the whole split."""
    logits, labels = utils.predict(model, loader, device)
    probs = metrics.softmax(logits)
    return {"logits": logits.numpy(), "labels": labels.numpy(), "probs": probs,
            "preds": probs.argmax(1), "confidence": probs.max(1),
            "correct": probs.argmax(1) == labels.numpy()}


def feature_projection(ctx):
    """Component 1: UMAP of penultimate features (PCA only if UMAP fails)."""
    g = torch.Generator().manual_seed(ctx.args.seed)
    idx = torch.randperm(len(ctx.dataset), generator=g)[:ctx.args.umap_samples].sort().values
    feats, labels = [], []
    with torch.no_grad():
        for chunk in idx.split(512):
            x, y = ctx.dataset[chunk.tolist()]
            feats.append(ctx.model(_to(x, ctx.device), return_features=True)[1].float().cpu())
            labels.append(y)
    feats, labels = torch.cat(feats).numpy(), torch.cat(labels).numpy()
    try:
        points = _umap(feats, ctx.args.seed)
        method, error = "UMAP", None
    except Exception as exc:  # umap-learn missing or failing: the title says PCA
        from sklearn.decomposition import PCA
        points = PCA(n_components=2, random_state=ctx.args.seed).fit_transform(feats)
        method, error = "PCA (UMAP failed)", f"{type(exc).__name__}: {exc}"
        print(f"WARNING: UMAP failed ({error}); the projection uses PCA", flush=True)
    plots.plot_feature_projection(points, labels, ctx.class_names, method, ctx.figure("umap"),
                                  ctx.title)
    return {"feature_projection": {"method": method, "error": error}}, {"umap": len(labels)}


def _cache_umap_compiles():
    """Keep UMAP's numba compiles on disk, as `cache=True` would have. umap-learn 0.5 jits
    these three without it, so every process that projects paid ~9 s of compiling (2-core
    Xeon), once per evaluation in the pipeline; with the cache only the first does. The
    cache sits where numba puts it (`__pycache__` beside umap, else the user cache, or
    $NUMBA_CACHE_DIR) and is rebuilt when umap's source changes. The results are the same."""
    import umap.layouts
    import umap.umap_

    for jitted in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths,
                   getattr(umap.layouts, "_nb_optimize_layout_euclidean_single_epoch", None)):
        if hasattr(jitted, "enable_caching"):  # a numba dispatcher, as in umap-learn 0.5.x
            try:
                jitted.enable_caching()
            except RuntimeError:  # no writable place for a cache: compile as before
                return


def _umap(feats, seed, n_neighbors=15):
    """UMAP to 2-D on exact neighbours from scikit-learn.

    Handing UMAP the k-NN graph skips its numba neighbour search, whose one-off JIT compile
    takes ~15 s per process on a small CPU (longer than the projection itself); for the
    sizes used here (<= a few thousand points) exact neighbours cost well under a second.
    """
    import umap
    from sklearn.neighbors import NearestNeighbors

    _cache_umap_compiles()
    n_neighbors = min(n_neighbors, len(feats) - 1)  # a handful of points still projects
    dists, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(feats).kneighbors(feats)
    knn = (np.ascontiguousarray(indices), np.ascontiguousarray(dists, dtype=np.float32))
    with warnings.catch_warnings():  # only UMAP.transform needs its own search index
        warnings.filterwarnings("ignore", message="precomputed_knn.*search_index")
        return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed, n_jobs=1,
                         precomputed_knn=knn).fit_transform(feats)


def sample_grid(ctx):
    """Component 2: clean / PGD / random-noise tiles with true and predicted labels."""
    args = ctx.args
    g = torch.Generator().manual_seed(args.seed)
    x, y = ctx.dataset[torch.randperm(len(ctx.dataset), generator=g)[:args.grid_samples].tolist()]
    x, y = _to(x, ctx.device), y.to(ctx.device)
    rows = {"clean": x,
            f"PGD-{args.iters} {args.eps * 255:.0f}/255":
                run_attack("pgd", ctx.model, x, y, args.eps, args.alpha, args.iters,
                           generator=torch.Generator().manual_seed(args.seed)),
            f"noise ±{args.eps * 255:.0f}/255":
                run_attack("noise", ctx.model, x, y, args.eps,
                           generator=torch.Generator().manual_seed(args.seed))}
    with torch.no_grad():
        preds = {k: ctx.model(v).argmax(1).tolist() for k, v in rows.items()}
    plots.plot_sample_grid({k: v.cpu() for k, v in rows.items()}, y.tolist(), preds,
                           ctx.class_names, ctx.figure("grid"), ctx.title)
    return {}, {"grid": len(y)}


def confusion(ctx):
    """Component 4: row-normalized confusion matrix and per-class accuracy."""
    report = ctx.report
    plots.plot_confusion(report["confusion_matrix_normalized"], ctx.class_names,
                         ctx.figure("confusion"), ctx.title)
    plots.plot_per_class_accuracy(report["per_class_accuracy"], ctx.class_names,
                                  ctx.pred["correct"].mean(), ctx.figure("confusion", 1), ctx.title)
    cm = report["confusion_matrix"]
    return {"confusion_matrix": cm.tolist(),
            "per_class_accuracy": report["per_class_accuracy"].tolist(),
            "per_class_accuracy_n": cm.sum(1).tolist(),
            "per_class_accuracy_ci95": [metrics.wilson_ci(cm[c, c], cm[c].sum()) if cm[c].sum()
                                        else [0.0, 1.0] for c in range(len(cm))]}, {}


def precision_recall_f1(ctx):
    """Component 5: per-class and macro precision / recall / F1 (scikit-learn)."""
    report = ctx.report
    macro = {"precision": report["macro_precision"], "recall": report["macro_recall"],
             "F1": report["macro_f1"]}
    plots.plot_prf1(report["precision"], report["recall"], report["f1"], ctx.class_names, macro,
                    ctx.figure("prf1"), ctx.title)
    return {"macro_precision": macro["precision"], "macro_recall": macro["recall"],
            "macro_f1": macro["F1"],
            "per_class": {"class_names": ctx.class_names, **{
                k: report[k].tolist() for k in ("precision", "recall", "f1", "support")}}}, {}


def calibration(ctx):
    """Component 6: ECE and reliability diagram, before and after temperature scaling
    (temperature fitted on the validation split)."""
    pred, bins_n = ctx.pred, ctx.args.ece_bins
    val = collect_predictions(ctx.model, datasets.batch_loader(ctx.val_set, ctx.args.batch_size),
                              ctx.device)
    temperature = metrics.fit_temperature(val["logits"], val["labels"])
    scaled = metrics.softmax(pred["logits"], temperature)
    ece = metrics.expected_calibration_error(pred["probs"], pred["labels"], bins_n)
    ece_t = metrics.expected_calibration_error(scaled, pred["labels"], bins_n)
    bins = metrics.calibration_bins(pred["confidence"], pred["correct"], bins_n)
    bins_t = metrics.calibration_bins(scaled.max(1), scaled.argmax(1) == pred["labels"], bins_n)
    plots.plot_calibration(bins, ece, bins_t, ece_t, temperature, ctx.figure("calibration"),
                           ctx.title)
    return {"ece": ece, "ece_temperature_scaled": ece_t, "temperature": temperature,
            "calibration_bins": {k: np.asarray(v).tolist() for k, v in bins.items()}}, \
        {"temperature_fit": len(val["labels"])}


def confidence_coverage(ctx):
    """Component 7: risk-coverage curve, AURC and selective accuracy at chosen coverages."""
    conf, correct = ctx.pred["confidence"], ctx.pred["correct"]
    aurc = metrics.aurc(conf, correct)
    selective = {str(c): metrics.selective_accuracy(conf, correct, c)
                 for c in ctx.args.coverage_points}
    kept = {c: max(1, math.ceil(float(c) * len(conf) - 1e-9)) for c in selective}
    plots.plot_confidence_coverage(metrics.risk_coverage(conf, correct), aurc, selective,
                                   ctx.figure("coverage"), ctx.title)
    return {"aurc": aurc, "selective_accuracy": selective, "selective_accuracy_n": kept,
            "selective_accuracy_ci95": {c: metrics.wilson_ci(round(v * kept[c]), kept[c])
                                        for c, v in selective.items()}}, {}


def topk(ctx):
    """Component 8: top-k accuracy."""
    result = {str(k): v for k, v in metrics.topk_accuracy(
        ctx.pred["logits"], ctx.pred["labels"], ctx.args.topk_list).items()}
    n = len(ctx.pred["labels"])
    intervals = {k: metrics.wilson_ci(round(v * n), n) for k, v in result.items()}
    plots.plot_topk(result, ctx.figure("topk"), ctx.title)
    return {"topk": result, "topk_n": n, "topk_ci95": intervals}, {}


def attacks_at_eps(ctx):
    """The accuracy under each evaluated attack at --eps, on the first --max-batches batches."""
    a = ctx.args
    hits = {}
    correct, n = attack_accuracies(ctx.model, ctx.loader, ctx.device, a.eps, a.alpha, a.iters,
                                   a.max_batches, a.seed, ctx.record, restarts=a.restarts,
                                   per_image=hits)
    index = np.asarray(ctx.order[:n])
    ctx.per_image.update({("attack_subset_clean" if name == "clean" else name): (index, h)
                          for name, h in hits.items()})
    out = run_contract.accuracy("attack_subset_clean_accuracy", correct["clean"], n)
    for name in evaluated():
        out.update(run_contract.accuracy(f"{name}_accuracy", correct[name], n))
    print(f"at eps {a.eps * 255:.1f}/255 on {n} images: clean {_pm(out, 'attack_subset_clean')}  "
          + "  ".join(f"{ATTACKS[name].title(a.iters)} {_pm(out, name)}" for name in evaluated()),
          flush=True)
    return out, {"attacks": n}


def _pm(result, name):
    """'27.3 ± 2.7%': the accuracy `name` of `result` with its interval."""
    return utils.plus_minus(result[f"{name}_accuracy"], result[f"{name}_accuracy_ci95"]) + "%"


def square_queries(steps):
    """Square's query budget beside `steps` APGD iterations: the paper's 5,000 at 100."""
    return max(1, SQUARE_QUERIES * steps // AUTOATTACK_STEPS)


def autoattack_ensemble(model, eps, version, n_classes, seed, steps=None):
    """[(name, attack)] of AutoAttack's `version`, built from torchattacks' attacks with the
    original AutoAttack's settings: 100 iterations, 9 target classes, 5,000 Square queries.
    Fewer `steps` (a smoke test) cut Square's queries in proportion, so that a reduced run
    is reduced throughout: 2 steps with Square's 5,000 queries took 250 s on 2 images.

    torchattacks.AutoAttack builds the same attacks but leaves APGD, APGD-T and FAB at the
    library's default of 10 iterations, a weaker attack than the one the paper and
    RobustBench report; tests/test_eval.py checks that ours differs from it only there."""
    import torchattacks

    common = {"eps": eps, "norm": "Linf", "seed": seed, "n_restarts": 1}
    steps = {"steps": steps or AUTOATTACK_STEPS}
    make = {
        "apgd-ce": lambda: torchattacks.APGD(model, loss="ce", **steps, **common),
        "apgd-t": lambda: torchattacks.APGDT(model, n_classes=n_classes, **steps, **common),
        "fab-t": lambda: torchattacks.FAB(model, multi_targeted=True, n_classes=n_classes,
                                          **steps, **common),
        "square": lambda: torchattacks.Square(model, n_queries=square_queries(steps["steps"]),
                                              **common),
    }
    return [(name, make[name]()) for name in AUTOATTACK_VERSIONS[version]]


def autoattack(ctx):
    """AutoAttack (torchattacks' port of Croce & Hein 2020) on a seeded sample: each attack
    of the ensemble runs on the images every earlier one failed on, as AutoAttack does;
    robust accuracy is recorded after each. An attack that raises is reported, and the
    accuracy after it stays an upper bound; nothing is dropped silently."""
    a = ctx.args
    n = len(ctx.dataset) if a.autoattack_samples == 0 else min(a.autoattack_samples, len(ctx.dataset))
    # Standard (NCHW) layout, never channels-last: torchattacks 3.5.1's FAB .view()s the
    # input gradient, which keeps a channels-last input's layout, and fails ("view size is
    # not compatible with input tensor's size and stride"). The model may be channels-last.
    x_all, y_all = ctx.dataset[ctx.order[:n]]
    x_all = x_all.contiguous()
    model = ctx.model.eval()
    start = time.time()
    robust = torch.zeros(n, dtype=torch.bool)
    pgd_hits = torch.zeros(n, dtype=torch.bool)
    pgd_gen = torch.Generator().manual_seed(a.seed)
    for lo in range(0, n, a.batch_size):
        x, y = x_all[lo:lo + a.batch_size].to(ctx.device), y_all[lo:lo + a.batch_size].to(ctx.device)
        with torch.no_grad():
            robust[lo:lo + len(y)] = (model(x).argmax(1) == y).cpu()
        x_pgd = run_attack("pgd", ctx.model, _to(x, ctx.device), y, a.eps, a.alpha, a.iters,
                           a.restarts, pgd_gen)
        with torch.no_grad():
            pgd_hits[lo:lo + len(y)] = (ctx.model(x_pgd).argmax(1) == y).cpu()
    pgd_correct = int(pgd_hits.sum())
    index = np.asarray(ctx.order[:n])
    ctx.per_image.update(autoattack_clean=(index, robust.numpy().copy()),
                         autoattack_pgd=(index, pgd_hits.numpy()))
    per_attack, errors = {"clean": robust.float().mean().item()}, {}
    n_classes = len(ctx.class_names)
    ensemble = autoattack_ensemble(model, a.eps, a.autoattack_version, n_classes, a.seed,
                                   a.autoattack_steps)
    for name, attack in ensemble:
        alive = robust.nonzero().flatten()
        t0 = time.time()
        try:
            chunks = alive.split(a.batch_size) if len(alive) else ()  # none left to attack
            for chunk in tqdm(chunks, desc=f"AutoAttack {name}", leave=False, disable=None):
                x, y = x_all[chunk].to(ctx.device), y_all[chunk].to(ctx.device)
                x_adv = attack(x, y)
                ctx.record.add(f"autoattack/{name}", x, x_adv)
                with torch.no_grad():
                    robust[chunk] &= (model(x_adv).argmax(1) == y).cpu()
        except Exception as exc:  # e.g. a library bug on some inputs: say so, keep the rest
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"WARNING: AutoAttack's {name} failed ({errors[name]}); the AutoAttack "
                  "accuracy is an upper bound without it", flush=True)
        per_attack[name] = robust.float().mean().item()
        print(f"AutoAttack {name}: robust accuracy {100 * per_attack[name]:.2f}% on {n} images "
              f"({time.time() - t0:.0f}s)", flush=True)
    ctx.per_image["autoattack"] = (index, robust.numpy())
    square = dict(ensemble).get("square")  # its budget as run, for the record
    out = run_contract.accuracy("autoattack_accuracy", int(robust.sum()), n)
    out.update(run_contract.accuracy("autoattack_pgd_accuracy", pgd_correct, n))
    out["autoattack"] = {"version": a.autoattack_version, "n": n, "eps": a.eps,
                         "steps": a.autoattack_steps,
                         "attacks": list(AUTOATTACK_VERSIONS[a.autoattack_version]),
                         "square_queries": square.n_queries if square else None,
                         "per_attack": per_attack, "errors": errors, "complete": not errors,
                         "pgd_same_sample": {"iters": a.iters, "alpha": a.alpha,
                                             "accuracy": pgd_correct / n},
                         "seconds": round(time.time() - start, 1)}
    print(f"AutoAttack ({a.autoattack_version}) at eps {a.eps * 255:.1f}/255: "
          f"{_pm(out, 'autoattack')} on {n} images; PGD-{a.iters} on the same images "
          f"{_pm(out, 'autoattack_pgd')}" + (f"; FAILED: {', '.join(errors)}" if errors else ""),
          flush=True)
    return out, {"autoattack": n}


def robustness_sweep(ctx):
    """Component 9: clean / FGSM / PGD / noise accuracy for each eps of the sweep, with
    95% intervals; the 'clean' line is the accuracy on the attacked images."""
    a = ctx.args
    out = {"epsilons": a.sweep_epsilons, "alphas": sweep_alphas(a), "iters": a.iters,
           **{name: [] for name in evaluated()}, **{f"{name}_ci95": [] for name in evaluated()}}
    for eps, alpha in zip(a.sweep_epsilons, out["alphas"]):
        correct, n = attack_accuracies(ctx.model, ctx.loader, ctx.device, eps, alpha, a.iters,
                                       a.sweep_max_batches, a.seed, restarts=a.restarts,
                                       desc=f"sweep eps {eps * 255:.0f}/255")
        for name in evaluated():
            out[name].append(correct[name] / n)
            out[f"{name}_ci95"].append(metrics.wilson_ci(correct[name], n))
        out["clean"], out["clean_ci95"], out["n"] = (correct["clean"] / n,
                                                     metrics.wilson_ci(correct["clean"], n), n)
    if "autoattack_accuracy" in ctx.results:
        out["autoattack"] = {"eps": a.eps, "accuracy": ctx.results["autoattack_accuracy"],
                             "ci95": ctx.results["autoattack_accuracy_ci95"],
                             "n": ctx.results["autoattack_accuracy_n"]}
    plots.plot_robustness_sweep({ctx.args.name: out}, ctx.figure("sweep"), ctx.title)
    return {"robustness_sweep": out}, {"sweep": out["n"]}


def sweep_alphas(a):
    """The PGD step for each eps of the sweep: the same step/radius ratio as at --eps."""
    return [eps * a.alpha / a.eps if a.eps > 0 else a.alpha for eps in a.sweep_epsilons]


def _references():
    """The evaluated attacks with no iterations: the PGD-iteration sweep's reference lines."""
    return tuple(name for name in evaluated() if not ATTACKS[name].iterative)


def pgd_iter_sweep(ctx):
    """Component 10: PGD accuracy vs iterations at --eps, with clean/FGSM/noise references
    and 95% intervals; the same random starts for every iteration count."""
    a = ctx.args
    refs, n = attack_accuracies(ctx.model, ctx.loader, ctx.device, a.eps, a.alpha, a.iters,
                                a.iter_sweep_max_batches, a.seed, ctx.record,
                                names=_references(), desc="iteration sweep references")
    out = {"iters": a.pgd_iters_list, "pgd": [], "pgd_ci95": [], "eps": a.eps, "alpha": a.alpha,
           "n": n, **{k: refs[k] / n for k in ("clean", *_references())},
           **{f"{k}_ci95": metrics.wilson_ci(refs[k], n) for k in ("clean", *_references())}}
    for iters in a.pgd_iters_list:
        correct, _ = attack_accuracies(ctx.model, ctx.loader, ctx.device, a.eps, a.alpha, iters,
                                       a.iter_sweep_max_batches, a.seed, ctx.record,
                                       names=("pgd",), desc=f"PGD-{iters}", restarts=a.restarts)
        out["pgd"].append(correct["pgd"] / n)
        out["pgd_ci95"].append(metrics.wilson_ci(correct["pgd"], n))
    plots.plot_pgd_iter_sweep({ctx.args.name: out}, ctx.figure("iter-sweep"), ctx.title)
    return {"pgd_iter_sweep": out}, {"iter_sweep": n}


COMPONENT_FUNCTIONS = {
    "umap": feature_projection, "grid": sample_grid, "confusion": confusion,
    "prf1": precision_recall_f1, "calibration": calibration, "coverage": confidence_coverage,
    "topk": topk, "attacks": attacks_at_eps, "autoattack": autoattack,
    "sweep": robustness_sweep, "iter-sweep": pgd_iter_sweep, "corruptions": corruption_eval.score,
}
COMPONENT_FILES = {
    "umap": ["umap_features.png"], "grid": ["adv_examples.png"], "confusion": ["confusion_matrix.png", "per_class_accuracy.png"],
    "prf1": ["classwise_prf1.png"], "calibration": ["reliability_diagram.png"],
    "coverage": ["confidence_coverage.png"], "topk": ["topk_accuracy.png"], "attacks": [],
    "autoattack": [],
    "sweep": ["robustness_sweep.png"], "iter-sweep": ["pgd_iter_sweep.png"],
    "corruptions": ["corruption_heatmap.png"],
}


def sanity_checks(result, ctx):
    """The attack sanity checks, printed, with a visible warning for each failure."""
    aa = None
    if "autoattack" in result:
        aa = {"accuracy": result["autoattack_accuracy"], "n": result["autoattack"]["n"],
              "pgd_accuracy": result["autoattack_pgd_accuracy"]}
    checks, details = metrics.attack_sanity_checks(
        result["attack_subset_clean_accuracy"], result["fgsm_accuracy"], result["pgd_accuracy"],
        result["noise_accuracy"], result["n_samples"]["attacks"], ctx.args.eps,
        ctx.record.max_perturbation, (ctx.record.low, ctx.record.high),
        result.get("robustness_sweep"), result.get("pgd_iter_sweep"), aa)
    for check, ok in checks.items():
        status = "ok " if ok else "WARNING: FAILED"
        print(f"sanity check {status} {check}: {details[check]}", flush=True)
    return {"sanity_checks": checks, "sanity_details": details,
            "max_perturbation": ctx.record.max_perturbation}


# ----------------------------------------------------------------------------- main

def training_validation_split(ckpt, dataset, val_size=None):
    """(val_size, seed) of the validation split: on the checkpoint's own dataset, the split
    its run carved and selected on (recorded in config.json's data.split), so temperature
    fitting never sees training images; on another dataset, that dataset's default split.
    `val_size` overrides the size."""
    data = ckpt.get("config", {}).get("data", {})
    if data.get("dataset") != dataset or "split" not in data:
        return val_size, 0
    return val_size or data["split"]["val_size"], data["split"]["seed"]


def load_model(path, device):
    try:
        ckpt = utils.load_checkpoint(path, map_location="cpu")
        model = utils.model_from_checkpoint(ckpt, path)
    except utils.CheckpointError as exc:
        raise SystemExit(f"error: {exc}")
    return model.to(device, memory_format=torch.channels_last).eval(), ckpt


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.alpha is None:
        args.alpha = pgd_step(args.eps, args.iters)
    with run_contract.Owner(run_contract.eval_lock(args.out), f"evaluation {args.out}"):  # one writer
        return evaluate(args, argv)


def evaluate(args, argv):
    device = utils.choose_device(args.device)
    start = time.time()
    model, ckpt = load_model(args.checkpoint, device)
    train_args = ckpt.get("config", {}).get("args", {})
    val_size, split_seed = training_validation_split(ckpt, args.dataset, args.val_size)
    download = not args.no_download
    try:
        dataset, info = datasets.build_eval_split(args.dataset, args.split, args.data_root,
                                                  download, val_size, split_seed, args.framing)
        val_set = (datasets.build_eval_split(args.dataset, "val", args.data_root, download,
                                             val_size, split_seed, args.framing)[0]
                   if "calibration" in args.components else None)
    except datasets.DatasetUnavailableError as exc:
        raise utils.NotAvailable(f"error: {exc}")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    if ckpt["model_args"]["num_classes"] != len(info["class_names"]):
        raise SystemExit(f"error: the model has {ckpt['model_args']['num_classes']} classes, "
                         f"{args.dataset} has {len(info['class_names'])}")

    args.name = args.name or os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint)))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # Attacks run on the first batches of one seeded permutation: the test files may be
    # sorted by class (the CIFAR-10 copy is), so the first N images would not be a sample.
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))
    attack_loader = datasets.batch_loader(dataset, args.batch_size, sampler=order.tolist())
    title = textwrap.fill(f"{args.name} on {info['description']}, {args.split} split", 70)
    ctx = Context(model, dataset, attack_loader, order.tolist(), device, args, title,
                  info["class_names"], val_set)
    print(f"evaluating {args.checkpoint} on {info['description']} {args.split} "
          f"({len(dataset)} images) on {device}", flush=True)
    trained_on = train_args.get("dataset")
    if trained_on and trained_on != args.dataset:
        print(f"note: the model was trained on {trained_on}, not {args.dataset}: these are "
              "transfer numbers (checkpoint's train command: "
              f"{ckpt.get('config', {}).get('command', 'unknown')})", flush=True)

    result = {"name": args.name, "dataset": args.dataset, "split": args.split,
              "synthetic": info["synthetic"], "data": info,
              "checkpoint": {"path": os.path.abspath(args.checkpoint), "epoch": ckpt["epoch"],
                             "model_args": ckpt["model_args"],
                             "trained_on": train_args.get("dataset"),
                             "train_command": ckpt.get("config", {}).get("command")},
              "command": utils.command_line("eval.py", argv),
              "params": {k: v for k, v in vars(args).items() if k not in ("checkpoint", "out")},
              "n_samples": {}, "timings_s": {}, "files": {}}
    ctx.results = result
    with timed(result["timings_s"], "predictions"):
        ctx.pred = collect_predictions(model, datasets.batch_loader(dataset, args.batch_size), device)
    result.update(run_contract.accuracy("clean_accuracy", ctx.pred["correct"].sum(), len(ctx.pred["labels"])))
    ctx.per_image["clean"] = (np.arange(len(ctx.pred["labels"])), ctx.pred["correct"])
    result["n_samples"]["clean"] = len(ctx.pred["labels"])
    print(f"clean accuracy {_pm(result, 'clean')} on {len(ctx.pred['labels'])} images", flush=True)

    for name in COMPONENTS:
        if name in args.components:
            with timed(result["timings_s"], name):
                numbers, counts = COMPONENT_FUNCTIONS[name](ctx)
            result.update(numbers)
            result["n_samples"].update(counts)
            result["files"].update({f: ctx.path(f) for f in COMPONENT_FILES[name]})
    if "attacks" in args.components:
        result.update(sanity_checks(result, ctx))
    else:
        result["sanity_checks"] = {}

    result["wall_time_s"] = time.time() - start
    result["environment"] = utils.environment_info()
    run_contract.save_per_image(ctx.per_image, run_contract.eval_per_image(args.out))
    utils.save_json(result, run_contract.eval_record(args.out))
    print(f"wrote {run_contract.eval_record(args.out)}, its per-image outcomes and "
          f"{len(result['files'])} figures in "
          f"{result['wall_time_s']:.0f}s", flush=True)
    return result


if __name__ == "__main__":
    main()
