"""The study's report, rendered from its run records and the numbers those runs wrote.

`write(study, report_dir)` renders REPORT.md, the figures and the summary CSVs. Every table
is built by selecting runs on their declared fields (group, variant, seed, model, source,
target, kind), never by spelling run names, so a run added to the matrix appears in its
table without an edit here. The claims the study makes are judged here too, from the same
numbers: `claims(study)` returns each claim with its verdict (supported, contradicted,
inconclusive at this budget, or not run), the evidence with its uncertainty, and the
section behind it.

A run record is anything with `name`, `script`, `group`, `fields`, `status`, `reason`,
`command`, `error_tail` and `seconds` (the pipeline's Run); `results` maps run names to
what train.py (final_metrics.json plus `history` and `environment`) or eval.py
(*.metrics.json) wrote.
"""

import datetime
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

import attacks
import datasets
import run_contract
import utils
from run_contract import Outcome

SHOWN = {Outcome.SKIPPED: "up to date"}  # a run whose outputs were already there for the same command
ALPHA = 0.05  # significance level of the seed comparisons


@dataclass
class Study:
    """Everything the report is rendered from."""
    runs: list
    results: dict
    profile_name: str = ""
    profile: dict = field(default_factory=dict)
    command: str = ""
    data_root: str = ""
    wall_time: float = 0.0

    def __post_init__(self):
        self.by_name = {r.name: r for r in self.runs}

    def select(self, group=None, script=None, **fields):
        """The runs of `group` / `script` whose fields equal the given ones, in matrix order."""
        return [r for r in self.runs
                if (group is None or r.group == group) and (script is None or r.script == script)
                and all(r.fields.get(k) == v for k, v in fields.items())]

    def result(self, run):
        """The numbers of a finished run (a Run or its name), else None."""
        run = self.by_name.get(run) if isinstance(run, str) else run
        if run is None or run.status not in run_contract.FINISHED:
            return None
        return self.results.get(run.name)

    @property
    def synthetic(self):
        return any(r.get("synthetic") for r in self.results.values())

    def title(self, text):
        """A figure title, marked where the numbers come from synthetic data."""
        return f"SYNTHETIC DATA: {text}" if self.synthetic else text

    def why(self, run):
        """The short outcome of a run that has no numbers: 'not run: ...', 'diverged: ...'."""
        run = self.by_name.get(run) if isinstance(run, str) else run
        if run is None:
            return "not in the matrix"
        return f"{run.status}: {short(run.reason)}" if run.reason else run.status


# ----------------------------------------------------------------------------- numbers

def accuracy(result):
    """(accuracy, [low, high]) of a train.py or eval.py result, or None."""
    if not result:
        return None
    if "clean_accuracy" in result:
        return result["clean_accuracy"], result["clean_accuracy_ci95"]
    return result["test_accuracy"], result["test_accuracy_ci95"]


def measure(result, key):
    """(value, 95% interval or None) of an eval.py result's key, or None if absent."""
    if not result or result.get(key) is None:
        return None
    return result[key], result.get(f"{key}_ci95")


def below(a, b):
    """a's 95% interval lies wholly below b's: a difference the sample size can see."""
    return bool(a and b and a[1] and b[1] and a[1][1] < b[1][0])


def seed_summary(values):
    """(n, mean, sample std or nan) of per-seed values."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return 0, math.nan, math.nan
    return len(values), float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def seed_difference(reference, other):
    """Difference of means (other - reference) over seeds and whether it exceeds the
    seed-to-seed spread: Welch's t-test at ALPHA (needs two seeds a side)."""
    if not len(reference) or not len(other):
        return None
    diff = float(np.mean(other) - np.mean(reference))
    if len(reference) < 2 or len(other) < 2:
        return {"diff": diff, "p": None, "exceeds": False}
    if np.std(reference) == 0 and np.std(other) == 0:  # no spread at all: any gap is real
        p = 0.0 if diff else 1.0
    else:
        with warnings.catch_warnings():  # scipy warns when the seeds agree to many digits
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_ind(other, reference, equal_var=False).pvalue)
    return {"diff": diff, "p": p, "exceeds": p < ALPHA}


def pooled(signs):
    """One verdict from several comparisons (+1 as claimed, -1 the opposite, 0 level within
    the uncertainty): supported if some agree and none disagree, contradicted if the reverse,
    inconclusive if they are mixed or all level, not run if there are none."""
    if not signs:
        return Outcome.NOT_RUN
    if 1 in signs and -1 not in signs:
        return "supported"
    if -1 in signs and 1 not in signs:
        return "contradicted"
    return "inconclusive"


def directional(difference, expected_sign):
    """Verdict of a claim that `difference` has `expected_sign`, from seed_difference."""
    if difference is None:
        return Outcome.NOT_RUN
    if not difference["exceeds"]:
        return "inconclusive"
    return "supported" if np.sign(difference["diff"]) == expected_sign else "contradicted"


def pm(value, ci95=None):
    """'27.3 ± 2.7' (half the 95% interval, in points), '27.3' without one, 'not run'."""
    if value is None:
        return Outcome.NOT_RUN
    if not ci95:
        return f"{100 * value:.1f}"
    return utils.plus_minus(value, ci95)


def cell(result, key):
    """pm() of an eval.py result's key, or 'not run' where the number is absent."""
    value = measure(result, key)
    return pm(*value) if value else Outcome.NOT_RUN


def pct(value, digits=2):
    return Outcome.NOT_RUN if value is None else f"{100 * value:.{digits}f}"


def short(reason):
    """The first clause of a failure reason, for table cells (the full text is in 'Runs and
    commands' and metrics_summary.json)."""
    reason = reason or "not selected or not reached"
    for cut in (": tried", ". "):
        if cut in reason:
            reason = reason.split(cut)[0]
    return reason if len(reason) <= 90 else reason[:87] + "..."


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(report_dir, rel, alt, missing_why):
    """A markdown image link if the file exists, else a line saying why it does not."""
    if os.path.exists(os.path.join(report_dir, rel)):
        return f"![{alt}]({rel})"
    return f"*Figure `{rel}` not drawn: {missing_why}.*"


# ----------------------------------------------------------------------------- ablations

def ablation_rows(study):
    """Per variant: the seeds' test accuracy and ECE, their summary, and the difference to
    the baseline with whether it exceeds the seed-to-seed spread."""
    variants = []
    for run in study.select("ablation"):
        if run.fields["variant"] not in variants:
            variants.append(run.fields["variant"])
    rows = {}
    for variant in variants:
        runs = study.select("ablation", variant=variant)
        finished = [(r, study.result(r)) for r in runs if study.result(r)]
        rows[variant] = {
            "runs": runs, "seeds": [r.fields["seed"] for r in runs],
            "accuracy": [res["test_accuracy"] for _, res in finished],
            "ece": [res["test_ece"] for _, res in finished if "test_ece" in res],
            "train_acc": [res["history"][-1]["train_acc"] for _, res in finished if res.get("history")],
            "diverged": [r for r in runs if r.status == Outcome.DIVERGED],
            "missing": [r for r in runs if r.status not in run_contract.FINISHED and r.status != Outcome.DIVERGED]}
        row = rows[variant]
        notes = []
        if row["diverged"]:
            deliberate = runs[0].fields.get("deliberate")
            notes.append((f"deliberate ({deliberate}): " if deliberate else "")
                         + f"diverged in {len(row['diverged'])} of {len(runs)} seeds "
                         f"({short(row['diverged'][0].reason)})")
        if row["missing"]:
            notes.append("; ".join(sorted({study.why(r) for r in row["missing"]})))
        row["notes"] = "; ".join(notes)
    base = rows.get("baseline")
    for variant, row in rows.items():
        row["vs_baseline"] = (seed_difference(base["accuracy"], row["accuracy"])
                              if base and variant != "baseline" else None)
        row["ece_vs_baseline"] = (seed_difference(base["ece"], row["ece"])
                                  if base and variant != "baseline" else None)
    return rows


def _mean_std(values, scale=100, digits=2):
    n, mean, std = seed_summary(values)
    if not n:
        return "-"
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if n > 1 else " (1 seed)")


def _difference_cell(d):
    if d is None:
        return "-"
    text = f"{100 * d['diff']:+.2f}"
    if d["p"] is None:
        return text + " (one seed: spread unknown)"
    return text + (f" (p={d['p']:.3f}, **exceeds spread**)" if d["exceeds"] else f" (p={d['p']:.2f}, within spread)")


def ablation_section(study, rows, report_dir, fig_dir, sum_dir):
    import plots

    md = ["## Ablations", ""]
    if not rows:
        return md + ["not run: the matrix has no ablation runs", ""]
    finished = [study.result(r) for r in study.select("ablation") if study.result(r)]
    data = finished[0]["data_description"] if finished else "(no run finished)"
    n_seeds = max(len(r["seeds"]) for r in rows.values())
    budget = study.profile.get("ablation", {})
    md += [f"Each variant changes one thing from the baseline and trains with {n_seeds} seeds "
           f"({budget.get('epochs', '?')} epochs on {budget.get('train_subset') or 'all'} "
           f"training images of {data}). Test accuracy and ECE (10 bins) of each seed's "
           "selected model, as mean ± sample std over seeds; the difference to the baseline "
           f"exceeds the seed-to-seed spread when Welch's t-test gives p < {ALPHA}. With "
           f"{n_seeds} seeds the test only sees large effects: 'within spread' means not shown, "
           "not no effect. Train accuracy is the last epoch's, on the (augmented) batches "
           "trained on.", ""]
    csv_rows = []
    for variant, row in rows.items():
        for run in row["runs"]:
            res = study.result(run)
            csv_rows.append({"variant": variant, "seed": run.fields["seed"], "run": run.name,
                             "status": run.status, "reason": run.reason,
                             "test_accuracy": res["test_accuracy"] if res else "",
                             "test_ece": res.get("test_ece", "") if res else "",
                             "command": run.command})
    utils.save_csv(csv_rows, os.path.join(sum_dir, "ablation_summary.csv"))
    md.append(table(["variant", "seeds run", "test acc (%)", "vs baseline (points)", "ECE (%)",
                     "ECE vs baseline (points)", "train acc, last epoch (%)", "notes"],
                    [[v, f"{len(r['accuracy'])}/{len(r['runs'])}", _mean_std(r["accuracy"]),
                      _difference_cell(r["vs_baseline"]), _mean_std(r["ece"]),
                      _difference_cell(r["ece_vs_baseline"]), _mean_std(r["train_acc"], digits=1),
                      r["notes"] or "-"] for v, r in rows.items()]))
    drawn = {v: r["accuracy"] for v, r in rows.items() if r["accuracy"]}
    if drawn:
        plots.plot_seed_comparison(
            {v: [100 * a for a in accs] for v, accs in drawn.items()},
            {v: [100 * e for e in rows[v]["ece"]] for v in drawn},
            os.path.join(fig_dir, "ablations.png"),
            study.title(f"Ablations on {data}: each dot one seed, bar the mean, whisker the sample std"))
    md += ["", _figure(report_dir, "figures/ablations.png", "ablations", "no ablation finished"), ""]
    histories = {f"{r.fields['variant']} (seed {r.fields['seed']})": study.result(r)["history"]
                 for r in study.select("ablation") if study.result(r)
                 and r.fields["seed"] == rows[r.fields["variant"]]["seeds"][0]}
    if histories:
        plots.plot_run_comparison(histories, os.path.join(fig_dir, "training_curves.png"),
                                  study.title("Ablations, first seed of each variant: training curves"))
    md += [_figure(report_dir, "figures/training_curves.png", "training curves",
                   "no ablation finished"), ""]
    return md


# ----------------------------------------------------------------------------- robustness

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


def robustness_section(study, rows, report_dir, fig_dir, sum_dir):
    import plots

    md = ["## Robustness", ""]
    ok = [r for r in rows if r["result"]]
    csv_rows = []
    for r in rows:
        e, t = r["result"], r["trained"]
        row = {"model": r["model"], "status": "ok" if e else study.why(r["eval"])}
        if e:
            row.update({k: e.get(k) for k in robust_keys()})
            row.update({f"{k}_ci95": e.get(f"{k}_ci95") for k in robust_keys()})
            row.update(n_attacked=e["n_samples"]["attacks"], n_autoattack=e.get("autoattack", {}).get("n"),
                       autoattack_version=e.get("autoattack", {}).get("version"),
                       autoattack_errors="; ".join(f"{k}: {v}" for k, v in e.get("autoattack", {}).get("errors", {}).items()),
                       eps=e["params"]["eps"], pgd_iters=e["params"]["iters"],
                       epochs=t["epochs"] if t else "", train_wall_time_s=round(t["wall_time_s"]) if t else "",
                       sanity_checks_passed=sum(e["sanity_checks"].values()),
                       sanity_checks_run=len(e["sanity_checks"]))
        csv_rows.append(row)
    utils.save_csv(csv_rows, os.path.join(sum_dir, "robustness_summary.csv"))
    if not ok:
        return md + ["not run: " + "; ".join(f"{r['model']}: {study.why(r['eval'])}" for r in rows), ""]
    first = ok[0]["result"]
    epochs = sorted({r["trained"]["epochs"] for r in ok if r["trained"]})
    if len(epochs) == 1:
        budget = (f"Every model trained for the same budget ({epochs[0]} epochs, same schedule "
                  "and data), so the differences below are the training method's. ")
    else:
        budget = (f"**The models trained for different budgets** ({', '.join(map(str, epochs))} "
                  "epochs): their differences mix the method with the schedule. ")
    md += [budget + "Accuracy in % ± half the 95% Wilson interval at eps "
           f"{first['params']['eps'] * 255:.0f}/255 on a seeded random sample of "
           f"{first['n_samples']['attacks']} test images (PGD-{first['params']['iters']} with a "
           "random start; noise is a random ±eps sign pattern); AutoAttack "
           f"({first.get('autoattack', {}).get('version', '?')} version, torchattacks) on the "
           f"first {first.get('autoattack', {}).get('n', '?')} images of that sample. Clean "
           "accuracy is on the whole test split. AutoAttack is the number to trust; PGD well "
           "above it is a sign of gradient masking.", ""]

    def checks(e):
        passed, total = sum(e["sanity_checks"].values()), len(e["sanity_checks"])
        text = f"{passed} of {total} passed"
        return text if passed == total else f"**{text}** (see Attack sanity checks)"

    def autoattack_cell(e):
        aa = cell(e, "autoattack_accuracy")
        errors = e.get("autoattack", {}).get("errors")
        if errors:
            aa += " (incomplete: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + ")"
        return aa

    columns = robust_columns()
    body = []
    for r in rows:
        e = r["result"]
        if not e:
            body.append([r["model"], study.why(r["eval"])] + [""] * len(columns))
            continue
        body.append([r["model"], r["trained"]["epochs"] if r["trained"] else "-"]
                    + [autoattack_cell(e) if key == "autoattack_accuracy" else cell(e, key)
                       for _, key in columns] + [checks(e)])
    md.append(table(["model", "epochs", *[header for header, _ in columns], "sanity checks"], body))
    md += ["", "Reading: " + " ".join(robustness_readings(study, rows)), ""]
    compared = ["clean_accuracy", *[f"{n}_accuracy" for n in attacks.evaluated()
                                    if not attacks.ATTACKS[n].baseline], "autoattack_accuracy"]
    bars = {r["model"]: {k: measure(r["result"], k) for k in compared} for r in ok}
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


def _model(rows, **fields):
    """The first evaluated row whose training run has these fields."""
    for r in rows:
        if r["train"] and r["result"] and all(r["train"].fields.get(k) == v for k, v in fields.items()):
            return r
    return None


def robustness_readings(study, rows):
    out = []
    std = _model(rows, adversarial=False, circle=False)
    masked = [r for r in rows if r["result"] and r["result"]["sanity_checks"].get("pgd_overestimate") is False]
    if masked:
        out.append("**PGD overestimates robustness** (PGD clearly more than 5 points above "
                   "AutoAttack on the same images: gradient masking) for "
                   + "; ".join(f"`{r['model']}`: PGD-{r['result']['params']['iters']} "
                               f"{100 * r['result']['autoattack_pgd_accuracy']:.1f}% vs AutoAttack "
                               f"{100 * r['result']['autoattack_accuracy']:.1f}%"
                               for r in masked) + "; read those from the AutoAttack column.")
    adv = [r for r in rows if r["result"] and r["train"] and r["train"].fields.get("adversarial")
           and measure(r["result"], "autoattack_accuracy")]
    if std and adv:
        best = max(adv, key=lambda r: r["result"]["autoattack_accuracy"])
        clean_cost = best["result"]["clean_accuracy"] - std["result"]["clean_accuracy"]
        same = r_epochs(best) == r_epochs(std)
        if all(below(measure(r["result"], "autoattack_accuracy"),
                     measure(best["result"], "autoattack_accuracy")) for r in adv if r is not best):
            out.append(f"The most robust model under AutoAttack is `{best['model']}` "
                       f"({cell(best['result'], 'autoattack_accuracy')}% vs the standard model's "
                       f"{cell(std['result'], 'autoattack_accuracy')}%), at {pm(*accuracy(best['result']))}% "
                       f"clean accuracy ({100 * clean_cost:+.1f} points against the standard model "
                       + ("trained for the same epochs)." if same else
                          f"trained for {r_epochs(std)} epochs against its {r_epochs(best)})."))
        else:  # a ranking inside the intervals would be noise
            out.append("No adversarially trained model is clearly the most robust under "
                       "AutoAttack: the highest interval overlaps another's (the standard model: "
                       f"{cell(std['result'], 'autoattack_accuracy')}%).")
        out[-1] += (" Every adversarially trained model, AutoAttack and clean: " + "; ".join(
                       f"`{r['model']}` {cell(r['result'], 'autoattack_accuracy')}% at "
                       f"{pm(*accuracy(r['result']))}% clean" for r in adv) + ".")
        apart = [(a, b) for a in adv for b in adv if below(measure(a["result"], "autoattack_accuracy"),
                                                         measure(b["result"], "autoattack_accuracy"))]
        out.append("Between the adversarially trained models, AutoAttack accuracy differs clearly for "
                   + ", ".join(f"`{b['model']}` over `{a['model']}`" for a, b in apart) + "."
                   if apart else "The adversarially trained models are level under AutoAttack "
                   "(their intervals overlap): at this budget the method matters less than the "
                   "training itself.")
    return out or ["no adversarially trained model was evaluated under AutoAttack."]


def r_epochs(row):
    return row["trained"]["epochs"] if row.get("trained") else None


# ----------------------------------------------------------------------------- Circle Loss

def _g(value):
    return "?" if value is None else f"{value:g}"


def circle_section(study, report_dir, rows):
    md = ["## Circle Loss", ""]
    sweep = study.select("circle_sweep")
    if not sweep:
        return md + ["not run: the matrix has no Circle Loss sweep", ""]
    budget = study.profile.get("circle_sweep", {})
    done = [study.result(r) for r in sweep if study.result(r)]
    args = done[0].get("args", {}) if done else {}
    start = (f"its term starts at {np.mean([r['initial_circle'] for r in done]):.0f} nats on a "
             f"fresh network against cross-entropy's {np.mean([r['initial_cross_entropy'] for r in done]):.1f}"
             if done else "its term starts far above cross-entropy's")
    md += [f"Circle Loss (gamma {_g(args.get('circle_gamma'))}, m {_g(args.get('circle_m'))}) is "
           f"added to cross-entropy with a weight. At that gamma {start}, so the sweep brackets "
           "the weight that makes the two terms equal at the first step and the validation "
           f"split picks one ({budget.get('epochs', '?')} epochs on "
           f"{budget.get('train_subset') or 'all'} images, one seed). train.py logs both terms, "
           "unweighted, at the first step and as each epoch's mean.", ""]
    body = []
    for run in sweep:
        res = study.result(run)
        if not res:
            body.append([run.fields["weight"], study.why(run), "", "", "", "", ""])
            continue
        w, ce, circle = res["circle_weight"], res["initial_cross_entropy"], res["initial_circle"]
        last = res["history"][-1]
        body.append([w, f"{ce:.2f}", f"{circle:.1f}", f"{w * circle:.2f} ({w * circle / ce:.2f}x CE)",
                     f"{last['train_cross_entropy']:.2f} / {w * last['train_circle']:.2f}",
                     pct(res["best_val_acc"]), pm(*accuracy(res))])
    md.append(table(["weight", "CE at step 1", "Circle at step 1", "weighted Circle at step 1",
                     "last epoch: CE / weighted Circle", "val acc (%)", "test acc (%)"], body))
    chosen = [r for r in study.runs if r.fields.get("chosen")]
    if chosen:
        c = chosen[0].fields["chosen"]
        md += ["", f"Chosen on validation accuracy: {c['flag']} {c['value']} (used by "
               + ", ".join(f"`{r.name}`" for r in chosen) + ")."]
    pairs = [("cross-entropy", dict(adversarial=False, circle=False), dict(adversarial=False, circle=True)),
             ("PGD-AT", dict(adversarial=True, circle=False, attack="pgd"),
              dict(adversarial=True, circle=True, attack="pgd"))]
    body = []
    for label, without, with_ in pairs:
        for name, sel in ((label, without), (f"{label} + Circle", with_)):
            r = _model(rows, **sel)
            e = r["result"] if r else None
            body.append([name, f"`{r['model']}`" if r else Outcome.NOT_RUN]
                        + [cell(e, k)
                           for k in ("clean_accuracy", "fgsm_accuracy", "pgd_accuracy", "autoattack_accuracy")])
    md += ["", "Equal budgets, same attacks (the Robustness section's protocol):", "",
           table(["objective", "model", "clean", "FGSM", "PGD", "AutoAttack"], body), ""]
    terms = []
    for r in study.select("cifar10", script="train", circle=True):
        res = study.result(r)
        if res and "initial_circle" in res:
            w, last = res["circle_weight"], res["history"][-1]
            terms.append(f"`{r.name}`: cross-entropy {res['initial_cross_entropy']:.2f} and weighted "
                         f"Circle {w * res['initial_circle']:.2f} at the first step, "
                         f"{last['train_cross_entropy']:.2f} and {w * last['train_circle']:.2f} in "
                         "the last epoch")
    if terms:
        md += ["The two terms of the objective (nats): " + "; ".join(terms) + ".", ""]
    return md


# ----------------------------------------------------------------------------- transfer

# Published source-only accuracies (LeNet-style networks, other protocols: reference only).
PUBLISHED_SOURCE_ONLY = {
    ("mnist", "usps"): (0.752, "ADDA, Tzeng et al. 2017, Table 2"),
    ("usps", "mnist"): (0.571, "ADDA, Tzeng et al. 2017, Table 2"),
    ("mnist", "mnistm"): (0.5225, "DANN, Ganin et al. 2016, Table 1"),
}


def grey_domains():
    return [n for n in datasets.digit_domains() if not datasets.DOMAINS[n].colour]


def colour_domains():
    return [n for n in datasets.digit_domains() if datasets.DOMAINS[n].colour]


def handwriting_targets():
    """From MNIST to another grey digit domain: a change of handwriting and scanning only."""
    return [n for n in grey_domains() if n != "mnist"]
# colour/texture digit domains and greyscale ones, for the transfer-direction claim


@dataclass
class Transfer:
    domains: list
    in_domain: dict
    scratch_small: dict
    direct: dict
    tuned: dict
    closed: dict
    sources: list
    n_target: int = 0


def transfer_numbers(study):
    domains = [r.fields["target"] for r in study.select(kind="in_domain")]
    t = Transfer(domains, {}, {}, {}, {}, {}, [])
    for r in study.select(kind="in_domain"):
        t.in_domain[r.fields["target"]] = accuracy(study.result(r))
    for r in study.select(kind="target_only"):
        t.scratch_small[r.fields["target"]] = accuracy(study.result(r))
    for r in study.select(kind="direct"):
        t.direct[r.fields["source"], r.fields["target"]] = accuracy(study.result(r))
    for r in study.select(kind="finetune"):
        t.tuned[r.fields["source"], r.fields["target"]] = accuracy(study.result(r))
        if r.fields["source"] not in t.sources and r.fields["source"] not in domains:
            t.sources.append(r.fields["source"])
    t.sources = domains + t.sources
    for (src, dst), d in t.direct.items():
        tuned, full = t.tuned.get((src, dst)), t.in_domain.get(dst)
        # the share of the gap the new head closes, where there is a gap the intervals see
        # (a gap within them makes the ratio noise: 3,250% on the smoke profile)
        if d and tuned and full and below(d, full):
            t.closed[src, dst] = (tuned[0] - d[0]) / (full[0] - d[0])
    t.n_target = study.profile.get("finetune", {}).get("train_subset", 0)
    return t


def transfer_section(study, t, report_dir, fig_dir, sum_dir):
    import plots

    md = ["## Cross-domain transfer", ""]
    if not t.domains:
        return md + ["not run: the matrix has no digit domains", ""]
    n = t.n_target

    def run_of(kind, src, dst):
        found = study.select(kind=kind, source=src, target=dst)
        return found[0] if found else None

    rows = []
    for src in t.sources:
        for dst in t.domains:
            if src == dst:
                continue
            d_run, f_run = run_of("direct", src, dst), run_of("finetune", src, dst)
            d, f, full = t.direct.get((src, dst)), t.tuned.get((src, dst)), t.in_domain.get(dst)
            published = PUBLISHED_SOURCE_ONLY.get((src, dst))
            rows.append({
                "source": src, "target": dst,
                "source_test_accuracy": t.in_domain[src][0] if t.in_domain.get(src) else "",
                "target_in_domain_accuracy": full[0] if full else "",
                "direct_accuracy": d[0] if d else "", "direct_ci95": d[1] if d else "",
                "finetuned_accuracy": f[0] if f else "", "finetuned_ci95": f[1] if f else "",
                "target_only_accuracy": t.scratch_small[dst][0] if t.scratch_small.get(dst) else "",
                "gap_closed": round(t.closed[src, dst], 3) if (src, dst) in t.closed else "",
                "published_source_only": published[0] if published else "",
                "published_source": published[1] if published else "",
                "direct_status": "ok" if d else ("n/a (no digit classifier)" if d_run is None
                                                 else study.why(d_run)),
                "finetune_status": "ok" if f else ("n/a" if f_run is None else study.why(f_run))})
    utils.save_csv(rows, os.path.join(sum_dir, "cross_domain_summary.csv"))

    def matrix(values, row_names):
        return [[t.in_domain.get(dst) if src == dst else values.get((src, dst)) for dst in t.domains]
                for src in row_names]
    extractors = [s for s in t.sources if s not in t.domains]
    plots.plot_transfer_matrix(
        [("direct: the source model as is (diagonal: in-domain)", t.domains, matrix(t.direct, t.domains)),
         (f"frozen features + new classifier on {n:,} target images",
          t.domains + [f"{s} features" for s in extractors] + [f"scratch on\n{n:,}"],
          matrix(t.tuned, t.domains + extractors) + [[t.scratch_small.get(d) for d in t.domains]])],
        t.domains, os.path.join(fig_dir, "transfer_matrix.png"),
        study.title("Digit-domain transfer: test accuracy (%) with 95% intervals"))

    def cell(row, kind):
        value = (t.direct if kind == "direct" else t.tuned).get((row["source"], row["target"]))
        status = row[f"{kind}_status"]
        return pm(*value) if status == "ok" else short(status)
    md += [f"Domains: {', '.join(t.domains)}. Every digit dataset is framed the same way (MNIST's "
           "convention: the digit in a ~20-pixel box centred in 32x32; see the README's Data "
           "section). **Direct**: the source model evaluated on the target's test split as is. "
           f"**Frozen features**: the source model's features frozen and a new classifier fitted "
           f"on {n:,} labelled target training images. **Scratch on {n:,}**: the target trained "
           "from scratch on those same images, the reference a transfer must beat to be worth "
           "it. **In-domain**: the target trained on its whole training set. Accuracies in %, ± "
           "half the 95% Wilson interval; *gap closed* = (frozen - direct) / (in-domain - "
           "direct), shown where direct is clearly below in-domain.", "",
           table(["source", "target", "direct", "frozen features", f"scratch on {n:,}",
                  "in-domain", "gap closed", "published source-only"],
                 [[r["source"], r["target"], cell(r, "direct"), cell(r, "finetune"),
                   pm(*t.scratch_small[r["target"]]) if t.scratch_small.get(r["target"]) else Outcome.NOT_RUN,
                   pm(*t.in_domain[r["target"]]) if t.in_domain.get(r["target"]) else Outcome.NOT_RUN,
                   f"{100 * r['gap_closed']:.0f}%" if r["gap_closed"] != "" else "-",
                   f"{100 * r['published_source_only']:.1f} ({r['published_source']})"
                   if r["published_source_only"] else "-"] for r in rows]), "",
           _figure(report_dir, "figures/transfer_matrix.png", "transfer matrix", "nothing to draw"), ""]
    md += framing_lines(study, t)
    md += ["Reading: " + " ".join(transfer_readings(t)), "",
           "Published source-only numbers are for reference only: they come from LeNet-style "
           "networks under those papers' protocols (ADDA samples 2,000 MNIST and 1,800 USPS "
           "images; DANN's MNIST-M uses BSDS500 backgrounds, ours CIFAR-10 photos), not from "
           "this ResNet18.", ""]
    return md


def framing_lines(study, t):
    runs = study.select(kind="direct_fill")
    if not runs:
        return []
    run = runs[0]
    src, dst = run.fields["source"], run.fields["target"]
    boxed, filled = t.direct.get((src, dst)), accuracy(study.result(run))
    if not (boxed and filled):
        return [f"Framing: {src} -> {dst} under both framings: "
                + (study.why(run) if not filled else "not run: the direct row did not run"), ""]
    text = (f"Framing matters: the {src} model reads {dst} digits framed like its training data "
            f"(in a 20-pixel box) at {pm(*boxed)}%, and the same digits scaled to fill the "
            f"32x32 frame (`--framing fill`) at {pm(*filled)}% "
            f"({100 * (filled[0] - boxed[0]):+.1f} points).")
    if (src, dst) in PUBLISHED_SOURCE_ONLY:
        published, where = PUBLISHED_SOURCE_ONLY[src, dst]
        nearer = "fill" if abs(filled[0] - published) < abs(boxed[0] - published) else "MNIST"
        text += (f" The published source-only {100 * published:.1f}% ({where}) is nearer the "
                 f"{nearer} framing's number" + (": part of the shift reported between these two "
                                                 "domains is how their digits are framed."
                                                 if nearer == "fill" else "."))
    return [text, ""]


def transfer_readings(t):
    """Sentences computed from the matrix: harder direction, gap closed, kind of shift."""
    out = []
    pairs = [(a, b) for i, a in enumerate(t.domains) for b in t.domains[i + 1:]
             if t.direct.get((a, b)) and t.direct.get((b, a))]
    if pairs:
        parts = []
        for a, b in pairs:
            ab, ba = t.direct[a, b], t.direct[b, a]
            if below(ab, ba) or below(ba, ab):
                hard, easy = ((a, b), (b, a)) if ab[0] < ba[0] else ((b, a), (a, b))
                parts.append(f"{hard[0]} -> {hard[1]} is harder than {easy[0]} -> {easy[1]} "
                             f"({100 * t.direct[hard][0]:.1f}% vs {100 * t.direct[easy][0]:.1f}%)")
            else:
                parts.append(f"{a} <-> {b} shows no difference the intervals can see "
                             f"({100 * ab[0]:.1f}% vs {100 * ba[0]:.1f}%)")
        out.append("Direction: " + "; ".join(parts) + ".")
    if t.closed:
        fractions = sorted(t.closed.values())
        vs_scratch = [(t.tuned[k], t.scratch_small[k[1]]) for k in t.closed if t.scratch_small.get(k[1])]
        above = sum(below(ref, v) for v, ref in vs_scratch)
        worse = sum(below(v, ref) for v, ref in vs_scratch)
        out.append(f"Frozen-feature fine-tuning closes a median {100 * float(np.median(fractions)):.0f}% "
                   f"of the gap between direct transfer and in-domain training (range "
                   f"{100 * fractions[0]:.0f}% to {100 * fractions[-1]:.0f}% over {len(t.closed)} pairs). "
                   f"Against training from scratch on the same target images it is clearly better in "
                   f"{above}, level within the intervals in {len(vs_scratch) - above - worse} and "
                   f"clearly worse in {worse} of {len(vs_scratch)} pairs.")
    natural = {d: t.tuned[("cifar10", d)] for d in t.domains if t.tuned.get(("cifar10", d))}
    if natural:
        digit_best = {d: max((t.tuned[s, d] for s in t.domains if s != d and t.tuned.get((s, d))),
                             key=lambda v: v[0], default=None) for d in natural}
        out.append("CIFAR-10 (natural-image) features with a new classifier reach "
                   + ", ".join(f"{pm(*v)}% on {d}" for d, v in natural.items())
                   + "; the best digit-domain features reach "
                   + ", ".join(f"{pm(*v)}% on {d}" for d, v in digit_best.items() if v) + ".")
    return out


# ----------------------------------------------------------------------------- claims

@dataclass
class Verdict:
    claim: str
    verdict: str  # supported | contradicted | inconclusive | not run
    evidence: str
    link: str


def _seed_evidence(rows, variant, budget, key="accuracy", what="test accuracy"):
    base, row = rows.get("baseline"), rows.get(variant)
    if not base or not row:
        return None, f"not run: no {variant} runs"
    d = seed_difference(base[key], row[key])
    if d is None:
        return None, (f"not run: {variant} has no finished seed"
                      + (f" ({row['notes']})" if row.get("notes") else ""))
    lost = "".join(f"; {v} diverged in {len(r['diverged'])} of "
                   f"{len(r['runs'])} seeds" for v, r in (("baseline", base), (variant, row)) if r["diverged"])
    return d, (f"{what} baseline {_mean_std(base[key])}% vs {variant} {_mean_std(row[key])}% "
               f"(mean ± std over {len(base[key])} and {len(row[key])} seeds{budget}; "
               f"difference {_difference_cell(d)}){lost}")


def _gap_evidence(rows, variant):
    """The train-test accuracy gap beside a regularization claim (train accuracy on the batches
    as trained, augmentation and dropout on: it flatters both, so it is context, not the verdict)."""
    base, row = rows.get("baseline"), rows.get(variant)
    if not (base and row and base["train_acc"] and row["train_acc"]
            and len(base["train_acc"]) == len(base["accuracy"]) and len(row["train_acc"]) == len(row["accuracy"])):
        return ""
    gap = lambda r: 100 * (np.mean(r["train_acc"]) - np.mean(r["accuracy"]))  # noqa: E731
    return (f"; train-test gap {gap(base):.1f} points for the baseline vs {gap(row):.1f} for "
            f"{variant} (train accuracy on the batches as trained)")


def _budget(study):
    """' after 4 epochs on 10000 images' for the ablations' evidence: their verdicts hold at
    that budget, not at the long schedules the claims were made for."""
    b = study.profile.get("ablation", {})
    if "epochs" not in b:
        return ""
    return f", {b['epochs']} epochs on {b.get('train_subset') or 'all'} images"


def claims(study, rows=None, transfer=None, robust_rows=None):
    """Every claim of the study with its verdict computed from this run's numbers (the
    sections' numbers, when the report passes them, else computed here)."""
    rows = ablation_rows(study) if rows is None else rows
    budget = _budget(study)
    out = []

    # BatchNorm eases optimization: without it, the baseline's learning rate trains worse or diverges
    claim = "BatchNorm eases optimization: without it the same learning rate trains worse (or diverges)"
    same = rows.get("no_bn_same_lr")
    if same and same["diverged"] and not same["accuracy"] and rows.get("baseline", {}).get("accuracy"):
        out.append(Verdict(claim, "supported",
                           f"without BatchNorm the baseline's learning rate diverged in all "
                           f"{len(same['diverged'])} seeds ({short(same['diverged'][0].reason)}); "
                           f"the baseline reached {_mean_std(rows['baseline']['accuracy'])}%",
                           "#ablations"))
    else:
        d, text = _seed_evidence(rows, "no_bn_same_lr", budget)
        own, own_text = _seed_evidence(rows, "no_bn", budget)
        if own is not None:
            text += f"; without BatchNorm at its own lower learning rate: {_mean_std(rows['no_bn']['accuracy'])}%"
        out.append(Verdict(claim, directional(d, -1), text, "#ablations"))

    d, text = _seed_evidence(rows, "label_smoothing", budget, "ece", "ECE")
    out.append(Verdict("Label smoothing improves calibration (lower ECE)", directional(d, -1),
                       text, "#ablations"))
    d, text = _seed_evidence(rows, "adam", budget)
    out.append(Verdict("SGD with momentum generalizes better than Adam (higher test accuracy)",
                       directional(d, -1), text, "#ablations"))
    d, text = _seed_evidence(rows, "no_augment", budget)
    out.append(Verdict("Data augmentation regularizes: turning it off lowers test accuracy",
                       directional(d, -1), text + _gap_evidence(rows, "no_augment"), "#ablations"))
    d, text = _seed_evidence(rows, "dropout", budget)
    out.append(Verdict("Dropout before the classifier regularizes: it raises test accuracy",
                       directional(d, +1), text + _gap_evidence(rows, "dropout"), "#ablations"))

    out += transfer_claims(transfer or transfer_numbers(study))
    out += robustness_claims(study, robust_rows if robust_rows is not None else robustness_rows(study))
    return out


def transfer_claims(t):
    out = []
    claim = ("Transfer is harder from a greyscale digit domain to a colour/texture one (MNIST-M, "
             "SVHN) than the reverse")
    parts, signs = [], []
    for varied in colour_domains():
        for plain in grey_domains():
            easy, hard = t.direct.get((varied, plain)), t.direct.get((plain, varied))
            if easy and hard:
                signs.append(1 if below(hard, easy) else -1 if below(easy, hard) else 0)
                parts.append(f"{plain} -> {varied} {pm(*hard)}% vs {varied} -> {plain} {pm(*easy)}%")
    out.append(Verdict(claim, pooled(signs), "; ".join(parts) or "not run: needs both directions of a pair",
                       "#cross-domain-transfer"))

    claim = ("Frozen-feature fine-tuning on a small labelled target set recovers most (over half) "
             "of the accuracy lost to the domain shift")
    if t.closed:
        median = float(np.median(list(t.closed.values())))
        verdict = "supported" if median > 0.5 else "contradicted"
        vs = [(t.tuned[k], t.scratch_small.get(k[1])) for k in t.closed if t.scratch_small.get(k[1])]
        worse = sum(below(v, ref) for v, ref in vs)
        evidence = (f"median gap closed {100 * median:.0f}% over {len(t.closed)} pairs (range "
                    f"{100 * min(t.closed.values()):.0f}% to {100 * max(t.closed.values()):.0f}%); "
                    f"clearly worse than training from scratch on the same {t.n_target:,} images "
                    f"in {worse} of {len(vs)} pairs")
    else:
        verdict, evidence = "not run", "not run: no pair with a gap and a fine-tuned model"
    out.append(Verdict(claim, verdict, evidence, "#cross-domain-transfer"))

    claim = "A colour/texture shift (MNIST -> MNIST-M) costs more than a handwriting shift (MNIST -> USPS, digits)"
    colour = t.direct.get(("mnist", "mnistm"))
    hand = [(d, t.direct.get(("mnist", d))) for d in handwriting_targets() if t.direct.get(("mnist", d))]
    if colour and hand:
        evidence = f"MNIST -> MNIST-M {pm(*colour)}% vs " + ", ".join(f"MNIST -> {d} {pm(*v)}%" for d, v in hand)
        verdict = ("supported" if all(below(colour, v) for _, v in hand)
                   else "contradicted" if any(below(v, colour) for _, v in hand) else "inconclusive")
    else:
        verdict, evidence = "not run", "not run: needs MNIST -> MNIST-M and MNIST -> USPS or digits"
    out.append(Verdict(claim, verdict, evidence, "#cross-domain-transfer"))
    return out


def robustness_claims(study, rows):
    out = []
    ok = [r for r in rows if r["result"] and measure(r["result"], "pgd_accuracy")
          and measure(r["result"], "fgsm_accuracy")]
    claim = "PGD is a stronger attack than FGSM (lower accuracy on the same images)"
    if ok:
        stronger = [r for r in ok if below(measure(r["result"], "pgd_accuracy"), measure(r["result"], "fgsm_accuracy"))]
        weaker = [r for r in ok if below(measure(r["result"], "fgsm_accuracy"), measure(r["result"], "pgd_accuracy"))]
        verdict = pooled([1] * len(stronger) + [-1] * len(weaker) + [0] * (len(ok) - len(stronger) - len(weaker)))
        evidence = "; ".join(f"`{r['model']}` FGSM {cell(r['result'], 'fgsm_accuracy')}% vs PGD "
                             f"{cell(r['result'], 'pgd_accuracy')}%" for r in ok)
        evidence += f" (PGD clearly lower for {len(stronger)} of {len(ok)} models)"
    else:
        verdict, evidence = "not run", "not run: no model evaluated under both attacks"
    out.append(Verdict(claim, verdict, evidence, "#robustness"))

    claim = ("Adversarial training trades clean accuracy for robustness (PGD-AT vs standard, "
             "same budget, AutoAttack)")
    std = _model(rows, adversarial=False, circle=False)
    pgd = _model(rows, adversarial=True, circle=False, attack="pgd")
    if std and pgd and measure(std["result"], "autoattack_accuracy") and measure(pgd["result"], "autoattack_accuracy"):
        a_std, a_pgd = measure(std["result"], "autoattack_accuracy"), measure(pgd["result"], "autoattack_accuracy")
        c_std, c_pgd = accuracy(std["result"]), accuracy(pgd["result"])
        robust, cost = below(a_std, a_pgd), below(c_pgd, c_std)
        verdict = ("supported" if robust and cost else "contradicted" if robust and below(c_std, c_pgd)
                   else "inconclusive")
        evidence = (f"clean {pm(*c_std)}% -> {pm(*c_pgd)}%, AutoAttack {pm(*a_std)}% -> {pm(*a_pgd)}% "
                    f"(`{std['model']}` -> `{pgd['model']}`)")
    else:
        verdict, evidence = "not run", "not run: needs the standard and PGD-trained models under AutoAttack"
    out.append(Verdict(claim, verdict, evidence, "#robustness"))

    claim = "Circle Loss makes representations more robust (AutoAttack accuracy, with vs without it, same budget)"
    parts, signs = [], []
    for adversarial in (False, True):
        base = _model(rows, adversarial=adversarial, circle=False, **({"attack": "pgd"} if adversarial else {}))
        circ = _model(rows, adversarial=adversarial, circle=True)
        a = measure(base["result"], "autoattack_accuracy") if base else None
        b = measure(circ["result"], "autoattack_accuracy") if circ else None
        if a and b:
            signs.append(1 if below(a, b) else -1 if below(b, a) else 0)
            parts.append(f"`{base['model']}` {pm(*a)}% vs `{circ['model']}` {pm(*b)}%")
    out.append(Verdict(claim, pooled(signs), "; ".join(parts) or "not run: needs Circle Loss models under AutoAttack",
                       "#circle-loss"))
    return out


def claims_section(verdicts):
    md = ["## Claims and verdicts", "",
          "Each claim the study makes, judged from this run's numbers by `report.claims` (not "
          "written by hand): **supported** or **contradicted** when the difference exceeds the "
          "uncertainty (non-overlapping 95% Wilson intervals for single models, Welch's t-test "
          f"at p < {ALPHA} across seeds), **inconclusive** when it does not at this budget, "
          "**not run** when a run it needs is missing. A verdict holds at this profile's "
          "budgets (see Parameters), not necessarily at the long schedules the claims were "
          "made for.", ""]
    md.append(table(["claim", "verdict", "evidence", "details"],
                    [[v.claim, f"**{v.verdict}**", v.evidence, f"[table]({v.link})"] for v in verdicts]))
    return md + [""]


# ----------------------------------------------------------------------------- the rest

def _figure_folder(row, i):
    """The first diagnosed model's figures go in figures/, the others' in a subfolder."""
    return "figures" if i == 0 else f"figures/{row['model']}"


DRAWN_HERE = ("robustness_sweep.png", "pgd_iter_sweep.png")  # the report draws all models in one


def diagnosed(rows):
    """The evaluated models with every diagnostic component."""
    return [r for r in rows if r["eval"].fields.get("diagnostics") and r["result"] and "ece" in r["result"]]


def copy_eval_figures(report_dir, rows):
    """The figures eval.py drew for the diagnosed models, as its metrics.json lists them."""
    for i, r in enumerate(diagnosed(rows)):
        folder = os.path.join(report_dir, _figure_folder(r, i))
        os.makedirs(folder, exist_ok=True)
        for name, source in r["result"]["files"].items():
            if name not in DRAWN_HERE and os.path.exists(source):
                shutil.copyfile(source, os.path.join(folder, name))


def diagnostics_section(study, report_dir, rows):
    md = ["## Calibration and diagnostics", ""]
    diag = [r for r in rows if r["eval"].fields.get("diagnostics")]
    ok = diagnosed(rows)
    if not ok:
        return md + ["not run: " + ("; ".join(f"{r['model']}: {study.why(r['eval'])}" for r in diag)
                                    or "no model has diagnostics in the matrix"), ""]
    md.append(table(
        ["model", "ECE (%)", "ECE after T (%)", "T", "AURC (%)", "sel. acc @80% (%)",
         "sel. acc @90% (%)", "top-1 (%)", "top-3 (%)", "macro F1 (%)"],
        [[r["model"], pct(e["ece"]), pct(e["ece_temperature_scaled"]), f"{e['temperature']:.2f}",
          pct(e["aurc"]), pct(e["selective_accuracy"].get("0.8")), pct(e["selective_accuracy"].get("0.9")),
          pct(e["topk"].get("1")), pct(e["topk"].get("3")), pct(e["macro_f1"])]
         for r in ok for e in [r["result"]]]))
    md += ["", "ECE uses 10 equal-width bins; the temperature is fitted on the validation split. "
           "AURC is the mean over k of the error rate of the k most confident predictions.", ""]
    for i, r in enumerate(ok):
        rel = _figure_folder(r, i)
        md.append(f"**{r['model']}**" + ("" if i == 0 else f" (figures in `{rel}/`)"))
        md.append("")
        names = [n for n in r["result"]["files"] if n not in DRAWN_HERE + ("adv_examples.png",)]
        md += [_figure(report_dir, f"{rel}/{n}", n.removesuffix(".png"),
                       "eval.py listed it but the file is missing") for n in names] + [""]
    return md


def sanity_section(study):
    md = ["## Attack sanity checks", ""]
    for run in study.select(script="eval"):
        r = study.result(run)
        if r and r.get("sanity_checks"):
            md.append(f"**{run.name}**")
            md += [f"- {'ok' if ok else '**FAILED**'} `{name}`: {r['sanity_details'][name]}"
                   for name, ok in r["sanity_checks"].items()]
            md.append("")
    return md


def training_rows(study):
    rows = []
    for run in study.select(script="train"):
        r = study.result(run)
        rows.append({"run": run.name, "group": run.group,
                     "dataset": r["data_description"] if r else "",
                     "epochs": r["epochs"] if r else "", "best_val_acc": r["best_val_acc"] if r else "",
                     "test_accuracy": r["test_accuracy"] if r else "",
                     "test_ece": r.get("test_ece", "") if r else "",
                     "wall_time_s": round(r["wall_time_s"], 1) if r else "",
                     "status": "ok" if r else study.why(run), "command": run.command})
    return rows


def failures_box(study):
    failed = [r for r in study.runs if r.status == Outcome.FAILED]
    if not failed:
        return []
    md = [f"> **{len(failed)} run{'s' if len(failed) > 1 else ''} FAILED** (a crash or bad input, "
          "not missing data); the pipeline exited non-zero. Their numbers are absent below.", ""]
    for r in failed:
        md += [f"**FAILED: `{r.name}`**: {short(r.reason)}", "", f"    {r.command}", "", "```",
               (r.error_tail or r.reason).strip(), "```", ""]
    return md


def describe_cpu(cpu):
    """'AMD EPYC (avx2, avx512f, avx512_bf16)' from utils.cpu_info()'s record."""
    if not isinstance(cpu, dict):
        return "an unrecorded CPU"
    return f"{cpu.get('model', '?')} ({', '.join(cpu.get('flags', [])) or 'no AVX2/AVX-512'})"


def _run_seconds(run, results):
    return results.get(run.name, {}).get("wall_time_s", run.seconds)


def write(study, report_dir):
    """Render REPORT.md, figures/ and summary/ into report_dir."""
    env = utils.environment_info()  # before writing: the report's own files would read as dirty
    fig_dir, sum_dir = os.path.join(report_dir, "figures"), os.path.join(report_dir, "summary")
    os.makedirs(fig_dir, exist_ok=True)
    os.makedirs(sum_dir, exist_ok=True)
    results = {r.name: study.results[r.name] for r in study.runs
               if study.result(r) is not None}

    ablations, robust, transfer = ablation_rows(study), robustness_rows(study), transfer_numbers(study)
    copy_eval_figures(report_dir, robust)
    abl_md = ablation_section(study, ablations, report_dir, fig_dir, sum_dir)
    robust_md = robustness_section(study, robust, report_dir, fig_dir, sum_dir)
    circle_md = circle_section(study, report_dir, robust)
    transfer_md = transfer_section(study, transfer, report_dir, fig_dir, sum_dir)
    diag_md = diagnostics_section(study, report_dir, robust)
    verdicts = claims(study, ablations, transfer, robust)
    utils.save_csv([v.__dict__ for v in verdicts], os.path.join(sum_dir, "claims.csv"))
    train_rows = training_rows(study)
    utils.save_csv(train_rows, os.path.join(sum_dir, "training_summary.csv"))

    commits = {}
    for r in results.values():
        commit = r.get("environment", {}).get("git_commit", "unknown")
        commits[commit] = commits.get(commit, 0) + 1
    data_desc = sorted({r.get("data_description") or r["data"]["description"] for r in results.values()})
    total = sum(r.get("wall_time_s", 0) for r in results.values())
    count = {SHOWN.get(s, s): sum(r.status == s for r in study.runs)
             for s in (Outcome.DONE, Outcome.SKIPPED, Outcome.NOT_RUN, Outcome.DIVERGED, Outcome.FAILED)}
    deliberate = sum(r.status == Outcome.DIVERGED and bool(r.fields.get("deliberate")) for r in study.runs)
    if deliberate:  # a check of the diverged outcome is not a failure of the study
        count[f"diverged ({deliberate} deliberately)"] = count.pop(Outcome.DIVERGED)
    md = [f"# Generalization and adversarial robustness of a ResNet18: report ({study.profile_name} profile)", ""]
    if study.synthetic:
        md += ["> **SYNTHETIC DATA.** This report was made with the smoke profile on synthetic "
               "patterns; its numbers say nothing about real images.", ""]
    md += failures_box(study)
    cpus = sorted({describe_cpu(r.get("environment", {}).get("cpu")) for r in results.values()})
    md += [f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
           f"`{study.command}`. **Total run time {total / 60:.1f} minutes** (the sum of the wall "
           f"times the runs recorded, on {', '.join(cpus)}; this invocation took "
           f"{study.wall_time / 60:.1f} min, re-using finished runs). Runs: "
           + ", ".join(f"{n} {s}" for s, n in count.items() if n) + f". Data: {'; '.join(data_desc)}.", ""]
    md += claims_section(verdicts)
    md += abl_md + robust_md + circle_md + transfer_md + diag_md + sanity_section(study)
    md += ["## Training runs", "", "Test accuracy of each run's `best.pth` (chosen on the "
           "validation split carved from train).", "",
           table(["run", "data", "epochs", "best val acc (%)", "test acc (%)", "wall time (s)"],
                 [[r["run"], r["dataset"] or "-", r["epochs"] or "-", pct(r["best_val_acc"] or None),
                   pct(r["test_accuracy"] or None) if r["status"] == "ok" else r["status"],
                   r["wall_time_s"] or "-"] for r in train_rows if r["group"] in ("digits", "cifar10")]), ""]
    md += ["## Parameters", "", f"Profile `{study.profile_name}` budgets per group:", "", "```",
           json.dumps(study.profile, indent=1), "```", "",
           "## Runs and commands", "",
           table(["run", "status", "wall time (s)", "command"],
                 [[r.name, SHOWN.get(r.status, r.status)
                   + (" (deliberate)" if r.fields.get("deliberate") else "")
                   + (f": {r.reason}" if r.reason and r.status != Outcome.SKIPPED else ""),
                   f"{_run_seconds(r, results):.0f}", f"`{r.command}`"] for r in study.runs]), "",
           "## Provenance", "",
           f"- git commit of this report: `{env['git_commit']}`; commits that produced the runs: "
           + ", ".join(f"`{c}` ({n} runs)" for c, n in sorted(commits.items())),
           f"- python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
           f"numpy {env['numpy']}, scikit-learn {env['scikit-learn']}",
           f"- machine: {env['platform']}, {env['cpu_count']} CPUs, torch threads "
           f"{env['torch_threads']}, GPU: {env['cuda'] or 'none'}",
           f"- data root: `{study.data_root}`; datasets: {'; '.join(data_desc)}", ""]
    with open(os.path.join(report_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(md))
    summary = {"profile": study.profile_name, "wall_time_s": study.wall_time,
               "claims": [v.__dict__ for v in verdicts],
               "runs": {r.name: {"status": r.status, "reason": r.reason, "command": r.command,
                                 "group": r.group, "fields": r.fields,
                                 "seconds_this_invocation": r.seconds} for r in study.runs},
               "results": {k: {kk: vv for kk, vv in v.items() if kk != "history"}
                           for k, v in results.items()}}
    utils.save_json(summary, os.path.join(fig_dir, "metrics_summary.json"))
    return verdicts
