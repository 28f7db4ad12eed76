"""The looks of a sequential study, as the claims read them: the profile's schedule (seeds and
image samples at each look, study/looks.py), the study as it stood at each look taken, and each
tested comparison's history over them (sequential.Hypothesis). A profile without a schedule is judged at one
look, where sequential.decide is Holm's correction exactly."""

import dataclasses
import math

import sequential
from reporting.common import ACROSS_SEEDS, table


def taken(study):
    """How many looks of its profile's schedule the study has taken (0: a study without one)."""
    looks = study.profile.get("looks")
    return study.profile.get("look", len(looks["seeds"])) if looks else 0


def views(study):
    """The study at each look taken, the last being the study itself."""
    return [study.at_look(k) for k in range(1, taken(study))] + [study]


def key(label):
    """What names a comparison across looks: its label up to the numbers (':')."""
    return label.split(":")[0].strip()


def planned(study, test):
    """The test's sample at each look of the schedule, or None where it does not grow with the
    looks (a whole test split, a ratio of whole-split accuracies): seeds for a test across
    seeds, a growing per-image sample (capped at its split) for a test on per-image outcomes."""
    looks = study.profile.get("looks")
    if not looks:
        return None
    if test.grows and test.grows[0] in ACROSS_SEEDS:  # across seeds: the ablations' or the models' schedule
        return list(looks.get(test.grows[0]) or looks["seeds"])
    if "seeds" in test.sample:
        return list(looks["seeds"])
    if test.grows and study.profile.get("look_samples"):
        sample, split = test.grows
        split = split or math.inf  # None: the split's size was not recorded
        return [split if sizes[sample] is None else min(sizes[sample], split)  # None: the whole split
                for sizes in study.profile["look_samples"]]
    return None


def hypothesis(study, unit, earlier, margin):
    """The sequential.Hypothesis of a unit judged at the last look taken: its tests at the
    earlier looks (`earlier`: [{key: Unit}] per look) wherever its sample grew, and its plan:
    the samples observed so far, then the schedule's larger ones. A test whose sample does not
    grow with the looks is judged at this look alone, as a fixed design."""
    plan = planned(study, unit.test)
    if plan is None or not all(math.isfinite(n) for n in plan):
        return sequential.Hypothesis(unit.label, unit.expect, (unit.test.n or 1,), [_centred(unit.test)],
                                     margin=margin)
    tests, sizes = [], []
    for units in earlier:
        u = units.get(key(unit.label))  # the same comparison by the same test, with more data
        if (u is not None and u.test.n and u.test.name == unit.test.name
                and (not sizes or u.test.n > sizes[-1])):
            tests.append(_centred(u.test))
            sizes.append(u.test.n)
    if not sizes or unit.test.n > sizes[-1]:
        tests.append(_centred(unit.test))
        sizes.append(unit.test.n or 1)
    # the schedule's sizes past its sample stay planned, also where a look left it as it was
    # (decided, futile, or left out by the budget): its boundaries stay the ones it was tested
    # against, and a stop never buys it the rest of the level
    later = [n for n in plan if n > sizes[-1]]
    return sequential.Hypothesis(unit.label, unit.expect, tuple(sizes + sorted(set(later))), tests,
                                 margin=margin)


def _centred(test):
    """The test as sequential reads it: its effect measured from its null value."""
    return dataclasses.replace(test, effect=test.effect - test.null, null=0.0) if test.null else test


def left_out(study):
    """The claims a later look's plan left out (its budget did not reach them): they stopped."""
    return {row["claim"] for plan in study.plans for row in plan["rows"]
            if "claim" in row and not row["extended"]}


def look_minutes(study, plan):
    """The summed run time the runs a look planned have recorded so far (a re-run's record is
    its latest, so the look before it counts by the time its plan recorded)."""
    names = set().union(*(r["runs"] for r in plan["rows"] if r["extended"]), set())
    return sum(r.get("wall_time_s", 0.0) for n in names if (r := study.result(n)) is not None) / 60


def run_time_text(study):
    """For a study a later look extended: its summed run time over every look, which the runs'
    records alone undercount (a run re-run at a larger sample keeps only its latest record)."""
    if not study.plans:
        return ""
    last = study.plans[-1]
    return (f" Over all {last['look']} looks (a run re-run at a larger sample keeps only its latest "
            f"record): **{last['spent_minutes'] + look_minutes(study, last):.0f} min** of run time "
            "([how each look was planned](#how-each-look-was-planned)).")


def plans_section(study, verdicts):
    """How each look after the first was planned: the claims still open, by their chance of a
    verdict at that look per minute of what it adds, and the models the look added."""
    if not study.plans:
        return []
    numbered = {v.statement: i for i, v in enumerate(verdicts, 1)}
    md = ["### How each look was planned", "",
          "After each look the claims still open were ranked by their chance of a verdict at the "
          "next look (on their tests' current trends: `sequential.conditional_power`, "
          "`negligible_chance`) per estimated minute of the runs that extend them, and extended "
          "in that order while the budget lasted; then the models the look adds, in the "
          "schedule's order. A claim left out stops there (a non-binding stop: the error rate "
          "holds). The plan is recorded once (`checkpoints/<profile>/looks/`), so a resumed look "
          "runs what it planned.", ""]
    for plan in study.plans:
        budget = (f"budget {plan['budget_minutes']:g} min ({plan.get('budget_why') or '--budget'})"
                  if plan.get("budget_minutes") else "no budget: every open claim extended")
        took, before = look_minutes(study, plan), plan["spent_minutes"]
        estimated = plan.get("estimated_minutes")
        budget += (f"; {before:.0f} min of run time by look {plan['look'] - 1}"
                   + (f" ({before / estimated:.2f}x the {estimated:.0f} min `--plan` estimated for "
                      "those runs here then" + ("; the minutes below are estimates scaled by it"
                                                if plan.get("calibration") else "") + ")"
                      if estimated else "")
                   + f", its own runs {took:.0f} min so far, {before + took:.0f} min in all")
        rows = [[f"claim {numbered.get(r['claim'], '?')}: {r['claim']}" if "claim" in r
                 else "joins: " + ", ".join(f"`{n}`" for n in r["joining"]),
                 "-" if r["chance"] is None else f"{100 * r['chance']:.0f}%",
                 "-" if r["minutes"] is None else f"{r['minutes']:.1f}",
                 "extended" if r["extended"] else "left out (budget)"] for r in plan["rows"]]
        md += [f"Look {plan['look']} ({budget}):", "",
               table(["claim or models", "chance of a verdict", "estimated minutes", "planned"], rows), ""]
    return md
