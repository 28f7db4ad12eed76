"""What the claims compare: one function per kind of claim, each taking the Study and returning
its `Comparison`s (the test of other against reference, the direction the claim expects, or
why it could not be tested). reporting/claims.py declares the claims over these and judges them.
"""

import numpy as np

import datasets
import significance
from run_contract import Outcome

from reporting.ablations import _mean_std, per_seed
from reporting.common import ABLATION_SEEDS, Comparison, across_model_seeds, sample_class
from reporting.robustness import _models, robustness_rows
from reporting.transfer import colour_domains, grey_domains, handwriting_targets, transfer_numbers

def _count(result, key):
    """(correct, n) of an accuracy a record stores with its sample size, or None."""
    if not result or result.get(key) is None or not result.get(f"{key}_n"):
        return None
    n = int(result[f"{key}_n"])
    return round(result[key] * n), n


def _accuracy_count(result):
    if not result:
        return None
    return _count(result, "clean_accuracy" if "clean_accuracy" in result else "test_accuracy")


def _pct(count):
    return f"{100 * count[0] / count[1]:.1f}%"


def _chance(study):
    """1 / classes of the ablations' dataset, or None where no finished run names it."""
    for run in study.select("ablation"):
        res = study.result(run)
        if res and res.get("dataset") in datasets.DOMAINS:
            return 1 / len(datasets.DOMAINS[res["dataset"]].classes)
    return None


def _train_test_gap(study, variant):
    """The gap between clean train accuracy (the selected model on its training images as
    stored) and test accuracy, in points: the room a regularizer has to act in."""
    gaps = [100 * (res["train_clean_accuracy"] - res["test_accuracy"])
            for run in study.select("ablation", variant=variant)
            for res in [study.result(run)] if res and res.get("train_clean_accuracy") is not None]
    return f"clean train-test gap {np.mean(gaps):.1f} points" if gaps else ""


def seed_pairs(variant, key, expect, what, diverged_is_chance=False, show_gap=False):
    """The claim that `variant` moves `key` in direction `expect` against the baseline:
    a paired t-test over the seeds both finished (same seed: same split, data order and,
    where the architecture matches, initialisation)."""
    def compares(study):
        base_runs, runs = study.select("ablation", variant="baseline"), study.select("ablation", variant=variant)
        if not base_runs or not runs:
            return [Comparison(f"baseline -> {variant}", expect, why=f"not run: no {variant} runs", ran=False)]
        chance = _chance(study) if diverged_is_chance else None
        base, other = per_seed(study, "baseline", key), per_seed(study, variant, key, chance)
        seeds = sorted(set(base) & set(other))
        diverged = [r for r in runs if r.status == Outcome.DIVERGED]
        label = (f"{what}: baseline {_mean_std([base[s] for s in seeds])}% -> {variant} "
                 f"{_mean_std([other[s] for s in seeds])}%")
        notes = []
        if diverged:
            scored = chance is not None
            notes.append(f"{variant} diverged in {len(diverged)} of {len(runs)} seeds"
                         + (f" (scored as chance, {100 * chance:.0f}%)" if scored else " (left out)"))
        if show_gap:
            notes += [f"{gap} ({name})" for name in ("baseline", variant)
                      for gap in [_train_test_gap(study, name)] if gap]
        label += "".join(f"; {n}" for n in notes)
        if not seeds:
            return [Comparison(label, expect, why="not run: no seed finished on both sides", ran=False)]
        test = significance.paired([base[s] for s in seeds], [other[s] for s in seeds], grows=ABLATION_SEEDS)
        return [Comparison(label, expect, test, why="" if test else "one seed a side: no test")]
    return compares


def _direct(study, src, dst):
    runs = study.select(kind="direct", source=src, target=dst)
    return _accuracy_count(study.result(runs[0])) if runs else None


def _unpaired(label, expect, reference, other, missing, same_images=False):
    """Two accuracies ((correct, n) each): the two-proportion test of other against
    reference, or "not run" naming what is missing. `same_images`: both on one test split
    whose per-image pairing was not recorded, which the sample column says (the unpaired
    test is then conservative)."""
    if not (reference and other):
        return Comparison(label, expect, why=f"not run: {missing}", ran=False)
    test = significance.two_proportions(*reference, *other)
    if same_images:
        test.sample = (f"{other[1]:,} images, the same test split, unpaired (runs made before "
                       "train.py recorded per-image outcomes): conservative")
    return Comparison(f"{label}: {_pct(other)} vs {_pct(reference)}", expect, test)


def transfer_direction(study):
    """Greyscale -> colour against colour -> greyscale, per pair (different test images)."""
    return [_unpaired(f"{plain} -> {varied} vs {varied} -> {plain}", -1,
                      _direct(study, varied, plain), _direct(study, plain, varied),
                      "needs both directions")
            for varied in colour_domains() for plain in grey_domains()]


def colour_vs_handwriting(study):
    """MNIST -> MNIST-M against MNIST -> each other greyscale domain."""
    return [_unpaired(f"mnist -> mnistm vs mnist -> {d}", -1, _direct(study, "mnist", d),
                      _direct(study, "mnist", "mnistm"), "needs both transfers")
            for d in handwriting_targets()]


def frozen_vs_scratch(study):
    """A new classifier on frozen features of another domain against training from scratch on
    the same target images: both score the target's one test split, so McNemar's test on
    their per-image outcomes; runs made before train.py recorded those fall back to the
    two-proportion test, which treats the accuracies as independent (conservative)."""
    out = []
    for run in study.select(kind="finetune"):
        src, dst = run.fields["source"], run.fields["target"]
        scratch = study.select(kind="target_only", target=dst)
        reference = _accuracy_count(study.result(scratch[0]) if scratch else None)
        label, tuned = f"{src} features -> {dst} vs scratch", _accuracy_count(study.result(run))
        paired = _same_images(study, scratch[0], "clean", run, "clean")[0] if scratch else None
        if paired:  # both finished, on the same images
            out.append(Comparison(f"{label}: {_pct(tuned)} vs {_pct(reference)}", +1, paired))
        else:
            out.append(_unpaired(label, +1, reference, tuned,
                                 "needs the frozen-feature and scratch runs", same_images=True))
    return out


def _gap_statistic(*samples, axis=-1):
    """Median over pairs of (frozen - direct) / (in-domain - direct); samples come in threes."""
    means = [s.mean(axis=axis) for s in samples]
    ratios = [(t - d) / (f - d) for d, t, f in zip(means[0::3], means[1::3], means[2::3])]
    return np.median(np.stack(ratios), axis=0)


def gap_closed(study):
    """The median share of the direct-transfer gap that frozen features close, over the pairs
    with a gap the intervals see, against one half; bootstrap over each accuracy's images."""
    t = transfer_numbers(study)
    samples, parts = [], []
    for (src, dst) in t.closed:
        d = _direct(study, src, dst)
        tuned = _accuracy_count(study.result(study.select(kind="finetune", source=src, target=dst)[0]))
        full = _accuracy_count(study.result(study.select(kind="in_domain", target=dst)[0]))
        if d and tuned and full:
            samples += [significance.outcomes(*c) for c in (d, tuned, full)]
            parts.append(f"{src} -> {dst} {100 * t.closed[src, dst]:.0f}%")
    label = "median gap closed"
    if not samples:
        return [Comparison(label, +1, why="not run: no pair with a gap and a fine-tuned model", ran=False)]
    test = significance.bootstrap(
        _gap_statistic, samples, 0.5, "bootstrap vs 50%",
        f"{len(parts)} pairs; each accuracy's images resampled on their own (they share the "
        "target's test images, which widens the interval)")
    return [Comparison(f"{label} over {len(parts)} pairs ({', '.join(parts)})", +1, test)]


def _same_images(study, run_a, key_a, run_b, key_b):
    """McNemar of two runs' per-image outcomes on the same images, or why not."""
    a, b = study.outcomes(run_a, key_a), study.outcomes(run_b, key_b)
    if a is None or b is None:
        return None, ("no per-image outcomes (a run made before train.py and eval.py recorded "
                      "them): re-run it")
    if not np.array_equal(a[0], b[0]):
        return None, "the two runs scored different images (another --seed, sample size or split)"
    test = significance.mcnemar(a[1], b[1])
    if sample_class(key_a):
        test.grows = (sample_class(key_a), study.split_size(run_a))
    return test, ""


def _models_compared(study, reference, other, key_ref, key_other, expect, what):
    """`other`'s accuracy `key_other` against `reference`'s `key_ref` ({seed: row} each):
    across the seeds both have, with two or more (seed-paired t-test: the interval includes
    seed-to-seed variance), else on the first seed's images (McNemar: image sampling only)."""
    def acc(row, key):
        return row["result"].get(f"{key}_accuracy")
    seeds = [s for s in reference if s in other and acc(reference[s], key_ref) is not None
             and acc(other[s], key_other) is not None]
    if len(seeds) >= 2:
        a, b = [acc(reference[s], key_ref) for s in seeds], [acc(other[s], key_other) for s in seeds]
        label = (f"{what} {100 * np.mean(a):.1f}% -> {100 * np.mean(b):.1f}% "
                 f"(mean of {len(seeds)} seeds)")
        return Comparison(label, expect, across_model_seeds(a, b))
    first_ref, first_other = next(iter(reference.values())), next(iter(other.values()))
    a, b = acc(first_ref, key_ref), acc(first_other, key_other)
    test, why = _same_images(study, first_ref["eval"], key_ref, first_other["eval"], key_other)
    numbers = f" {100 * a:.1f}% -> {100 * b:.1f}%" if a is not None and b is not None else ""
    return Comparison(f"{what}{numbers} (one seed)", expect, test, why)


def _name(rows_by_seed):
    return f"`{next(iter(rows_by_seed.values()))['model']}`"


def attack_strength(weaker, stronger):
    """Per training method: accuracy under `stronger` against `weaker` on the same images
    (across seeds where the method has several)."""
    def compares(study):
        rows = robustness_rows(study)
        out = []
        for r in rows:
            if not r["result"]:
                out.append(Comparison(f"`{r['model']}`", -1, why=study.why(r["eval"]), ran=False))
        methods = {}
        for r in rows:
            if r["result"] and r["train"]:
                key = (r["train"].fields.get("method", r["model"]), bool(r["train"].fields.get("equal_compute")))
                methods.setdefault(key, {})[r["train"].fields.get("seed")] = r
        for runs in methods.values():
            out.append(_models_compared(study, runs, runs, weaker, stronger, -1,
                                        f"{_name(runs)}: {weaker.upper()} -> {stronger.upper()}"))
        return out
    return compares


def adversarial_trade(study):
    """PGD-AT against the standard model: clean accuracy (whole test split) lower, AutoAttack
    accuracy (its sample) higher."""
    rows = robustness_rows(study)
    std = _models(rows, adversarial=False, circle=False)
    pgd = _models(rows, adversarial=True, circle=False, attack="pgd")
    if not (std and pgd):
        return [Comparison("standard vs PGD-AT", 0, why="not run: needs the standard and PGD-trained "
                           "models evaluated", ran=False)]
    return [_models_compared(study, std, pgd, key, key, expect, f"{what}: {_name(std)} -> {_name(pgd)}")
            for key, expect, what in (("clean", -1, "clean"), ("autoattack", +1, "AutoAttack"))]


def circle_robustness(study):
    """With against without Circle Loss, under AutoAttack, with and without PGD-AT."""
    rows = robustness_rows(study)
    out = []
    for adversarial in (False, True):
        extra = {"attack": "pgd"} if adversarial else {}
        base = _models(rows, adversarial=adversarial, circle=False, **extra)
        circ = _models(rows, adversarial=adversarial, circle=True, **extra)
        what = "PGD-AT" if adversarial else "cross-entropy"
        if not (base and circ):
            out.append(Comparison(f"{what} vs + Circle", +1, why="not run: needs both models evaluated", ran=False))
            continue
        out.append(_models_compared(study, base, circ, "autoattack", "autoattack", +1,
                                    f"{_name(base)} -> {_name(circ)}"))
    return out


def equal_compute(study):
    """FGSM-RS against PGD-AT when each gets the standard model's training compute."""
    rows = robustness_rows(study)
    rs = _models(rows, equal_compute=True, attack="fgsm_rs", circle=False)
    pgd = _models(rows, equal_compute=True, attack="pgd", circle=False)
    if not (rs and pgd):
        return [Comparison("PGD-AT vs FGSM-RS at equal compute", +1, why="not run: needs both "
                           "equal-compute models evaluated", ran=False)]
    return [_models_compared(study, pgd, rs, "autoattack", "autoattack", +1,
                             f"AutoAttack: {_name(pgd)} -> {_name(rs)}")]
