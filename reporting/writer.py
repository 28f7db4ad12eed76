"""REPORT.md from its sections, the diagnostics and sanity checks of the evaluated
models, the training table, and where the figures and CSVs go."""

import datetime
import os
import shutil

import utils
from run_contract import Outcome

from reporting.ablations import ablation_rows, ablation_section
from reporting.circle import circle_section
from reporting.claims import judge
from reporting.common import SHOWN, _figure, pct, short, table
from reporting.corruptions import corruption_section
from reporting.evidence import claims_section, evidence_rows
from reporting.looks import plans_section, run_time_text
from reporting.provenance import provenance_lines
from reporting.robustness import robustness_rows, robustness_section
from reporting.setup import setup_section
from reporting.transfer import transfer_numbers, transfer_section


def _figure_folder(row, i):
    """The first diagnosed model's figures go in figures/, the others' in a subfolder."""
    return "figures" if i == 0 else f"figures/{row['model']}"


# the report draws all models in one, or shows them in their own section (the heatmaps)
DRAWN_HERE = ("robustness_sweep.png", "pgd_iter_sweep.png", "corruption_heatmap.png")


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
        why = "; ".join(f"{r['model']}: {study.why(r['eval'])}" for r in diag)
        return md + ["No model with diagnostics evaluated: " + (why or "none has them in the matrix"), ""]
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
    """One row per evaluation, one column per check (ok, FAILED, or - where it did not
    apply); each evaluation's measured numbers below it in a collapsed block."""
    checked = [(run, study.result(run)) for run in study.select(script="eval")]
    checked = [(run, r) for run, r in checked if r and r.get("sanity_checks")]
    if not checked:
        return ["## Attack sanity checks", "", "No evaluation ran its attacks.", ""]
    names = list(dict.fromkeys(n for _, r in checked for n in r["sanity_checks"]))

    def mark(checks, name):
        return "-" if name not in checks else "ok" if checks[name] else "**FAILED**"
    md = ["## Attack sanity checks", "",
          "Each evaluation checks its own attacks (what each check compares and the numbers it "
          "read are in the evaluation's block below the table); '-': the check did not apply "
          "(its attack or sweep was not run).", "",
          table(["evaluation", *[f"`{n}`" for n in names]],
                [[run.name, *[mark(r["sanity_checks"], n) for n in names]] for run, r in checked]), ""]
    for run, r in checked:
        passed = sum(r["sanity_checks"].values())
        md += [f"<details><summary>{run.name}: {passed} of {len(r['sanity_checks'])} passed</summary>",
               "", *[f"- {mark(r['sanity_checks'], n)} `{n}`: {r['sanity_details'][n]}"
                     for n in r["sanity_checks"]], "", "</details>", ""]
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


def _per_cpu(results):
    """'on CPU A' or, where runs ran on different CPUs, 'X min on CPU A (n runs), ...'."""
    minutes, runs = {}, {}
    for r in results.values():
        cpu = describe_cpu(r.get("environment", {}).get("cpu"))
        minutes[cpu] = minutes.get(cpu, 0.0) + r.get("wall_time_s", 0) / 60
        runs[cpu] = runs.get(cpu, 0) + 1
    if len(minutes) == 1:
        return f"on {next(iter(minutes))}"
    return ", ".join(f"{minutes[c]:.1f} min on {c} ({runs[c]} run{'s' * (runs[c] > 1)})"
                     for c in sorted(minutes))


def describe_cpu(cpu):
    """'AMD EPYC (avx2, avx512f, avx512_bf16)' from utils.cpu_info()'s record."""
    if not isinstance(cpu, dict):
        return "an unrecorded CPU"
    return f"{cpu.get('model', '?')} ({', '.join(cpu.get('flags', [])) or 'no AVX2/AVX-512'})"


def _setting(value):
    """A profile setting as a table cell or list item: None as "all" (an unset subset), a
    command-line fragment as typed, other lists joined, a mapping as "key value; ..."."""
    if value is None:
        return "all"
    if isinstance(value, (list, tuple)):
        if any(str(v).startswith("--") for v in value):
            return "`" + " ".join(map(str, value)) + "`"
        return ", ".join(_setting(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} ({_setting(v)})" if isinstance(v, dict) else f"{k} {_setting(v)}"
                         for k, v in value.items())
    return str(value)


def parameters_section(name, profile):
    """The profile's budgets: one row per training group (those with epochs), one column per
    setting any of them has ("-" where the group does not set it); every other
    setting (evaluation, seeds, datasets, ...) as a list item."""
    groups = {g: b for g, b in profile.items() if isinstance(b, dict) and "epochs" in b}
    columns = list(dict.fromkeys(k for b in groups.values() for k in b))
    rest = [f"- **{k}**: {_setting(v)}" for k, v in profile.items() if k not in groups]
    return ["## Parameters", "",
            f"Profile `{name}`: training budgets per group of runs (`train_subset` all: the whole "
            "training split; `-`: not set for the group).", "",
            table(["group", *columns],
                  [[g, *(_setting(b[c]) if c in b else "-" for c in columns)]
                   for g, b in groups.items()]), "",
            "Other settings:", "", *rest, ""]


def _run_seconds(run, results):
    return results.get(run.name, {}).get("wall_time_s", run.seconds)


def write(study, report_dir):
    """Render REPORT.md, figures/ and summary/ into report_dir."""
    env = utils.environment_info()  # before writing: the report's own files would read as dirty
    fig_dir, sum_dir = os.path.join(report_dir, "figures"), os.path.join(report_dir, "summary")
    for folder in (fig_dir, sum_dir):
        os.makedirs(folder, exist_ok=True)
    results = {r.name: study.results[r.name] for r in study.runs if study.result(r) is not None}

    ablations, robust, transfer = ablation_rows(study), robustness_rows(study), transfer_numbers(study)
    copy_eval_figures(report_dir, robust)
    abl_md = ablation_section(study, ablations, report_dir, fig_dir, sum_dir)
    robust_md = robustness_section(study, robust, report_dir, fig_dir, sum_dir)
    circle_md = circle_section(study, report_dir, robust)
    corruption_md = corruption_section(study, report_dir, fig_dir, sum_dir)
    transfer_md = transfer_section(study, transfer, report_dir, fig_dir, sum_dir)
    diag_md = diagnostics_section(study, report_dir, robust)
    verdicts = judge(study)
    utils.save_csv([v.row() for v in verdicts], os.path.join(sum_dir, "claims.csv"))
    utils.save_csv(evidence_rows(verdicts), os.path.join(sum_dir, "claims_evidence.csv"))
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
    md += [f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
           f"`{study.command}`. **Total run time {total / 60:.1f} minutes** (the sum of the wall "
           f"times the runs recorded, {_per_cpu(results)}, each in full also where `--jobs` ran it "
           f"beside others, so it can exceed the elapsed time; this invocation took "
           f"{study.wall_time / 60:.1f} min, re-using finished runs). Runs: "
           + ", ".join(f"{n} {s}" for s, n in count.items() if n) + f". Data: {'; '.join(data_desc)}."
           + run_time_text(study), ""]
    md += setup_section(study) + claims_section(verdicts) + plans_section(study, verdicts)
    md += abl_md + robust_md + circle_md + corruption_md + transfer_md + diag_md + sanity_section(study)
    md += ["## Training runs", "", "Test accuracy of each run's `best.pth` (chosen on the "
           "validation split carved from train).", "",
           table(["run", "data", "epochs", "best val acc (%)", "test acc (%)", "wall time (s)"],
                 [[r["run"], r["dataset"] or "-", r["epochs"] or "-",
                   pct(r["best_val_acc"] or None) if r["status"] == "ok" else "-",
                   pct(r["test_accuracy"] or None) if r["status"] == "ok" else r["status"],
                   r["wall_time_s"] or "-"] for r in train_rows if r["group"] in ("digits", "cifar10")]), ""]
    md += parameters_section(study.profile_name, study.profile)
    md += ["## Runs and commands", "",
           table(["run", "status", "wall time (s)", "command"],
                 [[r.name, SHOWN.get(r.status, r.status)
                   + (" (deliberate)" if r.fields.get("deliberate") else "")
                   + (f": {r.reason}" if r.reason and r.status != Outcome.SKIPPED else ""),
                   f"{_run_seconds(r, results):.0f}", f"`{r.command}`"] for r in study.runs]), "",
           *provenance_lines(env, commits),
           f"- python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
           f"numpy {env['numpy']}, scikit-learn {env['scikit-learn']}",
           f"- machine: {env['platform']}, {env['cpu_count']} CPUs, torch threads "
           f"{env['torch_threads']}, GPU: {env['cuda'] or 'none'}",
           f"- data root: `{study.data_root}`; datasets: {'; '.join(data_desc)}", ""]
    with open(os.path.join(report_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(md))
    summary = {"profile": study.profile_name, "wall_time_s": study.wall_time,
               "claims": [v.row() for v in verdicts],
               "runs": {r.name: {"status": r.status, "reason": r.reason, "command": r.command,
                                 "group": r.group, "fields": r.fields,
                                 "seconds_this_invocation": r.seconds} for r in study.runs},
               "results": {k: {kk: vv for kk, vv in v.items() if kk != "history"}
                           for k, v in results.items()}}
    utils.save_json(summary, os.path.join(fig_dir, "metrics_summary.json"))
    return verdicts
