"""The claims' evidence as the report and the documentation show it: one row per tested
comparison with the boundary it was judged against, the Claims section, and the findings
block the documentation copies from the report's claims.csv."""

import sequential
from significance import ALPHA

from reporting.claims import _p, effect_text, mde_text
from reporting.common import table


def boundary_text(h):
    """The boundary a test was judged against: the p-value its look had to reach ('p <= 0.0099
    at look 2 of 2'), at the look it was decided or the last it had."""
    k = h.rejected_at or len(h.looks)
    level = sequential.nominal_levels(h.level, h.fractions())[k - 1]
    return f"p <= {level:.2g} at look {k} of {len(h.plan)}"


def evidence_rows(verdicts):
    """One row per tested comparison (or pooled test): what the reader checks a verdict by."""
    rows = []
    for i, v in enumerate(verdicts, 1):
        for u in v.units:
            rows.append({"claim": i, "comparison": u.label, "effect_95ci": effect_text(v.claim, u.test),
                         "test": u.test.name, "p": u.test.p, "p_holm": u.p_adjusted,
                         "boundary": boundary_text(u.hypothesis), "outcome": u.outcome,
                         "sample": u.test.sample,
                         "mde": mde_text(v.claim, u) if u.outcome == "not significant" else ""})
        for c in v.comparisons:
            if not c.test:
                rows.append({"claim": i, "comparison": c.label, "effect_95ci": "", "test": "",
                             "p": "", "p_holm": "", "boundary": "", "outcome": c.why, "sample": "",
                             "mde": ""})
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
          "**not run** when a run it needs is missing (its data absent, or a look's budget left it "
          "out). The rule is `sequential.decide`: a "
          "group-sequential design (Lan-DeMets O'Brien-Fleming spending per test, Holm's "
          "level recycling across the family, Maurer & Bretz 2013), which for a study judged "
          "at one look is Holm's correction exactly; its family-wise error rate is checked by "
          "simulating whole studies (docs/pipeline.md). *Spending*: the looks a claim used, its "
          "sample, the summed minutes of the runs its comparisons read, and why its tests stopped "
          "(how many each way where they differ). Tests: seeds paired by seed (paired "
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
           "p-value; Holm p: adjusted over the claim's family (the rule at one look); boundary: "
           "the p-value the test had to reach at the look it was decided or last judged (its "
           "share of the family's level, spent over its looks).", "",
           table(["claim", "comparison", "effect [95% CI]", "test", "p", "Holm p", "boundary", "outcome",
                  "sample", "MDE (80% power) / to resolve"],
                 [[r["claim"], r["comparison"], r["effect_95ci"] or "-", r["test"] or "-",
                   _p(r["p"]) if r["p"] != "" else "-", _p(r["p_holm"]) if r["p_holm"] != "" else "-",
                   r["boundary"] or "-", r["outcome"], r["sample"] or "-", r["mde"] or "-"] for r in rows]), ""]
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
