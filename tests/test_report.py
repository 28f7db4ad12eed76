"""The report module on hand-made run records and numbers: verdicts, tables, failures."""

import csv
import os
from types import SimpleNamespace

import numpy as np
import pytest

import run_contract
import significance
import utils
from reporting import claims
from reporting import common
from reporting import robustness
from reporting import transfer
from reporting import writer


def rec(name, group, script="train", status="done", reason="", **fields):
    return SimpleNamespace(name=name, script=script, group=group, fields=fields, status=status,
                           reason=reason, command=f"python {script}.py --out {name}",
                           error_tail="", seconds=1.0)


def trained(acc, ece=0.05, n=10000, **extra):
    return {**run_contract.accuracy("test_accuracy", round(acc * n), n),
            "test_ece": ece, "best_val_acc": acc, "epochs": 4, "wall_time_s": 10.0,
            "dataset": "cifar10", "n_train": 1000, "args": {}, "precision": "bf16",
            "data_description": "hand-made", "history": [{"epoch": 1, "train_acc": acc + 0.05,
                                                          "val_acc": acc, "train_loss": 1.0}],
            "environment": {"git_commit": "abc", "cpu": {"model": "test CPU", "flags": ["avx2"]}},
            **extra}


def attacked(clean, fgsm, pgd, aa, n=1000, masked=False):
    def acc(key, value, count):
        return run_contract.accuracy(key, round(value * count), count)
    return {**acc("clean_accuracy", clean, 10000), **acc("attack_subset_clean_accuracy", clean, n),
            **acc("fgsm_accuracy", fgsm, n), **acc("pgd_accuracy", pgd, n),
            **acc("autoattack_accuracy", aa, n), **acc("noise_accuracy", clean, n),
            "autoattack_pgd_accuracy": pgd, "n_samples": {"attacks": n},
            "autoattack": {"n": n, "version": "fast", "errors": {}, "attacks": ["apgd-ce"], "steps": 100},
            "params": {"eps": 8 / 255, "iters": 10, "alpha": 2 / 255}, "files": {},
            "sanity_checks": {"pgd_overestimate": not masked}, "sanity_details": {"pgd_overestimate": "x"},
            "data": {"description": "hand-made CIFAR"}, "wall_time_s": 5.0}


def per_image(clean, fgsm, pgd, aa, n=1000):
    """Per-image outcomes with these accuracies, nested (the first k images correct): a
    stronger attack or a weaker model loses images and gains none."""
    def first(share, count):
        return np.arange(count), np.arange(count) < round(share * count)
    return {"clean": first(clean, 10000), "attack_subset_clean": first(clean, n),
            "fgsm": first(fgsm, n), "pgd": first(pgd, n), "autoattack": first(aa, n)}


def evaluation(study, model, numbers):
    """Give `eval_<model>` these numbers and matching per-image outcomes."""
    study.results[f"eval_{model}"] = attacked(*numbers)
    study.per_image[f"eval_{model}"] = per_image(*numbers)


def ablations(runs, results, variant, accs, eces=None, status="done", reason=""):
    for seed, acc in enumerate(accs):
        r = rec(f"abl_{variant}_{seed}", "ablation", status=status, reason=reason,
                variant=variant, seed=seed)
        runs.append(r)
        if status == "done":
            results[r.name] = trained(acc, (eces or [0.05] * len(accs))[seed])


def cifar(runs, results, model, train_fields, numbers, diagnostics=False, outcomes=None):
    runs.append(rec(model, "cifar10", model=model, **train_fields))
    results[model] = trained(numbers[0], epochs=8)
    runs.append(rec(f"eval_{model}", "robustness", script="eval", model=model,
                    diagnostics=diagnostics))
    results[f"eval_{model}"] = attacked(*numbers)
    if outcomes is not None:
        outcomes[f"eval_{model}"] = per_image(*numbers)


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
    ablations(runs, results, "dropout", [0.60, 0.63, 0.62])
    # no_augment is absent: not in this matrix
    outcomes = {}
    cifar(runs, results, "std", dict(adversarial=False, circle=False), (0.80, 0.10, 0.01, 0.0), outcomes=outcomes)
    cifar(runs, results, "pgd", dict(adversarial=True, attack="pgd", circle=False), (0.60, 0.40, 0.35, 0.30),
          outcomes=outcomes)
    cifar(runs, results, "circ", dict(adversarial=False, circle=True), (0.79, 0.12, 0.02, 0.0), outcomes=outcomes)
    cifar(runs, results, "circ_pgd", dict(adversarial=True, attack="pgd", circle=True),
          (0.58, 0.40, 0.36, 0.20), outcomes=outcomes)
    for d, acc in (("mnist", 0.99), ("mnistm", 0.92), ("usps", 0.97)):
        runs.append(rec(f"{d}_scratch", "digits", source=d, target=d, kind="in_domain"))
        results[f"{d}_scratch"] = trained(acc, n=2000)
        runs.append(rec(f"{d}_small", "transfer", target=d, kind="target_only"))
        results[f"{d}_small"] = trained(acc - 0.1, n=2000)
    for (s, t), direct, tuned in ((("mnist", "mnistm"), 0.20, 0.60), (("mnistm", "mnist"), 0.95, 0.97),
                                  (("mnist", "usps"), 0.90, 0.95), (("usps", "mnist"), 0.80, 0.95),
                                  (("usps", "mnistm"), 0.15, 0.40), (("mnistm", "usps"), 0.70, 0.90)):
        runs.append(rec(f"{s}_{t}_direct", "transfer", script="eval", source=s, target=t, kind="direct"))
        results[f"{s}_{t}_direct"] = {**run_contract.accuracy("clean_accuracy", round(direct * 2000), 2000),
                                      "data": {"description": "hand-made digits"}}
        runs.append(rec(f"{s}_{t}_tuned", "transfer", source=s, target=t, kind="finetune"))
        results[f"{s}_{t}_tuned"] = trained(tuned, n=2000)
    return common.Study(runs, results, "test", {"ablation": {"epochs": 4}, "finetune": {"train_subset": 1000}},
                        "python run_report_pipeline.py", "data", per_image=outcomes)


def test_the_ablation_table_pairs_seeds():
    # same seeds, a small consistent gain: the seed-paired test sees it
    clear = common.seed_difference({0: 0.60, 1: 0.65, 2: 0.70}, {0: 0.61, 1: 0.66, 2: 0.715})
    assert clear["diff"] == pytest.approx(0.0117, abs=1e-4) and clear["exceeds"]
    from scipy import stats
    assert clear["p"] == pytest.approx(stats.ttest_rel([0.61, 0.66, 0.715], [0.60, 0.65, 0.70]).pvalue)
    # only the seeds both sides finished are compared
    assert common.seed_difference({0: 0.6, 1: 0.7}, {1: 0.9, 2: 0.1})["diff"] == pytest.approx(0.2)
    assert common.seed_difference({0: 0.6}, {0: 0.9})["p"] is None
    assert common.seed_difference({0: 0.6}, {1: 0.9}) is None


def _verdicts(study):
    verdicts = {v.statement.split(" (")[0].split(":")[0]: v for v in claims.judge(study)}
    return lambda start: next(x for k, x in verdicts.items() if k.startswith(start))


def test_claims_on_hand_made_numbers(study):
    v = _verdicts(study)
    bn = v("BatchNorm")  # every seed diverged: scored as chance, 61% -> 10%
    assert bn.verdict == "supported" and "diverged in 3 of 3 seeds (scored as chance, 10%)" in bn.comparisons[0].label
    assert v("Label smoothing").verdict == "supported"  # ECE 11% -> 2.5%, seeds tight
    assert v("SGD with momentum").verdict == "contradicted"  # Adam +10 points, seeds tight
    dropout = v("Dropout")  # within the seed spread: inconclusive, with what it could have seen
    assert dropout.verdict == "inconclusive" and "MDE" in dropout.evidence and "seeds (paired)" in dropout.evidence
    assert v("Data augmentation").verdict == "not run"
    assert v("PGD is a stronger").verdict == "supported"  # every model loses images to PGD
    at = v("Adversarial training")
    assert at.verdict == "supported" and [u.outcome for u in at.units] == ["as claimed"] * 2
    assert v("Circle Loss").verdict == "contradicted"  # level without PGD-AT, 30% -> 20% with it
    assert v("A colour/texture shift").verdict == "supported"  # 20% vs 90%
    assert v("Transfer is harder").verdict == "supported"  # mnist->mnistm 20% vs mnistm->mnist 95%
    frozen = v("Frozen features of another")
    assert frozen.verdict == "contradicted"  # mnist->mnistm 60% vs scratch 82%
    # both on the target's test split: the sample column says the unpaired test is conservative
    assert frozen.units and all("the same test split, unpaired" in u.test.sample for u in frozen.units)
    assert "independent" in v("Transfer is harder").units[0].test.sample  # different test splits
    assert all(x.claim.link.startswith("#") for x in claims.judge(study))


def test_frozen_vs_scratch_pairs_the_images_where_both_runs_recorded_them(study):
    def outcomes(acc, n=2000):  # nested: the frozen-feature model gets every image scratch gets
        return {"clean": (np.arange(n), np.arange(n) < round(acc * n))}
    def tests():  # comparison -> its test
        return {u.label.split(":")[0]: u.test for u in _verdicts(study)("Frozen features of another").units}
    study.per_image.update(mnist_small=outcomes(0.89), mnistm_mnist_tuned=outcomes(0.97),
                           usps_mnist_tuned=outcomes(0.95))
    paired = tests()["mnistm features -> mnist vs scratch"]
    assert paired.name == "McNemar exact" and "paired" in paired.sample
    assert paired.counts == {"lost": 0, "gained": 160, "n": 2000}
    assert paired.effect == pytest.approx(0.08)
    # the same accuracies unpaired: McNemar's interval is the narrower (it drops the images
    # both runs get right or wrong)
    unpaired = significance.two_proportions(1780, 2000, 1940, 2000)
    assert paired.ci95[1] - paired.ci95[0] < unpaired.ci95[1] - unpaired.ci95[0]
    # a target whose scratch run recorded no per-image outcomes keeps the conservative test
    assert "unpaired" in tests()["mnist features -> usps vs scratch"].sample
    # outcomes on other images (another test split) are never paired
    study.per_image["usps_mnist_tuned"] = {"clean": (np.arange(1, 2001), outcomes(0.95)["clean"][1])}
    assert "unpaired" in tests()["usps features -> mnist vs scratch"].sample


def test_every_decisive_verdict_survives_holm_and_every_inconclusive_states_its_mde(study):
    for v in claims.judge(study):
        if v.verdict in ("supported", "contradicted"):
            assert any(u.p_adjusted < significance.ALPHA for u in v.units)
            assert all(u.p_adjusted >= u.test.p for u in v.units)
        if v.verdict == "inconclusive":
            assert "MDE" in v.evidence, v.statement


def test_a_partly_diverged_variant_counts_its_diverged_seed_as_chance(study):
    for seed, acc in enumerate([0.50, 0.51]):  # BN off: two seeds finish, the third diverged
        run = study.by_name[f"abl_no_bn_same_lr_{seed}"]
        run.status, run.reason = "done", ""
        study.results[run.name] = trained(acc)
    verdict = _verdicts(study)("BatchNorm")
    # -10, -10 and -52 points: a large mean drop, but too uneven for three seeds to show
    assert verdict.verdict == "inconclusive"
    assert "no_bn_same_lr diverged in 1 of 3 seeds (scored as chance, 10%)" in verdict.comparisons[0].label
    assert verdict.units[0].test.effect == pytest.approx(-0.24)


def test_verdicts_flip_with_the_numbers(study):
    # the same claims, other numbers: no hard-coded verdict survives
    evaluation(study, "pgd", (0.85, 0.10, 0.01, 0.0))  # no robustness gained
    study.results["mnist_mnistm_direct"].update(run_contract.accuracy("clean_accuracy", 1910, 2000))
    study.results["usps_mnistm_direct"].update(run_contract.accuracy("clean_accuracy", 1440, 2000))  # vs 70%
    v = _verdicts(study)
    assert v("Adversarial training").verdict == "contradicted"  # clean accuracy rose: 80% -> 85%
    assert v("A colour/texture shift").verdict == "contradicted"  # 95.5% vs MNIST->USPS 90%
    assert v("Transfer is harder").verdict == "inconclusive"  # 95.5% vs 95%, 72% vs 70%: level


def test_a_claim_over_six_models_is_decided_by_its_combination_rule():
    # two models where PGD is clearly stronger, four where the attacks are level (the
    # discordant images split evenly): "all" stays inconclusive, "pooled" decides
    def model(lost, gained, n=1000):
        reference = np.r_[np.ones(lost, bool), np.zeros(gained, bool), np.ones(n - lost - gained, bool)]
        other = np.r_[np.zeros(lost, bool), np.ones(gained, bool), np.ones(n - lost - gained, bool)]
        return significance.mcnemar(reference, other)
    tests = [model(60, 2), model(55, 3)] + [model(10, 10)] * 4

    def compares(study):
        return [claims.Comparison(f"model {i}", -1, t) for i, t in enumerate(tests)]
    declared = [claims.Claim("PGD is stronger", "robustness", "accuracy", compares, combine=rule)
                for rule in ("all", "pooled")]
    every, pooled = claims.judge(common.Study([], {}), declared)
    assert every.verdict == "inconclusive" and len(every.units) == 6
    assert [u.outcome for u in every.units] == ["as claimed"] * 2 + ["not significant"] * 4
    assert pooled.verdict == "supported" and len(pooled.units) == 1
    assert pooled.units[0].test.counts == {"lost": 0 + 3 + 2 + 40, "gained": 60 + 55 + 40, "n": 6000}
    # one model clearly the other way contradicts a claim about all of them
    tests[2] = model(2, 60)
    assert claims.judge(common.Study([], {}), declared[:1])[0].verdict == "contradicted"


def test_gap_closed_inside_the_noise_is_inconclusive(tmp_path):
    def study_with(direct, tuned, full, n):
        runs, results = [], {}
        for kind, acc, script in (("direct", direct, "eval"), ("finetune", tuned, "train"),
                                  ("in_domain", full, "train")):
            name = f"a_b_{kind}"
            runs.append(rec(name, "transfer", script=script, source="a" if kind != "in_domain" else "b",
                            target="b", kind=kind))
            key = "clean_accuracy" if script == "eval" else "test_accuracy"
            results[name] = run_contract.accuracy(key, round(acc * n), n)
        return common.Study(runs, results)
    # a 3.5-point gap the intervals see, half of it regained, on 2,000 images: the ratio's
    # interval spans most of [0, 1], so against one half it decides nothing
    (noisy,) = claims.gap_closed(study_with(0.89, 0.9075, 0.925, 2000))
    assert noisy.test.effect == pytest.approx(0.5)
    assert noisy.test.p > 0.5 and noisy.test.ci95[0] < 0.3 and noisy.test.ci95[1] > 0.7
    # the table and the claim give a pair's share from the same exact ratio (0.2654): the
    # CSV's 3 decimals (0.265) once made the table say 26% beside the claim's 27%
    edge = study_with(0.2016, 0.3927, 0.9217, 10000)
    (claim,) = claims.gap_closed(edge)
    assert "a -> b 27%" in claim.label
    (tmp_path / "figures").mkdir()
    (tmp_path / "summary").mkdir()
    md = transfer.transfer_section(edge, transfer.transfer_numbers(edge), str(tmp_path),
                                   str(tmp_path / "figures"), str(tmp_path / "summary"))
    (row,) = [line for line in "\n".join(md).splitlines() if line.startswith("| a | b |")]
    assert row.split(" | ")[6] == "27%"
    # the same ratio on a 40-point gap and 10,000 images is decided
    (clear,) = claims.gap_closed(study_with(0.50, 0.86, 0.90, 10000))
    assert clear.test.effect == pytest.approx(0.9) and clear.test.p < 0.01 and clear.test.ci95[0] > 0.5


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
    # the published column names the entry trained by the same method, and no other
    row = lambda model: next(x for x in text.splitlines() if x.startswith(f"| {model} | 8 |"))  # noqa: E731
    assert row("pgd").endswith("| Rice2020Overfitting: 85.3 / 53.4 |")
    assert row("std").endswith("| Standard: 94.8 / 0.0 |") and row("cifar10_trades").endswith("| - |")
    assert "| mixup | 3/3 | 65.00 ± 1.00 |" in text
    assert {r["model"] for r in _csv(tmp_path / "summary" / "robustness_summary.csv")} >= {"cifar10_trades"}
    assert "mixup" in {r["variant"] for r in _csv(tmp_path / "summary" / "ablation_summary.csv")}
    assert "most robust model under AutoAttack is `cifar10_trades`" in text
    # the hand-made records name a commit git does not know: never claimed to be the same code
    assert "`abc` (" in text and "not checkable)" in text and "run code as at" not in text


def _seeded_readings(first, second):
    """The robustness readings of a standard model and two adversarially trained methods,
    one per seed given (AutoAttack accuracies on 1,000 images each)."""
    runs, results = [], {}
    cifar(runs, results, "std", dict(method="std", seed=0, adversarial=False, circle=False), (0.8, 0.1, 0.0, 0.0))
    for method, aas in (("a", first), ("b", second)):
        for seed, aa in enumerate(aas):
            cifar(runs, results, method if seed == 0 else f"{method}_s{seed}",
                  dict(method=method, seed=seed, adversarial=True, attack=method, circle=False),
                  (0.6, 0.4, aa + 0.05, aa))
    study = common.Study(runs, results)
    return " ".join(robustness.robustness_readings(study, robustness.robustness_rows(study)))


def test_robustness_readings_weigh_seed_spread_where_methods_have_seeds():
    # the first seeds' intervals are apart (40% vs 30% on 1,000 images), but across three
    # seeds the order flips: no method is clearly the most robust
    noisy = _seeded_readings([0.40, 0.30, 0.35], [0.30, 0.36, 0.33])
    assert "No adversarially trained model is clearly the most robust" in noisy
    assert "the highest, `a`, is not clearly above `b` (the standard model: 0.0 ± " in noisy
    assert "`a` 35.0 ± 5.0% (mean ± SD of 3 seeds)" in noisy and "are level" in noisy
    # two points apart, overlapping on one seed's images, the same in every seed: clear
    steady = _seeded_readings([0.32, 0.36, 0.40], [0.30, 0.339, 0.381])
    assert "The most robust model under AutoAttack is `a` (36.0 ± 4.0% (mean ± SD of 3 seeds)" in steady
    assert "`a` over `b`" in steady and "`b` over `a`" not in steady
    # with one seed a side, the same two points stay inside the image sampling
    single = _seeded_readings([0.32], [0.30])
    assert "No adversarially trained model is clearly" in single and "(one seed)" in single


def test_report_opens_with_claims_and_links_only_existing_figures(study, tmp_path):
    writer.write(study, str(tmp_path))
    text = (tmp_path / "REPORT.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Setup", "## Claims and verdicts"]
    rows = _csv(tmp_path / "summary" / "claims.csv")
    assert len(rows) == len(claims.CLAIMS) and {c["verdict"] for c in rows} <= {"supported", "contradicted",
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
    top = text.split("## Setup")[0]
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


def test_models_with_several_seeds_are_compared_across_seeds(study):
    # three seeds of the standard and the PGD-trained model: the claim's test is paired by
    # seed, so its interval includes the seed-to-seed spread; the one-seed Circle models
    # are still compared image by image
    study.by_name["std"].fields["seed"] = study.by_name["pgd"].fields["seed"] = 0
    for seed, std, pgd in ((1, (0.79, 0.12, 0.02, 0.0), (0.62, 0.41, 0.36, 0.31)),
                           (2, (0.81, 0.11, 0.01, 0.0), (0.59, 0.39, 0.34, 0.28))):
        cifar(study.runs, study.results, f"std_s{seed}", dict(adversarial=False, circle=False, seed=seed),
              std, outcomes=study.per_image)
        cifar(study.runs, study.results, f"pgd_s{seed}", dict(adversarial=True, attack="pgd", circle=False,
                                                             seed=seed), pgd, outcomes=study.per_image)
    study = common.Study(study.runs, study.results, study.profile_name, study.profile, study.command,
                         study.data_root, per_image=study.per_image)
    trade = _verdicts(study)("Adversarial training")
    assert [c.test.name for c in trade.comparisons] == ["paired t-test"] * 2
    assert trade.comparisons[1].test.effect == pytest.approx((0.30 + 0.31 + 0.28) / 3)  # AutoAttack
    assert "3 seeds, paired" in trade.comparisons[0].test.sample and "mean of 3 seeds" in trade.comparisons[0].label
    circle = _verdicts(study)("Circle Loss")
    assert {c.test.name for c in circle.comparisons} == {"McNemar exact"}
    assert all("(one seed)" in c.label for c in circle.comparisons)


def test_run_time_is_split_by_cpu_where_runs_ran_on_several():
    xeon = {"environment": {"cpu": {"model": "Xeon", "flags": ["avx2", "amx_bf16"]}}}
    epyc = {"environment": {"cpu": {"model": "EPYC", "flags": ["avx2"]}}}
    same = {"a": {**xeon, "wall_time_s": 60}, "b": {**xeon, "wall_time_s": 120}}
    assert writer._per_cpu(same) == "on Xeon (avx2, amx_bf16)"
    mixed = {**same, "c": {**epyc, "wall_time_s": 30}}
    assert writer._per_cpu(mixed) == ("0.5 min on EPYC (avx2) (1 run), "
                                      "3.0 min on Xeon (avx2, amx_bf16) (2 runs)")


def test_seeded_methods_are_summarised_over_seeds_and_equal_compute_runs_named(study):
    for name in ("std", "pgd"):
        study.by_name[name].fields.update(seed=0, method=name)
    for seed, aa in ((1, 0.28), (2, 0.32)):  # the first seed's AutoAttack accuracy is 0.30
        cifar(study.runs, study.results, f"pgd_s{seed}",
              dict(adversarial=True, attack="pgd", circle=False, seed=seed, method="pgd"),
              (0.60, 0.40, 0.35, aa))
    cifar(study.runs, study.results, "pgd_equal_compute",
          dict(adversarial=True, attack="pgd", circle=False, seed=0, method="pgd", equal_compute=True),
          (0.50, 0.30, 0.30, 0.25))
    study.results["pgd_equal_compute"].update(epochs=3, wall_time_s=12.0)
    study = common.Study(study.runs, study.results, study.profile_name, study.profile, study.command,
                         study.data_root, per_image=study.per_image)
    rows = robustness.robustness_rows(study)
    seeds = "\n".join(robustness.seed_table(rows))
    pgd = next(line for line in seeds.splitlines() if line.startswith("| `pgd`"))
    # clean, FGSM, PGD, AutoAttack (0.30, 0.28, 0.32: sd 0.02), noise
    assert pgd == "| `pgd` | 3 | 60.0 ± 0.0 | 40.0 ± 0.0 | 35.0 ± 0.0 | 30.0 ± 2.0 | 60.0 ± 0.0 |"
    assert "`std`" not in seeds and "pgd_equal_compute" not in seeds  # one seed; another budget
    sentence = robustness._budget_sentence([r for r in rows if r["result"]])
    assert "same budget (8 epochs" in sentence and "`pgd_equal_compute` 3 epochs (0.2 min)" in sentence
    study.results["pgd_equal_compute"]["wall_time_s"] = 30.0  # the sentence reads each run's own
    assert "3 epochs (0.5 min)" in robustness._budget_sentence([r for r in rows if r["result"]])
    assert "against `std`'s 0.2 min (measured training time" in sentence
    assert "different budgets" not in sentence


def test_the_setup_box_names_each_familys_regime_with_the_baselines_fit(study):
    from reporting import setup

    for seed, train in enumerate((0.86, 0.87, 0.88)):  # test 0.60, 0.61, 0.62: a 26-point gap
        study.results[f"abl_baseline_{seed}"]["train_clean_accuracy"] = train
    study.profile.update(ablation={"epochs": 40, "train_subset": 2000},
                         cifar10={"epochs": 8, "train_subset": None}, model_seeds=[0, 1, 2],
                         seeded_models=("cifar10_standard", "cifar10_pgd_at"),
                         equal_compute=("cifar10_pgd_at",), digit={"epochs": 1}, digits={"epochs": 15})
    text = setup.regime(study)
    assert "- ablations (regularization, calibration, optimization): 40 epochs on 2,000" in text
    assert "87.0% of its training images (clean, no augmentation) against 61.0%" in text
    assert "a 26.0-point gap (mean of 3 seeds)" in text
    assert "8 epochs on all training images (equal epochs); 3 seeds of `cifar10_standard`, " \
           "`cifar10_pgd_at`" in text and "at the standard model's compute" in text
    assert "- transfer: digit domains from scratch 1 epoch (the large ones) or 15 epochs" in text
    del study.results["abl_baseline_0"]["train_clean_accuracy"], \
        study.results["abl_baseline_1"]["train_clean_accuracy"], \
        study.results["abl_baseline_2"]["train_clean_accuracy"]
    assert "the baseline fits" not in setup.regime(study)  # not measured: not claimed


def test_the_setup_box_names_every_attacked_sample_size_a_look_used(study):
    """A seed a later look added is evaluated at that look's larger sample: the Attacks line
    names each size, not only the first evaluation's."""
    from reporting import setup

    line = next(l for l in setup.setup_section(study) if l.startswith("- **Attacks**"))
    assert "on 1,000 seeded test images" in line and "on the first 1,000 of them." in line
    study.results["eval_pgd"] = attacked(0.60, 0.40, 0.35, 0.30, n=10000)
    line = next(l for l in setup.setup_section(study) if l.startswith("- **Attacks**"))
    assert "on 1,000 or 10,000 seeded test images" in line
    assert "on the first 1,000 or 10,000 of them (each evaluation at the sizes of the look" in line


def test_parameters_are_a_table_of_budgets_and_a_list_of_the_rest():
    from study.profiles import PROFILES
    profile = PROFILES["smoke"]
    text = "\n".join(writer.parameters_section("smoke", profile))
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    trained = [g for g, b in profile.items() if isinstance(b, dict) and "epochs" in b]
    assert set(rows) == {"group", *trained}
    columns = rows["group"].strip("| ").split(" | ")
    for group in trained:  # every budget in its column, and nothing invented where unset
        cells = dict(zip(columns, rows[group].strip("| ").split(" | ")))
        for key in columns[1:]:
            expected = profile[group].get(key, "-")
            assert cells[key] == ("all" if expected is None else str(expected)), (group, key)
    assert "- **eval**: max_batches 1;" in text and "autoattack_samples 8" in text
    assert "- **extra_ablations**: diverge_check `--lr 1e6`" in text  # a flag list as typed


def test_sanity_checks_are_a_table_with_each_evaluations_numbers_below():
    runs = [rec("eval_a", "eval", script="eval"), rec("eval_b", "eval", script="eval"),
            rec("eval_c", "eval", script="eval")]
    results = {"eval_a": {"sanity_checks": {"within_eps": True, "pgd_overestimate": False},
                          "sanity_details": {"within_eps": "8/255", "pgd_overestimate": "PGD 0.40 vs AA 0.20"}},
               "eval_b": {"sanity_checks": {"within_eps": True},
                          "sanity_details": {"within_eps": "7.9/255"}}}
    md = "\n".join(writer.sanity_section(common.Study(runs, results)))
    assert "| evaluation | `within_eps` | `pgd_overestimate` |" in md
    assert "| eval_a | ok | **FAILED** |" in md and "| eval_b | ok | - |" in md
    assert "eval_c" not in md  # not evaluated: nothing to check
    assert "<summary>eval_a: 1 of 2 passed</summary>" in md
    assert "- **FAILED** `pgd_overestimate`: PGD 0.40 vs AA 0.20" in md



def _git_repo(folder):
    """A fresh git repository in `folder`; returns git(*argv) -> its stdout there."""
    import subprocess

    def git(*argv):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv],
                              cwd=folder, check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    return git

def test_provenance_names_the_run_code_files_git_says_differ(tmp_path):
    """Per commit that produced runs, which run-code files differ from the report's commit; a
    -dirty or unknown commit is 'not checkable', never the same code."""
    from reporting.provenance import changed_since

    git = _git_repo(tmp_path)
    (tmp_path / "train.py").write_text("a = 1\n")
    (tmp_path / "notes.md").write_text("x\n")
    git("add", "."), git("commit", "-qm", "one")
    first = git("rev-parse", "HEAD").strip()
    (tmp_path / "notes.md").write_text("y\n")
    git("commit", "-qam", "two")
    second = git("rev-parse", "HEAD").strip()
    (tmp_path / "train.py").write_text("a = 2\nb = 3\n")
    git("commit", "-qam", "three")
    code = ("train.py", "models")
    assert changed_since(first, code, root=tmp_path) == {"train.py": ("2", "1")}
    assert changed_since(second, ("notes.md",), root=tmp_path) == {}
    assert changed_since(git("rev-parse", "HEAD").strip(), code, root=tmp_path) == {}
    assert changed_since(first + "-dirty", code, root=tmp_path) is None
    assert changed_since("0" * 40, code, root=tmp_path) is None


def test_rendered_outputs_do_not_make_the_tree_dirty_but_code_does(tmp_path, monkeypatch):
    """Rendering a look writes report/ and the findings in docs/: the next look's runs must
    still record a clean commit; an edit to code must not."""
    git = _git_repo(tmp_path)
    for name in ("train.py", "docs/pipeline.md", "report/REPORT.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("one\n")
    git("add", "."), git("commit", "-qm", "one")
    head = git("rev-parse", "HEAD").strip()
    monkeypatch.setattr(utils, "PROJECT_ROOT", str(tmp_path))
    (tmp_path / "docs" / "pipeline.md").write_text("findings\n")
    (tmp_path / "report" / "REPORT.md").write_text("rendered\n")
    assert utils.git_commit() == head
    (tmp_path / "train.py").write_text("two\n")
    assert utils.git_commit() == head + "-dirty"
