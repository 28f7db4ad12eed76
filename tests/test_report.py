"""The report module on hand-made run records and numbers: verdicts, tables, failures."""

import csv
import os
from types import SimpleNamespace

import pytest

import metrics
from reporting import claims
from reporting import common
from reporting import transfer
from reporting import writer


def rec(name, group, script="train", status="done", reason="", **fields):
    return SimpleNamespace(name=name, script=script, group=group, fields=fields, status=status,
                           reason=reason, command=f"python {script}.py --out {name}",
                           error_tail="", seconds=1.0)


def trained(acc, ece=0.05, n=10000, **extra):
    return {"test_accuracy": acc, "test_accuracy_ci95": metrics.wilson_ci(round(acc * n), n),
            "test_ece": ece, "best_val_acc": acc, "epochs": 4, "wall_time_s": 10.0,
            "data_description": "hand-made", "history": [{"epoch": 1, "train_acc": acc + 0.05,
                                                          "val_acc": acc, "train_loss": 1.0}],
            "environment": {"git_commit": "abc", "cpu": {"model": "test CPU", "flags": ["avx2"]}},
            **extra}


def attacked(clean, fgsm, pgd, aa, n=1000, masked=False):
    def acc(key, value, count):
        return {key: value, f"{key}_ci95": metrics.wilson_ci(round(value * count), count)}
    return {**acc("clean_accuracy", clean, 10000), **acc("attack_subset_clean_accuracy", clean, n),
            **acc("fgsm_accuracy", fgsm, n), **acc("pgd_accuracy", pgd, n),
            **acc("autoattack_accuracy", aa, n), **acc("noise_accuracy", clean, n),
            "autoattack_pgd_accuracy": pgd, "n_samples": {"attacks": n},
            "autoattack": {"n": n, "version": "fast", "errors": {}},
            "params": {"eps": 8 / 255, "iters": 10}, "files": {},
            "sanity_checks": {"pgd_overestimate": not masked}, "sanity_details": {"pgd_overestimate": "x"},
            "data": {"description": "hand-made CIFAR"}, "wall_time_s": 5.0}


def ablations(runs, results, variant, accs, eces=None, status="done", reason=""):
    for seed, acc in enumerate(accs):
        r = rec(f"abl_{variant}_{seed}", "ablation", status=status, reason=reason,
                variant=variant, seed=seed)
        runs.append(r)
        if status == "done":
            results[r.name] = trained(acc, (eces or [0.05] * len(accs))[seed])


def cifar(runs, results, model, train_fields, numbers, diagnostics=False):
    runs.append(rec(model, "cifar10", model=model, **train_fields))
    results[model] = trained(numbers[0], epochs=8)
    runs.append(rec(f"eval_{model}", "robustness", script="eval", model=model,
                    diagnostics=diagnostics))
    results[f"eval_{model}"] = attacked(*numbers)


@pytest.fixture
def study():
    runs, results = [], {}
    ablations(runs, results, "baseline", [0.60, 0.61, 0.62], [0.10, 0.11, 0.12])
    ablations(runs, results, "no_bn_same_lr", [], status="diverged")  # filled below
    for seed in range(3):
        runs.append(rec(f"abl_no_bn_same_lr_{seed}", "ablation", status="diverged",
                        reason="loss nan at epoch 1, step 3", variant="no_bn_same_lr", seed=seed))
    ablations(runs, results, "label_smoothing", [0.60, 0.61, 0.62], [0.02, 0.025, 0.03])
    ablations(runs, results, "adam", [0.70, 0.71, 0.72])
    ablations(runs, results, "dropout", [0.59, 0.63, 0.61])
    # no_augment is absent: not in this matrix
    cifar(runs, results, "std", dict(adversarial=False, circle=False), (0.80, 0.10, 0.01, 0.0))
    cifar(runs, results, "pgd", dict(adversarial=True, attack="pgd", circle=False), (0.60, 0.40, 0.35, 0.30))
    cifar(runs, results, "circ", dict(adversarial=False, circle=True), (0.79, 0.12, 0.02, 0.0))
    cifar(runs, results, "circ_pgd", dict(adversarial=True, attack="pgd", circle=True),
          (0.58, 0.40, 0.36, 0.20), )
    for d, acc in (("mnist", 0.99), ("mnistm", 0.92), ("usps", 0.97)):
        runs.append(rec(f"{d}_scratch", "digits", source=d, target=d, kind="in_domain"))
        results[f"{d}_scratch"] = trained(acc, n=2000)
        runs.append(rec(f"{d}_small", "transfer", target=d, kind="target_only"))
        results[f"{d}_small"] = trained(acc - 0.1, n=2000)
    for (s, t), direct, tuned in ((("mnist", "mnistm"), 0.20, 0.60), (("mnistm", "mnist"), 0.95, 0.97),
                                  (("mnist", "usps"), 0.90, 0.95), (("usps", "mnist"), 0.80, 0.95),
                                  (("usps", "mnistm"), 0.15, 0.40), (("mnistm", "usps"), 0.70, 0.90)):
        runs.append(rec(f"{s}_{t}_direct", "transfer", script="eval", source=s, target=t, kind="direct"))
        results[f"{s}_{t}_direct"] = {"clean_accuracy": direct,
                                      "clean_accuracy_ci95": metrics.wilson_ci(round(direct * 2000), 2000),
                                      "data": {"description": "hand-made digits"}}
        runs.append(rec(f"{s}_{t}_tuned", "transfer", source=s, target=t, kind="finetune"))
        results[f"{s}_{t}_tuned"] = trained(tuned, n=2000)
    return common.Study(runs, results, "test", {"ablation": {"epochs": 4}, "finetune": {"train_subset": 1000}},
                        "python run_report_pipeline.py", "data")


def test_seed_difference_and_direction():
    clear = common.seed_difference([0.60, 0.61, 0.62], [0.70, 0.71, 0.72])
    assert clear["diff"] == pytest.approx(0.10) and clear["exceeds"] and clear["p"] < 0.01
    assert common.directional(clear, +1) == "supported"
    assert common.directional(clear, -1) == "contradicted"
    noisy = common.seed_difference([0.60, 0.61, 0.62], [0.59, 0.63, 0.61])
    assert not noisy["exceeds"] and common.directional(noisy, +1) == "inconclusive"
    one_seed = common.seed_difference([0.6], [0.9])
    assert one_seed["p"] is None and common.directional(one_seed, +1) == "inconclusive"
    assert common.directional(common.seed_difference([], [0.5]), +1) == "not run"
    # the test is Welch's: same p as scipy's unequal-variance t-test
    from scipy import stats
    p = stats.ttest_ind([0.70, 0.71, 0.72], [0.60, 0.61, 0.62], equal_var=False).pvalue
    assert clear["p"] == pytest.approx(p)


def test_claims_on_hand_made_numbers(study):
    verdicts = {v.claim.split(" (")[0].split(":")[0]: v for v in claims.claims(study)}
    v = lambda start: next(x for k, x in verdicts.items() if k.startswith(start))  # noqa: E731
    assert v("BatchNorm").verdict == "supported" and "diverged in all 3 seeds" in v("BatchNorm").evidence
    assert v("Label smoothing").verdict == "supported"  # ECE 11% -> 2.5%, seeds tight
    assert v("SGD with momentum").verdict == "contradicted"  # Adam +10 points, seeds tight
    assert v("Dropout").verdict == "inconclusive"  # within the seed spread
    assert v("Data augmentation").verdict == "not run"
    assert v("PGD is a stronger").verdict == "supported"
    at = v("Adversarial training")
    assert at.verdict == "supported" and "80.0" in at.evidence and "30.0" in at.evidence
    assert v("Circle Loss").verdict == "contradicted"  # level without PGD-AT, 30% -> 20% with it
    assert v("A colour/texture shift").verdict == "supported"  # 20% vs 90%
    assert v("Transfer is harder").verdict == "supported"  # mnist->mnistm 20% vs mnistm->mnist 95%
    assert v("Frozen-feature").verdict == "supported"
    assert all(x.link.startswith("#") for x in verdicts.values())


def test_a_partly_diverged_variant_is_judged_on_its_finished_seeds_and_says_so(study):
    for seed, acc in enumerate([0.50, 0.51]):  # BN off: two seeds finish, the third diverged
        run = study.by_name[f"abl_no_bn_same_lr_{seed}"]
        run.status, run.reason = "done", ""
        study.results[run.name] = trained(acc)
    verdict = next(v for v in claims.claims(study) if v.claim.startswith("BatchNorm"))
    assert verdict.verdict == "supported"  # 50.5% vs 61% over the seeds that finished
    assert "no_bn_same_lr diverged in 1 of 3 seeds" in verdict.evidence


def test_verdicts_flip_with_the_numbers(study):
    # the same claims, other numbers: no hard-coded verdict survives
    for name in ("eval_pgd",):
        study.results[name] = attacked(0.85, 0.10, 0.01, 0.0)  # no robustness gained
    study.results["mnist_mnistm_direct"]["clean_accuracy"] = 0.955
    study.results["mnist_mnistm_direct"]["clean_accuracy_ci95"] = metrics.wilson_ci(1910, 2000)
    study.results["usps_mnistm_direct"]["clean_accuracy"] = 0.72  # vs mnistm -> usps 70%
    study.results["usps_mnistm_direct"]["clean_accuracy_ci95"] = metrics.wilson_ci(1440, 2000)
    verdicts = {v.claim[:20]: v.verdict for v in claims.claims(study)}
    assert verdicts["Adversarial training"] == "inconclusive"
    assert verdicts["A colour/texture shi"] == "contradicted"  # 95.5% vs MNIST->USPS 90%
    assert verdicts["Transfer is harder f"] == "inconclusive"  # 95.5% vs 95%, 72% vs 70%: all level


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_renders_a_new_run_without_other_edits(study, tmp_path):
    # a method and an ablation variant the report module has never heard of
    cifar(study.runs, study.results, "cifar10_trades", dict(adversarial=True, attack="trades", circle=False),
          (0.70, 0.45, 0.40, 0.38))
    ablations(study.runs, study.results, "mixup", [0.64, 0.65, 0.66])
    study = common.Study(study.runs, study.results, study.profile_name, study.profile,
                         study.command, study.data_root)
    writer.write(study, str(tmp_path))
    text = (tmp_path / "REPORT.md").read_text()
    assert "| cifar10_trades | 8 | 70.0 ± 0.9 |" in text
    assert "| mixup | 3/3 | 65.00 ± 1.00 |" in text
    assert {r["model"] for r in _csv(tmp_path / "summary" / "robustness_summary.csv")} >= {"cifar10_trades"}
    assert "mixup" in {r["variant"] for r in _csv(tmp_path / "summary" / "ablation_summary.csv")}
    assert "most robust model under AutoAttack is `cifar10_trades`" in text


def test_report_opens_with_claims_and_links_only_existing_figures(study, tmp_path):
    writer.write(study, str(tmp_path))
    text = (tmp_path / "REPORT.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Claims and verdicts"
    rows = _csv(tmp_path / "summary" / "claims.csv")
    assert len(rows) == 11 and {c["verdict"] for c in rows} <= {"supported", "contradicted",
                                                                   "inconclusive", "not run"}
    for line in text.splitlines():
        if line.startswith("!["):
            path = line.split("](")[1].rstrip(")")
            assert os.path.exists(tmp_path / path), path
    # no model has diagnostics here: the report says so instead of linking a missing figure
    assert "*Figure `figures/adv_examples.png` not drawn: no model with diagnostics" in text
    assert "diverged in 3 of 3 seeds (loss nan at epoch 1, step 3)" in text


def test_failures_are_at_the_top_with_their_error(study, tmp_path):
    bad = rec("transfer_imagenet_to_mnist", "transfer", status="FAILED",
              reason="cannot read --pretrained-weights junk.pth: UnpicklingError",
              source="imagenet", target="mnist", kind="finetune")
    bad.error_tail = "Traceback (most recent call last):\n  ...\nUnpicklingError: invalid load key"
    study.runs.append(bad)
    study = common.Study(study.runs, study.results, "test", study.profile, "cmd", "data")
    writer.write(study, str(tmp_path))
    text = (tmp_path / "REPORT.md").read_text()
    top = text.split("## Claims and verdicts")[0]
    assert "1 run FAILED" in top and "UnpicklingError: invalid load key" in top
    assert "FAILED: cannot read --pretrained-weights" in text.split("## Cross-domain transfer")[1]


def test_gap_closed_only_where_the_intervals_see_a_gap():
    numbers = {("usps", "usps", "in_domain"): 0.95, ("digits", "digits", "in_domain"): 0.22,
               ("usps", "digits", "direct"): 0.21, ("digits", "usps", "direct"): 0.50,
               ("usps", "digits", "finetune"): 0.30, ("digits", "usps", "finetune"): 0.80}
    runs, results = [], {}
    for (s, t, kind), v in numbers.items():
        name = f"{s}_{t}_{kind}"
        runs.append(rec(name, "transfer", script="eval" if kind == "direct" else "train",
                        source=s, target=t, kind=kind))
        key = "clean_accuracy" if kind == "direct" else "test_accuracy"
        results[name] = {key: v, f"{key}_ci95": [v - 0.02, v + 0.02]}
    t = transfer.transfer_numbers(common.Study(runs, results))
    assert ("usps", "digits") not in t.closed  # 21% vs 22%: no gap to close
    assert t.closed["digits", "usps"] == pytest.approx((0.80 - 0.50) / (0.95 - 0.50))
    assert "over 1 pairs" in " ".join(transfer.transfer_readings(t))


def test_pooled_verdict_of_several_comparisons():
    assert common.pooled([1, 0, 1]) == "supported"
    assert common.pooled([-1, 0]) == "contradicted"
    assert common.pooled([1, -1]) == "inconclusive" and common.pooled([0, 0]) == "inconclusive"
    assert common.pooled([]) == "not run"
