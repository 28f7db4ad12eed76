"""The statistics module against independent computations: textbook formulas, statsmodels'
implementations, exact binomial sums, and simulations whose true answer is known."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

import significance


def test_holm_adjusts_a_family_of_five_as_statsmodels_and_the_textbook_do():
    from statsmodels.stats.multitest import multipletests

    p = [0.010, 0.040, 0.030, 0.200, 0.001]
    adjusted = significance.holm(p)
    assert adjusted == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-15)
    # by hand: sorted 0.001, 0.010, 0.030, 0.040, 0.200 times 5, 4, 3, 2, 1, running maximum
    assert adjusted == pytest.approx([0.040, 0.090, 0.090, 0.200, 0.005])
    # the case: dropout's p = 0.049 alone passes 0.05, one of five it does not
    assert significance.holm([0.049, 0.3, 0.5, 0.7, 0.9])[0] > significance.ALPHA
    assert significance.holm([]) == []


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_images():
    from statsmodels.stats.contingency_tables import mcnemar

    # 1,000 images: 50 both right, 12 only the reference, 30 only the other, the rest both wrong
    ref = np.r_[np.ones(50), np.ones(12), np.zeros(30), np.zeros(908)].astype(bool)
    other = np.r_[np.ones(50), np.zeros(12), np.ones(30), np.zeros(908)].astype(bool)
    t = significance.mcnemar(ref, other)
    exact = min(1.0, 2 * sum(math.comb(42, k) for k in range(13)) / 2 ** 42)  # two-sided binomial sum
    assert t.p == pytest.approx(exact, rel=1e-9)
    assert t.p == pytest.approx(mcnemar([[50, 12], [30, 908]], exact=True).pvalue, rel=1e-9)
    assert t.effect == pytest.approx((30 - 12) / 1000)
    # Wald interval of a paired difference (Agresti): sqrt(b + c - (c - b)^2 / n) / n
    half = 1.959964 * math.sqrt(42 - 18 ** 2 / 1000) / 1000
    assert t.ci95 == pytest.approx((0.018 - half, 0.018 + half), abs=1e-6)
    assert significance.mcnemar(ref, ref).p == 1.0
    with pytest.raises(ValueError, match="different samples"):
        significance.mcnemar(ref, other[:10])


def test_a_paired_design_with_correlated_seeds_finds_what_welch_misses():
    # seeds differ a lot from each other, and the variant adds about one point to each
    base = np.array([0.50, 0.60, 0.70, 0.55, 0.65])
    variant = base + np.array([0.011, 0.009, 0.010, 0.012, 0.008])
    paired, welch = significance.paired(base, variant), significance.welch(base, variant)
    assert paired.p < 1e-3 and welch.p > 0.8
    assert paired.effect == pytest.approx(welch.effect) == pytest.approx(0.010)
    assert paired.p == pytest.approx(stats.ttest_rel(variant, base).pvalue)
    assert paired.ci95 == pytest.approx(tuple(stats.ttest_rel(variant, base).confidence_interval()))
    assert welch.p == pytest.approx(stats.ttest_ind(variant, base, equal_var=False).pvalue)
    # the reverse case: uncorrelated seeds, no consistent shift: both stay inconclusive
    shuffled = base[[3, 0, 4, 1, 2]] + 0.01
    assert significance.paired(base, shuffled).p > 0.5 and significance.welch(base, shuffled).p > 0.5
    assert significance.paired([0.5], [0.6]) is None and significance.welch([0.5], [0.6, 0.7]) is None


def test_differences_equal_up_to_rounding_are_identical_differences():
    # 0.35 - 0.10 and 0.55 - 0.30 differ by ~1e-16: no spread, not a t-test on rounding
    # (scipy warns of catastrophic cancellation there), the same answer as exact equality
    base, variant = np.array([0.10, 0.30]), np.array([0.35, 0.55])
    assert (variant - base).std(ddof=1) > 0 and np.std([0.1 + 0.2, 0.3]) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rounded = significance.paired(base, variant)
        welch = significance.welch([0.2, 0.2], [0.1 + 0.2, 0.3])  # 0.30000000000000004 and 0.3
    exact = significance.paired([0.0, 0.0], [0.25, 0.25])
    assert (rounded.p, rounded.ci95, rounded.mde()) == (exact.p, pytest.approx(exact.ci95), exact.mde())
    assert welch.p == 0.0 and welch.mde() == 0.0 and welch.ci95 == pytest.approx((0.1, 0.1))


def test_two_proportions_is_the_textbook_pooled_z_test():
    t = significance.two_proportions(900, 1000, 850, 1000)
    pooled = 1750 / 2000
    z = -0.05 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert t.p == pytest.approx(2 * stats.norm.sf(abs(z)))
    from statsmodels.stats.proportion import proportions_ztest
    assert t.p == pytest.approx(proportions_ztest([850, 900], [1000, 1000])[1])


@pytest.mark.parametrize("make", ["paired", "mcnemar", "two_proportions"])
def test_at_its_minimum_detectable_effect_a_test_rejects_about_80_percent_of_the_time(make):
    # simulate the design with the true effect set to the stated MDE, at alpha 0.05
    rng = np.random.default_rng(0)
    alpha, trials, rejections = 0.05, 400, 0
    if make == "paired":
        sd, n = 0.02, 5
        spread_sd = np.linspace(-1, 1, n) / np.linspace(-1, 1, n).std(ddof=1) * sd  # sample sd exactly sd
        effect = significance.paired(np.zeros(n), spread_sd).mde(alpha)
        for _ in range(trials):
            rejections += stats.ttest_1samp(rng.normal(effect, sd, n), 0).pvalue < alpha
    elif make == "mcnemar":
        n, discordance = 1000, 0.10
        effect = significance.mcnemar_counts(50, 50, n).mde(alpha)
        for _ in range(trials):
            disc = rng.binomial(n, discordance)
            gained = rng.binomial(disc, 0.5 + effect / (2 * discordance))
            rejections += significance.mcnemar_counts(disc - gained, gained, n).p < alpha
    else:
        n, p = 1000, 0.5
        effect = significance.two_proportions(500, n, 500, n).mde(alpha)
        for _ in range(trials):
            rejections += significance.two_proportions(rng.binomial(n, p), n, rng.binomial(n, p + effect), n).p < alpha
    assert 0.70 < rejections / trials < 0.90, (make, effect, rejections / trials)


def test_the_t_tests_power_is_statsmodels_where_its_solver_answers_and_still_answers_below():
    from statsmodels.stats.power import TTestIndPower, TTestPower

    for n in (3, 5, 10):
        assert significance.t_mde(n, n, 0.05, True) == pytest.approx(
            TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8), rel=1e-4)
        assert significance.t_mde(n, n, 0.0125, False) == pytest.approx(
            TTestIndPower().solve_power(nobs1=n, alpha=0.0125, power=0.8, ratio=1), rel=1e-4)
    # two seeds at a corrected level: far beyond statsmodels' bound of 10, and exact
    d = significance.t_mde(2, 2, 0.01, True)
    assert d > 10 and significance.t_power(d, 2, 2, 0.01, True) == pytest.approx(0.8)
    assert TTestPower().power(d, 2, 0.01) == pytest.approx(0.8, abs=1e-3)


def test_the_seeds_that_would_resolve_an_effect_do():
    base = np.array([0.60, 0.61, 0.62])
    t = significance.paired(base, base + np.array([0.00, 0.02, 0.01]))  # +1 point, spread 1 point
    needed = t.needed(0.05)
    seeds = int(needed.split("~")[1].split(" ")[0])
    assert 8 <= seeds <= 14, needed  # d = 1: 10 pairs give 80% power at 0.05 (two-sided)
    from statsmodels.stats.power import TTestPower
    assert TTestPower().power(1.0, seeds, 0.05) >= 0.8 > TTestPower().power(1.0, seeds - 1, 0.05)


def test_the_bootstrap_interval_covers_a_known_ratio_about_95_percent_of_the_time():
    # gap closed = (tuned - direct) / (full - direct) with true accuracies 0.5, 0.8, 0.9: 0.75
    rng = np.random.default_rng(1)
    n, hits, trials = 400, 0, 60

    def ratio(d, t, f, axis=-1):
        return (t.mean(axis) - d.mean(axis)) / (f.mean(axis) - d.mean(axis))
    for i in range(trials):
        samples = [significance.outcomes(rng.binomial(n, p), n) for p in (0.5, 0.8, 0.9)]
        t = significance.bootstrap(ratio, samples, 0.5, "bootstrap", "test", seed=i, n_resamples=500)
        hits += t.ci95[0] <= 0.75 <= t.ci95[1]
    assert hits / trials >= 0.85
    # and against a null inside the interval it does not reject
    samples = [significance.outcomes(c, n) for c in (200, 320, 360)]  # exactly 0.75
    assert significance.bootstrap(ratio, samples, 0.75, "b", "t").p > 0.5
    assert significance.bootstrap(ratio, samples, 0.5, "b", "t").p < 0.01


def test_pooling_needs_one_kind_of_test_oriented_the_claimed_way():
    a = significance.mcnemar_counts(10, 30, 1000)
    b = significance.mcnemar_counts(30, 10, 1000)  # the other way...
    flipped = significance.oriented(b, -1)  # ...which is what a claim expecting a drop wants
    assert flipped.counts == {"lost": 10, "gained": 30, "n": 1000}
    both = significance.pooled([a, flipped])
    assert both.counts == {"lost": 20, "gained": 60, "n": 2000} and both.p < 1e-4
    with pytest.raises(ValueError, match="combine='all'"):
        significance.pooled([a, significance.two_proportions(1, 2, 1, 2)])
