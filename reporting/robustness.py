"""The robustness section: every CIFAR-10 model under the same attacks."""

import os

import attacks
import utils
from run_contract import Outcome

from reporting.common import _figure, below, cell, measure, seed_difference, seed_summary, table


# RobustBench's CIFAR-10 L-inf 8/255 leaderboard (model_info/cifar10/Linf/<entry>.json in
# github.com/RobustBench/robustbench): clean and AutoAttack accuracy, standard AutoAttack on
# the 10,000 test images. The architectures and schedules differ from this study's; they
# anchor the scale, not a like-for-like comparison.
PUBLISHED_ROBUSTNESS = [  # (entry, method, architecture, clean, AutoAttack, training fields it matches)
    ("Standard", "standard training", "WideResNet-28-10", 0.9478, 0.0,
     {"adversarial": False, "circle": False}),
    ("Wong2020Fast", "FGSM-RS (Wong et al. 2020), 15 epochs", "PreAct ResNet-18", 0.8334, 0.4321,
     {"adversarial": True, "attack": "fgsm_rs", "circle": False}),
    ("Engstrom2019Robustness", "PGD AT (Madry et al.), MadryLab robustness library", "ResNet-50",
     0.8703, 0.4925, None),
    ("Rice2020Overfitting", "PGD-10 AT with robust early stopping (Rice et al. 2020)",
     "WideResNet-34-20", 0.8534, 0.5342, {"adversarial": True, "attack": "pgd", "circle": False}),
]


def published_rows():
    return [[f"{entry} (RobustBench)", method, arch, f"{100 * clean:.2f}", f"{100 * aa:.2f}"]
            for entry, method, arch, clean, aa, _ in PUBLISHED_ROBUSTNESS]


def published_for(train_run):
    """'Wong2020Fast: 83.3 / 43.2' for a model trained by the method a RobustBench entry
    used (clean / AutoAttack, %), '-' where none did."""
    fields = train_run.fields if train_run else {}
    for entry, _, _, clean, aa, match in PUBLISHED_ROBUSTNESS:
        if match and all(fields.get(k) == v for k, v in match.items()):
            return f"{entry}: {100 * clean:.1f} / {100 * aa:.1f}"
    return "-"


def robust_columns():
    """(header, result key) of the robustness table: clean accuracy, then each attack eval.py
    runs (attacks.ATTACKS), AutoAttack beside the gradient attacks, the baselines last."""
    attacking = [n for n in attacks.evaluated() if not attacks.ATTACKS[n].baseline]
    baselines = [n for n in attacks.evaluated() if attacks.ATTACKS[n].baseline]
    return ([("clean", "clean_accuracy"), ("clean, attacked sample", "attack_subset_clean_accuracy")]
            + [(attacks.ATTACKS[n].label, f"{n}_accuracy") for n in attacking]
            + [(attacks.AUTOATTACK.label, "autoattack_accuracy")]
            + [(attacks.ATTACKS[n].label, f"{n}_accuracy") for n in baselines])


def robust_keys():
    return [key for _, key in robust_columns()]


def robustness_rows(study):
    """One row per evaluated model: its training record, its evaluation and its numbers."""
    rows = []
    for ev in study.select("robustness", script="eval"):
        model = study.by_name.get(ev.fields["model"])
        rows.append({"model": ev.fields["model"], "eval": ev, "train": model,
                     "result": study.result(ev), "trained": study.result(model) if model else None})
    return rows


def summary_rows(study, rows):
    """robustness_summary.csv: one row per evaluated model, every number with its interval."""
    out = []
    for r in rows:
        e, t = r["result"], r["trained"]
        row = {"model": r["model"], "status": "ok" if e else study.why(r["eval"])}
        if e:
            aa = e.get("autoattack", {})
            row.update({k: e.get(k) for k in robust_keys()})
            row.update({f"{k}_ci95": e.get(f"{k}_ci95") for k in robust_keys()})
            row.update(n_attacked=e["n_samples"]["attacks"], n_autoattack=aa.get("n"),
                       autoattack_version=aa.get("version"),
                       autoattack_errors="; ".join(f"{k}: {v}" for k, v in aa.get("errors", {}).items()),
                       eps=e["params"]["eps"], pgd_iters=e["params"]["iters"],
                       epochs=t["epochs"] if t else "", train_wall_time_s=round(t["wall_time_s"]) if t else "",
                       sanity_checks_passed=sum(e["sanity_checks"].values()),
                       sanity_checks_run=len(e["sanity_checks"]))
        out.append(row)
    return out


def _checks(e):
    passed, total = sum(e["sanity_checks"].values()), len(e["sanity_checks"])
    text = f"{passed} of {total} passed"
    return text if passed == total else f"**{text}** (see Attack sanity checks)"


def _autoattack_cell(e):
    aa = cell(e, "autoattack_accuracy")
    errors = e.get("autoattack", {}).get("errors")
    if errors:
        aa += " (incomplete: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + ")"
    return aa


def model_table(study, rows):
    """The robustness table: every model's accuracies with intervals, its checks, and the
    published number of the same method."""
    columns = robust_columns()
    body = []
    for r in rows:
        e = r["result"]
        if not e:
            body.append([r["model"], study.why(r["eval"])] + [""] * (len(columns) + 1))
            continue
        body.append([r["model"], r["trained"]["epochs"] if r["trained"] else "-"]
                    + [_autoattack_cell(e) if key == "autoattack_accuracy" else cell(e, key)
                       for _, key in columns] + [_checks(e), published_for(r["train"])])
    return table(["model", "epochs", *[header for header, _ in columns], "sanity checks",
                  "published, same method (clean / AutoAttack %)"], body)


def robustness_section(study, rows, report_dir, fig_dir, sum_dir):
    import plots

    md = ["## Robustness", ""]
    ok = [r for r in rows if r["result"]]
    utils.save_csv(summary_rows(study, rows), os.path.join(sum_dir, "robustness_summary.csv"))
    if not ok:
        return md + ["No model evaluated: " + "; ".join(f"{r['model']}: {study.why(r['eval'])}" for r in rows), ""]
    first = ok[0]["result"]
    md += [_budget_sentence(ok)
           + "Accuracy in % ± half the 95% Wilson interval at eps "
           f"{first['params']['eps'] * 255:.0f}/255 on a seeded random sample of "
           f"{first['n_samples']['attacks']} test images (PGD-{first['params']['iters']} with a "
           "random start; noise is a random ±eps sign pattern); AutoAttack "
           f"({first.get('autoattack', {}).get('version', '?')} version, torchattacks) on the "
           f"first {first.get('autoattack', {}).get('n', '?')} images of that sample. Clean "
           "accuracy is on the whole test split. AutoAttack is the number to trust; PGD well "
           "above it is a sign of gradient masking.", ""]

    md.append(model_table(study, rows))
    md += seed_table(rows)
    md += ["", "Published anchors at the same eps (8/255), standard AutoAttack on all 10,000 "
           "test images, from RobustBench's leaderboard; other architectures and far longer "
           "schedules than this profile's, so they give the scale, not a like-for-like "
           "comparison:", "",
           table(["entry", "method", "architecture", "clean (%)", "AutoAttack (%)"], published_rows()),
           "", "Reading: " + " ".join(robustness_readings(study, rows)), ""]
    compared = ["clean_accuracy", *[f"{n}_accuracy" for n in attacks.evaluated()
                                    if not attacks.ATTACKS[n].baseline], "autoattack_accuracy"]
    # one group per method (its first seed) and the equal-compute runs; the seeds are in the table
    shown = primary(ok) + [r for r in ok if r["train"] and r["train"].fields.get("equal_compute")]
    bars = {r["model"]: {k: measure(r["result"], k) for k in compared} for r in shown}
    plots.plot_model_comparison(bars, os.path.join(fig_dir, "robustness_models.png"),
                                study.title(f"CIFAR-10 models at eps {first['params']['eps'] * 255:.0f}/255: "
                                            "accuracy with 95% Wilson intervals"))
    md += [_figure(report_dir, "figures/robustness_models.png", "robustness per model",
                   "no model evaluated"), ""]
    histories = {r.name: study.result(r)["history"] for r in study.select("cifar10", script="train")
                 if study.result(r)}
    if histories:
        plots.plot_run_comparison(histories, os.path.join(fig_dir, "cifar10_training_curves.png"),
                                  study.title("CIFAR-10 models, one budget: training curves (training "
                                              "loss includes the weighted Circle term where there is one)"))
    md += [_figure(report_dir, "figures/cifar10_training_curves.png", "CIFAR-10 training curves",
                   "no CIFAR-10 model finished"), ""]
    diag = {r["model"]: r["result"] for r in ok if r["eval"].fields.get("diagnostics")}
    if diag:
        title = study.title(f"{next(iter(diag.values()))['data']['description']}")
        plots.plot_robustness_sweep({m: e["robustness_sweep"] for m, e in diag.items()
                                     if e.get("robustness_sweep")},
                                    os.path.join(fig_dir, "robustness_sweep.png"), title)
        plots.plot_pgd_iter_sweep({m: e["pgd_iter_sweep"] for m, e in diag.items()
                                   if e.get("pgd_iter_sweep")},
                                  os.path.join(fig_dir, "pgd_iter_sweep.png"), title)
    why = "no model with diagnostics was evaluated"
    md += [_figure(report_dir, "figures/robustness_sweep.png", "robustness sweep", why),
           _figure(report_dir, "figures/pgd_iter_sweep.png", "PGD iterations", why), "",
           _figure(report_dir, "figures/adv_examples.png", "adversarial examples", why), ""]
    return md


def _models(rows, equal_compute=False, **fields):
    """{seed: evaluated row} of the models whose training run has these fields, at the
    profile's equal-epochs budget (or, with equal_compute, at the standard model's cost)."""
    found = {}
    for r in rows:
        train = r["train"]
        if (train and r["result"] and bool(train.fields.get("equal_compute")) == equal_compute
                and all(train.fields.get(k) == v for k, v in fields.items())):
            found.setdefault(train.fields.get("seed"), r)
    return found


def _model(rows, equal_compute=False, **fields):
    """The first seed's evaluated row among _models(...), or None."""
    found = _models(rows, equal_compute, **fields)
    return next(iter(found.values()), None)


def _budget_sentence(ok):
    """What the models' budgets have in common: equal epochs, beside the runs given the
    standard model's compute instead, with the training time each measured."""
    same = sorted({r["trained"]["epochs"] for r in ok if r["trained"]
                   and not r["train"].fields.get("equal_compute")})
    equal = [r for r in ok if r["trained"] and r["train"].fields.get("equal_compute")]
    if len(same) == 1:
        text = (f"Every model trained for the same budget ({same[0]} epochs, same schedule "
                "and data), so the differences below are the training method's. ")
    else:
        text = (f"**The models trained for different budgets** ({', '.join(map(str, same))} "
                "epochs): their differences mix the method with the schedule. ")
    if equal:
        std = _model(ok, adversarial=False, circle=False)
        minutes = lambda r: f"{r['trained']['wall_time_s'] / 60:.1f} min"  # noqa: E731
        text += ("The `_equal_compute` runs are given the standard model's training compute "
                 "(its image-passes, an attack step counted as a pass) instead: "
                 + ", ".join(f"`{r['model']}` {r['trained']['epochs']} epochs ({minutes(r)})" for r in equal)
                 + (f", against `{std['model']}`'s {minutes(std)} (measured training time, "
                    "the proxy's check)" if std and std["trained"] else "") + ". ")
    return text


def _by_method(rows):
    """{method: {seed: evaluated row}} at the equal-epochs budget, methods in matrix order."""
    out = {}
    for r in rows:
        train = r["train"]
        if r["result"] and train and not train.fields.get("equal_compute"):
            out.setdefault(train.fields.get("method", r["model"]), {}).setdefault(train.fields.get("seed"), r)
    return out


def seed_table(rows):
    """Per method trained with several seeds: the mean over seeds ± their standard deviation
    (what a new seed would move), beside the intervals of one seed's sample above."""
    seeded = {m: [r["result"] for r in runs.values()] for m, runs in _by_method(rows).items()
              if len(runs) > 1}
    if not seeded:
        return []
    keys = [("clean", "clean_accuracy")] + [(label, key) for label, key in robust_columns()
                                            if key not in ("clean_accuracy", "attack_subset_clean_accuracy")]

    def summary(results, key):
        n, mean, std = seed_summary([e[key] for e in results if e.get(key) is not None])
        return "-" if not n else f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"

    return ["", "Over seeds (mean ± standard deviation across the seeds, each seed's model "
            "evaluated on the same images): the spread a new training seed brings, which the "
            "intervals above leave out.", "",
            table(["method", "seeds", *[label for label, _ in keys]],
                  [[f"`{m}`", len(results), *[summary(results, key) for _, key in keys]]
                   for m, results in seeded.items()])]


def primary(rows):
    """One row per training method: its first seed at the equal-epochs budget."""
    seen, out = set(), []
    for r in rows:
        train = r["train"]
        method = train.fields.get("method", r["model"]) if train else r["model"]
        if train and train.fields.get("equal_compute") or method in seen:
            continue
        seen.add(method)
        out.append(r)
    return out


def _values(runs, key):
    """`key` of each seed's evaluation that measured it."""
    return [r["result"][key] for r in runs.values() if r["result"].get(key) is not None]


def _seed_mean(runs, key):
    """(mean of `key` over the seeds that measured it, their number)."""
    n, mean, _ = seed_summary(_values(runs, key))
    return (mean, n) if n else (None, 0)


def _reading(runs, key):
    """A method's `key` in %: mean ± SD over its seeds, or one seed's value ± its Wilson
    half-width."""
    n, mean, std = seed_summary(_values(runs, key))
    if n > 1:
        return f"{100 * mean:.1f} ± {100 * std:.1f}% (mean ± SD of {n} seeds)"
    value = cell(next(iter(runs.values()))["result"], key)
    return value if value == Outcome.NOT_RUN else f"{value}% (one seed)"


def _clearly_above(high, low, key):
    """`high`'s `key` clearly above `low`'s ({seed: row} each): a seed-paired t-test over the
    seeds both have where they share two or more (uncorrected; the claims correct), else the
    first seeds' 95% Wilson intervals apart (image sampling only)."""
    shared = [s for s in high if s in low and high[s]["result"].get(key) is not None
              and low[s]["result"].get(key) is not None]
    if len(shared) >= 2:
        d = seed_difference({s: low[s]["result"][key] for s in shared},
                            {s: high[s]["result"][key] for s in shared})
        return d["exceeds"] and d["diff"] > 0
    first = lambda runs: measure(next(iter(runs.values()))["result"], key)  # noqa: E731
    return below(first(low), first(high))


def robustness_readings(study, rows):
    """What the robustness table says, read where a method has several seeds from their mean
    and a seed-paired test (seed variance included), else from one seed's image sample."""
    out = []
    masked = [r for r in rows if r["result"] and r["result"]["sanity_checks"].get("pgd_overestimate") is False]
    if masked:
        out.append("**PGD overestimates robustness** (PGD clearly more than 5 points above "
                   "AutoAttack on the same images: gradient masking) for "
                   + "; ".join(f"`{r['model']}`: PGD-{r['result']['params']['iters']} "
                               f"{100 * r['result']['autoattack_pgd_accuracy']:.1f}% vs AutoAttack "
                               f"{100 * r['result']['autoattack_accuracy']:.1f}%"
                               for r in masked) + "; read those from the AutoAttack column.")
    aa = "autoattack_accuracy"
    std = _models(rows, adversarial=False, circle=False)
    adv = {m: runs for m, runs in _by_method(rows).items()
           if next(iter(runs.values()))["train"].fields.get("adversarial") and _seed_mean(runs, aa)[1]}
    if std and adv:
        best = max(adv, key=lambda m: _seed_mean(adv[m], aa)[0])
        clean_cost = _seed_mean(adv[best], "clean_accuracy")[0] - _seed_mean(std, "clean_accuracy")[0]
        best_row, std_row = next(iter(adv[best].values())), next(iter(std.values()))
        same = r_epochs(best_row) == r_epochs(std_row)
        # (a, b): b clearly above a; the highest is "the most robust" only above every other
        apart = [(a, b) for a in adv for b in adv if a != b and _clearly_above(adv[b], adv[a], aa)]
        level = [m for m in adv if m != best and (m, best) not in apart]
        if not level:
            out.append(f"The most robust model under AutoAttack is `{best}` "
                       f"({_reading(adv[best], aa)} vs the standard model's {_reading(std, aa)}), "
                       f"at {_reading(adv[best], 'clean_accuracy')} clean accuracy "
                       f"({100 * clean_cost:+.1f} points against the standard model "
                       + ("trained for the same epochs)." if same else
                          f"trained for {r_epochs(std_row)} epochs against its {r_epochs(best_row)})."))
        else:  # a ranking inside the noise would be noise
            out.append("No adversarially trained model is clearly the most robust under "
                       f"AutoAttack: the highest, `{best}`, is not clearly above "
                       + ", ".join(f"`{m}`" for m in level)
                       + f" (the standard model: {_reading(std, aa)}).")
        out[-1] += (" Every adversarially trained model, AutoAttack and clean: " + "; ".join(
                       f"`{m}` {_reading(runs, aa)} at {_reading(runs, 'clean_accuracy')} clean"
                       for m, runs in adv.items()) + ".")
        out.append("Between the adversarially trained models, AutoAttack accuracy differs clearly for "
                   + ", ".join(f"`{b}` over `{a}`" for a, b in apart) + "."
                   if apart else "The adversarially trained models are level under AutoAttack "
                   "(no pair apart beyond its seed spread, or its image sampling where one seed): "
                   "at this budget the method matters less than the training itself.")
        out[-1] += (" \"Clearly\": a seed-paired t-test at p < 0.05 where both methods have "
                    "several seeds, else non-overlapping 95% intervals of one seed; uncorrected, "
                    "descriptive (the claims above carry the corrected verdicts).")
    return out or ["no adversarially trained model was evaluated under AutoAttack."]


def r_epochs(row):
    return row["trained"]["epochs"] if row.get("trained") else None
