"""Regenerate the whole study: train the experiment matrix, evaluate it, write report/.

    python run_report_pipeline.py --data-root ../shared/data
    python run_report_pipeline.py --profile full --device cuda --jobs 4      # 4 GPUs
    python run_report_pipeline.py --profile full --launcher slurm --jobs 16  # a cluster

The matrix is declared once, in study/plan.py (budgets in study/profiles.py), as data: each
run's script, flags, the runs it reads, and the fields the report places it by;
study/execution.py decides and records each run's outcome, study/launchers.py runs them
(here, on worker processes, or through submitit). Every run is the command a person would
type (train.py / eval.py main(argv)), written into the report; reporting/ renders tables,
figures and the claims' verdicts from the records and the files the runs wrote. Runs whose
outputs are complete for the same command are skipped (--force redoes them); an
interrupted training run resumes. Each run ends in one of:
    done / skipped   its numbers are on disk;
    not run          something it needs is absent in a way the user knows about (a dataset
                     not available offline, no --pretrained-weights), or a run it reads did
                     not finish;
    diverged         its training loss became NaN/inf: a result, recorded in diverged.json;
    FAILED           anything else (a crash, a bad file given, a missing output): the error's
                     last lines go to the log and the top of REPORT.md, and the pipeline exits
                     with status 2 once the other runs have finished.
"""

import argparse
import os
import sys
import time

import datasets
import run_contract
import utils
from run_contract import Outcome
from study.execution import (NOT_EXECUTED, _load_results, as_on_disk, load_per_image, on_disk,
                             recorded_outcome, records_lost, restore_records, save_records)
from study.launchers import launch
from study import looks
from study.plan import build_matrix
from study.profiles import PROFILES, profile_domains

HERE = os.path.dirname(os.path.abspath(__file__))
FINDINGS_DOC = os.path.join(HERE, "docs", "pipeline.md")  # its findings block follows report/

# ----------------------------------------------------------------------------- report


def write_report(args, runs, results, wall_time):
    """Render the report from the run records and the numbers their files hold."""
    import reporting

    study = reporting.Study(runs, results, args.profile, looks.profile_at(PROFILES[args.profile], args.look),
                            utils.command_line("run_report_pipeline.py", args.argv),
                            args.data_root, wall_time, load_per_image(runs),
                            [plan for k in range(2, args.look + 1) if (plan := looks.recorded(args.checkpoints, k))])
    verdicts = reporting.write(study, args.report_dir)
    if _is_committed(args.report_dir):
        if reporting.sync_findings(FINDINGS_DOC, [v.row() for v in verdicts]):
            print(f"updated the findings in {os.path.relpath(FINDINGS_DOC)} from the report", flush=True)
    return verdicts


def _open_claims(args, profile, look, runs):
    """The claims still open after `look` (what they read, their chance at the next look),
    judged from what is on disk."""
    import reporting
    from reporting.claims import open_claims

    copies, results = as_on_disk(runs)
    study = reporting.Study(copies, results, args.profile, looks.profile_at(profile, look),
                            per_image=load_per_image(copies))
    return open_claims(study)


def _rates(args, profile):
    """Seconds per training image here (study/estimate.py), measured when a budget or a
    look's plan needs them: --plan, --budget, or a later look not yet planned."""
    unplanned = args.look > 1 and not (args.list or args.render_only) and any(
        looks.recorded(args.checkpoints, k) is None for k in range(2, args.look + 1))
    if not (args.plan or (args.budget and not args.render_only) or unplanned):
        return None
    from study.estimate import seconds_per_image

    return seconds_per_image(sorted({r.stem for r in looks.matrix(args, profile, args.look)}), args.device)


def _calibration(args, profile, rates):
    """What the runs done so far (of any look up to args.look, as they ran) took against their
    --plan estimate here (study/estimate.calibration): a budget is counted in run time, so the
    estimates it is planned with are scaled by it; 1.0 without rates."""
    from study.estimate import calibration

    if not rates:
        return 1.0
    runs, took = {}, {}
    for k in range(1, args.look + 1):  # each run as it finished: a later look's command may differ
        matrix = looks.matrix(args, profile, k)
        finished = _took(matrix)
        took.update(finished)
        runs.update({r.name: r for r in matrix if r.name in finished})
    factor, _ = calibration(list(runs.values()), rates, took)
    return factor


def _took(runs):
    """{name: seconds} of the runs of `runs` that finished on disk, as their records say they
    took (wall_time_s)."""
    _, results = as_on_disk(runs)
    return {name: r["wall_time_s"] for name, r in results.items() if "wall_time_s" in r}


def _chooser(args, rates):
    """How a later look picks what it extends (study/looks.py): as it was planned, else by
    each open claim's chance per minute under --budget (every claim without one)."""
    from study.estimate import estimate

    return looks.chooser(args.checkpoints, args.budget, rates and (lambda run: estimate(run, rates)),
                         _took, lambda runs: _unfinished(args, runs),
                         persist=not (args.list or args.plan or args.render_only), budget_why=args.budget_why,
                         factor=args.calibration)


def _unfinished(args, runs):
    """The runs with no outcome on disk yet: not done, not diverged, and neither their data nor
    a run they read absent (those stay "not run"). A FAILED run is among them."""
    copies, _ = as_on_disk(runs)
    absent = set()
    for c in copies:  # in matrix order: what a run reads comes before it
        dataset = c.argv[c.argv.index("--dataset") + 1] if "--dataset" in c.argv else None
        if (dataset in datasets.DOMAINS and datasets.files_missing(dataset, args.data_root)) or \
                absent & set(c.needs_all):
            absent.add(c.name)
    return [c.name for c in copies
            if c.status == Outcome.NOT_RUN and c.reason == NOT_EXECUTED and c.name not in absent]


def _is_committed(report_dir):
    """Whether `report_dir` is the committed report (report/ of this checkout)."""
    committed = os.path.join(HERE, "report")
    return os.path.isdir(report_dir) and os.path.samefile(report_dir, committed)


# ----------------------------------------------------------------------------- main

REPORT_PROFILE = "quick"  # the profile whose report is committed in report/
FIXED = "fixed"  # --budget fixed
FIXED_WHY = ("the fixed design's --plan estimate here, times what the runs done took against "
             "their estimate")


def _seed_list(text):
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds repeat in {text!r}")
    return seeds


def _budget(text):
    """--budget: minutes, or 'fixed' (the fixed design's estimate, resolved once rates are measured)."""
    return text if text == FIXED else utils.positive_float(text)


def _resolve_budget(args, profile, rates):
    """--budget fixed: the summed --plan estimate here of the profile without looks (the fixed
    design a study in looks must not outspend), in minutes of run time: times the calibration
    (args.calibration), so that it is counted in the units the runs' records spend it in."""
    if args.budget != FIXED or not rates:  # (no rates: --render-only, which runs nothing)
        return None if args.budget == FIXED else args.budget
    from study.estimate import estimate

    fixed = build_matrix(args, {k: v for k, v in profile.items() if k != "looks"})
    estimated = sum(estimate(r, rates) for r in fixed if r.status != Outcome.NOT_RUN) / 60
    minutes = estimated * args.calibration
    print(f"--budget fixed: {minutes:.0f} min, the fixed design's --plan estimate here ({estimated:.0f} "
          f"min) times what the runs done took against their estimate ({args.calibration:.2f}x)",
          flush=True)
    return round(minutes, 1)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=utils.HelpFormatter)
    p.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                   help="budgets: smoke (synthetic, a few minutes), quick (real data, the "
                        "committed report; --plan estimates its time here), full (the published "
                        "recipes on the CIFAR stem, for GPUs)")
    p.add_argument("--data-root", default=datasets.default_data_root(),
                   help=datasets.DATA_ROOT_HELP)
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.add_argument("--ablation-dataset", choices=("svhn", "cifar10", "mnist"), default="cifar10",
                   help="dataset of the ablations (the study names svhn, which is not "
                        "available offline)")
    p.add_argument("--pretrained-weights", default=None, metavar="PATH",
                   help="torchvision resnet18 ImageNet weights for the frozen-extractor rows")
    p.add_argument("--checkpoints", default=None,
                   help="where runs write (default: checkpoints/<profile>, so profiles never "
                        "overwrite each other's runs)")
    p.add_argument("--report-dir", default=None,
                   help=f"where the report goes (default: report/ for the {REPORT_PROFILE} "
                        "profile, which made the committed report; report/<profile>/ for the "
                        "others, so they never overwrite it)")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN",
                   help="run only these runs (and report on everything on disk); --list "
                        "prints their names")
    p.add_argument("--list", action="store_true",
                   help="print the profile's runs (name, group, command) and exit")
    p.add_argument("--plan", action="store_true",
                   help="print each run with its estimated time on this machine (from a few "
                        "measured training steps) and the total, then exit: nothing trains")
    p.add_argument("--force", action="store_true", help="redo runs that are up to date")
    p.add_argument("--render-only", action="store_true",
                   help="run nothing: write the report from the outputs already on disk")
    p.add_argument("--jobs", type=utils.positive_int, default=1,
                   help="runs at once: with the local launcher, N processes (one GPU each "
                        "where there are GPUs, else the CPU cores divided between them); with "
                        "slurm, at most N jobs queued at once")
    p.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                   help="where runs execute: this machine; a Slurm cluster, one job per run "
                        "through submitit; or submitit's local executor (the Slurm code path "
                        "on this machine, for testing)")
    p.add_argument("--slurm-partition", default=None, help="Slurm partition (--launcher slurm)")
    p.add_argument("--slurm-gpus", type=utils.nonnegative_int, default=1,
                   help="GPUs per Slurm job")
    p.add_argument("--slurm-cpus", type=utils.positive_int, default=8,
                   help="CPU cores per Slurm job (and torch threads)")
    p.add_argument("--slurm-timeout-min", type=utils.positive_int, default=600,
                   help="time limit of one job in minutes")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any run did not run")
    p.add_argument("--seed", type=int, default=0, help="seed of every run but the ablations")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S,S,...",
                   help="seeds of every ablation variant (default: the profile's; quick: 0,1,2)")
    p.add_argument("--device", default="auto", help="device of every run")
    p.add_argument("--budget", type=_budget, default=None, metavar="MINUTES",
                   help="summed run time the study may take (the runs done count first, then "
                        "--plan's estimates): a later look extends the open claims most likely "
                        "to be decided per minute while it lasts, and runs past it are not run, "
                        "saying so; 'fixed': the fixed one-look design's --plan estimate here "
                        "(default: none)")
    p.add_argument("--look", type=utils.positive_int, default=None,
                   help="the look of a profile in looks (its `looks`: seeds and images per look); "
                        "each look extends the one before, and the report judges every look "
                        "taken (default: the last look planned in --checkpoints, or with "
                        "--render-only in the report's records; else 1: so a plain run resumes "
                        "the look it stopped in)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    profile = PROFILES[args.profile]
    if profile.get("looks") and args.seeds is not None:
        raise SystemExit(f"error: --seeds: the {args.profile} profile runs in looks, and each look "
                         "sets the seeds (--look K)")
    if args.seeds is None:
        args.seeds = profile["seeds"]
    if args.checkpoints is None:
        args.checkpoints = os.path.join("checkpoints", args.profile)
    if args.report_dir is None:
        args.report_dir = "report" if args.profile == REPORT_PROFILE else os.path.join("report", args.profile)
    if args.look is None:
        args.look = looks.last_planned(os.path.join(args.report_dir, run_contract.RECORDS)
                                       if args.render_only else args.checkpoints)
    looks.profile_at(profile, args.look)  # refuses a look the profile does not have
    return args


def missing_data(args, profile):
    """The real datasets this profile reads whose files are not in the data root, as one
    line that says which and how to add them (None when nothing is missing)."""
    ds = profile["datasets"]
    names = {ds.get(args.ablation_dataset, args.ablation_dataset), ds["cifar10"],
             *profile_domains(profile)}
    missing = {n: files for n in sorted(names) if (files := datasets.files_missing(n, args.data_root))}
    if not missing:
        return None
    return (f"data root {args.data_root} lacks " + "; ".join(
        f"{n} ({', '.join(files)})" for n, files in missing.items())
        + ": their runs are \"not run\". Add them with --data-root FOLDER (or $DATA_ROOT) "
        "naming a folder that holds those files (README, Data).")


def dirty_tree_note():
    """What a run started from a working tree with uncommitted changes costs the report."""
    commit = utils.git_commit()
    if commit.endswith("-dirty"):
        return (f"the working tree has uncommitted changes: runs record `{commit}`, and the "
                "report's Provenance cannot say which code produced them. Commit (or stash) "
                "first for a report a reviewer can check.")
    return None


def main(argv=None):
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    # --render-only: the report's records (and the plans of its looks) back on disk first
    outcomes = restore_records(args) if args.render_only else {}
    measured = _rates(args, profile)
    rates = measured and measured[0]
    args.budget_why = FIXED_WHY if args.budget == FIXED else "--budget"
    args.calibration = _calibration(args, profile, rates)
    args.budget = _resolve_budget(args, profile, rates)
    runs = looks.pruned(args, profile, args.look, lambda k, done: _open_claims(args, profile, k, done),
                        _chooser(args, rates))
    missing = missing_data(args, profile)
    by_name = {r.name: r for r in runs}
    if args.list:
        for run in runs:
            print(f"{run.name:40s} {run.group:12s} {run.command}")
        return 0
    if args.plan:
        from study.estimate import print_looks, print_plan

        print_plan(runs, rates, measured[1], args.device, _took(runs))  # the runs done for these commands
        if looks.count(profile) > 1:
            fixed = build_matrix(args, {k: v for k, v in profile.items() if k != "looks"})
            print_looks([looks.added(args, profile, k) for k in range(1, looks.count(profile) + 1)],
                        rates, args.look, fixed)
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(by_name))
        if unknown:
            raise SystemExit(f"error: unknown runs {unknown}; choose from {sorted(by_name)}")
    for note in [missing] + ([] if args.render_only else [dirty_tree_note()]):
        if note:
            print(f"NOTE: {note}", flush=True)
    # a later look's plan spent its budget block by block (study/looks.select); cutting runs
    # from it here would leave a block half run (a model without its evaluation)
    if args.budget and not args.render_only and looks.recorded(args.checkpoints, args.look) is None:
        from study.estimate import cut_to_budget

        planned, cut = cut_to_budget([r for r in runs if not args.only or r.name in args.only],
                                     rates, args.budget, args.calibration)
        print(f"budget {args.budget:g} min: {planned:.0f} min done or planned; "
              f"{len(cut)} runs left out" + (f" ({', '.join(cut[:5])}{', ...' if len(cut) > 5 else ''})"
                                              if cut else ""), flush=True)
    start = time.time()
    for run in runs:
        if (args.only and run.name not in args.only) or args.render_only:
            on_disk(run, by_name)  # report what is on disk for it
            recorded_outcome(run, outcomes)
    if not args.render_only:
        # one pipeline per checkpoints folder at a time (each run also has one owner)
        with run_contract.Owner(os.path.join(args.checkpoints, run_contract.PIPELINE_LOCK),
                                f"checkpoints folder {args.checkpoints}"):
            todo = {r.name for r in runs} if args.force else set(_unfinished(args, runs))
            launch(args, runs, by_name, todo)
    wall = time.time() - start
    if args.render_only:
        lost = records_lost(args, runs)
        if lost:
            print(f"error: --render-only: {len(lost)} runs that {args.report_dir}/REPORT.md shows "
                  f"with results have no up-to-date records under {args.checkpoints} ("
                  + ", ".join(lost[:5]) + (", ..." if len(lost) > 5 else "")
                  + "); the report is left as it is. Point --checkpoints at their records, or "
                  "run the pipeline without --render-only to redo them.", file=sys.stderr, flush=True)
            return 1
    if args.only and _is_committed(args.report_dir):
        # a partial run must not replace the committed report (nor the findings it feeds)
        print(f"--only: {args.report_dir}/ is the committed report and is left as it is; render "
              "it with --render-only once the study's runs are there (or give --report-dir)",
              flush=True)
    else:
        write_report(args, runs, _load_results(runs), wall)
        save_records(args, runs)
    code = exit_status(args, runs)
    if missing:
        print(f"\nNOTE: {missing}", flush=True)
    return code


def exit_status(args, runs):
    """Summarise the outcomes; non-zero if any run FAILED (or, with --strict, did not run)."""
    count = {s: sum(r.status == s for r in runs) for s in (Outcome.DONE, Outcome.SKIPPED,
                                                           Outcome.NOT_RUN, Outcome.DIVERGED,
                                                           Outcome.FAILED)}
    print(f"\nreport written to {args.report_dir}/REPORT.md: "
          + ", ".join(f"{n} {'up to date' if s == Outcome.SKIPPED else s}" for s, n in count.items() if n),
          flush=True)
    for r in runs:
        if r.status in (Outcome.NOT_RUN, Outcome.DIVERGED, Outcome.FAILED):
            print(f"  {r.status}: {r.name}: {r.reason}", flush=True)
    failed = [r for r in runs if r.status == Outcome.FAILED]
    for r in failed:
        print(f"\nFAILED: {r.name}\n    {r.command}\n" + "\n".join(
            "    " + line for line in (r.error_tail or r.reason).splitlines()), file=sys.stderr)
    if failed:
        return 2
    if (args.strict and count[Outcome.NOT_RUN]) or count[Outcome.NOT_RUN] == len(runs):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
