"""The sequential design: its boundaries spend what they say, one look is Holm exactly, and
whole simulated studies run through the real decision code keep the family-wise error rate."""

import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import sequential
import significance

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import sequential_error  # noqa: E402


@pytest.mark.parametrize("fractions", [(1 / 3, 2 / 3, 1.0), (0.3, 0.5, 1.0), (0.1024, 0.4096, 1.0)])
def test_boundaries_spend_the_level_over_the_looks(fractions):
    """Brownian paths at the information fractions cross the boundaries with probability alpha,
    and by each look with the spending function's share of it."""
    rng = np.random.default_rng(0)
    n, fr = 300_000, np.array(fractions)
    z = np.cumsum(rng.normal(size=(n, len(fr))) * np.sqrt(np.diff(np.r_[0, fr])), axis=1) / np.sqrt(fr)
    crossed = np.abs(z) >= np.array(sequential.boundaries(0.05, fractions))
    first = np.cumsum(crossed, axis=1) > 0
    se = math.sqrt(0.05 * 0.95 / n)
    for k, t in enumerate(fractions):
        assert abs(first[:, k].mean() - sequential.spent(t, 0.05)) < 4 * se, (k, t)
    assert sequential.boundaries(0.05, (1.0,)) == pytest.approx((1.959964,), abs=1e-6)
    assert sequential.spent(1.0, 0.05) == pytest.approx(0.05)


def _fake(p, effect=0.01, se=0.005, df=math.inf):
    return SimpleNamespace(p=p, effect=effect, se=se, df=df)


def _holm_rejects(p, alpha=0.05):
    """The textbook step-down: the k-th smallest p against alpha / (m - k), stopping at the first
    that fails (significance.holm, statsmodels' rule, agrees: tests/test_significance.py)."""
    rejects = [False] * len(p)
    for k, i in enumerate(np.argsort(p)):
        if p[i] > alpha / (len(p) - k):
            break
        rejects[i] = True
    return rejects


def test_with_one_look_the_decision_is_holms():
    rng = np.random.default_rng(1)
    for _ in range(300):
        p = rng.uniform(0, 0.08, size=rng.integers(1, 7))
        family = [sequential.Hypothesis(str(i), +1, (1,), [_fake(x)]) for i, x in enumerate(p)]
        sequential.decide(family)
        assert [bool(h.rejected_at) for h in family] == _holm_rejects(p), p
    p = [0.001, 0.02, 0.04, 0.3]
    assert _holm_rejects(p) == [q < 0.05 for q in significance.holm(p)]


def test_a_rejection_passes_its_level_on_to_earlier_looks_of_the_others():
    """Maurer & Bretz: once A is rejected, B is tested at alpha (not alpha / 2) at every look so far."""
    fractions_plan = (50, 100)
    a = sequential.Hypothesis("a", +1, fractions_plan, [_fake(1e-6)])
    level_half = sequential.nominal_levels(0.025, (0.5,))[0]
    level_full = sequential.nominal_levels(0.05, (0.5,))[0]
    b = sequential.Hypothesis("b", +1, fractions_plan, [_fake((level_half + level_full) / 2)])
    sequential.decide([a, b])
    assert a.rejected_at == 1 and b.rejected_at == 1 and b.level == 0.05
    alone = sequential.Hypothesis("b", +1, fractions_plan, [_fake((level_half + level_full) / 2)])
    sequential.decide([alone, sequential.Hypothesis("c", +1, fractions_plan, [_fake(0.9)])])
    assert not alone.rejected_at  # without A's level it stays open


def test_a_tight_interval_inside_the_margin_is_negligible_and_a_hopeless_one_futile():
    tight = sequential.Hypothesis("tight", +1, (10, 20, 40), [_fake(0.6, effect=0.001, se=0.002)],
                                  margin=0.01)
    hopeless = sequential.Hypothesis("hopeless", +1, (10, 20, 40), [_fake(0.97, effect=0.0001, se=0.01)],
                                     margin=0.001)
    sequential.decide([tight, hopeless])
    assert tight.stop == "negligible at look 1" and not tight.rejected_at
    assert hopeless.stop == "futile at look 1" and not hopeless.negligible_at
    wide = sequential.Hypothesis("wide", +1, (10,), [_fake(0.6, effect=0.001, se=0.02)], margin=0.01)
    sequential.decide([wide])
    assert wide.stop == "cap (look 1)"  # neither decided nor within the margin: inconclusive


def test_the_chance_of_a_verdict_at_the_next_look_matches_simulated_continuations():
    """conditional_power at the next look and negligible_chance agree with continuing the
    study many times on its current trend: the statistic's Brownian motion for a rejection,
    the mean of today's sample and the new one for the interval."""
    rng = np.random.default_rng(1)
    n, level = 200_000, 0.01
    h = sequential.Hypothesis("x", +1, (3, 8), [_fake(p=0.02, effect=0.013, se=0.005)], margin=0.02)
    t1, z1 = 3 / 8, float(-sequential.NORMAL.inv_cdf(0.01))
    c2 = sequential.boundaries(level, (t1, 1.0))[-1]
    b2 = z1 * math.sqrt(t1) + z1 / math.sqrt(t1) * (1 - t1) + rng.normal(size=n) * math.sqrt(1 - t1)
    se_mc = math.sqrt(0.25 / n)
    assert sequential.conditional_power(h, level, at=2) == pytest.approx((b2 > c2).mean(), abs=4 * se_mc)
    assert sequential.conditional_power(h, level, at=2) == pytest.approx(sequential.conditional_power(h, level))
    # negligible: 8 samples' mean around today's effect; inside the margin less the interval's half
    sd = 0.005 * math.sqrt(3)  # one sample's spread
    future = (3 * 0.013 + 5 * (0.013 + rng.normal(size=n) * sd / math.sqrt(5))) / 8
    a = sequential.nominal_levels(2 * 0.05 / 4, (t1, 1.0))[-1]
    half = sequential.stats.norm.isf(a / 2) * 0.005 * math.sqrt(3 / 8)
    inside = (np.abs(future) < 0.02 - half).mean()
    assert 0.05 < inside < 0.95  # a case where the answer is neither certain nor hopeless
    assert sequential.negligible_chance(h, 0.05, 4, at=2) == pytest.approx(inside, abs=4 * se_mc)
    # nothing to gain where nothing grows, or the interval cannot fit inside the margin
    assert sequential.negligible_chance(sequential.Hypothesis("y", +1, (3,), [h.current], margin=0.02),
                                        0.05, 4, at=1) == 0.0
    wide = sequential.Hypothesis("z", +1, (3, 4), [_fake(p=0.5, effect=0.0, se=0.05)], margin=0.02)
    assert sequential.negligible_chance(wide, 0.05, 4, at=2) == 0.0


def test_simulated_studies_keep_the_family_wise_error_rate_and_find_planted_effects():
    """The null: every effect 0, the quick profile's look schedule, futility and negligible
    stops on, and a second look that extends only the better half of the open hypotheses by
    their chance of a verdict (as a look under a budget does): the rate of families with any
    false rejection is at most 0.05 within 3 Monte Carlo standard errors. So is the rate of
    false "negligible" verdicts with every effect exactly at its margin.
    (benchmarks/sequential_error.py runs 20,000 studies a scenario: docs/pipeline.md.)"""
    from study.profiles import PROFILES

    schedule = PROFILES["quick"]["looks"]  # the study's looks, simulated
    assert (sequential_error.SEEDS, sequential_error.IMAGES) == (tuple(schedule["seeds"]), tuple(schedule["images"]))
    spec = sequential_error.FAMILIES["mixed x6 (robustness, corruptions)"]
    fwer, se, negligible, neg_se = sequential_error.error_rates(spec, 1000, extend=0.5)
    print(f"false rejections {fwer:.4f} (SE {se:.4f}); false negligible {negligible:.4f} (SE {neg_se:.4f})")
    assert fwer <= 0.05 + 3 * se and negligible <= 0.05 + 3 * max(neg_se, math.sqrt(0.05 * 0.95 / 1000))
    assert fwer > 0.005  # the design spends its level: a test that never rejects would pass above
    rows = sequential_error.power(spec, [2.0, 1.0, 0.0, 0.03, 0.02, 0.0], 150)
    for row in rows:
        print(f"planted {row['effect']:+.2f}: power {row['power']:.2f}, sample {row['sample']:,.0f} of {row['cap']:,}")
    assert rows[0]["power"] > 0.85 and rows[3]["power"] > 0.85  # two seed spreads; 3 points on images
    # where there is nothing to find, futility stops most at the first look: looks save samples
    assert rows[2]["sample"] < 0.8 * rows[2]["cap"] and rows[5]["sample"] < 0.8 * rows[5]["cap"]
