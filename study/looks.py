"""The study in looks (issue 41): the matrix at each look of a profile's schedule, and the runs a
later look adds only for the claims still open.

A profile's `looks` gives the seeds and the images at each look: look k trains seeds 0..s_k-1
of every seeded group (ablations, the seeded CIFAR-10 models) and scales every evaluation's
image samples by images_k / images_1 (capped at the whole test split), so each look's sample
extends the last one's (the evaluations score a prefix of one seeded order) and the report
judges every claim at each look taken (reporting/looks.py, sequential.py). From look 2 on,
`pruned` extends only what the claims still open read (a decided, negligible or futile claim
adds nothing; a non-binding stop costs no error).
"""

import argparse
import math
import re

from study.plan import build_matrix

TEST_SPLIT = 10000  # the largest test split an evaluation scores (CIFAR-10's, MNIST's)


def count(profile):
    """How many looks the profile's schedule has (1 without one)."""
    return len(profile.get("looks", {}).get("seeds", ())) or 1


def profile_at(profile, look):
    """The profile's budgets at `look` (1-based): its seeds, and its evaluation samples scaled."""
    schedule = profile.get("looks")
    if not schedule:
        return profile
    if not 1 <= look <= count(profile):
        raise SystemExit(f"error: --look {look}: the profile has looks 1..{count(profile)}")
    seeds = list(range(schedule["seeds"][look - 1]))
    model_seeds = list(range(schedule.get("model_seeds", schedule["seeds"])[look - 1]))
    return {**profile, "seeds": seeds, "model_seeds": model_seeds if "model_seeds" in profile else None,
            "eval": _eval_at(profile, look), "look": look,
            "look_samples": [samples(profile, k) for k in range(1, count(profile) + 1)]}


def _eval_at(profile, look):
    """The evaluation budget at `look`: every image sample scaled by images_k / images_1."""
    schedule = profile["looks"]
    factor = schedule["images"][look - 1] / schedule["images"][0]
    e = dict(profile["eval"])
    e["max_batches"] = math.ceil(e["max_batches"] * factor)
    for key in ("autoattack_samples", "corruption_samples"):
        if e.get(key):
            n = round(e[key] * factor)
            e[key] = 0 if n >= TEST_SPLIT else n  # 0: the whole split
    if "autoattack" in schedule:  # AutoAttack is most of an evaluation's cost: its own sizes
        e["autoattack_samples"] = schedule["autoattack"][look - 1]
    return e


def samples(profile, look):
    """{sample: images scored at `look`} for the samples that grow with the looks (None: the
    whole split): the attacked batches, AutoAttack's sample, the corruptions' sample. The
    report cuts each evaluation's per-image outcomes to these to see an earlier look."""
    e = _eval_at(profile, look)
    return {"attacks": e["max_batches"] * e["batch_size"], "autoattack": e.get("autoattack_samples") or None,
            "corruptions": e.get("corruption_samples") or None}


def _matrix(args, profile, look):
    at = profile_at(profile, look)
    look_args = argparse.Namespace(**{**vars(args), "seeds": at["seeds"]})
    return build_matrix(look_args, {k: v for k, v in at.items() if v is not None})


def matrix(args, profile, look):
    """The runs of `look`: the matrix of its seeds and image samples, each run's fields naming
    the look it joined the study at (`look`), by which the report sees the earlier looks."""
    runs = _matrix(args, profile, look)
    if profile.get("looks"):
        first = {}
        for k in range(look, 0, -1):
            first.update({r.name: k for r in (runs if k == look else _matrix(args, profile, k))})
        for run in runs:
            run.fields["look"] = first[run.name]
    return runs


def added(args, profile, look):
    """The runs `look` adds to the one before (new, or a new command: a larger sample)."""
    runs = matrix(args, profile, look)
    if look == 1:
        return runs
    before = {(r.name, r.command) for r in matrix(args, profile, look - 1)}
    return [r for r in runs if (r.name, r.command) not in before]


def _stem(name):
    """A run's name without its seed: the runs a new seed of it extends."""
    return re.sub(r"_s\d+$", "", name)


def pruned(args, profile, look, open_reads):
    """The runs of `look` when each look extends only what the claims still open read:
    `open_reads(k, runs)` judges look k on its runs (as they ran) and names the runs those
    claims read. A run is re-run at the larger sample, or a new seed added, only where an open
    claim read it or another seed of it (with what it needs); a model the schedule adds at this
    look joins; every other run keeps the command it ran with, and is up to date."""
    runs = matrix(args, profile, 1)
    for k in range(2, look + 1):
        reads = open_reads(k - 1, runs)
        wanted = {_stem(n) for n in reads}
        full = matrix(args, profile, k)
        by_name, before = {r.name: r for r in full}, {r.name: r for r in runs}
        known = {_stem(n) for n in before}  # a run no earlier look had a seed of joins now
        keep = {r.name for r in full if r.name in reads or _stem(r.name) in wanted or _stem(r.name) not in known}
        stack = list(keep)  # and what they read, as the next look declares it
        while stack:
            for need in by_name[stack.pop()].needs_all:
                if need not in keep:
                    keep.add(need)
                    stack.append(need)
        runs = [r if r.name in keep else before[r.name] for r in full
                if r.name in keep or r.name in before]
    return runs
