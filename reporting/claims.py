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

import math
from dataclasses import dataclass, field
from typing import Callable

import run_contract
import sequential
import significance
from run_contract import Outcome
from significance import ALPHA

from reporting import looks
from reporting.common import Comparison, table  # noqa: F401 (claims.Comparison: what a claim's function returns)
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
            return "-"
        looks = max(len(h.looks) for h in hs)
        samples = sorted({u.test.sample for u in self.units})
        stops = sorted({h.stop or ("budget" if self.budget_ended else "open") for h in hs})
        return (f"{looks} look{'s' * (looks > 1)}; {'; '.join(samples[:2])}"
                + (f" (+{len(samples) - 2} more)" if len(samples) > 2 else "")
                + f"; {self.minutes:.{0 if self.minutes >= 10 else 1}f} min; {', '.join(stops)}")

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
    return [Verdict(c, decide(c, comps, us), comps, us, *minutes[id(c)], budget_ended=budget)
            for c, comps, us in units]


def open_reads(study):
    """The runs read by the claims still open after this look (a test still going, or a
    comparison not yet tested): what the next look extends (study/looks.py)."""
    return set().union(*[v.read for v in judge(study) if v.open], set())


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
        return "; ".join(sorted({x.why for x in v.comparisons if x.why})) or "not run"
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


def evidence_rows(verdicts):
    """One row per tested comparison (or pooled test): what the reader checks a verdict by."""
    rows = []
    for i, v in enumerate(verdicts, 1):
        for u in v.units:
            rows.append({"claim": i, "comparison": u.label, "effect_95ci": effect_text(v.claim, u.test),
                         "test": u.test.name, "p": u.test.p, "p_holm": u.p_adjusted,
                         "outcome": u.outcome, "sample": u.test.sample,
                         "mde": mde_text(v.claim, u) if u.outcome == "not significant" else ""})
        for c in v.comparisons:
            if not c.test:
                rows.append({"claim": i, "comparison": c.label, "effect_95ci": "", "test": "",
                             "p": "", "p_holm": "", "outcome": c.why, "sample": "", "mde": ""})
    return rows


def claims_section(verdicts):
    md = ["## Claims and verdicts", "",
          "Each claim is declared once in `reporting/claims.py` (`CLAIMS`: statement, family, "
          "metric, what it compares, the expected direction, the test and how several "
          "comparisons combine) and judged from this run's numbers by one rule: **supported** or "
          "**contradicted** only when the test rejects after Holm's correction over every test "
          f"of its family (family-wise error rate {ALPHA}); **negligible** when every interval "
          "lies within the claim's smallest effect of interest (two one-sided tests, each at "
          f"{ALPHA} / the family's size); otherwise **inconclusive**, with the "
          "effect, its 95% interval and the minimum detectable effect (MDE) at 80% power; "
          "**not run** when a run it needs is missing. The rule is `sequential.decide`: a "
          "group-sequential design (Lan-DeMets O'Brien-Fleming spending per test, Holm's "
          "level recycling across the family, Maurer & Bretz 2013), which for a study judged "
          "at one look is Holm's correction exactly; its family-wise error rate is checked by "
          "simulating whole studies (docs/pipeline.md). *Spending*: the looks a claim used, its "
          "sample, the summed minutes of the runs its comparisons read, and why it stopped. Tests: seeds paired by seed (paired "
          "t-test), two evaluations on the same images (McNemar's exact test), accuracies on "
          "different images (two-proportion z-test), a derived ratio (percentile bootstrap). "
          "A claim over several models or pairs says how it combines them: *all* (each must "
          "reject as claimed; one rejecting the other way contradicts it) or *pooled* (one "
          "test over all of them). A verdict holds at this profile's budgets (see Setup and "
          "Parameters), not necessarily at the long schedules the claims were made for.", ""]
    md.append(table(["#", "claim", "family; metric; rule", "verdict", "evidence", "spending",
                     "intervals cover", "details"],
                    [[i, v.statement, f"{v.claim.family}; {v.claim.metric}; {v.claim.combine}", f"**{v.verdict}**",
                      v.evidence, v.spending, v.claim.variance, f"[table]({v.claim.link})"]
                     for i, v in enumerate(verdicts, 1)]))
    rows = evidence_rows(verdicts)
    md += ["", "### Evidence, comparison by comparison", "",
           "Effect: other minus reference in points of the metric, with its 95% interval "
           "(for a ratio: the estimate against its null value); p: the test's two-sided "
           "p-value; Holm p: adjusted over the claim's family.", "",
           table(["claim", "comparison", "effect [95% CI]", "test", "p", "Holm p", "outcome", "sample",
                  "MDE (80% power) / to resolve"],
                 [[r["claim"], r["comparison"], r["effect_95ci"] or "-", r["test"] or "-",
                   _p(r["p"]) if r["p"] != "" else "-", _p(r["p_holm"]) if r["p_holm"] != "" else "-",
                   r["outcome"], r["sample"] or "-", r["mde"] or "-"] for r in rows]), ""]
    return md


FINDINGS_START = "<!-- findings: generated from report/summary/claims.csv by run_report_pipeline.py; do not edit -->"
FINDINGS_END = "<!-- end of findings -->"


def findings_block(rows):
    """The documentation's findings, generated from claims.csv rows (claim, verdict,
    evidence): the report's words and numbers, so the two cannot drift."""
    return [f"- **{r['verdict']}**: {r['claim']} ({r['evidence']})" for r in rows]


def findings_in(text):
    """The lines between the findings markers of a document, or None without markers."""
    if FINDINGS_START not in text or FINDINGS_END not in text:
        return None
    inside = text.split(FINDINGS_START, 1)[1].split(FINDINGS_END, 1)[0]
    return [line for line in inside.strip("\n").split("\n") if line]


def sync_findings(doc_path, rows):
    """Rewrite the findings block of `doc_path` from claims.csv rows; True if it changed.
    A document without the markers is left alone (and says so by returning False)."""
    with open(doc_path) as f:
        text = f.read()
    if findings_in(text) is None:
        return False
    head, rest = text.split(FINDINGS_START, 1)
    tail = rest.split(FINDINGS_END, 1)[1]
    new = head + FINDINGS_START + "\n" + "\n".join(findings_block(rows)) + "\n" + FINDINGS_END + tail
    if new == text:
        return False
    with open(doc_path, "w") as f:
        f.write(new)
    return True
