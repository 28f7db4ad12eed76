"""The study's statistics in one place: the tests its claims use, Holm's correction over a
family of them, bootstrap intervals, and the smallest effect each test could have seen.

Every test returns a `Test`: the effect (other minus reference, in the metric's units, or a
statistic against its null value), its 95% interval, the two-sided p-value, what the sample
was, and how to compute the minimum detectable effect (MDE, 80% power) at any level, since
the level a test must pass depends on the family it is judged in.

- `paired`: seed-paired t-test (runs that share a seed share the split, the data order and,
  where the architecture matches, the initialisation: the pairing removes that variance);
- `welch`: Welch's t-test, for seeds that are not paired;
- `mcnemar`: McNemar's exact test on per-image outcomes (two models or two attacks on the
  same images), with the Wald interval of the paired difference (Agresti 2013, 11.1);
- `two_proportions`: the two-proportion z-test, for accuracies on different images;
- `bootstrap`: a percentile bootstrap (`scipy.stats.bootstrap`) of any statistic of
  independent samples against a null value, for derived quantities such as "gap closed";
- `holm`: Holm's step-down adjustment (statsmodels' `multipletests`).

The t-tests' MDE comes from the noncentral t distribution (`t_power`), solved here because
statsmodels' power solver stops at a standardized effect of 10, short of what two or three
seeds need at a corrected level; the tests check the two agree where both answer.
"""

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05  # family-wise error rate of each family of claims
POWER = 0.8  # the power at which a minimum detectable effect is stated
BOOTSTRAP_RESAMPLES = 2000
# Seed spreads below this are rounding, not variation (the metrics are fractions): 0.35 - 0.10
# and 0.55 - 0.30 differ by ~1e-16, and a t-test on them warns of catastrophic cancellation
# and answers from the rounding. Such seeds are treated as identical.
NO_SPREAD = 1e-12


@dataclass
class Test:
    """One comparison's answer. `effect` is other - reference (or the statistic); the claim
    it serves decides which sign it expected."""
    name: str
    effect: float
    ci95: tuple
    p: float
    sample: str
    null: float = 0.0
    mde_at: Callable = field(default=None, repr=False)  # alpha -> minimum detectable |effect - null|
    needed_at: Callable = field(default=None, repr=False)  # alpha -> what would resolve the observed effect
    counts: dict = field(default_factory=dict)  # what a pooled test adds up
    n: int = 0  # the sample it saw (seeds or images): sequential.py's information
    se: float = math.nan  # the effect's standard error (sequential.py's repeated intervals)
    df: float = math.inf  # its degrees of freedom (a t-test's; inf: a normal statistic)
    # what its sample grows with over a study's looks: (per-image sample, split size), or
    # ("seeds" / "model_seeds", None) for a test across seeds (the schedule it follows)
    grows: tuple = None

    @property
    def sign(self):
        return int(np.sign(self.effect - self.null))

    def mde(self, alpha=ALPHA):
        return self.mde_at(alpha) if self.mde_at else math.nan

    def needed(self, alpha=ALPHA):
        return self.needed_at(alpha) if self.needed_at else ""


def _z(alpha, power=POWER):
    """z_{1-alpha/2} + z_{power}: the normal approximation's distance, in standard errors,
    between the null and an effect found with that power."""
    return stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)


def _scaled_sample(n, mde, effect, unit):
    """'~N units would resolve it': the sample at which the observed effect is the MDE (the
    MDE shrinks as 1/sqrt(n))."""
    if abs(effect) < 1e-12:
        return "no effect observed"
    return f"~{math.ceil(n * (mde / abs(effect)) ** 2):,} {unit} would resolve the observed effect"


# ----------------------------------------------------------------------------- across seeds

def t_power(effect_size, n_ref, n_other, alpha, paired_design):
    """Power of the two-sided t-test at a standardized effect (effect / spread) from the
    noncentral t distribution: paired on n_ref pairs, or two samples of n_ref and n_other
    (the equal-variance approximation of Welch's test)."""
    if paired_design:
        n_eff, df = n_ref, n_ref - 1
    else:
        n_eff, df = n_ref * n_other / (n_ref + n_other), n_ref + n_other - 2
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect_size * math.sqrt(n_eff)
    # the far tail is negligible for a positive shift; scipy returns nan for it at large ones
    far = float(np.nan_to_num(stats.nct.cdf(-critical, df, shift)))
    return float(stats.nct.sf(critical, df, shift)) + far


def t_mde(n_ref, n_other, alpha, paired_design):
    """The standardized effect the t-test finds with POWER (statsmodels' solver stops at an
    effect size of 10, short of what two seeds need at a corrected level)."""
    return float(optimize.brentq(lambda d: t_power(d, n_ref, n_other, alpha, paired_design) - POWER,
                                 1e-9, 1e6))


def seeds_needed(effect_size, alpha, paired_design, most=100_000):
    """The fewest seeds (pairs, or seeds a side) at which the t-test finds `effect_size`
    with POWER, or None beyond `most`."""
    def enough(n):
        return t_power(effect_size, n, n, alpha, paired_design) >= POWER
    if not enough(most):
        return None
    low, high = 2, most
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return low


def _seed_test(name, diff, ci, p, spread, n_ref, n_other, paired_design):
    """A t-test's Test, with the MDE (in the metric's units) at the observed spread, and the
    seeds that would resolve the observed effect."""
    sample = (f"{n_ref} seeds, paired" if paired_design else f"{n_ref} and {n_other} seeds")

    def mde(alpha):
        return t_mde(n_ref, n_other, alpha, paired_design) * spread if spread >= NO_SPREAD else 0.0

    def needed(alpha):
        if abs(diff) < NO_SPREAD or spread < NO_SPREAD:
            return "no effect observed"
        seeds = seeds_needed(abs(diff) / spread, alpha, paired_design)
        if seeds is None:
            return "more than 100,000 seeds would be needed to resolve the observed effect"
        return f"~{seeds:,} seeds" + (" (paired)" if paired_design else " a side") + \
               " would resolve the observed effect"

    return Test(name, diff, ci, p, sample, mde_at=mde, needed_at=needed)


def paired(reference, other, grows=None):
    """Seed-paired t-test of other - reference (the i-th values share a seed); None with
    fewer than two pairs. `grows`: the seed schedule it follows over looks (Test.grows)."""
    reference, other = np.asarray(reference, float), np.asarray(other, float)
    if len(reference) != len(other):
        raise ValueError(f"paired values need one per seed on both sides: {len(reference)} vs {len(other)}")
    if len(reference) < 2:
        return None
    d = other - reference
    diff, spread = float(d.mean()), float(d.std(ddof=1))
    if spread < NO_SPREAD:  # identical differences: the t statistic is undefined, the sign is not
        p, ci = (0.0 if diff else 1.0), (diff, diff)
    else:  # scipy.stats.ttest_rel's numbers (tests/test_significance.py), ~20x faster
        se, df = spread / math.sqrt(len(d)), len(d) - 1
        p = float(2 * stats.t.sf(abs(diff) / se, df))
        half = float(stats.t.ppf(0.975, df)) * se
        ci = (diff - half, diff + half)
    test = _seed_test("paired t-test", diff, ci, p, spread, len(d), len(d), True)
    test.counts = {"differences": d}
    test.se, test.df, test.n = spread / math.sqrt(len(d)), len(d) - 1, len(d)
    test.grows = grows
    return test


def paired_images(reference, other, grows=None):
    """Paired t-test of other - reference over images (each image's value under both, e.g. its
    accuracy change from clean averaged over corruptions): the t-test over seeds' machinery,
    with its sample and what would resolve it counted in images. None with under two images."""
    test = paired(reference, other, grows)
    if test is None:
        return None
    n = len(test.counts["differences"])
    test.name, test.sample = "paired t-test over images", f"{n:,} images, paired"
    test.needed_at = lambda alpha: _scaled_sample(n, test.mde(alpha), test.effect, "images")
    return test


def welch(reference, other):
    """Welch's t-test of mean(other) - mean(reference) over independent seeds; None with
    fewer than two seeds a side."""
    reference, other = np.asarray(reference, float), np.asarray(other, float)
    if len(reference) < 2 or len(other) < 2:
        return None
    diff = float(other.mean() - reference.mean())
    spread = float(math.sqrt((reference.var(ddof=1) + other.var(ddof=1)) / 2))
    if spread < NO_SPREAD:
        p, ci = (0.0 if diff else 1.0), (diff, diff)
    else:
        r = stats.ttest_ind(other, reference, equal_var=False)
        p, ci = float(r.pvalue), tuple(map(float, r.confidence_interval()))
    test = _seed_test("Welch t-test", diff, ci, p, spread, len(reference), len(other), False)
    va, vb = reference.var(ddof=1) / len(reference), other.var(ddof=1) / len(other)
    test.se, test.n = math.sqrt(va + vb), min(len(reference), len(other))
    if va + vb > 0:  # Welch-Satterthwaite
        test.df = (va + vb) ** 2 / (va ** 2 / (len(reference) - 1) + vb ** 2 / (len(other) - 1))
    return test


# ----------------------------------------------------------------------------- on images

def mcnemar(reference_correct, other_correct):
    """McNemar's exact test on the same images: the images exactly one side classifies
    correctly follow Binomial(discordant, 1/2) under the null."""
    a, b = np.asarray(reference_correct, bool), np.asarray(other_correct, bool)
    if a.shape != b.shape:
        raise ValueError(f"per-image outcomes of different samples: {a.shape} vs {b.shape}")
    return mcnemar_counts(int((a & ~b).sum()), int((~a & b).sum()), len(a))


def mcnemar_counts(lost, gained, n):
    """McNemar from its discordant counts: `lost` images only the reference gets right,
    `gained` only the other, out of `n`."""
    discordant = lost + gained
    # binomtest's two-sided p at 1/2, where the distribution is symmetric: twice the smaller
    # tail (its likelihood rule gives the same), ~40x faster, for the sequential simulations
    p = min(1.0, 2 * float(stats.binom.cdf(min(gained, lost), discordant, 0.5))) if discordant else 1.0
    diff = (gained - lost) / n
    se = math.sqrt(max(discordant - (gained - lost) ** 2 / n, 0.0)) / n
    half = stats.norm.ppf(0.975) * se
    rate = max(discordant, 1) / n  # a test that saw no discordance still had n images

    def mde(alpha):
        return _z(alpha) * math.sqrt(rate / n)

    return Test("McNemar exact", diff, (float(diff - half), float(diff + half)), p, f"{n:,} images, paired",
                mde_at=mde, needed_at=lambda alpha: _scaled_sample(n, mde(alpha), diff, "images"),
                counts={"lost": lost, "gained": gained, "n": n}, se=se, n=n)


def two_proportions(correct_reference, n_reference, correct_other, n_other):
    """Two-proportion z-test (pooled variance) for accuracies on different images; the
    interval is the unpooled Wald interval."""
    p1, p2 = correct_reference / n_reference, correct_other / n_other
    diff = p2 - p1
    pooled = (correct_reference + correct_other) / (n_reference + n_other)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_reference + 1 / n_other))
    p = float(2 * stats.norm.sf(abs(diff) / se0)) if se0 else (0.0 if diff else 1.0)
    se = math.sqrt(p1 * (1 - p1) / n_reference + p2 * (1 - p2) / n_other)
    half = stats.norm.ppf(0.975) * se
    n = min(n_reference, n_other)

    def mde(alpha):
        return _z(alpha) * max(se0, 1 / n)

    return Test("two-proportion z-test", diff, (float(diff - half), float(diff + half)), p,
                f"{n_reference:,} and {n_other:,} images, independent", se=se, n=n,
                mde_at=mde, needed_at=lambda alpha: _scaled_sample(n, mde(alpha), diff, "images a side"))


def outcomes(correct, n):
    """A 0/1 per-image array with `correct` ones: what a bootstrap of an accuracy resamples
    (the order of the images does not matter to it)."""
    return np.repeat(np.array([1.0, 0.0]), [correct, n - correct])


# ----------------------------------------------------------------------------- derived

def bootstrap(statistic, samples, null, name, sample, seed=0, n_resamples=BOOTSTRAP_RESAMPLES):
    """Percentile bootstrap of `statistic(*samples, axis=-1)` (each sample resampled on its
    own), its 95% interval, and the two-sided bootstrap p-value against `null` (twice the
    smaller tail of the bootstrap distribution beyond the null, with the +1 correction)."""
    rng = np.random.default_rng(seed)
    estimate = float(statistic(*samples, axis=-1))
    with warnings.catch_warnings():  # a degenerate sample (all correct) warns; its interval is exact
        warnings.simplefilter("ignore")
        res = stats.bootstrap(samples, statistic, n_resamples=n_resamples, vectorized=True,
                              method="percentile", random_state=rng, batch=100)
    dist = res.bootstrap_distribution
    dist = dist[np.isfinite(dist)]
    tail = min((dist <= null).sum(), (dist >= null).sum())
    p = float(min(1.0, 2 * (tail + 1) / (len(dist) + 1)))
    se = float(np.std(dist, ddof=1)) if len(dist) > 1 else math.nan

    def mde(alpha):
        return _z(alpha) * se

    ci = tuple(float(np.nanpercentile(dist, q)) for q in (2.5, 97.5))
    return Test(name, estimate, ci, p, sample, null=null, mde_at=mde, se=se,
                needed_at=lambda alpha: "larger test sets or more pairs (the interval is the "
                                        "bootstrap's)")


# ----------------------------------------------------------------------------- families

def holm(pvalues, alpha=ALPHA):
    """Holm's step-down adjusted p-values, in the given order: reject where adjusted < alpha
    and the family-wise error rate stays at most alpha."""
    if not len(pvalues):
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(pvalues), alpha=alpha, method="holm")[1]]


def pooled(tests):
    """One test from several of the same kind, each oriented so that a positive effect is
    what its claim expects: McNemar over the union of the images (discordant counts added),
    or the paired t-test over every seed pair."""
    kinds = {t.name for t in tests}
    if kinds == {"McNemar exact"}:
        lost = sum(t.counts["lost"] for t in tests)
        gained = sum(t.counts["gained"] for t in tests)
        pooled_test = mcnemar_counts(lost, gained, sum(t.counts["n"] for t in tests))
        pooled_test.sample = f"{pooled_test.sample} over {len(tests)} comparisons"
        return pooled_test
    if kinds == {"paired t-test"}:
        diffs = np.concatenate([t.counts["differences"] for t in tests])
        return paired(np.zeros_like(diffs), diffs)
    raise ValueError(f"no pooled test for {sorted(kinds)}: declare the claim with combine='all'")


def oriented(test, expect):
    """The same test with its effect measured in the direction a claim expects (+1: other
    above reference), so that tests pooled across claims' comparisons add up."""
    if expect > 0:
        return test
    if test.name == "McNemar exact":
        c = test.counts
        return mcnemar_counts(c["gained"], c["lost"], c["n"])
    if test.name == "paired t-test":
        return paired(np.zeros_like(test.counts["differences"]), -test.counts["differences"])
    raise ValueError(f"cannot orient a {test.name} for pooling")
