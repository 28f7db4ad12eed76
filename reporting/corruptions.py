"""The Corruptions section: every CIFAR-10 model on CIFAR-10-C, the augmentation ablation's two
arms, and the greyscale digit models on MNIST-C, beside the published anchors; and the
comparisons its claims make (declared in reporting/claims.py)."""

import os
import shutil

import numpy as np

import significance
import utils

from reporting.common import ABLATION_SEEDS, Comparison, _figure, across_model_seeds, pct, seed_summary, table
from reporting.robustness import _by_method, _models, robustness_rows

# Published anchors, per corruption with the severities averaged (accuracy). RobustBench's
# CIFAR-10 corruptions leaderboard (mean over 15 corruptions x 5 severities of the released
# CIFAR-10-C) and Kireev et al. 2021 (tml-epfl/adv-training-corruptions). Other architectures,
# schedules and the released images (frost included): they give the scale and the direction.
PUBLISHED_CORRUPTIONS = [  # (entry, method, architecture, clean, mean corrupted, {corruption: acc}, fields)
    ("RobustBench Standard", "standard training", "WideResNet-28-10", 0.9478, 0.7346,
     {"gaussian_noise": 0.470, "fog": 0.888, "contrast": 0.826}, {"adversarial": False, "circle": False}),
    ("RobustBench Gowal2020 (L-inf 8/255)", "L-inf adversarial training at 8/255", "WideResNet-70-16",
     0.8529, 0.7637, {"gaussian_noise": 0.811, "fog": 0.629, "contrast": 0.465},
     {"adversarial": True, "attack": "pgd", "circle": False}),
    ("Kireev et al. 2021, standard", "standard training", "ResNet-18", None, 0.7465,
     {"gaussian_noise": 0.4706, "glass_blur": 0.5662, "fog": 0.8852, "contrast": 0.7641}, None),
    ("Kireev et al. 2021, L-inf AT 1/255", "L-inf adversarial training at 1/255", "ResNet-18", None,
     0.8267, {"gaussian_noise": 0.8336, "glass_blur": 0.7689, "fog": 0.7545, "contrast": 0.5899}, None),
]
MNIST_C_PUBLISHED = ("Mu & Gilmer (2019) report MNIST-C error rates per model in their paper; "
                     "their per-corruption numbers were not available to this study's machines "
                     "to copy, so none is shown rather than one from memory.")
NOISE = ("gaussian_noise", "shot_noise", "impulse_noise")
LOW_FREQUENCY = ("fog", "contrast")  # Yin et al. 2019: adversarial training hurts these
AFFINE = ("shear", "scale", "rotate", "translate")


# ----------------------------------------------------------------------------- numbers

def cifar_rows(study):
    """The robustness evaluations that scored CIFAR-10-C, as reporting.robustness rows."""
    return [r for r in robustness_rows(study) if r["result"] and r["result"].get("corruptions")]


def scored(study, kind):
    """(run, result) of the finished corruption evaluations of `kind` (ablation, digits)."""
    return [(run, study.result(run)) for run in study.select("corruptions", kind=kind)
            if study.result(run)]


def retained(result, names):
    """The mean accuracy over `names`' cells minus clean accuracy on the same images (a
    negative number: what the corruptions cost), from the record; None without such cells."""
    acc = result["corruptions"]["accuracy"]
    values = [v for c in names if c in acc for v in acc[c].values()]
    return float(np.mean(values) - result["corruption_clean_accuracy"]) if values else None


def per_image_retained(study, run, names):
    """(indices, each image's accuracy over `names`' cells minus its clean outcome), or None
    where the evaluation recorded no per-image outcomes for them."""
    acc = study.result(run)["corruptions"]["accuracy"]
    clean = study.outcomes(run, "corruption_clean")
    hits = [study.outcomes(run, f"corruption_{c}_s{s}") for c in names if c in acc for s in acc[c]]
    if clean is None or not hits or any(h is None for h in hits):
        return None
    return clean[0], np.mean([h[1] for h in hits], axis=0) - clean[1]


def mce(result, reference):
    """The corruption error relative to `reference`'s (Hendrycks & Dietterich's CE_c: errors
    summed over severities, divided by the reference's), averaged over corruptions."""
    a, r = result["corruptions"]["accuracy"], reference["corruptions"]["accuracy"]
    ratios = [sum(1 - a[c][s] for s in a[c]) / sum(1 - r[c][s] for s in a[c])
              for c in a if c in r and sum(1 - r[c][s] for s in a[c]) > 0]
    return float(np.mean(ratios)) if ratios else None


# ----------------------------------------------------------------------------- claims

def _over_images(study, run, reference, other):
    """The paired t-test over the corruptions' images, marked as growing with the looks."""
    return significance.paired_images(reference, other, grows=("corruptions", study.split_size(run)))


def _compare_retained(study, reference, other, names, expect, what):
    """`other`'s accuracy kept under `names` against `reference`'s ({seed: row} each): paired t
    over the seeds both have where there are two or more, else over the first seed's images."""
    seeds = [s for s in reference if s in other]
    if len(seeds) >= 2:
        a = [retained(reference[s]["result"], names) for s in seeds]
        b = [retained(other[s]["result"], names) for s in seeds]
        return Comparison(f"{what}: {100 * np.mean(a):+.1f} -> {100 * np.mean(b):+.1f} points "
                          f"(mean of {len(seeds)} seeds)", expect, across_model_seeds(a, b))
    ref, oth = next(iter(reference.values())), next(iter(other.values()))
    a, b = per_image_retained(study, ref["eval"], names), per_image_retained(study, oth["eval"], names)
    label = f"{what} (one seed)"
    if a is None or b is None:
        return Comparison(label, expect, why="no per-image corruption outcomes: re-run the evaluation")
    if not np.array_equal(a[0], b[0]):
        return Comparison(label, expect, why="the two evaluations scored different images")
    return Comparison(f"{what}: {100 * a[1].mean():+.1f} -> {100 * b[1].mean():+.1f} points (one seed)",
                      expect, _over_images(study, ref["eval"], a[1], b[1]))


def adversarial_vs_standard(names, expect):
    """Per adversarially trained method: the accuracy it keeps under `names` (from its own
    clean accuracy on the same images) against the standard model's."""
    def compares(study):
        rows = cifar_rows(study)
        std = _models(rows, adversarial=False, circle=False)
        methods = {m: runs for m, runs in _by_method(rows).items()
                   if next(iter(runs.values()))["train"].fields.get("adversarial")
                   and not next(iter(runs.values()))["train"].fields.get("circle")}
        if not std or not methods:
            return [Comparison("standard vs adversarial training", expect, ran=False,
                               why="not run: needs the standard and an adversarially trained "
                                   "model scored on the corruptions")]
        return [_compare_retained(study, std, runs, names, expect, f"`{method}` vs standard")
                for method, runs in methods.items()]
    return compares


def augmentation(study):
    """Mean corruption accuracy of the ablation without augmentation against its baseline,
    paired by seed (same split, data order and initialisation)."""
    values = {}
    for run, result in scored(study, "ablation"):
        values.setdefault(run.fields["variant"], {})[run.fields["seed"]] = result["corruption_mean_accuracy"]
    base, other = values.get("baseline", {}), values.get("no_augment", {})
    seeds = sorted(set(base) & set(other))
    if not seeds:
        return [Comparison("baseline -> no_augment", -1, ran=False,
                           why="not run: no seed scored on the corruptions on both sides")]
    a, b = [base[s] for s in seeds], [other[s] for s in seeds]
    test = significance.paired(a, b, grows=ABLATION_SEEDS)
    return [Comparison(f"mean corruption accuracy: baseline {100 * np.mean(a):.1f}% -> no_augment "
                       f"{100 * np.mean(b):.1f}% ({len(seeds)} seeds)", -1, test,
                       why="" if test else "one seed a side: no test")]


def digits_noise_vs_affine(study):
    """Per greyscale digit model: its accuracy under MNIST-C's noise corruptions against its
    accuracy under the affine ones, on the same images (paired over images)."""
    out = []
    for run, result in scored(study, "digits"):
        noise, affine = (per_image_retained(study, run, names) for names in (NOISE, AFFINE))
        label = f"`{run.fields['model']}` on {run.fields['domain']}: affine -> noise"
        if noise is None or affine is None:
            out.append(Comparison(label, +1, why="no per-image corruption outcomes"))
            continue
        out.append(Comparison(f"{label} {100 * (affine[1].mean()):+.1f} -> {100 * noise[1].mean():+.1f} "
                              "points from clean", +1, _over_images(study, run, affine[1], noise[1])))
    return out or [Comparison("digit models on MNIST-C", +1, ran=False,
                              why="not run: no greyscale digit model scored on MNIST-C")]


# ----------------------------------------------------------------------------- the section

def _label(name):
    return name.replace("_", " ")


def _mce_vs_standard(result, seed, std):
    """mce() against the standard model of the same seed (else its first), None without one or
    off CIFAR-10-C. `std`: {seed: evaluated row} of the standard model."""
    reference = std.get(seed) or next(iter(std.values()), None)
    if reference is None or result["corruptions"]["benchmark"] != "cifar10-c":
        return None
    return mce(result, reference["result"])


def _summary_rows(study, rows, ablations, digits):
    """One CSV row per evaluation that scored corruptions."""
    std = _models(rows, adversarial=False, circle=False)
    out = []
    for run, result, model in ([(r["eval"], r["result"], r["model"]) for r in rows]
                               + [(run, res, run.fields["model"]) for run, res in ablations + digits]):
        c = result["corruptions"]
        seed = study.by_name[model].fields.get("seed") if model in study.by_name else None
        out.append({"evaluation": run.name, "model": model, "benchmark": c["benchmark"], "n": c["n"],
                    "clean": result["corruption_clean_accuracy"], "mean": result["corruption_mean_accuracy"],
                    "mean_ci95": result["corruption_mean_accuracy_ci95"], "drop": c["drop"],
                    "mce_vs_standard": _mce_vs_standard(result, seed, std),
                    **{f"family_{f}": v for f, v in c["family_accuracy"].items()},
                    **{f"corruption_{k}": v for k, v in c["per_corruption"].items()}})
    return out


def _mean_cell(values):
    n, mean, std = seed_summary([v for v in values if v is not None])
    return "-" if not n else f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else "")


def _intro(first):
    c = first["corruptions"]
    text = (f"{c['description']}. Accuracy in % on the same {c['n']:,} test images per corruption "
            "and severity for every model (the first of the seeded order the attacks use), "
            "**drop** = clean accuracy on those images minus the mean over every corruption and "
            "severity, **mCE** = Hendrycks & Dietterich's corruption error relative to the "
            "standard model of the same seed (100% = as the standard model; lower is better). "
            "Several seeds: mean ± standard deviation over seeds. ")
    if c["not_built"]:
        text += "Not built: " + "; ".join(f"**{k}** ({v})" for k, v in c["not_built"].items()) + ". "
    if c["replaced"]:
        text += "Replaced: " + "; ".join(f"**{k}**: {v}" for k, v in c["replaced"].items()) + "."
    return text


def _cifar_tables(rows):
    """The per-method summary and the per-corruption table beside the published anchors."""
    methods = _by_method(rows)
    summary = _summary_rows_by_method(rows, methods)
    families = list(dict.fromkeys(f for r in rows for f in r["result"]["corruptions"]["family_accuracy"]))
    md = [table(["model", "seeds", "clean, same images", "mean corrupted", "drop (points)", "mCE vs standard",
                 *families, "published, same method (clean / mean corrupted %)"],
                [[f"`{m}`", len(runs), *summary[m], *[_mean_cell([r["result"]["corruptions"]["family_accuracy"].get(f)
                                                                  for r in runs.values()]) for f in families],
                  _published_same(next(iter(runs.values()))["train"])] for m, runs in methods.items()]), ""]
    corruptions = list(dict.fromkeys(c for r in rows for c in r["result"]["corruptions"]["per_corruption"]))
    anchors = PUBLISHED_CORRUPTIONS
    md += ["Per corruption (severities averaged), our models beside the published anchors:", "",
           table(["corruption", *[f"`{m}`" for m in methods], *[f"{e[0]} ({e[2]})" for e in anchors]],
                 [[_label(c), *[_mean_cell([r["result"]["corruptions"]["per_corruption"].get(c)
                                            for r in runs.values()]) for runs in methods.values()],
                   *[pct(e[5].get(c), 1) if c in e[5] else "-" for e in anchors]] for c in corruptions]
                 + [["**mean**", *[_mean_cell([r["result"]["corruption_mean_accuracy"] for r in runs.values()])
                                   for runs in methods.values()], *[pct(e[4], 1) for e in anchors]]]), ""]
    return md


def _summary_rows_by_method(rows, methods):
    std = _models(rows, adversarial=False, circle=False)
    out = {}
    for m, runs in methods.items():
        mces = [_mce_vs_standard(r["result"], s, std) for s, r in runs.items()]
        out[m] = [_mean_cell([r["result"]["corruption_clean_accuracy"] for r in runs.values()]),
                  _mean_cell([r["result"]["corruption_mean_accuracy"] for r in runs.values()]),
                  _mean_cell([r["result"]["corruptions"]["drop"] for r in runs.values()]),
                  _mean_cell(mces)]
    return out


def _published_same(train_run):
    fields = train_run.fields if train_run else {}
    for entry, _, arch, clean, mean, _, match in PUBLISHED_CORRUPTIONS:
        if match and all(fields.get(k) == v for k, v in match.items()):
            return f"{entry} ({arch}): {100 * clean:.1f} / {100 * mean:.1f}"
    return "-"


def _figures(study, rows, ablations, digits, report_dir, fig_dir):
    """The side-by-side chart (every method, the ablation's two arms) and each model's heatmap."""
    import plots

    models = {}

    def add(name, result):  # one seed's numbers to the model's bars
        entry = models.setdefault(name, {"clean": [], "per_corruption": {}})
        entry["clean"].append(result["corruption_clean_accuracy"])
        for c, v in result["corruptions"]["per_corruption"].items():
            entry["per_corruption"].setdefault(c, []).append(v)
    for m, runs in _by_method(rows).items():
        for r in runs.values():
            add(m, r["result"])
    for run, res in ablations:
        add(f"ablation {run.fields['variant']}", res)
    md = []
    if models:
        plots.plot_corruption_models(models, os.path.join(fig_dir, "corruption_models.png"), study.title(
            "CIFAR-10-C per corruption, severities averaged: bars = mean over seeds, whiskers = seed range"))
        md += [_figure(report_dir, "figures/corruption_models.png", "corruptions per model", "none scored"), ""]
    firsts = {next(iter(runs.values()))["model"] for runs in _by_method(rows).values()}
    heatmaps = ([(f"`{r['model']}`", r["model"], r["result"]) for r in rows if r["model"] in firsts]
                + [(f"`{run.fields['model']}` on {run.fields['domain']} (MNIST-C)", run.name, res)
                   for run, res in digits])
    os.makedirs(os.path.join(fig_dir, "corruptions"), exist_ok=True)
    links = []
    for shown, stem, result in heatmaps:
        target = f"figures/corruptions/{stem}.png"
        source = result["files"].get("corruption_heatmap.png")
        if source and os.path.exists(source):
            shutil.copyfile(source, os.path.join(report_dir, target))
        links.append(f"{shown}: " + _figure(report_dir, target, "heatmap", "eval.py drew none"))
    if links:
        md += ["<details><summary>Corruption x severity heatmaps, one per model (first seed) and digit model</summary>",
               "", *[f"- {link}" for link in links], "", "</details>", ""]
    return md


def _ablation_table(ablations):
    by = {}
    for run, res in ablations:
        by.setdefault(run.fields["variant"], {})[run.fields["seed"]] = res
    seeds = sorted({s for v in by.values() for s in v})
    return ["The augmentation ablation's two arms (the ablation budget, CIFAR-10-C on the same "
            "images): mean corruption accuracy per seed (clean accuracy on the same images).", "",
            table(["variant", *[f"seed {s}" for s in seeds], "mean ± sd"],
                  [[v, *[f"{100 * r[s]['corruption_mean_accuracy']:.1f} ({100 * r[s]['corruption_clean_accuracy']:.1f})"
                         if s in r else "-" for s in seeds],
                    _mean_cell([x["corruption_mean_accuracy"] for x in r.values()])] for v, r in by.items()]), ""]


def _digit_tables(digits):
    names = list(dict.fromkeys(c for _, res in digits for c in res["corruptions"]["per_corruption"]))
    first = digits[0][1]["corruptions"]
    return [f"{first['description']}; {first['n']:,} images per corruption. " + MNIST_C_PUBLISHED, "",
            table(["corruption", "family", *[f"`{run.fields['model']}` on {run.fields['domain']}" for run, _ in digits]],
                  [[_label(c), first["family"].get(c, "-"),
                    *[pct(res["corruptions"]["per_corruption"].get(c), 1) for _, res in digits]] for c in names]
                  + [["**clean, same images**", "", *[pct(res["corruption_clean_accuracy"], 1) for _, res in digits]],
                     ["**mean corrupted**", "", *[utils.plus_minus(res["corruption_mean_accuracy"],
                                                                   res["corruption_mean_accuracy_ci95"])
                                                  for _, res in digits]]]), ""]


def corruption_section(study, report_dir, fig_dir, sum_dir):
    """## Common corruptions: tables, figures and the summary CSV, from the evaluations' records."""
    md = ["## Common corruptions", ""]
    rows, ablations, digits = cifar_rows(study), scored(study, "ablation"), scored(study, "digits")
    utils.save_csv(_summary_rows(study, rows, ablations, digits), os.path.join(sum_dir, "corruptions_summary.csv"))
    if not (rows or ablations or digits):
        missing = study.select("corruptions") + study.select("robustness", script="eval")
        why = "; ".join(f"{r.name}: {study.why(r)}" for r in missing[:6])
        return md + ["No model was scored on the corruptions" + (f" ({why})" if why else "") + ".", ""]
    if rows:
        md += [_intro(rows[0]["result"]), "", *_cifar_tables(rows)]
    md += _figures(study, rows, ablations, digits, report_dir, fig_dir)
    if ablations:
        md += _ablation_table(ablations)
    if digits:
        md += ["### Digits on MNIST-C", "", *_digit_tables(digits)]
    return md
