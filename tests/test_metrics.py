import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

import metrics
import run_contract


def _random_predictions(n=500, k=10, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 3
    labels = np.where(rng.random(n) < 0.6, logits.argmax(1), rng.integers(0, k, n))
    return logits, labels


def test_ece_matches_a_direct_loop():
    logits, labels = _random_predictions()
    probs = metrics.softmax(logits)
    conf, pred = probs.max(1), probs.argmax(1)
    n_bins, ece = 10, 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(labels)) if lo < conf[i] <= hi]
        if members:
            acc = np.mean([pred[i] == labels[i] for i in members])
            avg_conf = np.mean([conf[i] for i in members])
            ece += len(members) / len(labels) * abs(acc - avg_conf)
    assert metrics.expected_calibration_error(probs, labels, n_bins) == pytest.approx(ece, abs=1e-12)


def test_ece_is_zero_for_a_calibrated_toy_and_bins_count_everything():
    # confidence 0.75 everywhere and exactly 75% correct
    probs = np.tile([0.75, 0.25], (400, 1))
    labels = np.array([0] * 300 + [1] * 100)
    assert metrics.expected_calibration_error(probs, labels, 10) == pytest.approx(0.0, abs=1e-12)
    bins = metrics.calibration_bins(probs.max(1), probs.argmax(1) == labels, 10)
    assert bins["count"].sum() == 400 and bins["count"][7] == 400


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(size=(4000, 10)) * 2
    labels = np.array([rng.choice(10, p=p) for p in metrics.softmax(true_logits)])
    overconfident = true_logits * 2.5  # the model's logits are 2.5x too sharp
    temperature = metrics.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before = metrics.expected_calibration_error(metrics.softmax(overconfident), labels)
    after = metrics.expected_calibration_error(metrics.softmax(overconfident, temperature), labels)
    assert after < before / 2


def test_aurc_matches_the_formula():
    logits, labels = _random_predictions(200)
    probs = metrics.softmax(logits)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    order = np.argsort(-conf)
    expected = np.mean([1 - correct[order[:k]].mean() for k in range(1, len(conf) + 1)])
    assert metrics.aurc(conf, correct) == pytest.approx(expected, abs=1e-12)
    # a perfect ranking (all errors least confident) beats the reversed one
    good = metrics.aurc(np.arange(10)[::-1], np.array([1] * 7 + [0] * 3))
    bad = metrics.aurc(np.arange(10), np.array([1] * 7 + [0] * 3))
    assert good < bad


def test_selective_accuracy_counts_the_most_confident():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 0])
    assert metrics.selective_accuracy(conf, correct, 0.8) == pytest.approx(7 / 8)
    assert metrics.selective_accuracy(conf, correct, 0.7) == 1.0
    assert metrics.selective_accuracy(conf, correct, 1.0) == pytest.approx(0.8)


def test_topk_matches_a_direct_count():
    logits, labels = _random_predictions()
    result = metrics.topk_accuracy(logits, labels, [1, 3, 5])
    for k in (1, 3, 5):
        direct = np.mean([labels[i] in np.argsort(-logits[i])[:k] for i in range(len(labels))])
        assert result[k] == pytest.approx(direct)
    assert result[1] <= result[3] <= result[5]


def test_per_class_report_matches_scikit_learn():
    logits, labels = _random_predictions()
    preds = logits.argmax(1)
    report = metrics.per_class_report(labels, preds, 10)
    cm = confusion_matrix(labels, preds, labels=range(10))
    assert np.array_equal(report["confusion_matrix"], cm)
    np.testing.assert_allclose(report["confusion_matrix_normalized"].sum(1), 1.0)
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=range(10), zero_division=0)
    np.testing.assert_allclose(report["precision"], p)
    np.testing.assert_allclose(report["f1"], f)
    np.testing.assert_allclose(report["per_class_accuracy"], np.diag(cm) / cm.sum(1))
    assert report["macro_f1"] == pytest.approx(f.mean())


def _checks(**overrides):
    kw = dict(clean=0.9, fgsm=0.3, pgd=0.1, noise=0.85, n=1000, eps=8 / 255,
              max_perturbation={"fgsm": 8 / 255, "pgd": 8 / 255, "noise": 8 / 255},
              x_range=(0.0, 1.0),
              sweep={"epsilons": [0, 8 / 255, 64 / 255], "pgd": [0.9, 0.1, 0.0], "n": 256},
              iter_sweep={"iters": [1, 5, 10], "pgd": [0.3, 0.12, 0.1], "n": 512},
              autoattack={"accuracy": 0.08, "pgd_accuracy": 0.1, "n": 1000})
    kw.update(overrides)
    return metrics.attack_sanity_checks(**kw)[0]


def test_sanity_checks_pass_for_a_sound_attack():
    assert all(_checks().values()) and len(_checks()) == 8
    # checks whose sweep did not run are absent, not passed
    assert len(_checks(sweep=None, iter_sweep=None, autoattack=None)) == 4


@pytest.mark.parametrize("overrides, failing", [
    ({"max_perturbation": {"fgsm": 8 / 255, "pgd": 12 / 255, "noise": 8 / 255}}, "perturbation_within_eps"),
    ({"x_range": (-0.01, 1.0)}, "adversarial_in_pixel_range"),
    ({"pgd": 0.5}, "pgd_le_fgsm_le_clean"),            # PGD weaker than FGSM
    ({"fgsm": 0.95, "pgd": 0.9, "noise": 0.96}, "pgd_le_fgsm_le_clean"),  # attack raises accuracy
    ({"fgsm": 0.88, "noise": 0.6}, "fgsm_le_noise"),   # gradient masking sign
    ({"sweep": {"epsilons": [0, 64 / 255], "pgd": [0.9, 0.5], "n": 256}}, "pgd_large_eps_near_zero"),
    ({"sweep": {"epsilons": [0, 64 / 255], "pgd": [0.9, 60 / 256], "n": 256}}, "pgd_large_eps_near_zero"),
    ({"autoattack": {"accuracy": 0.2, "pgd_accuracy": 0.1, "n": 1000}}, "autoattack_le_pgd"),
    ({"autoattack": {"accuracy": 0.03, "pgd_accuracy": 0.1, "n": 1000}}, "pgd_overestimate"),
    ({"iter_sweep": {"iters": [1, 5, 10], "pgd": [0.3, 0.1, 0.4], "n": 512}}, "more_pgd_iters_not_weaker"),
])
def test_sanity_checks_catch_a_broken_attack(overrides, failing):
    checks = _checks(**overrides)
    assert checks[failing] is False
    assert all(v for k, v in checks.items() if k != failing)


def test_a_check_fails_on_evidence_not_on_a_samples_luck():
    # 26 of 256 images (10.2%) against a 10% bound: within sampling noise, so no alarm
    assert _checks(sweep={"epsilons": [0, 64 / 255], "pgd": [0.9, 26 / 256], "n": 256})[
        "pgd_large_eps_near_zero"]
    # PGD 1 point above FGSM on 100 images is noise; 10 points on 1,000 is not
    assert _checks(pgd=0.31, fgsm=0.30, n=100)["pgd_le_fgsm_le_clean"]
    assert not _checks(pgd=0.40, fgsm=0.30, n=1000)["pgd_le_fgsm_le_clean"]
    # PGD 5 of 64 images above AutoAttack is within noise of the 5-point bound; 70 of 1,000 is not
    assert _checks(autoattack={"accuracy": 24 / 64, "pgd_accuracy": 29 / 64, "n": 64})["pgd_overestimate"]
    assert not _checks(autoattack={"accuracy": 0.30, "pgd_accuracy": 0.37, "n": 1000})["pgd_overestimate"]


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (273, 1000), (1, 2)])
def test_wilson_interval_matches_the_formula(k, n):
    z = 1.959963984540054  # the 97.5% normal quantile
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = metrics.wilson_ci(k, n)
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-9)
    entry = run_contract.accuracy("pgd_accuracy", k, n)
    assert entry == {"pgd_accuracy": p, "pgd_accuracy_n": n, "pgd_accuracy_ci95": [low, high]}
