"""One function per figure. Each draws from numbers it is given and saves a PNG.

Figures are built with matplotlib's object API (no pyplot, no global backend state).
"""

import textwrap

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator, ScalarFormatter

from attacks import ATTACKS, AUTOATTACK, CLEAN_COLOR

# Attacks take their colour and label from attacks.ATTACKS, the same in every figure.
COLORS = {"clean": CLEAN_COLOR, "train": "#1f77b4", "val": "#ff7f0e"}


def _attacks_in(numbers):
    """The registry's attacks that `numbers` has results for, gradient attacks first."""
    names = [name for name in ATTACKS if name in numbers]
    return sorted(names, key=lambda name: ATTACKS[name].baseline)


def _save(fig, path, layout=None):
    """`layout`: fixed subplot parameters instead of tight_layout's measuring pass."""
    if layout:
        fig.subplots_adjust(**layout)
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=120)


# Every run draws the training curves, and tight_layout's measuring pass was ~0.15 s of the
# figure's ~0.4 s (AVX2 EPYC). These margins hold what tight_layout chose for one epoch or 40,
# losses to 10^4, learning rates down to 1e-6 (an offset label over the axis) or written to
# six places, and a robust-collapse marker; tests/test_plots.py checks that nothing clips or
# collides.
TRAINING_CURVES_LAYOUT = {"left": 0.07, "right": 0.985, "bottom": 0.155, "top": 0.78,
                          "wspace": 0.37}


def plot_training_curves(history, path, title):
    """Loss, accuracy and learning rate per epoch (train vs validation)."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(13, 3.8))
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    for split in ("train", "val"):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], "o-", color=COLORS[split],
                     label=split)
        ax_acc.plot(epochs, [100 * h[f"{split}_acc"] for h in history], "o-",
                    color=COLORS[split], label=split)
    if any("val_pgd_acc" in h for h in history):
        pgd = [(h["epoch"], 100 * h["val_pgd_acc"]) for h in history if "val_pgd_acc" in h]
        ax_acc.plot(*zip(*pgd), "s--", color=ATTACKS["pgd"].color, label="val, PGD-10")
        collapsed = [(h["epoch"], 100 * h["val_pgd_acc"]) for h in history if h.get("robust_collapse")]
        if collapsed:
            ax_acc.plot(*zip(*collapsed), "x", color="black", markersize=10,
                        label="robust collapse")
    ax_lr.plot(epochs, [h["lr"] for h in history], "o-", color="#555555")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy (nats)")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    # a short title: small learning rates put an offset label ("1e-5") over the axis' left end
    ax_lr.set(title="Learning rate", xlabel="epoch", ylabel="learning rate (end of epoch)")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        # whole epochs only, down to a single tick for a one-epoch run (not 0.945-1.055)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    ax_loss.legend()
    ax_acc.legend()
    fig.suptitle(title)
    _save(fig, path, TRAINING_CURVES_LAYOUT)


def _class_axis(ax, class_names, axis="x", rotate=True):
    ticks = range(len(class_names))
    if axis == "x":
        ax.set_xticks(ticks)
        ax.set_xticklabels(class_names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    else:
        ax.set_yticks(ticks)
        ax.set_yticklabels(class_names)


def plot_feature_projection(points, labels, class_names, method, path, title):
    """2-D projection of penultimate features, one colour per class."""
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    for c, name in enumerate(class_names):
        mask = labels == c
        ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.6, color=colors(c % 10),
                   label=name, rasterized=True)
    ax.set(title=f"{title}\n{method} of penultimate features (n={len(labels)})",
           xlabel=f"{method} 1", ylabel=f"{method} 2")
    ax.legend(markerscale=4, fontsize=8, loc="best", ncol=2, frameon=True)
    _save(fig, path)


def plot_sample_grid(rows, true_labels, row_preds, class_names, path, title):
    """Tiles of images (rows: clean / adversarial / noise), true and predicted label on each."""
    n_rows, n_cols = len(rows), len(true_labels)
    fig = Figure(figsize=(1.6 * n_cols, 1.9 * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (row_name, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            pred = row_preds[row_name][c]
            ok = pred == true_labels[c]
            ax.set_title(f"true {class_names[true_labels[c]]}\npred {class_names[pred]}",
                         fontsize=8, color="#1a7f37" if ok else "#cf222e")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row_name, fontsize=10)
    fig.suptitle(title)
    _save(fig, path)


def plot_confusion(normalized, class_names, path, title):
    """Row-normalized confusion matrix (each true class sums to 100%)."""
    k = len(class_names)
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.subplots()
    im = ax.imshow(100 * normalized, cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            v = 100 * normalized[i, j]
            if v >= 0.5:
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 60 else "black")
    _class_axis(ax, class_names, "x")
    _class_axis(ax, class_names, "y")
    ax.set(title=f"{title}\nconfusion matrix (row-normalized)", xlabel="predicted class",
           ylabel="true class")
    fig.colorbar(im, ax=ax, label="share of true class (%)")
    _save(fig, path)


def plot_per_class_accuracy(per_class, class_names, overall, path, title):
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    ax.bar(range(len(class_names)), 100 * per_class, color="#4c72b0")
    ax.axhline(100 * overall, color=COLORS["clean"], ls="--", lw=1,
               label=f"overall {100 * overall:.1f}%")
    _class_axis(ax, class_names, "x")
    ax.set(title=f"{title}\nper-class accuracy", xlabel="class", ylabel="accuracy (%)",
           ylim=(0, 105))
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_prf1(precision, recall, f1, class_names, macro, path, title):
    x = np.arange(len(class_names))
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for offset, (name, values, color) in zip((-0.27, 0, 0.27), (
            ("precision", precision, "#4c72b0"), ("recall", recall, "#dd8452"),
            ("F1", f1, "#55a868"))):
        ax.bar(x + offset, 100 * values, width=0.27, color=color,
               label=f"{name} (macro {100 * macro[name]:.1f}%)")
    _class_axis(ax, class_names, "x")
    ax.set(title=f"{title}\nper-class precision, recall and F1", xlabel="class",
           ylabel="score (%)", ylim=(0, 122), yticks=range(0, 101, 20))
    ax.legend(loc="upper center", ncol=3, fontsize=8)  # in the band above 100%, over no bar
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_calibration(bins, ece, bins_scaled, ece_scaled, temperature, path, title):
    """Reliability diagram (before and after temperature scaling) over a confidence histogram."""
    edges = bins["edges"]
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig = Figure(figsize=(11, 5.5))
    (ax_rel, ax_rel_t), (ax_hist, ax_hist_t) = fig.subplots(
        2, 2, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for ax_r, ax_h, b, e, name in ((ax_rel, ax_hist, bins, ece, "uncalibrated"),
                                   (ax_rel_t, ax_hist_t, bins_scaled, ece_scaled,
                                    f"temperature-scaled (T={temperature:.2f})")):
        filled = b["count"] > 0
        acc = np.where(filled, b["accuracy"], 0.0)
        conf = np.where(filled, b["confidence"], 0.0)
        ax_r.bar(centers, 100 * acc, width=width * 0.95, color="#4c72b0", edgecolor="black",
                 lw=0.5, label="accuracy in bin")
        # the gap ECE weighs: between a bin's accuracy and its mean confidence
        ax_r.bar(centers, 100 * np.abs(conf - acc), bottom=100 * np.minimum(acc, conf),
                 width=width * 0.95, facecolor="none", edgecolor="#cf222e", hatch="///", lw=0.8,
                 label="gap to mean confidence")
        ax_r.plot([0, 1], [0, 100], "k--", lw=1, label="perfect calibration")
        ax_r.set(title=f"{name}: ECE {100 * e:.2f}%", ylabel="accuracy (%)", xlim=(0, 1),
                 ylim=(0, 100))
        ax_r.legend(loc="upper left", fontsize=8)
        ax_h.bar(centers, 100 * b["count"] / max(1, b["count"].sum()), width=width * 0.95,
                 color="#888888")
        ax_h.set(xlabel="confidence (max softmax probability)", ylabel="samples (%)")
    fig.suptitle(f"{title}: reliability diagram ({len(centers)} equal-width bins)")
    _save(fig, path)


def plot_confidence_coverage(curve, aurc_value, selective, path, title):
    """Selective accuracy and risk as the least confident predictions are rejected."""
    fig = Figure(figsize=(11, 4.2))
    ax_acc, ax_risk = fig.subplots(1, 2)
    coverage = 100 * curve["coverage"]
    ax_acc.plot(coverage, 100 * curve["accuracy"], color="#4c72b0")
    for i, (cov, acc) in enumerate(selective.items()):
        ax_acc.plot([100 * float(cov)], [100 * acc], "o", color="#cf222e")
        ax_acc.annotate(f"{100 * acc:.1f}% at {100 * float(cov):.0f}% coverage",
                        (100 * float(cov), 100 * acc), textcoords="offset points",
                        xytext=(-150, -18 - 14 * i), fontsize=8,
                        arrowprops={"arrowstyle": "-", "color": "#cf222e", "lw": 0.5})
    low = min(100 * curve["accuracy"].min(), 90)
    ax_acc.set(title="selective accuracy", xlabel="coverage (%)", ylabel="accuracy (%)",
               xlim=(0, 100), ylim=(low - 5, 101))
    ax_risk.plot(coverage, 100 * curve["risk"], color="#dd8452")
    ax_risk.fill_between(coverage, 100 * curve["risk"], alpha=0.2, color="#dd8452")
    ax_risk.set(title=f"risk-coverage (AURC {100 * aurc_value:.2f}%)", xlabel="coverage (%)",
                ylabel="selective risk = error rate (%)", xlim=(0, 100),
                ylim=(0, max(1.0, 105 * curve["risk"].max())))
    for ax in (ax_acc, ax_risk):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: confidence vs coverage (most confident first)")
    _save(fig, path)


def plot_topk(topk, path, title):
    ks = sorted(topk, key=int)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    bars = ax.bar([f"top-{k}" for k in ks], [100 * topk[k] for k in ks], color="#4c72b0")
    for bar, k in zip(bars, ks):
        ax.text(bar.get_x() + bar.get_width() / 2, 100 * topk[k] + 1, f"{100 * topk[k]:.2f}%",
                ha="center", fontsize=9)
    ax.set(title=f"{title}\ntop-k accuracy", xlabel="k", ylabel="accuracy (%)", ylim=(0, 108))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _band(ax, x, intervals, color):
    """A 95% interval band under a curve, when the numbers carry one."""
    if intervals:
        ax.fill_between(x, [100 * lo for lo, _ in intervals], [100 * hi for _, hi in intervals],
                        color=color, alpha=0.15, lw=0)


def plot_robustness_sweep(curves, path, title):
    """Accuracy vs eps with 95% bands. `curves`: {label: {'epsilons', one list per attack of
    attacks.ATTACKS, 'clean', 'n', optional '<attack>_ci95' lists and 'autoattack' {eps,
    accuracy, ci95, n}}}; several models share the axes (line style per model, colour per
    attack)."""
    fig = Figure(figsize=(8, 5.2))
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for i, (label, c) in enumerate(curves.items()):
        eps = [255 * e for e in c["epsilons"]]
        ls = styles[i % len(styles)]
        prefix = f"{label}: " if len(curves) > 1 else ""
        for attack in _attacks_in(c):
            spec = ATTACKS[attack]
            ax.plot(eps, [100 * a for a in c[attack]], ls, marker="o", ms=4,
                    color=spec.color, label=f"{prefix}{spec.title(c.get('iters'))}")
            _band(ax, eps, c.get(f"{attack}_ci95"), spec.color)
        ax.axhline(100 * c["clean"], color=COLORS["clean"], ls=ls, lw=1,
                   label=f"{prefix}clean on these {c.get('n', '?')} images {100 * c['clean']:.1f}%")
        aa = c.get("autoattack")
        if aa:
            low, high = aa["ci95"]
            ax.errorbar([255 * aa["eps"]], [100 * aa["accuracy"]],
                        yerr=[[100 * (aa["accuracy"] - low)], [100 * (high - aa["accuracy"])]],
                        fmt="*", ms=11, capsize=4, color=AUTOATTACK.color,
                        label=f"{prefix}{AUTOATTACK.label} {100 * aa['accuracy']:.1f}% (n={aa['n']})")
    n = next(iter(curves.values())).get("n", "?")
    ax.set(title=f"{title}\naccuracy under L-inf attacks vs eps (n={n} per point, 95% bands)",
           xlabel="eps (x/255, pixel units)", ylabel="accuracy (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    _save(fig, path)


def plot_pgd_iter_sweep(curves, path, title):
    """PGD accuracy vs iterations at fixed eps (95% bands), with clean and each one-step
    attack of `curves` as reference lines."""
    fig = Figure(figsize=(8, 5.2))
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for i, (label, c) in enumerate(curves.items()):
        ls = styles[i % len(styles)]
        prefix = f"{label}: " if len(curves) > 1 else ""
        pgd = ATTACKS["pgd"]
        ax.plot(c["iters"], [100 * a for a in c["pgd"]], ls, marker="o", color=pgd.color,
                label=f"{prefix}{pgd.label}")
        _band(ax, c["iters"], c.get("pgd_ci95"), pgd.color)
        ax.axhline(100 * c["clean"], color=COLORS["clean"], ls=ls, lw=1,
                   label=f"{prefix}clean {100 * c['clean']:.1f}%")
        for ref in [name for name in _attacks_in(c) if name != "pgd"]:
            ax.axhline(100 * c[ref], color=ATTACKS[ref].color, ls=ls, lw=1,
                       label=f"{prefix}{ATTACKS[ref].label} {100 * c[ref]:.1f}%")
    first = next(iter(curves.values()))
    iters = sorted({k for c in curves.values() for k in c["iters"]})
    ax.set_xscale("log")
    ax.set_xticks(iters)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(title=f"{title}\nPGD accuracy vs iterations (eps {255 * first['eps']:.0f}/255, "
                 f"n={first.get('n', '?')} images, 95% bands)",
           xlabel="PGD iterations (log scale)", ylabel="accuracy (%)", ylim=(0, 100))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    _save(fig, path)


def plot_run_comparison(histories, path, title):
    """Validation accuracy and training loss per epoch of several runs on shared axes."""
    fig = Figure(figsize=(13, 4.5))
    ax_acc, ax_loss = fig.subplots(1, 2)
    colors = matplotlib.colormaps["tab20"]
    for i, (name, history) in enumerate(histories.items()):
        epochs = [h["epoch"] for h in history]
        ax_acc.plot(epochs, [100 * h["val_acc"] for h in history], "o-", ms=3,
                    color=colors(i % 20), label=name)
        ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", ms=3, color=colors(i % 20),
                     label=name)
    ax_acc.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy (%)")
    ax_loss.set(title="training loss (on the batches trained on)", xlabel="epoch",
                ylabel="loss (nats)")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    _save(fig, path)


def plot_transfer_matrix(panels, targets, path, title):
    """Heatmaps of accuracy, source (rows) x target (columns), one per panel.

    `panels`: list of (panel title, row labels, cells) where cells[i][j] is None (not run)
    or (accuracy, [low, high]) with the 95% interval. Each cell prints the accuracy in %
    and the interval's half-width; grey cells were not run.
    """
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    width = 1.2 * len(targets) + 2.2
    fig = Figure(figsize=(width * len(panels), 0.75 * max(len(p[1]) for p in panels) + 2.2))
    axes = np.atleast_1d(fig.subplots(1, len(panels), gridspec_kw={"wspace": 0.35}))
    for ax, (panel_title, rows, cells) in zip(axes, panels):
        values = np.array([[np.nan if c is None else 100 * c[0] for c in row] for row in cells])
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                if cell is None:
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=7, color="#555555")
                    continue
                acc, (low, high) = 100 * cell[0], cell[1]
                ax.text(j, i, f"{acc:.1f}\n±{50 * (high - low):.1f}", ha="center", va="center",
                        fontsize=8, color="white" if acc < 60 else "black")
        ax.set_xticks(range(len(targets)), targets)
        ax.set_yticks(range(len(rows)), rows)
        ax.set(title=textwrap.fill(panel_title, 38), xlabel="target domain (test split)",
               ylabel="source")
    fig.colorbar(image, ax=list(axes), label="accuracy (%)", shrink=0.8)
    fig.suptitle(title, y=0.98)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_seed_comparison(accuracy, ece, path, title):
    """Per-variant test accuracy and ECE over seeds: a dot per seed, a bar at the mean and a
    whisker of one sample std. `accuracy`, `ece`: {variant: [value per seed, in %]}."""
    names = list(accuracy)
    fig = Figure(figsize=(max(7, 1.3 * len(names) + 3), 4.6))
    axes = fig.subplots(1, 2)
    for ax, values, label in ((axes[0], accuracy, "test accuracy (%)"),
                              (axes[1], ece, "ECE (%, 10 bins)")):
        for i, name in enumerate(names):
            v = np.asarray(values.get(name, []), dtype=float)
            if not len(v):
                continue
            std = v.std(ddof=1) if len(v) > 1 else 0.0
            ax.bar(i, v.mean(), color="#9ecae1" if name != "baseline" else "#fdae6b",
                   yerr=std, capsize=4, width=0.6)
            ax.plot(np.full(len(v), i) + np.linspace(-0.12, 0.12, len(v)), v, "o", ms=4,
                    color="#222222")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set(ylabel=label, title=label.split(" (")[0] + " per variant")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    _save(fig, path)


def plot_model_comparison(models, path, title):
    """Grouped bars per model: clean, each attack and AutoAttack accuracy with 95% interval
    whiskers. `models`: {model: {key: (accuracy, [low, high]) or None}} with keys
    clean_accuracy, <attack>_accuracy (attacks.ATTACKS) and autoattack_accuracy."""
    shown = {key for m in models.values() for key, value in m.items() if value is not None}
    keys = [("clean_accuracy", "clean", COLORS["clean"])]
    keys += [(f"{name}_accuracy", ATTACKS[name].label, ATTACKS[name].color)
             for name in ATTACKS if f"{name}_accuracy" in shown]
    keys += [("autoattack_accuracy", AUTOATTACK.label, AUTOATTACK.color)]
    names = list(models)
    fig = Figure(figsize=(max(8, 1.6 * len(names) + 2), 4.8))
    ax = fig.subplots()
    width = 0.8 / len(keys)
    for k, (key, label, color) in enumerate(keys):
        xs, ys, low, high = [], [], [], []
        for i, name in enumerate(names):
            value = models[name].get(key)
            if value is None:
                continue
            acc, ci = value
            xs.append(i + (k - (len(keys) - 1) / 2) * width)
            ys.append(100 * acc)
            low.append(100 * (acc - ci[0]) if ci else 0)
            high.append(100 * (ci[1] - acc) if ci else 0)
        ax.bar(xs, ys, width, yerr=[low, high], capsize=3, color=color, label=label,
               alpha=0.85)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title=title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=4, loc="upper right")
    _save(fig, path)


def plot_corruption_heatmap(accuracy, clean, path, title):
    """Accuracy (%) per corruption (rows) and severity (columns), each cell annotated; blank
    where the benchmark releases no such severity. `accuracy`: {corruption: {severity: acc}}."""
    names = list(accuracy)
    labels = [n.replace("_", " ") for n in names]
    severities = sorted({int(s) for v in accuracy.values() for s in v})
    if all(len(v) == 1 for v in accuracy.values()):  # MNIST-C: one released severity each
        labels = [f"{label} (severity {next(iter(accuracy[n]))})" for label, n in zip(labels, names)]
        accuracy, severities = {n: {0: next(iter(v.values()))} for n, v in accuracy.items()}, [0]
    grid = np.full((len(names), len(severities)), np.nan)
    for i, name in enumerate(names):
        for s, value in accuracy[name].items():
            grid[i, severities.index(int(s))] = 100 * value
    fig = Figure(figsize=(max(6.0, 2.2 + 1.0 * len(severities)), 1.6 + 0.36 * len(names)))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="black" if v > 60 else "white")
    ax.set_xticks(range(len(severities)), [str(s) if s else "released severity" for s in severities])
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    ax.set(xlabel="severity", title=f"{title}\nclean accuracy on the same images {100 * clean:.1f}%")
    ax.title.set_fontsize(9)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    _save(fig, path)


def plot_corruption_models(models, path, title):
    """Per corruption (severities averaged), one bar per model with whiskers over its seeds'
    range, and each model's clean accuracy on the same images as a dashed line. `models`:
    {model: {"clean": [per seed], "per_corruption": {corruption: [per seed]}}}."""
    names = list(models)
    corruptions = list(dict.fromkeys(c for m in models.values() for c in m["per_corruption"]))
    # constrained layout makes room for the legend beside the axes, where it hides no bar
    fig = Figure(figsize=(max(8, 0.75 * len(corruptions) + 4), 4.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(names), 1)
    colors = matplotlib.colormaps["tab10"]
    for k, name in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(corruptions))]
        values = [100 * np.asarray(models[name]["per_corruption"].get(c, [np.nan])) for c in corruptions]
        means = [v.mean() for v in values]
        spread = [[m - v.min() for m, v in zip(means, values)], [v.max() - m for m, v in zip(means, values)]]
        ax.bar(xs, means, width, yerr=spread, capsize=2, color=colors(k % 10),
               label=f"{name} ({len(models[name]['clean'])} seed{'s' * (len(models[name]['clean']) > 1)})")
        ax.axhline(100 * np.mean(models[name]["clean"]), color=colors(k % 10), ls="--", lw=1)
    ax.set_xticks(range(len(corruptions)))
    ax.set_xticklabels([c.replace("_", " ") for c in corruptions], rotation=30, ha="right")
    ax.set(ylabel="accuracy (%), severities averaged", ylim=(0, 100), title=title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              title="dashed: clean accuracy,\nsame images", title_fontsize=7)
    fig.savefig(path, dpi=120)
