import csv
import json
import os

import pytest

import run_report_pipeline as pipeline

FIGURES = ["training_curves.png", "umap_features.png", "adv_examples.png",
           "confusion_matrix.png", "per_class_accuracy.png", "classwise_prf1.png",
           "reliability_diagram.png", "confidence_coverage.png", "topk_accuracy.png",
           "robustness_sweep.png", "pgd_iter_sweep.png", "transfer_matrix.png",
           "metrics_summary.json"]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    # the real data root where there is one (USPS is a real domain of the smoke profile)
    data = os.environ.get("DATA_ROOT") or str(root / "no_data")
    argv = ["--profile", "smoke", "--data-root", data, "--no-download",
            "--ablation-dataset", "cifar10", "--checkpoints", str(root / "checkpoints"),
            "--report-dir", str(root / "report")]
    code = pipeline.main(argv)
    return root, argv, code


def test_smoke_profile_writes_every_file_and_table(smoke):
    root, _, code = smoke
    assert code == 0  # SVHN is missing, the rest ran
    report = root / "report"
    for name in FIGURES:
        assert (report / "figures" / name).exists(), name
        assert os.path.getsize(report / "figures" / name) > 5000, name
    matrix = pipeline.build_matrix(pipeline.parse_args(smoke[1]), pipeline.PROFILES["smoke"])
    training = _csv(report / "summary" / "training_summary.csv")
    assert [r["run"] for r in training] == [r.name for r in matrix if r.script == "train"]
    by_run = {r["run"]: r for r in training}
    assert by_run["cifar10_standard"]["status"] == "ok"
    assert 0.0 <= float(by_run["cifar10_standard"]["test_accuracy"]) <= 1.0
    assert by_run["svhn_scratch"]["status"].startswith("not run: svhn")
    assert "train.py --dataset synthetic" in by_run["cifar10_pgd_at"]["command"]

    robust = {r["model"]: r for r in _csv(report / "summary" / "robustness_summary.csv")}
    assert set(robust) == {"cifar10_standard", "cifar10_fgsm_at", "cifar10_fgsm_rs_at",
                           "cifar10_pgd_at", "cifar10_circle", "cifar10_circle_pgd_at"}
    assert all(r["status"] == "ok" for r in robust.values())
    for r in robust.values():  # AutoAttack beside PGD, every accuracy with its interval
        low, high = json.loads(r["autoattack_accuracy_ci95"])
        assert low <= float(r["autoattack_accuracy"]) <= high and r["n_autoattack"] == "32"
    cross = {(r["source"], r["target"]): r for r in _csv(report / "summary" / "cross_domain_summary.csv")}
    to_svhn = cross["digits", "svhn"]
    assert to_svhn["direct_status"].startswith("not run: svhn") and to_svhn["direct_accuracy"] == ""
    assert any(r["source"] == "imagenet" and "no weights" in r["finetune_status"] for r in cross.values())
    has_usps = os.path.exists(os.path.join(pipeline.parse_args(smoke[1]).data_root, "usps-test.npz"))
    for pair in (("digits", "usps"), ("usps", "digits")):  # two real domains, both directions
        row = cross[pair]
        if not has_usps:
            assert row["finetune_status"].startswith("not run: usps")
            continue
        assert row["direct_status"] == row["finetune_status"] == "ok", row
        for key in ("direct_accuracy", "finetuned_accuracy", "target_only_accuracy"):
            assert 0.0 <= float(row[key]) <= 1.0, key
        low, high = json.loads(row["direct_ci95"])
        assert low <= float(row["direct_accuracy"]) <= high
    assert cross["cifar10", "digits"]["finetune_status"] == "ok"  # the CIFAR-10 model as extractor

    text = (report / "REPORT.md").read_text()
    assert "SYNTHETIC DATA" in text and "not run: svhn" in text
    assert ("Framing matters: the digits model reads usps digits" in text) == has_usps
    assert "| AutoAttack |" in text and " ± " in text and " passed" in text
    assert "python train.py --dataset synthetic" in text and "git commit" in text
    summary = json.loads((report / "figures" / "metrics_summary.json").read_text())
    assert summary["runs"]["cifar10_standard"]["status"] == "done"


def test_rerun_skips_finished_runs_and_force_is_needed_to_redo(smoke, monkeypatch):
    root, argv, _ = smoke
    args = pipeline.parse_args(argv)
    runs = pipeline.build_matrix(args, pipeline.PROFILES["smoke"])
    by_name = {r.name: r for r in runs}
    for run in runs:
        pipeline.execute(run, by_name, force=False)
    statuses = {r.name: r.status for r in runs}
    assert statuses["cifar10_standard"] == "skipped" and statuses["cifar10_pgd_at"] == "skipped"
    assert statuses["svhn_scratch"] == "not run"

    # a retrained model makes its evaluation stale although the eval command is unchanged
    standard, evaluation = by_name["cifar10_standard"], by_name["eval_cifar10_standard"]
    done = pipeline._outputs(standard)[0]
    later = os.path.getmtime(pipeline._outputs(evaluation)[0]) + 10
    os.utime(done, (later, later))
    assert pipeline._up_to_date(standard, by_name)
    assert not pipeline._up_to_date(evaluation, by_name)
    seen = []
    import eval as evaluate
    monkeypatch.setattr(evaluate, "main", lambda argv: seen.append(argv))
    pipeline.execute(evaluation, by_name, force=False)
    assert evaluation.status == "done" and seen == [evaluation.argv]


def test_only_reports_what_is_on_disk_for_the_runs_it_leaves_out(smoke):
    root, argv, _ = smoke
    report = root / "report_only"
    argv = argv[:argv.index("--report-dir")] + ["--report-dir", str(report),
                                                "--only", "cifar10_standard"]
    assert pipeline.main(argv) == 0
    runs = json.loads((report / "figures" / "metrics_summary.json").read_text())["runs"]
    assert runs["cifar10_standard"]["status"] == "skipped"  # selected, and up to date
    assert runs["cifar10_pgd_at"]["status"] == "skipped"  # left out, finished on disk
    assert runs["svhn_scratch"]["status"] == "not run"  # left out, nothing on disk
    assert "not selected" in runs["svhn_scratch"]["reason"]


def test_interrupted_training_resumes(smoke, monkeypatch):
    root, argv, _ = smoke
    args = pipeline.parse_args(argv)
    runs = {r.name: r for r in pipeline.build_matrix(args, pipeline.PROFILES["smoke"])}
    run = runs["cifar10_circle"]
    out_dir = run.argv[run.argv.index("--out-dir") + 1]
    os.remove(os.path.join(out_dir, "final_metrics.json"))  # as if stopped before the end
    seen = []
    import train
    monkeypatch.setattr(train, "main", lambda argv: seen.append(argv))
    pipeline.execute(run, runs, force=False)
    assert seen and seen[0][-1] == "--resume"


def test_profiles_write_where_they_cannot_overwrite_each_other():
    smoke = pipeline.parse_args(["--profile", "smoke"])
    quick = pipeline.parse_args([])
    assert quick.report_dir == "report" and smoke.report_dir == os.path.join("report", "smoke")
    assert quick.checkpoints == os.path.join("checkpoints", "quick")
    assert smoke.checkpoints == os.path.join("checkpoints", "smoke")
    assert quick.ablation_dataset == "cifar10"
    # the smoke profile never downloads: every command it builds says so
    for run in pipeline.build_matrix(smoke, pipeline.PROFILES["smoke"]):
        assert "--no-download" in run.argv, run.name


def test_unknown_run_names_are_rejected_and_list_names_them(capsys):
    with pytest.raises(SystemExit, match="unknown runs"):
        pipeline.main(["--profile", "smoke", "--only", "nope"])
    assert pipeline.main(["--profile", "smoke", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    runs = pipeline.build_matrix(pipeline.parse_args(["--profile", "smoke"]), pipeline.PROFILES["smoke"])
    assert listed == [r.name for r in runs] and "transfer_usps_to_digits_finetune" in listed


@pytest.mark.parametrize("profile", sorted(pipeline.PROFILES))
def test_every_profile_builds_commands_the_scripts_accept(profile):
    import eval as evaluate
    import train

    args = pipeline.parse_args(["--profile", profile, "--ablation-dataset", "cifar10"])
    for run in pipeline.build_matrix(args, pipeline.PROFILES[profile]):
        parse = train.parse_args if run.script == "train" else evaluate.build_parser().parse_args
        parsed = parse(run.argv)
        if run.script == "train" and parsed.adv_train:
            assert parsed.adv_prob == pipeline.PROFILES[profile]["adversarial"]["adv_prob"]
            if parsed.attack == "fgsm":  # the PGD step settings would only mislead there
                assert "--alpha" not in run.argv and "--iters" not in run.argv


def test_gap_closed_only_where_the_intervals_see_a_gap(tmp_path):
    args = pipeline.parse_args(["--profile", "smoke"])
    numbers = {"usps_scratch": 0.95, "digits_scratch": 0.22,  # in-domain
               "transfer_usps_to_digits_direct": 0.21, "transfer_digits_to_usps_direct": 0.50,
               "transfer_usps_to_digits_finetune": 0.30, "transfer_digits_to_usps_finetune": 0.80}

    def res(name):
        if name not in numbers:
            return None
        v = numbers[name]
        key = "clean_accuracy" if name.endswith("_direct") else "test_accuracy"
        return {key: v, f"{key}_ci95": [v - 0.02, v + 0.02]}
    rows, md = pipeline._transfer(args, pipeline.PROFILES["smoke"], res, lambda n: "not run: x",
                                  str(tmp_path))
    by_pair = {(r["source"], r["target"]): r for r in rows}
    assert by_pair["usps", "digits"]["gap_closed"] == ""  # 21% vs 22%: no gap to close
    assert by_pair["digits", "usps"]["gap_closed"] == pytest.approx((0.80 - 0.50) / (0.95 - 0.50), abs=1e-3)
    assert "over 1 pairs" in "\n".join(md)
