"""The claims of the study, declared as data, and their verdicts.

A claim is one `Claim`: its statement, the family it is judged in, the metric, what it
compares (a function of the Study returning `Comparison`s, each with the direction the claim
expects and the test `significance` computed), and how its comparisons combine:

- "all": the claim is about every comparison (every model, every pair): supported only if
  each one's test rejects in the expected direction, contradicted if any rejects the other
  way, inconclusive otherwise;
- "pooled": one test over the union of the comparisons' samples (McNemar over every image,
  or the paired t-test over every seed pair), each oriented so that "as claimed" is positive.

One rule turns tests into verdicts, `sequential.decide` over each family: group-sequential
boundaries with Holm's level recycling (with one look, Holm's step-down correction exactly),
"negligible" where every interval lies within the claim's smallest effect of interest
(`margin`, with its reason), and the looks a study in looks has taken (reporting/looks.py).
A claim that does not reach a verdict is inconclusive with its effect, its 95% interval, the
minimum detectable effect (80% power, at ALPHA / m, the strictest level Holm applies in a
family of m tests) and what sample would resolve it. What each kind of claim compares lives
in reporting/comparisons.py (and reporting/corruptions.py); a new claim is one more declaration.
"""

import collections
import math
from dataclasses import dataclass, field
from typing import Callable

import run_contract
import sequential
import significance
from run_contract import Outcome
from significance import ALPHA

from reporting import looks
from reporting.common import ACROSS_SEEDS, Comparison  # noqa: F401 (claims.Comparison: what a claim's function returns)
from reporting.comparisons import (adversarial_trade, attack_strength, circle_robustness,
                                   colour_vs_handwriting, equal_compute, frozen_vs_scratch,
                                   gap_closed, seed_pairs, transfer_direction)
from reporting.corruptions import (LOW_FREQUENCY, NOISE, adversarial_vs_standard, augmentation,
                                   digits_noise_vs_affine)

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NEGLIGIBLE = "supported", "contradicted", "inconclusive", "negligible"
FAMILIES = ("ablations", "transfer", "robustness", "corruptions")


@dataclass(frozen=True)
class Claim:
    statement: str
    family: str
    metric: str
    compares: Callable  # Study -> [Comparison]
    combine: str = "all"
    variance: str = ""  # which variance the intervals cover
    unit: str = "points"
    link: str = ""
    margin: float = math.nan  # the smallest effect of interest, in the metric's units (0.01: a point)
    margin_why: str = ""  # one line: why an effect under it is negligible


@dataclass
class Unit:
    """What the family's error control counts: one comparison, or a pooled claim's one test,
    with its hypothesis over the looks (sequential.Hypothesis: the level it was tested at, the
    look it was decided at, negligible, futile). `p_adjusted`: Holm's adjusted p, shown for a
    one-look study, where the sequential rule is Holm's exactly."""
    label: str
    expect: int
    test: significance.Test
    p_adjusted: float = math.nan
    alpha_mde: float = ALPHA
    hypothesis: sequential.Hypothesis = None

    @property
    def rejects(self):
        return bool(self.hypothesis.rejected_at)

    @property
    def outcome(self):
        h = self.hypothesis
        if h.rejected_at:
            return "as claimed" if h.direction > 0 else "opposite"
        return NEGLIGIBLE if h.negligible_at else "not significant"


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    comparisons: list
    units: list = field(default_factory=list)
    minutes: float = 0.0  # summed run time of the runs its comparisons read
    read: set = field(default_factory=set)  # their names
    budget_ended: bool = False  # the study's --budget left runs out: an open test stopped there
    left_out: bool = False  # a later look's plan left the claim out (its budget did not reach it)

    @property
    def open(self):
        """Whether a later look can still move it: a test still going, or one not yet made."""
        return (any(not u.hypothesis.stop for u in self.units)
                or any(c.ran and not c.test for c in self.comparisons) or not self.units)

    @property
    def spending(self):
        """Looks used, sample, minutes and why it stopped: '1 look; 3 seeds; 42 min; cap (look 1)'."""
        hs = [u.hypothesis for u in self.units]
        if not hs:
            return "left out by the budget" if self.left_out else "-"
        looks = max(len(h.looks) for h in hs)
        samples = sorted({u.test.sample for u in self.units})
        stops = collections.Counter(h.stop or ("budget" if self.budget_ended else "open") for h in hs)
        why = (", ".join(sorted(stops)) if len(stops) == 1 else  # tests stopped apart: how many each
               ", ".join(f"{stop} ({n} of {len(hs)} tests)" for stop, n in sorted(stops.items())))
        return (f"{looks} look{'s' * (looks > 1)}; {'; '.join(samples[:2])}"
                + (f" (+{len(samples) - 2} more)" if len(samples) > 2 else "")
                + f"; {self.minutes:.{0 if self.minutes >= 10 else 1}f} min; {why}")

    @property
    def statement(self):
        return self.claim.statement

    @property
    def evidence(self):
        return summary(self)

    def row(self):
        return {"claim": self.claim.statement, "family": self.claim.family,
                "metric": self.claim.metric, "combine": self.claim.combine, "verdict": self.verdict,
                "evidence": self.evidence, "spending": self.spending, "minutes": round(self.minutes, 1),
                "margin": self.claim.margin, "link": self.claim.link}


# ----------------------------------------------------------------------------- the claims

SEEDS = "seed-to-seed variance (paired by seed), on each seed's test images"
ONE_MODEL = "test-image sampling only: one training seed per model, so seed-to-seed variance is not in it"
CORRUPTED = ("seed-to-seed variance (paired t over seeds) where both models have several seeds; "
             "else the sampling of the corrupted test images (paired t over images, one seed)")
IMAGES = "the sampling of the corrupted test images (paired t over images): one model"
MODELS = ("seed-to-seed variance (paired t over seeds) where both models have several seeds; "
          "else test-image sampling only (McNemar on one seed's images)")

# The smallest effects of interest (issue 41): an interval inside one is a "negligible" verdict.
ACCURACY_POINT = {"margin": 0.01, "margin_why": "1 point of accuracy: under the seed-to-seed spread "
                  "of one recipe (~1.5 points at these budgets), so no recipe choice turns on it"}
TRANSFER_POINTS = {"margin": 0.02, "margin_why": "2 points of accuracy: the gaps compared are tens "
                   "of points, and a 2-point difference would not change which shift is harder"}

CLAIMS = [
    Claim("BatchNorm eases optimization: without it the same learning rate trains worse (or diverges)",
          "ablations", "test accuracy", seed_pairs("no_bn_same_lr", "test_accuracy", -1, "test accuracy",
                                                   diverged_is_chance=True),
          variance=SEEDS, link="#ablations", **ACCURACY_POINT),
    Claim("Label smoothing improves calibration (lower ECE)", "ablations", "ECE",
          seed_pairs("label_smoothing", "test_ece", -1, "ECE"), variance=SEEDS, link="#ablations",
          margin=0.02, margin_why="2 points of ECE: about the spread of a 10-bin ECE between "
          "resamples of one 10,000-image test split; a smaller change alters no decision"),
    Claim("SGD with momentum generalizes better than Adam (higher test accuracy)", "ablations",
          "test accuracy", seed_pairs("adam", "test_accuracy", -1, "test accuracy"),
          variance=SEEDS, link="#ablations", **ACCURACY_POINT),
    Claim("Data augmentation regularizes: turning it off lowers test accuracy", "ablations",
          "test accuracy", seed_pairs("no_augment", "test_accuracy", -1, "test accuracy", show_gap=True),
          variance=SEEDS, link="#ablations", **ACCURACY_POINT),
    Claim("Dropout before the classifier regularizes: it raises test accuracy", "ablations",
          "test accuracy", seed_pairs("dropout", "test_accuracy", +1, "test accuracy", show_gap=True),
          variance=SEEDS, link="#ablations", **ACCURACY_POINT),
    Claim("Transfer is harder from a greyscale digit domain to a colour/texture one (MNIST-M, SVHN) "
          "than the reverse", "transfer", "direct-transfer accuracy", transfer_direction,
          variance=ONE_MODEL, link="#cross-domain-transfer", **TRANSFER_POINTS),
    Claim("Frozen-feature fine-tuning on a small labelled target set recovers most (over half) of "
          "the accuracy lost to the domain shift", "transfer", "share of the gap closed", gap_closed,
          variance=ONE_MODEL, unit="% of the gap", link="#cross-domain-transfer", margin=0.1,
          margin_why="10% of the gap either side of half: 'about half' is then the answer"),
    Claim("Frozen features of another domain beat training from scratch on the same target images",
          "transfer", "target test accuracy", frozen_vs_scratch, variance=ONE_MODEL,
          link="#cross-domain-transfer", **ACCURACY_POINT),
    Claim("A colour/texture shift (MNIST -> MNIST-M) costs more than a handwriting shift "
          "(MNIST -> USPS, digits)", "transfer", "direct-transfer accuracy", colour_vs_handwriting,
          variance=ONE_MODEL, link="#cross-domain-transfer", **TRANSFER_POINTS),
    Claim("PGD is a stronger attack than FGSM (lower accuracy on the same images)", "robustness",
          "accuracy under attack", attack_strength("fgsm", "pgd"), variance=MODELS,
          link="#robustness", **ACCURACY_POINT),
    Claim("Adversarial training trades clean accuracy for robustness (PGD-AT vs standard, same "
          "budget: lower clean, higher AutoAttack accuracy)", "robustness", "accuracy",
          adversarial_trade, variance=MODELS, link="#robustness", **ACCURACY_POINT),
    Claim("Circle Loss makes representations more robust (AutoAttack accuracy, with vs without "
          "it, same budget)", "robustness", "AutoAttack accuracy", circle_robustness,
          variance=MODELS, link="#circle-loss", **ACCURACY_POINT),
    Claim("At equal training compute (the standard model's image-passes), FGSM-RS is more robust "
          "than PGD-AT (Wong et al. 2020: fast is better than free)", "robustness",
          "AutoAttack accuracy", equal_compute, variance=MODELS, link="#robustness", **ACCURACY_POINT),
    # Common corruptions, measured as the accuracy a model keeps from its own clean accuracy on
    # the same images: adversarially trained models start ~20 points lower clean, so raw
    # corrupted accuracies would mix the two effects.
    Claim("Adversarial training improves robustness to the noise corruptions (Gaussian, shot, "
          "impulse): it keeps more of its clean accuracy under them than the standard model",
          "corruptions", "accuracy kept under noise", adversarial_vs_standard(NOISE, +1),
          variance=CORRUPTED, link="#common-corruptions", **ACCURACY_POINT),
    Claim("Adversarial training worsens robustness to fog and contrast (low-frequency corruptions, "
          "Yin et al. 2019): it keeps less of its clean accuracy under them than the standard model",
          "corruptions", "accuracy kept under fog and contrast",
          adversarial_vs_standard(LOW_FREQUENCY, -1), variance=CORRUPTED, link="#common-corruptions",
          **ACCURACY_POINT),
    Claim("Data augmentation improves mean corruption accuracy (the ablation with and without it)",
          "corruptions", "mean CIFAR-10-C accuracy", augmentation, variance=SEEDS,
          link="#common-corruptions", **ACCURACY_POINT),
    Claim("A digit model survives MNIST-C's noise corruptions better than its affine ones (shear, "
          "scale, rotate, translate)", "corruptions", "accuracy kept, noise vs affine",
          digits_noise_vs_affine, variance=IMAGES, link="#digits-on-mnist-c", **TRANSFER_POINTS),
]


# ----------------------------------------------------------------------------- verdicts

def _units(claim, comparisons):
    tested = [c for c in comparisons if c.test]
    if claim.combine == "pooled" and tested:
        test = significance.pooled([significance.oriented(c.test, c.expect) for c in tested])
        return [Unit(f"pooled over {len(tested)} comparisons", +1, test)]
    if claim.combine not in ("all", "pooled"):
        raise ValueError(f"claim {claim.statement!r}: combine must be 'all' or 'pooled'")
    return [Unit(c.label, c.expect, c.test) for c in tested]


def decide(claim, comparisons, units):
    """The verdict of a claim from its units' Holm-adjusted tests and its combination rule."""
    considered = [c for c in comparisons if c.ran]
    if not considered:
        return Outcome.NOT_RUN
    if any(u.outcome == "opposite" for u in units):
        return CONTRADICTED
    untested = [c for c in considered if not c.test]
    if units and not untested and all(u.outcome == "as claimed" for u in units):
        return SUPPORTED
    if units and not untested and all(u.outcome == NEGLIGIBLE for u in units):
        return NEGLIGIBLE
    return INCONCLUSIVE


def judge(study, declared=None):
    """Every declared claim's verdict: within each family, sequential.decide over every test
    its claims make (graphical Holm over group-sequential boundaries; with the one look of a
    fixed design, Holm's correction exactly), negligible where a unit's interval lies within
    its claim's smallest effect of interest. A study in looks (reporting/looks.py) is judged
    with each test's history: the same comparison on the study as it stood at each look."""
    declared = CLAIMS if declared is None else declared
    earlier = [{c.statement: {looks.key(u.label): u for u in _units(c, c.compares(view))} for c in declared}
               for view in looks.views(study)[:-1]]
    compared = [(c, *study.minutes_read(lambda c=c: c.compares(study))) for c in declared]
    minutes = {id(c): (m, read) for c, _, m, read in compared}
    units = [(c, comps, _units(c, comps)) for c, comps, _, _ in compared]
    for family in {c.family for c in declared}:
        members = [(c, u) for c, _, us in units if c.family == family for u in us]
        for (c, u), p in zip(members, significance.holm([u.test.p for _, u in members])):
            u.p_adjusted, u.alpha_mde = p, ALPHA / len(members)
            u.hypothesis = looks.hypothesis(study, u, [e[c.statement] for e in earlier], c.margin)
        sequential.decide([u.hypothesis for _, u in members])
    budget = any(str(r.reason).startswith(f"{run_contract.BUDGET}:") for r in study.runs)
    left_out = looks.left_out(study)
    return [Verdict(c, decide(c, comps, us), comps, us, *minutes[id(c)],
                    budget_ended=budget or c.statement in left_out, left_out=c.statement in left_out)
            for c, comps, us in units]


@dataclass
class Open:
    """A claim still open after a look: the runs it read (what the next look extends), the
    chance the next look decides it on its tests' current trends (nan: nothing tested yet),
    and whether every test still going is across seeds (a look then adds seeds, not images)."""
    claim: str
    reads: set
    chance: float
    seeds_only: bool = False


def open_claims(study):
    """The claims still open after this look (a test still going, or a comparison not yet
    tested), each with what it read and its chance of a verdict at the next look: what
    study/looks.py sets against the cost of extending it."""
    def seeds_only(v):
        going = [u.test for u in v.units if not u.hypothesis.stop]
        return bool(going) and all(t.grows and t.grows[0] in ACROSS_SEEDS for t in going)
    return [Open(v.statement, set(v.read), chance(v), seeds_only(v)) for v in judge(study) if v.open]


def chance(verdict):
    """The chance the next look gives the claim a verdict, on its tests' current trends
    (sequential.conditional_power, negligible_chance): under "all", every test still going
    rejecting as claimed, any rejecting the other way, or every test negligible; nan where
    nothing is tested yet."""
    going = [u for u in verdict.units if not u.hypothesis.stop]
    if not going:
        return math.nan

    def rejects(u):
        return sequential.conditional_power(u.hypothesis, u.hypothesis.level, len(u.hypothesis.looks) + 1)

    def negligible(u):
        h = u.hypothesis
        return sequential.negligible_chance(h, ALPHA, round(ALPHA / u.alpha_mde), len(h.looks) + 1)

    as_claimed = [(u.test.effect - u.test.null) * u.expect > 0 for u in going]
    claimed = math.prod(map(rejects, going)) if all(as_claimed) else 0.0
    opposite = 1 - math.prod(1 - rejects(u) for u, ok in zip(going, as_claimed) if not ok)
    stopped_negligible = all(u.hypothesis.negligible_at for u in verdict.units if u.hypothesis.stop)
    return max(claimed, opposite, math.prod(map(negligible, going)) if stopped_negligible else 0.0)


# ----------------------------------------------------------------------------- text

def effect_text(claim, test):
    """'+5.2 points [+1.0, +9.4]', or for a statistic against its null value '79% [60%, 90%]
    against 50%'."""
    lo, hi = test.ci95
    if test.null:
        return (f"{100 * test.effect:.0f}% [{100 * lo:.0f}%, {100 * hi:.0f}%] against "
                f"{100 * test.null:.0f}%")
    return f"{100 * test.effect:+.1f} {claim.unit} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def mde_text(claim, unit):
    mde = unit.test.mde(unit.alpha_mde)
    if not math.isfinite(mde):
        return ""
    needed = unit.test.needed(unit.alpha_mde)
    return (f"MDE {100 * mde:.1f} {claim.unit} (80% power at alpha {unit.alpha_mde:.3g})"
            + (f"; {needed}" if needed else ""))


def margin_text(claim):
    """'every interval within ±1.0 points, the smallest effect of interest (why)'."""
    return (f"interval within ±{100 * claim.margin:.1f} {claim.unit}, the smallest effect of "
            f"interest ({claim.margin_why})")


def _p(p):
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def summary(v):
    """One cell of evidence: the effect with its interval, the test, raw and Holm p, the
    sample, and for an inconclusive verdict what it could have seen."""
    c = v.claim
    if v.verdict == Outcome.NOT_RUN:
        why = "; ".join(sorted({x.why for x in v.comparisons if x.why})) or "not run"
        return (f"{why}: the budget left it out ([how each look was planned](#how-each-look-was-planned))"
                if v.left_out else why)
    untested = [x for x in v.comparisons if x.ran and not x.test]
    if len(v.units) == 1 and not untested:
        u = v.units[0]
        text = (f"{effect_text(c, u.test)}; {u.test.name} p={_p(u.test.p)}, Holm p={_p(u.p_adjusted)}; "
                f"{u.test.sample}")
        if v.verdict == INCONCLUSIVE:
            text += f"; {mde_text(c, u)}"
        if v.verdict == NEGLIGIBLE:
            text += f"; {margin_text(c)}"
        return text
    counts = {k: sum(u.outcome == k for u in v.units)
              for k in ("as claimed", "opposite", NEGLIGIBLE, "not significant")}
    text = (f"{c.combine} of {len(v.units)} tested comparisons: {counts['as claimed']} as claimed, "
            f"{counts['opposite']} opposite, "
            + (f"{counts[NEGLIGIBLE]} negligible, " if counts[NEGLIGIBLE] else "")
            + f"{counts['not significant']} not significant after Holm")
    if v.verdict == NEGLIGIBLE:
        text += f"; {margin_text(c)}"
    if untested:
        text += f"; {len(untested)} untested ({untested[0].why})"
    missing = [x for x in v.comparisons if not x.ran]
    if missing:
        text += f"; {len(missing)} not run"
    if v.verdict == INCONCLUSIVE and v.units:
        open_units = [u for u in v.units if u.outcome == "not significant"] or v.units
        smallest = min(open_units, key=lambda u: u.test.mde(u.alpha_mde))
        text += f"; smallest {mde_text(c, smallest)}"
    return text + " (each in the evidence table)"
