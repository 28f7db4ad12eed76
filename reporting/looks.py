"""The looks of a sequential study, as the claims read them: the profile's schedule (seeds and
images at each look), the study as it stood at each look taken, and each tested comparison's
history over them (sequential.Hypothesis). A profile without a schedule is judged at one
look, where sequential.decide is Holm's correction exactly."""

import math

import sequential


def schedule(study):
    """[(seeds, images)] of the looks taken so far, or [] for a one-look study. The profile's
    `looks`: {"seeds": [...], "images": [...]} per look; `look`: how many were taken."""
    looks = study.profile.get("looks")
    if not looks:
        return []
    taken = study.profile.get("look", len(looks["seeds"]))
    return list(zip(looks["seeds"], looks["images"]))[:taken]


def views(study):
    """The study at each look taken, the last being the study itself."""
    taken = schedule(study)
    return [study.at_look(s, i) for s, i in taken[:-1]] + [study]


def key(label):
    """What names a comparison across looks: its label up to the numbers (':')."""
    return label.split(":")[0].strip()


def _kind(test):
    return "seeds" if "seeds" in test.sample else "images"


def hypothesis(study, unit, earlier, margin):
    """The sequential.Hypothesis of a unit judged at the last look: its tests at the earlier
    looks (`earlier`: [{key: Unit}] per look) wherever its sample grew, and its planned sample
    at each look of the schedule (observed so far, then in the schedule's proportions)."""
    tests, sizes = [], []
    for units in earlier:
        u = units.get(key(unit.label))
        if u is not None and u.test.n and (not sizes or u.test.n > sizes[-1]):
            tests.append(_centred(u.test))
            sizes.append(u.test.n)
    if not sizes or unit.test.n > sizes[-1]:
        tests.append(_centred(unit.test))
        sizes.append(unit.test.n or 1)
    planned = study.profile.get("looks", {}).get(_kind(unit.test))
    plan = list(sizes)
    if planned and len(planned) > len(schedule(study)):  # looks still to come
        now = planned[len(schedule(study)) - 1]
        plan += [max(sizes[-1] + 1, math.ceil(sizes[-1] * n / now)) for n in planned[len(schedule(study)):]]
    return sequential.Hypothesis(unit.label, unit.expect, tuple(plan), tests, margin=margin)


class _Centred:
    """A test as sequential reads it, its effect measured from its null value."""

    def __init__(self, test):
        self.effect, self.se, self.df, self.p = test.effect - test.null, test.se, test.df, test.p


def _centred(test):
    return _Centred(test) if test.null else test
