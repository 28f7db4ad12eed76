"""The ablation section: every variant over its seeds, against the baseline."""

import os

import run_contract
import utils
from run_contract import Outcome

from reporting.common import ALPHA, _figure, seed_difference, seed_summary, short, table


def per_seed(study, variant, key, chance=None):
    """{seed: value} of an ablation variant's finished seeds; a diverged seed counts as
    `chance` (1 / classes) for accuracy, and is left out where chance is None."""
    values = {}
    for run in study.select("ablation", variant=variant):
        res = study.result(run)
        if res and res.get(key) is not None:
            values[run.fields["seed"]] = res[key]
        elif run.status == Outcome.DIVERGED and chance is not None:
            values[run.fields["seed"]] = chance
    return values


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
            "accuracy_by_seed": per_seed(study, variant, "test_accuracy"),
            "ece_by_seed": per_seed(study, variant, "test_ece"),
            "train_acc": [res["history"][-1]["train_acc"] for _, res in finished if res.get("history")],
            "train_clean": [res["train_clean_accuracy"] for _, res in finished
                            if res.get("train_clean_accuracy") is not None],
            "gap": [res["train_clean_accuracy"] - res["test_accuracy"] for _, res in finished
                    if res.get("train_clean_accuracy") is not None],
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
        row["vs_baseline"] = (seed_difference(base["accuracy_by_seed"], row["accuracy_by_seed"])
                              if base and variant != "baseline" else None)
        row["ece_vs_baseline"] = (seed_difference(base["ece_by_seed"], row["ece_by_seed"])
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
           "(mean over the seeds both finished) exceeds the seed-to-seed spread when the "
           f"seed-paired t-test gives p < {ALPHA}, uncorrected (the claims above correct over "
           f"their family). With {n_seeds} seeds the test only sees large effects: 'within "
           "spread' means not shown, not no effect. Clean train accuracy: the selected model "
           "on up to 10,000 of its training images as stored (no augmentation, dropout off); the "
           "train-test gap is it minus test accuracy, the room a regularizer has to act in. "
           "The last epoch's train accuracy is on the batches as trained (augmented, dropout "
           "on), which flatters the regularized variants.", ""]
    csv_rows = []
    for variant, row in rows.items():
        for run in row["runs"]:
            res = study.result(run)
            csv_rows.append({"variant": variant, "seed": run.fields["seed"], "run": run.name,
                             "status": run.status, "reason": run.reason,
                             "test_accuracy": res["test_accuracy"] if res else "",
                             "test_ece": res.get("test_ece", "") if res else "",
                             "train_clean_accuracy": res.get("train_clean_accuracy", "") if res else "",
                             "command": run.command})
    utils.save_csv(csv_rows, os.path.join(sum_dir, "ablation_summary.csv"))
    md.append(table(["variant", "seeds run", "test acc (%)", "vs baseline (points)", "ECE (%)",
                     "ECE vs baseline (points)", "clean train acc (%)", "train-test gap (points)",
                     "train acc, last epoch (%)", "notes"],
                    [[v, f"{len(r['accuracy'])}/{len(r['runs'])}", _mean_std(r["accuracy"]),
                      _difference_cell(r["vs_baseline"]), _mean_std(r["ece"]),
                      _difference_cell(r["ece_vs_baseline"]), _mean_std(r["train_clean"], digits=1),
                      _mean_std(r["gap"], digits=1), _mean_std(r["train_acc"], digits=1),
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
