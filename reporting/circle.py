"""The Circle Loss section: the weight sweep, the chosen weight, and the models trained with
Circle Loss beside their cross-entropy twins under the Robustness section's attacks."""

import numpy as np

from run_contract import Outcome

from reporting.common import accuracy, cell, pct, pm, table
from reporting.robustness import _model


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
