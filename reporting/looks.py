"""The looks of a sequential study, as the claims read them: the profile's schedule (seeds and
image samples at each look, study/looks.py), the study as it stood at each look taken, and each
tested comparison's history over them (sequential.Hypothesis). A profile without a schedule is judged at one
look, where sequential.decide is Holm's correction exactly."""

import dataclasses
import math

import sequential


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
    if "seeds" in test.sample:  # the ablations' schedule, or the models' where it is theirs
        now = taken(study) - 1
        mine = looks.get("model_seeds")
        return list(mine if mine and test.n == mine[now] != looks["seeds"][now] else looks["seeds"])
    if test.grows and study.profile.get("look_samples"):
        sample, split = test.grows
        split = split or math.inf  # None: the split's size was not recorded
        return [split if sizes[sample] is None else min(sizes[sample], split)  # None: the whole split
                for sizes in study.profile["look_samples"]]
    return None


def hypothesis(study, unit, earlier, margin):
    """The sequential.Hypothesis of a unit judged at the last look taken: its tests at the
    earlier looks (`earlier`: [{key: Unit}] per look) wherever its sample grew, and its plan:
    the samples observed so far, then the schedule's for the looks to come. A test whose
    sample does not grow is judged at this look alone, as a fixed design."""
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
    now = taken(study)
    later = [n for n in plan[now:] if n > sizes[-1]]
    return sequential.Hypothesis(unit.label, unit.expect, tuple(sizes + sorted(set(later))), tests,
                                 margin=margin)


def _centred(test):
    """The test as sequential reads it: its effect measured from its null value."""
    return dataclasses.replace(test, effect=test.effect - test.null, null=0.0) if test.null else test
