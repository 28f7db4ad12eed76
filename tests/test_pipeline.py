import csv
import json
import math
import os
import re

import pytest
import torch

import run_report_pipeline as pipeline
import utils
from run_contract import Outcome
from reporting import claims
from study import execution
from study import launchers
from study import plan, profiles

FIGURES = ["training_curves.png", "umap_features.png", "adv_examples.png",
           "confusion_matrix.png", "per_class_accuracy.png", "classwise_prf1.png",
           "reliability_diagram.png", "confidence_coverage.png", "topk_accuracy.png",
           "robustness_sweep.png", "pgd_iter_sweep.png", "transfer_matrix.png", "ablations.png",
           "robustness_models.png",
           "metrics_summary.json"]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    # the real data root where there is one (USPS is a real domain of the smoke profile)
    data = os.environ.get("DATA_ROOT") or str(root / "no_data")
    junk = root / "junk_weights.pth"
    junk.write_bytes(b"not a checkpoint")  # a bad file the user gave: FAILED, not "not run"
    argv = ["--profile", "smoke", "--data-root", data, "--no-download",
            "--ablation-dataset", "cifar10", "--checkpoints", str(root / "checkpoints"),
            "--report-dir", str(root / "report"), "--pretrained-weights", str(junk)]
    code = pipeline.main(argv)
    return root, argv, code


def _statuses(report_dir):
    return json.loads((report_dir / "figures" / "metrics_summary.json").read_text())["runs"]


def test_smoke_profile_gives_every_outcome_its_name_and_exit_status(smoke):
    root, _, code = smoke
    assert code == 2  # the junk weights FAILED; everything else finished before the exit
    runs = _statuses(root / "report")
    assert runs["svhn_scratch"]["status"] == "not run"  # missing data the user knows about
    assert runs["svhn_scratch"]["reason"].startswith("svhn (train) is not available")
    assert runs["transfer_svhn_to_usps_direct"]["reason"] == "needs svhn_scratch (not run)"
    diverged = runs["ablation_cifar10_diverge_check_s0"]
    assert diverged["status"] == "diverged" and "loss nan at epoch 1" in diverged["reason"]
    failed = runs["transfer_imagenet_to_digits_finetune"]
    assert failed["status"] == "FAILED" and "cannot read --pretrained-weights" in failed["reason"]
    assert runs["cifar10_standard"]["status"] == "done"
    assert {r["status"] for r in runs.values()} == {"done", "not run", "diverged", "FAILED"}
    text = (root / "report" / "REPORT.md").read_text()
    top = text.split("## Setup")[0]
    assert "FAILED** (a crash or bad input" in top and "cannot read --pretrained-weights" in top
    assert [line for line in text.splitlines() if line.startswith("## ")][:2] == ["## Setup", "## Claims and verdicts"]


def test_smoke_profile_writes_every_file_and_table(smoke):
    root, argv, _ = smoke
    report = root / "report"
    for name in FIGURES:
        assert (report / "figures" / name).exists(), name
        assert os.path.getsize(report / "figures" / name) > 5000, name
    matrix = plan.build_matrix(pipeline.parse_args(argv), pipeline.PROFILES["smoke"])
    training = _csv(report / "summary" / "training_summary.csv")
    assert [r["run"] for r in training] == [r.name for r in matrix if r.script == "train"]
    by_run = {r["run"]: r for r in training}
    assert by_run["cifar10_standard"]["status"] == "ok"
    assert 0.0 <= float(by_run["cifar10_standard"]["test_accuracy"]) <= 1.0
    assert by_run["svhn_scratch"]["status"].startswith("not run: svhn")
    assert "train.py --dataset synthetic" in by_run["cifar10_pgd_at"]["command"]

    # ablations: every variant with both seeds, summarised over seeds
    ablation = _csv(report / "summary" / "ablation_summary.csv")
    assert {(r["variant"], r["seed"]) for r in ablation} == {
        (v, str(s)) for v in [*profiles.ABLATIONS, "diverge_check"] for s in (0, 1)}
    # Circle Loss: the weight the sweep chose is the one the Circle models trained with
    chosen = json.loads((report / "figures" / "metrics_summary.json").read_text())["runs"][
        "cifar10_circle"]["fields"]["chosen"]
    sweep = {w: float(by_run[f"circle_sweep_w{w}"]["best_val_acc"]) for w in profiles.CIRCLE_WEIGHTS}
    assert chosen["value"] == max(sweep, key=lambda w: (sweep[w], w))
    assert f"--circle-weight {chosen['value']}" in by_run["cifar10_circle_pgd_at"]["command"]
    history = json.loads((root / "checkpoints" / "cifar10_circle" / "training_history.json").read_text())
    assert {"train_cross_entropy", "train_circle", "first_step_circle"} <= set(history[0])

    robust = {r["model"]: r for r in _csv(report / "summary" / "robustness_summary.csv")}
    assert set(robust) == {"cifar10_standard", "cifar10_fgsm_at", "cifar10_fgsm_rs_at",
                           "cifar10_pgd_at", "cifar10_circle", "cifar10_circle_pgd_at",
                           "cifar10_fgsm_rs_at_equal_compute", "cifar10_pgd_at_equal_compute"}
    assert all(r["status"] == "ok" for r in robust.values())
    # one budget for every model, but the equal-compute ones: the standard model's image-passes
    equal_epochs = {r["epochs"] for m, r in robust.items() if not m.endswith("_equal_compute")}
    assert len(equal_epochs) == 1
    assert robust["cifar10_pgd_at_equal_compute"]["epochs"] == "1"  # 2 epochs / (1 + 2 steps x 0.5)
    for r in robust.values():  # AutoAttack beside PGD, every accuracy with its interval
        low, high = json.loads(r["autoattack_accuracy_ci95"])
        assert low <= float(r["autoattack_accuracy"]) <= high and r["n_autoattack"] == "8"
    cross = {(r["source"], r["target"]): r for r in _csv(report / "summary" / "cross_domain_summary.csv")}
    to_svhn = cross["digits", "svhn"]
    assert to_svhn["direct_status"].startswith("not run: svhn") and to_svhn["direct_accuracy"] == ""
    has_usps = os.path.exists(os.path.join(pipeline.parse_args(argv).data_root, "usps-test.npz"))
    for pair in (("digits", "usps"), ("usps", "digits")):  # two real domains, both directions
        row = cross[pair]
        if not has_usps:
            # usps's own data missing, or (usps -> digits) the usps model it starts from
            assert row["finetune_status"] == "not run: needs usps_scratch (not run)" or \
                row["finetune_status"].startswith("not run: usps"), row
            continue
        assert row["direct_status"] == row["finetune_status"] == "ok", row
        for key in ("direct_accuracy", "finetuned_accuracy", "target_only_accuracy"):
            assert 0.0 <= float(row[key]) <= 1.0, key
        low, high = json.loads(row["direct_ci95"])
        assert low <= float(row["direct_accuracy"]) <= high
    assert cross["cifar10", "digits"]["finetune_status"] == "ok"  # the CIFAR-10 model as extractor
    # frozen features and scratch training score the target's one test split: image by image
    evidence = _csv(report / "summary" / "claims_evidence.csv")
    frozen = [e for e in evidence if e["comparison"].startswith("cifar10 features -> digits vs scratch")]
    assert len(frozen) == 1 and frozen[0]["test"] == "McNemar exact", frozen
    assert frozen[0]["sample"] == "497 images, paired"

    # disk a laptop can spare: weights only where another run reads them
    ck = root / "checkpoints"
    assert sum(f.stat().st_size for f in ck.rglob("*") if f.is_file()) < 1e9
    assert not list(ck.rglob("last.pth"))  # training state goes when a run completes
    assert not list((ck / "ablation_cifar10_dropout_s0").glob("*.pth"))  # no run reads it
    assert (ck / "ablation_cifar10_no_augment_s0" / "best.pth").exists()  # scored on corruptions
    assert (ck / "cifar10_standard" / "best.pth").exists()  # eval and transfer read it

    text = (report / "REPORT.md").read_text()
    assert "SYNTHETIC DATA" in text and "not run: svhn" in text
    # the deliberate divergence check is labelled as such, not read as a failure of the study
    assert "diverged (2 deliberately)" in text and "| diverged (deliberate):" in text
    assert ("Framing matters: the digits model reads usps digits" in text) == has_usps
    assert "| AutoAttack |" in text and " ± " in text and " passed" in text
    assert "python train.py --dataset synthetic" in text and "git commit" in text
    assert len(_csv(report / "summary" / "claims.csv")) == len(claims.CLAIMS)
    # decisive verdicts survive Holm's correction; inconclusive ones say what they could see
    verdicts, evidence = _csv(report / "summary" / "claims.csv"), _csv(report / "summary" / "claims_evidence.csv")
    for i, v in enumerate(verdicts, 1):
        rows = [e for e in evidence if e["claim"] == str(i)]
        if v["verdict"] in ("supported", "contradicted"):
            assert any(e["p_holm"] and float(e["p_holm"]) < 0.05 for e in rows), v
        if v["verdict"] == "inconclusive":
            assert "MDE" in v["evidence"], v
    assert "reaches layer4 at 1x1" in text and "Wong2020Fast (RobustBench)" in text
    # the common corruptions: their section and figures, and their claims judged by the same rule
    assert "## Common corruptions" in text and "Not built: **frost**" in text and "### Digits on MNIST-C" in text
    assert "- **Design** (`sequential.py`)" in text and "This study: one look." in text  # the Setup box
    assert (report / "figures" / "corruption_models.png").exists()
    assert (report / "figures" / "corruptions" / "cifar10_standard.png").exists()
    corrupted = [v for v in verdicts if v["family"] == "corruptions"]
    assert len(corrupted) == 4 and all(v["verdict"] != "not run" for v in corrupted), corrupted
    numbers = [i for i, v in enumerate(verdicts, 1) if v["family"] == "corruptions"]
    assert all("[" in e["effect_95ci"] for e in evidence if int(e["claim"]) in numbers and e["test"])
    # every evaluation left its per-image outcomes beside its metrics
    for record in ck.rglob("*.metrics.json"):
        assert os.path.exists(str(record).replace(".metrics.json", ".per_image.npz")), record


# a slice of the smoke matrix with every outcome and a dependency
SLICE = ["ablation_cifar10_diverge_check_s0", "digits_scratch", "transfer_digits_to_usps_direct",
         "svhn_scratch", "transfer_imagenet_to_digits_finetune"]
# The launchers share the scheduling (dependencies, slots; study/launchers.run_parallel) and
# every outcome, FAILED too, comes back from a run as the same tuple, so the process pool runs
# the whole slice and submitit (~7-10 s to start each job's process on one core) a run of
# each script and the dependency between them.
SUBMITIT_SLICE = ["digits_scratch", "transfer_digits_to_usps_direct"]


def _slice_argv(smoke_argv, root, name, runs=SLICE):
    """The smoke run's flags with its own checkpoint and report folders."""
    argv = list(smoke_argv)
    argv[argv.index("--checkpoints") + 1] = str(root / name / "checkpoints")
    argv[argv.index("--report-dir") + 1] = str(root / name / "report")
    return argv + ["--only", *runs]


def _numbers(checkpoints, run):
    if run.endswith("_direct"):
        result = json.loads((checkpoints / "eval" / f"{run}.metrics.json").read_text())
        return result["clean_accuracy"], result["n_samples"]
    result = json.loads((checkpoints / run / "final_metrics.json").read_text())
    return result["test_accuracy"], result["test_loss"]


@pytest.fixture(scope="module")
def serial_slice(smoke, torch_threads):
    """The slice run serially in this process with one torch thread, as each of two
    parallel workers on two cores gets: with equal thread counts the numbers must agree
    exactly (with two threads they drift, through the order of float sums). Where this
    process has one thread (each worker of `-n 2`) the smoke run already is that run."""
    root, argv, code = smoke
    if torch.get_num_threads() == 1:
        return root, code
    with torch_threads(1):
        code = pipeline.main(_slice_argv(argv, root, "serial_1thread"))
    return root / "serial_1thread", code


@pytest.mark.parametrize("launch, runs", [(["--jobs", "2"], SLICE),
                                          (["--launcher", "submitit-local", "--jobs", "2"], SUBMITIT_SLICE)],
                         ids=["processes", "submitit-local"])
def test_parallel_launchers_match_the_serial_run(smoke, serial_slice, launch, runs, monkeypatch):
    root, argv, _ = smoke
    serial_dir, serial_code = serial_slice
    monkeypatch.setattr(utils, "usable_cpus", lambda: 2)  # one thread per worker on any machine
    name = launch[1]
    code = pipeline.main(_slice_argv(argv, root, name, runs) + launch)
    serial, parallel = _statuses(serial_dir / "report"), _statuses(root / name / "report")
    full = _statuses(root / "report")
    assert serial_code == 2  # the junk weights FAILED
    assert code == (2 if any(full[r]["status"] == "FAILED" for r in runs) else 0)
    for run in runs:
        assert parallel[run]["status"] == serial[run]["status"] == full[run]["status"], run
        assert parallel[run]["reason"] == serial[run]["reason"], run
        if parallel[run]["status"] in ("done", "FAILED", "diverged"):  # it ran in a worker
            assert (root / name / "checkpoints" / "logs" / f"{run}.log").exists(), run
        if parallel[run]["status"] == "done":
            assert _numbers(root / name / "checkpoints", run) == _numbers(serial_dir / "checkpoints", run), run
    assert {full[r]["status"] for r in SLICE} == {"done", "not run", "diverged", "FAILED"}
    if name == "submitit-local":
        assert any((root / name / "checkpoints" / "submitit").rglob("*_result.pkl"))


def test_rerun_skips_finished_runs_and_force_is_needed_to_redo(smoke, monkeypatch):
    root, argv, _ = smoke
    args = pipeline.parse_args(argv)
    runs = plan.build_matrix(args, pipeline.PROFILES["smoke"])
    by_name = {r.name: r for r in runs}
    for run in runs:
        execution.execute(run, by_name, force=False)
    statuses = {r.name: r.status for r in runs}
    assert statuses["cifar10_standard"] == "skipped" and statuses["cifar10_pgd_at"] == "skipped"
    assert statuses["cifar10_circle"] == "skipped"  # its chosen weight resolved the same way
    assert statuses["svhn_scratch"] == "not run"
    assert statuses["ablation_cifar10_diverge_check_s0"] == "diverged"  # not trained again
    assert "recorded earlier" in by_name["ablation_cifar10_diverge_check_s0"].reason

    # flags that change nothing computed (where the data lives, the device) redo nothing
    moved = pipeline.parse_args(argv + ["--data-root", str(root / "elsewhere"), "--device", "cpu"])
    again = plan.build_matrix(moved, pipeline.PROFILES["smoke"])
    again_by_name = {r.name: r for r in again}
    for run in again:
        execution.prepare(run, again_by_name, force=False)
    assert again_by_name["cifar10_standard"].status == "skipped"
    assert again_by_name["eval_cifar10_pgd_at"].status == "skipped"

    # a retrained model makes its evaluation stale although the eval command is unchanged
    standard, evaluation = by_name["cifar10_standard"], by_name["eval_cifar10_standard"]
    done = execution._outputs(standard)[0]
    later = os.path.getmtime(execution._outputs(evaluation)[0]) + 10
    os.utime(done, (later, later))
    assert execution._up_to_date(standard, by_name)
    assert not execution._up_to_date(evaluation, by_name)
    seen = []
    import eval as evaluate
    monkeypatch.setattr(evaluate, "main", lambda argv: seen.append(argv))
    execution.execute(evaluation, by_name, force=False)
    assert evaluation.status == "done" and seen == [evaluation.argv]


def test_only_reports_what_is_on_disk_for_the_runs_it_leaves_out(smoke):
    root, argv, _ = smoke
    report = root / "report_only"
    argv = argv[:argv.index("--report-dir")] + ["--report-dir", str(report),
                                                "--only", "cifar10_standard"]
    assert pipeline.main(argv) == 0  # the FAILED runs were not selected this time
    runs = _statuses(report)
    assert runs["cifar10_standard"]["status"] == "skipped"  # selected, and up to date
    assert runs["cifar10_pgd_at"]["status"] == "skipped"  # left out, finished on disk
    assert runs["svhn_scratch"]["status"] == "not run"  # left out, nothing on disk
    assert "not executed in this invocation" in runs["svhn_scratch"]["reason"]
    assert runs["ablation_cifar10_diverge_check_s1"]["status"] == "diverged"  # its record on disk


def _without_provenance(text):
    """REPORT.md less the lines that name when, from which commit and by which command."""
    return [line for line in text.splitlines()
            if not re.search(r"generated|commit|run_report_pipeline.py|wall time|^- date", line)]


def test_render_only_on_a_fresh_clone_rebuilds_the_report_from_its_records(smoke, tmp_path, capsys):
    import shutil

    root, argv, code = smoke
    report = tmp_path / "report"  # a committed report with its records, on a clone without checkpoints
    shutil.copytree(root / "report", report)
    before = (report / "REPORT.md").read_text()
    assert (report / "records" / "manifest.json").exists()
    assert not list((report / "records").rglob("*.pth"))  # records, never weights
    argv = list(argv)
    argv[argv.index("--report-dir") + 1] = str(report)
    checkpoints = root / "checkpoints"  # where the commands the records hold point
    checkpoints.rename(root / "checkpoints_away")  # gone, as on a fresh clone
    try:
        assert pipeline.main(argv + ["--render-only"]) == code  # the recorded FAILED run still FAILED
        assert not list(checkpoints.rglob("*.pth"))
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
        (root / "checkpoints_away").rename(checkpoints)
    assert "restored" in capsys.readouterr().out
    assert _without_provenance((report / "REPORT.md").read_text()) == _without_provenance(before)
    for name in ("robustness_summary.csv", "ablation_summary.csv", "claims.csv"):
        assert (report / "summary" / name).read_text() == (root / "report" / "summary" / name).read_text()


def test_render_only_leaves_a_report_whose_records_are_missing_as_it_is(smoke, tmp_path, capsys):
    import shutil

    root, argv, _ = smoke
    report = tmp_path / "report"  # a committed report whose records were not committed
    shutil.copytree(root / "report", report)
    shutil.rmtree(report / "records")
    before = (report / "REPORT.md").read_text()
    argv = list(argv)
    argv[argv.index("--report-dir") + 1] = str(report)
    argv[argv.index("--checkpoints") + 1] = str(tmp_path / "fresh_clone_checkpoints")
    assert pipeline.main(argv + ["--render-only"]) == 1
    assert (report / "REPORT.md").read_text() == before
    message = capsys.readouterr().err
    assert "left as it is" in message and "ablation_cifar10_baseline_s0" in message


def test_interrupted_training_resumes(smoke, monkeypatch):
    import train

    root, argv, _ = smoke
    args = pipeline.parse_args(argv)
    runs = {r.name: r for r in plan.build_matrix(args, pipeline.PROFILES["smoke"])}
    run = runs["cifar10_circle"]
    for name in run.choice.candidates.values():  # the sweep it chooses from finished earlier
        execution.execute(runs[name], runs, force=False)
        assert runs[name].status == "skipped"
    assert execution.resolve(run, runs)
    real_epoch = train.train_one_epoch

    def stopped_in_epoch_2(*a, **k):
        if a[7] == 2:  # the epoch argument
            raise KeyboardInterrupt
        return real_epoch(*a, **k)
    monkeypatch.setattr(train, "train_one_epoch", stopped_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):  # the same command again, stopped in epoch 2 of 2
        train.main(run.argv)
    out_dir = run.argv[run.argv.index("--out-dir") + 1]
    assert os.path.exists(os.path.join(out_dir, "last.pth"))
    assert not os.path.exists(os.path.join(out_dir, "final_metrics.json"))  # the new run replaced it
    seen = []
    monkeypatch.setattr(train, "main", lambda argv: seen.append(argv))
    execution.execute(run, runs, force=False)
    assert seen and seen[0][-1] == "--resume"


def test_profiles_write_where_they_cannot_overwrite_each_other():
    smoke = pipeline.parse_args(["--profile", "smoke"])
    quick = pipeline.parse_args([])
    assert quick.report_dir == "report" and smoke.report_dir == os.path.join("report", "smoke")
    assert quick.checkpoints == os.path.join("checkpoints", "quick")
    assert smoke.checkpoints == os.path.join("checkpoints", "smoke")
    assert quick.ablation_dataset == "cifar10"
    # the smoke profile never downloads: every command it builds says so
    for run in plan.build_matrix(smoke, pipeline.PROFILES["smoke"]):
        assert "--no-download" in run.argv, run.name


def test_unknown_run_names_are_rejected_and_list_names_them(capsys):
    with pytest.raises(SystemExit, match="unknown runs"):
        pipeline.main(["--profile", "smoke", "--only", "nope"])
    assert pipeline.main(["--profile", "smoke", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    runs = plan.build_matrix(pipeline.parse_args(["--profile", "smoke"]), pipeline.PROFILES["smoke"])
    assert listed == [r.name for r in runs] and "transfer_usps_to_digits_finetune" in listed


@pytest.mark.parametrize("profile", sorted(pipeline.PROFILES))
def test_every_profile_builds_commands_the_scripts_accept(profile):
    import eval as evaluate
    import train

    args = pipeline.parse_args(["--profile", profile, "--ablation-dataset", "cifar10"])
    for run in plan.build_matrix(args, pipeline.PROFILES[profile]):
        parse = train.parse_args if run.script == "train" else evaluate.build_parser().parse_args
        parsed = parse(run.argv)
        if run.script == "train" and parsed.adv_train:
            assert parsed.adv_prob == pipeline.PROFILES[profile]["cifar10"]["adv_prob"]
            if parsed.attack == "fgsm":  # the PGD step settings would only mislead there
                assert "--alpha" not in run.argv and "--iters" not in run.argv


def test_slurm_launcher_sets_parameters_submitit_accepts(tmp_path, monkeypatch):
    args = pipeline.parse_args(["--profile", "smoke", "--launcher", "slurm", "--checkpoints",
                                str(tmp_path), "--slurm-partition", "gpu", "--slurm-cpus", "6"])
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here: a clear error, not a traceback
    with pytest.raises(SystemExit, match="--launcher slurm: .*login node"):
        launchers.SubmititBackend(args, 4)
    srun = tmp_path / "srun"  # a stand-in, so submitit's own parameter checks run
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    backend = launchers.SubmititBackend(args, 4)
    params = backend.executor._executor.parameters
    assert params["partition"] == "gpu" and params["cpus_per_task"] == 6 and params["gpus_per_node"] == 1
    assert params["time"] == args.slurm_timeout_min and backend.threads == 6


def test_missing_real_data_is_named_with_the_flag_that_adds_it(tmp_path, monkeypatch):
    import datasets

    (tmp_path / "usps-train.npz").write_bytes(b"")
    (tmp_path / "usps-test.npz").write_bytes(b"")
    args = pipeline.parse_args(["--profile", "smoke", "--data-root", str(tmp_path)])
    note = pipeline.missing_data(args, pipeline.PROFILES["smoke"])
    assert "svhn (svhn-train.npz, svhn-test.npz)" in note and "usps" not in note
    assert "--data-root" in note and "DATA_ROOT" in note
    args = pipeline.parse_args(["--profile", "smoke", "--data-root", str(tmp_path / "none")])
    assert "usps (usps-train.npz, usps-test.npz)" in pipeline.missing_data(args, pipeline.PROFILES["smoke"])

    # without --data-root or $DATA_ROOT: the first candidate folder that holds .npz files
    monkeypatch.delenv("DATA_ROOT", raising=False)
    first, second = tmp_path / "data", tmp_path / "shared_data"
    first.mkdir()
    second.mkdir()
    monkeypatch.setattr(datasets, "DATA_ROOT_CANDIDATES", (str(first), str(second)))
    assert datasets.default_data_root() == "data"  # neither holds data
    (second / "mnist-train.npz").write_bytes(b"")
    assert os.path.samefile(datasets.default_data_root(), second)
    (first / "usps-test.npz").write_bytes(b"")
    assert os.path.samefile(datasets.default_data_root(), first)
    monkeypatch.setenv("DATA_ROOT", str(second))
    assert datasets.default_data_root() == str(second)


def test_the_time_left_counts_only_the_runs_still_to_do():
    """A resumed pipeline's pending runs may be up to date on disk, or lack their data: the
    estimate of the time left counts only those it will execute (`todo`, from
    run_report_pipeline._unfinished; it read ~2x the real time left in look 2's resume), at
    this invocation's pace, and every pending run under --force."""
    from types import SimpleNamespace

    from study import launchers

    def run(name, cost, status=Outcome.PENDING):
        return SimpleNamespace(name=name, cost=cost, status=status)
    runs = [run("done", 10.0, Outcome.DONE), run("to_do", 20.0), run("up_to_date", 30.0),
            run("later", 10.0), run("left_out", 40.0, Outcome.NOT_RUN)]
    # 10 units took 60 s: the 30 units to do take 180 s
    assert launchers._eta(runs, {"to_do", "later"}, 60.0) == "3 min"
    assert launchers._eta(runs, {"to_do", "later", "up_to_date"}, 60.0) == "6 min"  # --force
    assert launchers._eta(runs, {"to_do"}, 120.0) == "4 min"
    assert launchers._eta(runs[1:], {"to_do"}, 60.0) == "unknown"  # nothing done yet: no pace


def test_a_second_look_at_the_smoke_run_extends_only_what_its_open_claims_read(smoke, monkeypatch, capsys):
    """Judged from the smoke run's records as look 1 of a two-look schedule: the open claims
    name runs of the study, and look 2 leaves out what no claim reads (the divergence check)."""
    from study import looks

    root, argv, _ = smoke
    profile = {**pipeline.PROFILES["smoke"], "looks": {"seeds": [2, 3], "images": [16, 48]}}
    monkeypatch.setitem(pipeline.PROFILES, "smoke", profile)
    args = pipeline.parse_args(argv)
    first = looks.matrix(args, profile, 1)
    still = pipeline._open_claims(args, profile, 1, first)
    reads = set().union(*(c.reads for c in still))
    assert reads and reads <= {r.name for r in first}
    assert all(0 <= c.chance <= 1 or math.isnan(c.chance) for c in still)
    assert all(r.status == Outcome.PENDING for r in first)  # judged on copies
    second = {r.name for r in looks.pruned(args, profile, 2, lambda k, done: pipeline._open_claims(args, profile, k, done))}
    read_baseline = any(n.startswith("ablation_cifar10_baseline_s") for n in reads)
    assert ("ablation_cifar10_baseline_s2" in second) == read_baseline
    assert "ablation_cifar10_diverge_check_s2" not in second
    assert second < {r.name for r in looks.matrix(args, profile, 2)}
    # under a budget the size of the fixed design's estimate, listing look 2 plans it without
    # recording the plan (only a run of the look does)
    assert pipeline.main([*argv, "--look", "2", "--budget", "fixed", "--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"--budget fixed: \d+ min, the fixed design's --plan estimate here \(\d+ min\) "
                     r"times what the runs done took against their estimate \(\d+\.\d\dx\)", out)
    # counted in run time, the fixed budget does not move with the rate measured now (it moves
    # every estimate alike): a machine measured twice as slow gets the same budget
    args.look, rates = 2, {r.stem: 1e-3 for r in looks.matrix(args, profile, 2)}
    budgets, factors = [], []
    for scale in (1, 2):
        args.budget, scaled = pipeline.FIXED, {stem: scale * rate for stem, rate in rates.items()}
        args.calibration = pipeline._calibration(args, profile, scaled)
        factors.append(args.calibration)
        budgets.append(pipeline._resolve_budget(args, profile, scaled))
    assert factors[0] == pytest.approx(2 * factors[1])  # the smoke run's records calibrate it
    assert budgets[0] == pytest.approx(budgets[1], rel=1e-3, abs=0.1)
    # the smoke run's FAILED runs (the junk weights) leave look 1 unfinished: a plan only listed
    # is provisional, and running the look would be refused
    assert "this plan of look 2 is provisional" in out and "transfer_imagenet_to_" in out
    assert not os.path.exists(looks.plan_path(args.checkpoints, 2))


def test_a_partial_run_leaves_the_committed_report_as_it_is(tmp_path, monkeypatch, capsys):
    """--only into the committed report's folder (a look's first runs, a re-run of one) must
    not replace the report, its records or the findings: it says so and leaves them."""
    committed = tmp_path / "checkout" / "report"
    committed.mkdir(parents=True)
    (committed / "REPORT.md").write_text("the committed report")
    monkeypatch.setattr(pipeline, "HERE", str(tmp_path / "checkout"))
    code = pipeline.main(["--profile", "smoke", "--only", "transfer_imagenet_to_digits_finetune",
                          "--checkpoints", str(tmp_path / "ck"), "--report-dir", str(committed)])
    assert code == 1  # its one run was not run (no weights given)
    assert (committed / "REPORT.md").read_text() == "the committed report"
    assert sorted(p.name for p in committed.iterdir()) == ["REPORT.md"]
    assert "is the committed report and is left as it is" in capsys.readouterr().out


def test_a_dirty_working_tree_is_named_before_any_run(monkeypatch):
    # runs started from uncommitted code record a -dirty commit nobody can check out again
    monkeypatch.setattr(utils, "git_commit", lambda: "0123abc-dirty")
    assert "`0123abc-dirty`" in pipeline.dirty_tree_note()
    assert "Commit (or stash) first" in pipeline.dirty_tree_note()
    monkeypatch.setattr(utils, "git_commit", lambda: "0123abc")
    assert pipeline.dirty_tree_note() is None
