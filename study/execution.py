"""How one run of the plan executes and what its outcome is: whether its outputs are up to
date, what blocks it, calling train.py / eval.py in this process, and reading back what
runs left on disk (their records, and the report's committed copy of them)."""

import copy
import os
import time
import traceback

import run_contract
import utils
from run_contract import Outcome
from study.plan import keeps_weights


def _outputs(run):
    """(file proving the run finished, file recording its command)."""
    if run.script == "train":
        files = _train_files(run)
        return files.final, files.config
    record = run_contract.eval_record(_eval_prefix(run))
    return record, record


def _train_files(run):
    return run_contract.TrainFiles(run.argv[run.argv.index("--out-dir") + 1])


def _diverged_file(run):
    return _train_files(run).diverged if run.script == "train" else None


def _recorded_command(path):
    try:
        return utils.load_json(path).get("command")
    except (OSError, ValueError):
        return None


def _same_command(path, run):
    """Whether the command recorded in `path` computes what `run` would: flags that only
    say where data lives or which device runs it (utils.NEUTRAL_FLAGS) may differ."""
    recorded = _recorded_command(path)
    return recorded is not None and utils.computed_part(recorded) == utils.computed_part(run.command)


def _newer_than_needs(path, run, runs_by_name):
    """Whether `path` is newer than the outputs of every run `run` reads (a retrained model
    makes its evaluation stale even though the evaluation's command is unchanged)."""
    made = os.path.getmtime(path)
    for name in run.needs_all:
        need_done = _outputs(runs_by_name[name])[0]
        if not os.path.exists(need_done) or os.path.getmtime(need_done) > made:
            return False
    return True


def _up_to_date(run, runs_by_name, need_weights=True):
    """Whether the run's outputs are complete, were made by exactly this command, and are
    newer than the outputs of every run it reads (and, if other runs read its weights and
    `need_weights`, whether they are there)."""
    done_file, command_file = _outputs(run)
    if not os.path.exists(done_file) or not _same_command(command_file, run):
        return False
    if need_weights and keeps_weights(run) and not os.path.exists(_train_files(run).best):
        return False
    return _newer_than_needs(done_file, run, runs_by_name)


def _diverged_before(run, runs_by_name):
    """The divergence record of this exact command, if it already diverged (a result: a
    re-run would diverge again)."""
    path = _diverged_file(run)
    if (path and os.path.exists(path) and _same_command(path, run)
            and _newer_than_needs(path, run, runs_by_name)):
        return utils.load_json(path)
    return None


def _divergence_reason(record):
    if "step" in record:
        return f"loss {record['loss']} at epoch {record['epoch']}, step {record['step']}"
    return f"validation loss {record.get('validation_loss')} after epoch {record['epoch']}"


UP_TO_DATE = "up to date (same command, outputs complete)"
NOT_EXECUTED = "not executed in this invocation and no up-to-date outputs"


def resolve(run, runs_by_name):
    """Fix a Choice flag from the candidates' results; False when none of them finished."""
    if not run.choice or run.choice.flag in run.argv:
        return True
    scores = {}
    for value, name in run.choice.candidates.items():
        done = _outputs(runs_by_name[name])[0]
        if runs_by_name[name].status in run_contract.FINISHED and os.path.exists(done):
            scores[value] = utils.load_json(done)[run.choice.by]
    if not scores:
        return False
    run.argv = run.argv + [run.choice.flag, max(scores, key=lambda v: (scores[v], v))]
    run.fields["chosen"] = {"flag": run.choice.flag, "value": run.argv[-1], "scores": scores}
    return True


def blocked(run, runs_by_name):
    """Why a run cannot start because of what it reads, or None."""
    if run.status == Outcome.NOT_RUN:  # decided when the matrix was declared
        return run.reason
    missing = [n for n in run.needs if runs_by_name[n].status in run_contract.UNUSABLE]
    if missing:
        return "needs " + ", ".join(f"{n} ({runs_by_name[n].status})" for n in missing)
    if run.choice and not resolve(run, runs_by_name):
        return f"needs one of {', '.join(run.choice.candidates.values())}, none of which finished"
    return None


def _tail(text, lines=12):
    return "\n".join(text.strip().splitlines()[-lines:])


def call(script, argv):
    """Run train.main / eval.main on argv in this process and classify how it ended:
    (status, reason, error tail). Never raises, except on Ctrl-C."""
    module = __import__(script)  # the same main(argv) a person would call
    try:
        module.main(argv)
        return Outcome.DONE, "", ""
    except utils.NotAvailable as exc:  # something absent that the user knows about
        return Outcome.NOT_RUN, str(exc.code).removeprefix("error: "), ""
    except utils.Diverged as exc:
        return Outcome.DIVERGED, str(exc.code).removeprefix("error: "), ""
    except SystemExit as exc:  # bad input: a file the user gave, conflicting flags, ...
        message = str(exc.code).removeprefix("error: ")
        return Outcome.FAILED, message, message
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a crash: the traceback's last lines go to the log and report
        traceback.print_exc()
        return Outcome.FAILED, f"{type(exc).__name__}: {exc}", _tail(traceback.format_exc())


def prepare(run, runs_by_name, force):
    """Decide whether a run needs executing: None if so, else sets its outcome."""
    reason = blocked(run, runs_by_name)
    if reason:
        run.status, run.reason = Outcome.NOT_RUN, reason
        return False
    if not force and _up_to_date(run, runs_by_name):
        run.status, run.reason = Outcome.SKIPPED, UP_TO_DATE
        return False
    record = None if force else _diverged_before(run, runs_by_name)
    if record:
        run.status, run.reason = Outcome.DIVERGED, _divergence_reason(record) + " (recorded earlier)"
        return False
    return True


def launch_argv(run, force):
    """The argv to execute: an interrupted training run of the same command continues."""
    done_file, command_file = _outputs(run)
    argv = list(run.argv)
    if (run.script == "train" and not force and not os.path.exists(done_file)
            and _same_command(command_file, run)
            and os.path.exists(_train_files(run).last)):
        argv.append("--resume")
    return argv


def finish(run, outcome, seconds):
    """Record a run's outcome; a run that says it finished but left no result has FAILED."""
    run.status, run.reason, run.error_tail = outcome
    run.seconds = seconds
    done_file = _outputs(run)[0]
    if run.status == Outcome.DONE and not os.path.exists(done_file):
        run.status, run.reason = Outcome.FAILED, f"finished without writing {done_file}"
    if run.status == Outcome.DIVERGED and _diverged_file(run) and os.path.exists(_diverged_file(run)):
        run.reason = _divergence_reason(utils.load_json(_diverged_file(run)))


def execute(run, runs_by_name, force):
    """Run one step in this process; never raises (except on Ctrl-C)."""
    if not prepare(run, runs_by_name, force):
        return
    start = time.time()
    outcome = call(run.script, launch_argv(run, force))
    finish(run, outcome, time.time() - start)


def on_disk(run, runs_by_name):
    """The outcome of a run that is not executed now, from the files it left (its numbers
    stand without its weights, which only a run that reads them needs)."""
    if run.status == Outcome.NOT_RUN:  # decided when the matrix was declared
        return
    chosen = resolve(run, runs_by_name)  # a Choice flag is fixed by what the candidates left
    record = chosen and _diverged_before(run, runs_by_name)
    if chosen and _up_to_date(run, runs_by_name, need_weights=False):
        run.status, run.reason = Outcome.SKIPPED, UP_TO_DATE
    elif record:
        run.status, run.reason = Outcome.DIVERGED, _divergence_reason(record) + " (recorded earlier)"
    else:
        run.status, run.reason = Outcome.NOT_RUN, NOT_EXECUTED


def as_on_disk(runs):
    """Copies of `runs` with the outcomes their files on disk give, and their numbers: what a
    look's judgement or a budget's count reads, leaving the runs themselves as they are (a
    Choice flag resolved on a copy stays there)."""
    copies = copy.deepcopy(runs)
    by_name = {r.name: r for r in copies}
    for run in copies:
        on_disk(run, by_name)
    return copies, _load_results(copies)


def _load_results(runs):
    """Numbers of every run, read only from the files train.py and eval.py wrote."""
    results = {}
    for run in runs:
        done_file, _ = _outputs(run)
        if run.status in run_contract.FINISHED and os.path.exists(done_file):
            results[run.name] = (run_contract.load_train_record(_train_files(run).folder)
                                 if run.script == "train" else utils.load_json(done_file))
    return results


def load_per_image(runs):
    """The per-image outcomes of every finished run that recorded them (an evaluation's, a
    training run's on its test split)."""
    return {run.name: outcomes for run in runs if run.status in run_contract.FINISHED
            for outcomes in [run_contract.load_per_image(_per_image_file(run))] if outcomes}


def _per_image_file(run):
    if run.script == "train":
        return _train_files(run).per_image
    return run_contract.eval_per_image(_eval_prefix(run))


def _eval_prefix(run):
    return run.argv[run.argv.index("--out") + 1]


def _record_files(run):
    if run.script == "train":
        return _train_files(run).records
    return [_outputs(run)[0], _per_image_file(run)]


def save_records(args, runs):
    """Copy the small records of every run the report shows into <report-dir>/records/ (the
    checkpoints folder's layout, with their times), and every run's outcome: committed
    with the report, they let --render-only rebuild it on a fresh clone."""
    import shutil

    folder = os.path.join(args.report_dir, run_contract.RECORDS)
    shutil.rmtree(folder, ignore_errors=True)  # records of runs the report no longer shows go
    files = {}
    for run in runs:
        if run.status not in (*run_contract.FINISHED, Outcome.DIVERGED):
            continue
        for path in _record_files(run):
            if os.path.exists(path):
                rel = os.path.relpath(path, args.checkpoints)
                os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
                shutil.copyfile(path, os.path.join(folder, rel))
                files[rel] = os.path.getmtime(path)
    plans = os.path.join(args.checkpoints, run_contract.LOOK_PLANS)  # how each later look was planned
    for name in sorted(os.listdir(plans)) if os.path.isdir(plans) else ():
        rel = os.path.join(run_contract.LOOK_PLANS, name)
        os.makedirs(os.path.join(folder, run_contract.LOOK_PLANS), exist_ok=True)
        shutil.copyfile(os.path.join(args.checkpoints, rel), os.path.join(folder, rel))
        files[rel] = os.path.getmtime(os.path.join(args.checkpoints, rel))
    utils.save_json({"checkpoints": args.checkpoints, "files": files},
                    os.path.join(folder, run_contract.RECORDS_MANIFEST))
    utils.save_json({r.name: {"status": r.status, "reason": r.reason, "error_tail": r.error_tail,
                              "seconds": r.seconds, "command": r.command} for r in runs},
                    os.path.join(folder, run_contract.OUTCOMES))


def restore_records(args):
    """Before --render-only: copy the report's committed records that the checkpoints
    folder lacks into it (never over a file there), with their original times. Returns the
    outcomes the report recorded, {} when it has none."""
    import shutil

    folder = os.path.join(args.report_dir, run_contract.RECORDS)
    manifest_path = os.path.join(folder, run_contract.RECORDS_MANIFEST)
    if not os.path.exists(manifest_path):
        return {}
    restored = 0
    for rel, made in utils.load_json(manifest_path)["files"].items():
        dest = os.path.join(args.checkpoints, rel)
        if not os.path.exists(dest) and os.path.exists(os.path.join(folder, rel)):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(folder, rel), dest)
            os.utime(dest, (made, made))
            restored += 1
    if restored:
        print(f"restored {restored} run records from {folder} into {args.checkpoints} "
              "(records only: no weights)", flush=True)
    return utils.load_json(os.path.join(folder, run_contract.OUTCOMES))


def recorded_outcome(run, outcomes):
    """Under --render-only, a run keeps the outcome the report recorded for the same command
    where the disk agrees: its numbers (or divergence record) are there (it stays "done" or
    "diverged", with its time), or nothing is (a FAILED run stays FAILED, with its error; a
    "not run" keeps its reason)."""
    before = outcomes.get(run.name)
    if not before or utils.computed_part(before["command"]) != utils.computed_part(run.command):
        return
    agreeing = ((Outcome.SKIPPED, Outcome.DONE), (Outcome.DIVERGED, Outcome.DIVERGED))
    numbers_there = (run.status, before["status"]) in agreeing
    nothing_there = (run.status == Outcome.NOT_RUN and run.reason == NOT_EXECUTED
                     and before["status"] in (Outcome.NOT_RUN, Outcome.FAILED))
    if numbers_there or nothing_there:
        run.status, run.reason = Outcome(before["status"]), before["reason"]
        run.error_tail, run.seconds = before["error_tail"], before["seconds"]


def records_lost(args, runs):
    """The runs the report in --report-dir shows with results (done, up to date or diverged)
    whose records are not on disk now: rendering would turn their rows into "not run"."""
    path = os.path.join(args.report_dir, "figures", "metrics_summary.json")
    if not os.path.exists(path):
        return []
    shown = utils.load_json(path).get("runs", {})
    now = {r.name: r.status for r in runs}
    shows_result = (*run_contract.FINISHED, Outcome.DIVERGED)
    return [name for name, r in shown.items() if r["status"] in shows_result
            and now.get(name) not in shows_result]
