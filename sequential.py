"""Group-sequential verdicts: a claim is judged at every look of a study that adds seeds or
images, and the family-wise error rate still holds.

The design (Jennison & Turnbull 2000; Maurer & Bretz 2013):

- **Boundaries.** Each hypothesis spends its level over its looks by the Lan-DeMets
  O'Brien-Fleming-type function alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), t the information
  fraction (the sample at this look over the sample at its last planned look). `boundaries`
  turns that into a critical |z| per look by numerical integration of the joint normal law of
  the cumulative statistics; a test's own p-value is compared with the look's nominal level
  2 (1 - Phi(c_k)), so t-tests with few seeds keep their exact marginal levels.
- **Holm within the family, graphically.** Every hypothesis starts at alpha / m; one that
  crosses its boundary at any look so far is rejected and its level goes to the others (alpha
  / (m - r) each), which are re-tested against the raised boundaries at every look so far.
  With one look this is Holm's step-down procedure exactly.
- **Negligible.** A hypothesis whose repeated interval at this look (two one-sided tests,
  each at alpha / m spent the same way: Bonferroni over the family) lies within its smallest
  effect of interest is negligible: an answer, not "inconclusive".
- **Futility** (non-binding, so it costs no error): a hypothesis whose conditional power at its
  last planned look, on the current trend, is under FUTILITY_POWER stops adding samples.

Everything here reads a test through four numbers (effect, se, df, p), so it knows nothing of
where they came from; `significance` computes them, tests/test_sequential.py proves the error
rates by simulating whole studies through `decide`.
"""

import math
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
FUTILITY_POWER = 0.10  # stop adding samples below this conditional power at the cap
NORMAL = NormalDist()
GRID = 801  # points of the numerical integration per look (boundaries to ~1e-6 in level)


def spent(t, alpha):
    """Level spent by information fraction t (two-sided, O'Brien-Fleming type)."""
    if t <= 0:
        return 0.0
    return float(min(alpha, 2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(min(t, 1.0)))))


@lru_cache(maxsize=8192)
def boundaries(alpha, fractions):
    """Two-sided critical |z| at each look of increasing `fractions` (the last usually 1): the
    probability of a first crossing at look k, under the null, is spent(t_k) - spent(t_{k-1})."""
    bounds, density, grid, previous = [], None, None, 0.0
    for k, t in enumerate(fractions):
        step = spent(t, alpha) - spent(previous, alpha)
        if density is None:
            c = stats.norm.isf(step / 2) if step > 0 else math.inf
        else:
            shrink, scale = math.sqrt(fractions[k - 1] / t), math.sqrt((t - fractions[k - 1]) / t)
            mean = grid * shrink

            def crossing(c):
                tails = stats.norm.sf((c - mean) / scale) + stats.norm.cdf((-c - mean) / scale)
                return float(np.trapezoid(density * tails, grid))
            c = optimize.brentq(lambda c: crossing(c) - step, 0.0, 40.0) if step > 1e-15 else math.inf
        bounds.append(float(c))
        top = min(c, 12.0)
        new_grid = np.linspace(-top, top, GRID)
        if density is None:
            density = stats.norm.pdf(new_grid)
        else:
            kernel = stats.norm.pdf((new_grid[:, None] - mean[None, :]) / scale) / scale
            density = np.trapezoid(kernel * density[None, :], grid, axis=1)
        grid, previous = new_grid, t
    return tuple(bounds)


@lru_cache(maxsize=8192)
def _levels(alpha, fractions):
    return tuple(math.erfc(c / math.sqrt(2)) for c in boundaries(alpha, fractions))


def nominal_levels(alpha, fractions):
    """The two-sided p-value each look's test must reach: 2 (1 - Phi(c_k))."""
    return _levels(round(alpha, 12), tuple(fractions))


@dataclass
class Hypothesis:
    """One tested comparison over the looks: the direction its claim expects, its planned
    sample at each look (the information fractions), the tests taken so far (objects with
    effect, se, df and p: significance.Test), and the smallest effect of interest."""
    label: str
    expect: int
    plan: tuple
    looks: list = field(default_factory=list)
    margin: float = math.nan
    # what `decide` found
    level: float = math.nan  # the level it was last tested at (alpha / m up to alpha)
    rejected_at: int = 0  # 1-based look of the first crossing, 0: none
    negligible_at: int = 0
    futile: bool = False

    def fractions(self):
        cap = self.plan[-1]
        return tuple(min(1.0, n / cap) for n in self.plan[:len(self.looks)])

    @property
    def current(self):
        return self.looks[-1] if self.looks else None

    @property
    def direction(self):
        """+1 rejected as claimed, -1 the opposite way, 0 not rejected."""
        if not self.rejected_at:
            return 0
        return int(np.sign(self.looks[self.rejected_at - 1].effect)) * self.expect

    @property
    def stop(self):
        """Why it stopped adding samples, or '' while it goes on."""
        k = len(self.looks)
        if self.rejected_at:
            return f"decided at look {self.rejected_at}"
        if self.negligible_at:
            return f"negligible at look {self.negligible_at}"
        if self.futile:
            return f"futile at look {k}"
        if k >= len(self.plan):
            return f"cap (look {k})"
        return ""


def _crossing(h, level):
    """The first look whose p-value reaches its nominal level at `level`, 0 where none."""
    levels = nominal_levels(level, h.fractions())
    for k, (test, a) in enumerate(zip(h.looks, levels), 1):
        if test is not None and test.p <= a:
            return k
    return 0


@lru_cache(maxsize=8192)
def _quantile(level, df):
    return float(stats.t.isf(level / 2, df) if math.isfinite(df) else stats.norm.isf(level / 2))


def repeated_interval(h, level):
    """The repeated interval at the current look: effect -/+ the look's critical value at
    `level` (two-sided) times its standard error, in the test's own t or z units."""
    test = h.current
    a = nominal_levels(level, h.fractions())[-1]
    half = _quantile(a, test.df) * test.se
    return test.effect - half, test.effect + half


def _next_fraction(h, at):
    """The information fraction of the look `at` (None: the last planned one)."""
    return 1.0 if at is None else min(1.0, h.plan[at - 1] / h.plan[-1])


def conditional_power(h, level, at=None):
    """Power to cross the boundary of look `at` (1-based; None: the last planned look), given
    the current statistic and its trend: the Brownian motion B(t) = Z(t) sqrt(t), drifting at
    the rate the current Z shows, crosses c sqrt(t) there (the trend's side)."""
    test, fractions = h.current, h.fractions()
    t, t_next = fractions[-1], _next_fraction(h, at)
    if t_next <= t or not (test.se > 0):
        return 0.0
    z = -NORMAL.inv_cdf(min(max(test.p, 1e-300), 1.0) / 2)  # the statistic, as a normal one
    c = boundaries(round(level, 12), tuple(fractions) + (t_next,))[-1]
    mean = z * math.sqrt(t) + z / math.sqrt(t) * (t_next - t)
    return 1 - NORMAL.cdf((c * math.sqrt(t_next) - mean) / math.sqrt(t_next - t))


def negligible_chance(h, alpha, m, at):
    """The chance that look `at`'s repeated interval (two one-sided tests at alpha / m each)
    lies within the margin, the effect going on as it is now: the effect there is the mean of
    the samples so far and those to come, around today's effect."""
    test = h.current
    n, n_next = h.plan[len(h.looks) - 1], h.plan[at - 1]
    if not (math.isfinite(h.margin) and test.se > 0 and n_next > n):
        return 0.0
    fractions = tuple(h.fractions()) + (_next_fraction(h, at),)
    a = nominal_levels(round(2 * alpha / m, 12), fractions)[-1]
    half = _quantile(a, test.df + (n_next - n) if math.isfinite(test.df) else test.df) * test.se * math.sqrt(n / n_next)
    if half >= h.margin:
        return 0.0
    spread = test.se * math.sqrt(n * (n_next - n)) / n_next  # sd of the effect at n_next, given today's
    bound = h.margin - half
    return NORMAL.cdf((bound - test.effect) / spread) - NORMAL.cdf((-bound - test.effect) / spread)


def decide(family, alpha=ALPHA):
    """Judge a family of Hypothesis at their current looks, in place: graphical Holm over
    group-sequential boundaries, then negligible and futile for those not rejected."""
    m = len(family)
    for h in family:
        h.rejected_at, h.negligible_at, h.futile = 0, 0, False
    open_ = [h for h in family if h.looks and any(t is not None for t in h.looks)]
    rejected = 0
    while open_:
        level = alpha / (m - rejected)
        newly = [(h, k) for h in open_ for k in [_crossing(h, level)] if k]
        for h in open_:
            h.level = level
        if not newly:
            break
        for h, k in newly:
            h.rejected_at = k
        rejected += len(newly)
        open_ = [h for h in open_ if not h.rejected_at]
    for h in open_:
        if h.current is None or not math.isfinite(h.current.se):
            continue
        if math.isfinite(h.margin) and h.current.se > 0:  # a zero-spread sample shows nothing
            lo, hi = repeated_interval(h, 2 * alpha / m)  # each one-sided test at alpha / m
            if -h.margin < lo and hi < h.margin:
                h.negligible_at = len(h.looks)
                continue
        h.futile = len(h.looks) < len(h.plan) and conditional_power(h, h.level) < FUTILITY_POWER
    return family
